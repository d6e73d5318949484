"""The clusters the platform layer deploys into: one per region of an AWS stack, or one existing cluster.

An AWS stack's clusters are known only through the infra stack's outputs (a StackReference), never by
re-deriving names; an on-premises stack's cluster only through a kubeconfig and its stack file.
"""

import functools
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from stacks.contract import REGIONS_OUTPUT, RegionOutputs, from_export, infra_stack_reference
from stacks.settings import StackConfig


@dataclass(frozen=True, kw_only=True)
class EksFacts:
    """What an EKS cluster's add-ons need from the infra layer, as outputs of the StackReference."""

    region: str
    """AWS region."""
    outputs: pulumi.Output[RegionOutputs]
    """The region's infra outputs."""

    def field(self, name: str) -> pulumi.Output[str]:
        """One string field of the region's outputs."""
        return self.outputs.apply(lambda o: str(getattr(o, name)))

    def role(self, key: str) -> pulumi.Output[str]:
        """The IRSA role ARN of a workload key (stacks.contract)."""
        return self.outputs.apply(lambda o: o.roles[key])


@dataclass(frozen=True, kw_only=True)
class ClusterTarget:
    """One cluster of the platform layer and where its images, models and volumes come from."""

    name: str
    """The region (AWS) or the location (on premises); resource names start with it."""
    provider: k8s.Provider
    """The Kubernetes provider that targets it."""
    registry: pulumi.Input[str]
    """In-jurisdiction registry host of every image and chart."""
    eks: EksFacts | None
    """The infra layer's facts on EKS; None for an existing on-premises cluster."""


def _region_outputs(raw: Any, region: str) -> RegionOutputs:
    return from_export(raw, region)


def _provider(name: str, kubeconfig: pulumi.Input[str] | None, context: str | None) -> k8s.Provider:
    return k8s.Provider(
        name,
        kubeconfig=kubeconfig,
        context=context,
        enable_server_side_apply=True,
        # An unreachable cluster is an error to report, never a reason to drop resources from the state.
        delete_unreachable=False,
    )


def cluster_targets(cfg: StackConfig) -> list[ClusterTarget]:
    """Every cluster this stack's platform layer deploys into."""
    if cfg.onprem is not None:
        onprem = cfg.onprem
        # A path, not the file's content: an on-premises kubeconfig may hold client credentials, which must
        # not end up in the state.
        provider = _provider(f"{onprem.location}-k8s", onprem.kubeconfig, onprem.context)
        return [ClusterTarget(name=onprem.location, provider=provider, registry=onprem.registry, eks=None)]
    reference = pulumi.StackReference("infra", stack_name=infra_stack_reference(cfg.stack))
    regions = reference.get_output(REGIONS_OUTPUT)
    targets = []
    for region in cfg.regions:
        outputs = regions.apply(functools.partial(_region_outputs, region=region.region))
        facts = EksFacts(region=region.region, outputs=outputs)
        provider = _provider(f"{region.region}-k8s", facts.field("kubeconfig"), None)
        targets.append(
            ClusterTarget(name=region.region, provider=provider, registry=facts.field("registry"), eks=facts)
        )
    return targets
