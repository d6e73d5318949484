"""ModelServing: one model, a Deployment per version, routed by the same variant config the server reads."""

from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from stacks.components import kube
from stacks.manifests import serving
from stacks.manifests.rollout_controller import CONTROLLER_OWNS
from stacks.settings import ModelConfig


@dataclass(frozen=True, kw_only=True)
class ModelServingArgs:
    """Inputs of `ModelServing`."""

    spec: serving.ServingSpec
    """Model, images, store region and gateway."""
    jwt_issuer: str
    """Issuer whose tokens the model's route accepts."""
    bucket: pulumi.Input[str]
    """Name of the model bucket (an infra-layer output on EKS; the store's bucket on premises)."""
    job_bucket: pulumi.Input[str] = ""
    """The region's result bucket (an infra-layer output), for a model with async requests; "" otherwise."""
    role_arn: pulumi.Input[str] | None
    """IRSA role infra made for the model (reads its prefix only); None on a cluster without IRSA."""
    waits_for: tuple[pulumi.Resource, ...] = ()
    """What must exist first: the tenant namespace and the mesh (its CRDs)."""


class ModelServing(pulumi.ComponentResource):
    """Deployments, Service, DestinationRule, VirtualService (with its assignment Telemetry), HPA, PDB,
    NetworkPolicy and authorization.

    Kubernetes objects only: the pods' AWS identity is the infra layer's, passed in as a role ARN.
    """

    route_names: list[str]

    def __init__(self, name: str, args: ModelServingArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("model-serving:serving:ModelServing", name, None, opts)
        spec, model = args.spec, args.spec.model
        first = pulumi.ResourceOptions(parent=self, depends_on=list(args.waits_for))
        role_arn = args.role_arn
        account = k8s.core.v1.ServiceAccount(
            f"{name}-sa",
            metadata=(
                serving.service_account(model, None)["metadata"]
                if role_arn is None
                else pulumi.Output.from_input(role_arn).apply(
                    lambda arn: serving.service_account(model, arn)["metadata"]
                )
            ),
            opts=first,
        )
        data: dict[str, pulumi.Input[str]] = {serving.BUCKET_KEY: args.bucket}
        if model.async_workers is not None:
            data[serving.JOB_STORE_KEY] = pulumi.Output.from_input(args.job_bucket).apply(
                lambda bucket: serving.job_store_url(bucket, model)
            )
        store = kube.create(f"{name}-store", serving.store_config(model) | {"data": data}, first)
        after = pulumi.ResourceOptions(parent=self, depends_on=[account, store, *args.waits_for])
        for version in model.variants.versions:
            kube.create(f"{name}-{serving.subset(version)}", serving.deployment(spec, version), after)
            kube.create(f"{name}-{serving.subset(version)}-hpa", serving.autoscaler(model, version), after)
            kube.create(
                f"{name}-{serving.subset(version)}-pdb", serving.disruption_budget(model, version), after
            )
        objects = {
            "svc": serving.service(model),
            "dr": serving.destination_rule(model),
            "vs": serving.virtual_service(spec),
            "telemetry": serving.assignment_telemetry(model),
            "netpol": serving.network_policy(model),
            "authz": serving.authorization(spec, args.jwt_issuer),
            "pod-authz": serving.pod_authorization(model),
        }
        for suffix, manifest in objects.items():
            kube.create(f"{name}-{suffix}", manifest, after if suffix != "vs" else _routing(model, after))
        self.route_names = serving.route_names(model)
        self.register_outputs({"route_names": self.route_names})


def _routing(model: ModelConfig, opts: pulumi.ResourceOptions) -> pulumi.ResourceOptions:
    """A model under a rollout controller: Pulumi sets the routes (initial weights) at creation, then the
    controller owns them (`rollout_controller.CONTROLLER_OWNS`), so a `pulumi up` never resets a rollout."""
    if model.rollout is None:
        return opts
    return pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(ignore_changes=list(CONTROLLER_OWNS)))
