"""ModelServing: one model, a Deployment per version, routed by the same variant config the server reads."""

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from stacks.components import kube
from stacks.documents import irsa_trust_policy, model_read_policy
from stacks.manifests import serving


@dataclass(frozen=True, kw_only=True)
class ModelServingArgs:
    """Inputs of `ModelServing`."""

    spec: serving.ServingSpec
    """Model, images, bucket and gateway."""
    jwt_issuer: str
    """Issuer whose tokens the model's route accepts."""
    bucket_arn: pulumi.Input[str]
    """Model bucket ARN (the pods may read their model's prefix only)."""
    key_arn: pulumi.Input[str]
    """Key of the model bucket."""
    oidc_provider_arn: pulumi.Input[str]
    """The cluster's IAM OIDC provider (IRSA)."""
    oidc_issuer: pulumi.Input[str]
    """The cluster's OIDC issuer URL."""
    tags: dict[str, str]
    """Tags on the IAM role."""
    waits_for: tuple[pulumi.Resource, ...] = ()
    """What must exist first: the tenant namespace and the mesh (its CRDs)."""


class ModelServing(pulumi.ComponentResource):
    """Deployments, Service, DestinationRule, VirtualService, HPA, PDB, NetworkPolicy and an IRSA identity."""

    role_arn: pulumi.Output[str]
    route_names: list[str]

    def __init__(self, name: str, args: ModelServingArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("model-serving:serving:ModelServing", name, None, opts)
        spec, model = args.spec, args.spec.model
        aws_child = pulumi.ResourceOptions(parent=self)
        trust = pulumi.Output.all(arn=args.oidc_provider_arn, issuer=args.oidc_issuer).apply(
            lambda v: irsa_trust_policy(v["arn"], v["issuer"], model.tenant, spec.service_account)
        )
        role = aws.iam.Role(f"{name}-reader", assume_role_policy=trust, tags=args.tags, opts=aws_child)
        aws.iam.RolePolicy(
            f"{name}-reader",
            role=role.id,
            policy=pulumi.Output.all(bucket=args.bucket_arn, key=args.key_arn).apply(
                lambda v: model_read_policy(v["bucket"], v["key"], f"models/{model.name}/")
            ),
            opts=aws_child,
        )
        account = k8s.core.v1.ServiceAccount(
            f"{name}-sa",
            metadata=role.arn.apply(lambda arn: serving.service_account(model, arn)["metadata"]),
            opts=pulumi.ResourceOptions(parent=self, depends_on=list(args.waits_for)),
        )
        after = pulumi.ResourceOptions(parent=self, depends_on=[account, *args.waits_for])
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
            "netpol": serving.network_policy(model),
            "ratelimit": serving.rate_limit(spec),
            "authz": serving.authorization(spec, args.jwt_issuer),
        }
        for suffix, manifest in objects.items():
            kube.create(f"{name}-{suffix}", manifest, after)
        self.role_arn = role.arn
        self.route_names = serving.route_names(model)
        self.register_outputs({"role_arn": self.role_arn, "route_names": self.route_names})
