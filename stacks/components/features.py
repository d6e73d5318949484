"""Features: the feature store's objects in one cluster (docs/features.md, "In the stacks").

The `feature-store` ConfigMap (the in-cluster `feature_store.yaml`) in every namespace where a model reads
features or the job runs, and the `feature-materialize` CronJob with its ServiceAccount (infra's IRSA role)
and NetworkPolicy. The serving pods mount the ConfigMap themselves (ModelServing, `ServingSpec.features`).
"""

import functools
from dataclasses import dataclass
from typing import Any

import pulumi

from stacks import features
from stacks.components import kube
from stacks.manifests import features as fm


@dataclass(frozen=True, kw_only=True)
class FeaturesArgs:
    """Inputs of `Features`."""

    stack: str
    """The stack (the tables' names start with it)."""
    project: str
    """The Feast project."""
    region: str
    """The cluster's region: the online store's."""
    bucket: pulumi.Input[str]
    """The region's model bucket (infra's output): registry and offline data."""
    namespaces: tuple[str, ...]
    """Namespaces that get the ConfigMap: the tenants of the models that read features, and the job's."""
    job_namespace: str
    """The tenant namespace the CronJob runs in."""
    schedule: str
    """The CronJob's schedule."""
    image: pulumi.Input[str]
    """The retrain image, by digest."""
    role_arn: pulumi.Input[str]
    """Infra's materialization role."""
    waits_for: tuple[pulumi.Resource, ...] = ()
    """What must exist first: the tenant namespaces."""


class Features(pulumi.ComponentResource):
    """ConfigMaps, then the job's ServiceAccount, NetworkPolicy and CronJob."""

    config_maps: dict[str, pulumi.Resource]

    def __init__(self, name: str, args: FeaturesArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        if args.job_namespace not in args.namespaces:
            raise ValueError(f"the job's namespace {args.job_namespace!r} gets no feature-store ConfigMap")
        super().__init__("model-serving:features:Features", name, None, opts)
        first = pulumi.ResourceOptions(parent=self, depends_on=list(args.waits_for))
        self.config_maps = {}
        for namespace in args.namespaces:
            static = fm.config_map(namespace, args.stack, args.project, args.region, "")
            data = pulumi.Output.from_input(args.bucket).apply(
                functools.partial(_config_data, namespace, args)
            )
            self.config_maps[namespace] = kube.create(
                f"{name}-config-{namespace}", static | {"data": data}, first
            )
        spec = pulumi.Output.all(image=args.image, role=args.role_arn, bucket=args.bucket).apply(
            lambda v: fm.FeatureJobSpec(
                namespace=args.job_namespace,
                image=v["image"],
                schedule=args.schedule,
                role_arn=v["role"],
                region=args.region,
                offline_root=features.offline_url(v["bucket"]),
            )
        )
        static_spec = fm.FeatureJobSpec(
            namespace=args.job_namespace,
            image="",
            schedule=args.schedule,
            role_arn="",
            region=args.region,
            offline_root="",
        )
        account = kube.create(
            f"{name}-sa",
            fm.service_account(static_spec)
            | {"metadata": spec.apply(lambda s: fm.service_account(s)["metadata"])},
            first,
        )
        kube.create(f"{name}-netpol", fm.network_policy(args.job_namespace), first)
        after = pulumi.ResourceOptions(
            parent=self, depends_on=[account, self.config_maps[args.job_namespace], *args.waits_for]
        )
        kube.create(
            f"{name}-cronjob",
            fm.cron_job(static_spec) | {"spec": spec.apply(lambda s: fm.cron_job(s)["spec"])},
            after,
        )
        self.register_outputs({})


def _config_data(namespace: str, args: FeaturesArgs, bucket: str) -> Any:
    return fm.config_map(namespace, args.stack, args.project, args.region, bucket)["data"]
