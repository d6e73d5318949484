"""WorkloadAdmission: the cluster refuses unsafe pods in the tenants' namespaces itself (issue 10 point 6)."""

import functools
from dataclasses import dataclass
from typing import Any

import pulumi

from stacks.components import kube
from stacks.manifests import admission


def _spec(shape: admission.Shape, registry: str) -> Any:
    return admission.policy(shape, registry)["spec"]


@dataclass(frozen=True, kw_only=True)
class WorkloadAdmissionArgs:
    """Inputs of `WorkloadAdmission`."""

    registry: pulumi.Input[str]
    """The cluster's in-jurisdiction registry location (host, or host and path prefix): the only one whose
    images the tenants' pods may run. An output of the infra layer on EKS."""


class WorkloadAdmission(pulumi.ComponentResource):
    """A ValidatingAdmissionPolicy and its binding per shape of workload object (stacks.manifests.admission).

    Cluster-scoped, so one per cluster; create the tenants' namespaces after `ready`, so that no pod in them
    is ever admitted unjudged."""

    policy_names: list[str]
    """The policies' names (each binding carries its policy's)."""
    ready: tuple[pulumi.Resource, ...]
    """The bindings: once they exist, the API server judges the tenants' namespaces."""

    def __init__(
        self, name: str, args: WorkloadAdmissionArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        if isinstance(args.registry, str):
            admission.check_registry(args.registry)  # a bad stack setting fails the plan, not the deploy
        super().__init__("model-serving:admission:WorkloadAdmission", name, None, opts)
        registry = pulumi.Output.from_input(args.registry)
        bindings, names = [], []
        for shape in admission.SHAPES:
            spec = registry.apply(functools.partial(_spec, shape))
            manifest: dict[str, Any] = {
                "apiVersion": admission.API_VERSION,
                "kind": "ValidatingAdmissionPolicy",
                "metadata": admission.policy_metadata(shape),
                "spec": spec,
            }
            created = kube.create(f"{name}-{shape.name}", manifest, pulumi.ResourceOptions(parent=self))
            bindings.append(
                kube.create(
                    f"{name}-{shape.name}-binding",
                    admission.binding(shape),
                    pulumi.ResourceOptions(parent=self, depends_on=[created]),
                )
            )
            names.append(manifest["metadata"]["name"])
        self.policy_names = names
        self.ready = tuple(bindings)
        self.register_outputs({"policy_names": self.policy_names})
