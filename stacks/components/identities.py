"""WorkloadIdentities: the IAM roles (IRSA) of every in-cluster workload that calls AWS, each trusted by
exactly one Kubernetes service account, so the platform layer creates no AWS identity of its own.

cert-manager has no role here: the gateway's public certificate is an in-region ACM certificate on the NLB
and the mesh's internal certificates come from an in-cluster CA, so cert-manager never calls AWS.
"""

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

import pulumi
import pulumi_aws as aws

from stacks.contract import (
    ROLE_CLUSTER_AUTOSCALER,
    ROLE_EXTERNAL_SECRETS,
    ROLE_FLUENT_BIT,
    ROLE_LB_CONTROLLER,
    ROLE_OTEL_COLLECTOR,
    job_prefix,
    model_role,
)
from stacks.documents import (
    async_model_policy,
    cluster_autoscaler_policy,
    irsa_trust_policy,
    lb_controller_policy,
    log_writer_policy,
    model_read_policy,
    otel_collector_policy,
    retrain_policy,
    secret_reader_policy,
)
from stacks.manifests import addons
from stacks.manifests import retrain as retrain_manifests
from stacks.manifests.monitoring import NAMESPACE as MONITORING_NAMESPACE

IAM_NAME_LIMIT = 64


class ServiceAccount(NamedTuple):
    """Where a workload runs: the only service account its role trusts."""

    namespace: str
    name: str


RETRAIN_SERVICE_ACCOUNT = ServiceAccount(MONITORING_NAMESPACE, retrain_manifests.NAME)
"""The retrain receiver's service account, beside Alertmanager in the monitoring namespace."""

PLATFORM_SERVICE_ACCOUNTS: dict[str, ServiceAccount] = {
    key: ServiceAccount(namespace, name) for key, (namespace, name) in addons.IRSA_SUBJECTS.items()
}
"""The platform's add-ons that call AWS, by contract key: the service accounts the platform layer's charts
run them as (one table, so a role cannot trust a service account nobody uses)."""


def model_service_account(model: str, tenant: str) -> ServiceAccount:
    """A model's pods run as a service account named after the model, in their tenant's namespace."""
    return ServiceAccount(tenant, model)


def iam_name(cluster_name: str, workload: str) -> str:
    """A role name that carries the cluster (so the stack and region), kept within IAM's 64 characters."""
    name = f"{cluster_name}-{workload.replace(':', '-')}"
    if len(name) <= IAM_NAME_LIMIT:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{name[: IAM_NAME_LIMIT - 9]}-{digest}"


class IrsaRole(NamedTuple):
    """A role and the policies that must be in place before its workload starts."""

    role: aws.iam.Role
    grants: list[pulumi.Resource]


def irsa_role(
    name: str,
    *,
    role_name: str,
    oidc_provider_arn: pulumi.Input[str],
    oidc_issuer: pulumi.Input[str],
    account: ServiceAccount,
    policy: pulumi.Input[str] | None = None,
    managed_policy_arns: tuple[str, ...] = (),
    tags: dict[str, str],
    opts: pulumi.ResourceOptions,
) -> IrsaRole:
    """A role assumable only by `account` through the cluster's OIDC provider, with an inline policy and/or
    AWS-managed policies."""
    trust = pulumi.Output.all(arn=oidc_provider_arn, issuer=oidc_issuer).apply(
        lambda v: irsa_trust_policy(v["arn"], v["issuer"], account.namespace, account.name)
    )
    role = aws.iam.Role(name, name=role_name, assume_role_policy=trust, tags=tags, opts=opts)
    grants: list[pulumi.Resource] = [
        aws.iam.RolePolicyAttachment(
            f"{name}-{arn.rsplit('/', 1)[1]}", role=role.name, policy_arn=arn, opts=opts
        )
        for arn in managed_policy_arns
    ]
    if policy is not None:
        grants.append(aws.iam.RolePolicy(name, role=role.id, policy=policy, opts=opts))
    return IrsaRole(role, grants)


@dataclass(frozen=True, kw_only=True)
class WorkloadIdentitiesArgs:
    """Inputs of `WorkloadIdentities`."""

    cluster_name: str
    """EKS cluster name: role names carry it, and the autoscaler may resize only its node groups."""
    region: str
    """The cluster's region."""
    oidc_provider_arn: pulumi.Input[str]
    """The cluster's IAM OIDC provider."""
    oidc_issuer: pulumi.Input[str]
    """The cluster's OIDC issuer URL."""
    target_group_arn: pulumi.Input[str]
    """The gateway's NLB target group (the load balancer controller registers the gateway pods in it)."""
    node_security_group_id: pulumi.Input[str]
    """Security group of the nodes (the cluster security group), opened by the controller to the NLB."""
    log_group_arn: pulumi.Input[str]
    """Container log group fluent-bit writes to."""
    model_bucket_arn: pulumi.Input[str]
    """Model bucket; each model reads its own prefix `models/<name>/`."""
    model_key_arn: pulumi.Input[str]
    """KMS key of the model bucket."""
    models: Mapping[str, str] = field(default_factory=dict)
    """Model name -> its tenant's namespace."""
    queue_secret_arn: pulumi.Input[str] | None = None
    """The job queue's AUTH token secret, where the region runs a queue: the secret syncer may read it."""
    queue_key_arn: pulumi.Input[str] | None = None
    """The key that secret is encrypted with (and the callbacks' key and the result bucket's objects)."""
    callback_secret_arn: pulumi.Input[str] | None = None
    """The callbacks' HMAC key secret, where callbacks are on: the secret syncer may read it too."""
    job_bucket_arn: pulumi.Input[str] | None = None
    """The result bucket, where the region runs a queue: each async model reads and writes its prefix."""
    async_models: frozenset[str] = frozenset()
    """The models of `models` that take async requests (their roles get their part of the result bucket)."""
    feature_policies: Mapping[str, pulumi.Input[str]] = field(default_factory=dict)
    """Model name -> its feature-store read policy (`stacks.features.serving_policy`), for the models that
    read features: a second inline policy on the model's role, since its pods have that role only."""
    tags: dict[str, str]
    """Tags."""


class WorkloadIdentities(pulumi.ComponentResource):
    """One IRSA role per platform add-on that calls AWS and per model, keyed as `RegionOutputs.roles`."""

    roles: dict[str, pulumi.Output[str]]

    def __init__(
        self, name: str, args: WorkloadIdentitiesArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("model-serving:identity:WorkloadIdentities", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        identity = aws.get_caller_identity_output(opts=pulumi.InvokeOutputOptions(parent=self))
        policies = self._platform_policies(args, identity.account_id)
        accounts = dict(PLATFORM_SERVICE_ACCOUNTS)
        for model, tenant in args.models.items():
            key = model_role(model)
            accounts[key] = model_service_account(model, tenant)
            policies[key] = _model_policy(args, model)
        if args.queue_secret_arn is not None and args.queue_key_arn is not None:
            accounts[ROLE_EXTERNAL_SECRETS] = ServiceAccount(*addons.EXTERNAL_SECRETS_SUBJECT)
            secrets = [args.queue_secret_arn]
            if args.callback_secret_arn is not None:
                secrets.append(args.callback_secret_arn)
            policies[ROLE_EXTERNAL_SECRETS] = pulumi.Output.all(
                secrets=pulumi.Output.all(*secrets), key=args.queue_key_arn
            ).apply(lambda v: secret_reader_policy(_one_or_list(v["secrets"]), v["key"], args.region))
        unknown = sorted(set(args.feature_policies) - set(args.models))
        if unknown:
            raise ValueError(f"feature policies for models without a role: {unknown}")
        readers = {model_role(model): model for model in args.feature_policies}
        self.roles = {}
        for key, account in accounts.items():
            suffix = key.replace(":", "-")
            created = irsa_role(
                f"{name}-{suffix}",
                role_name=iam_name(args.cluster_name, suffix),
                oidc_provider_arn=args.oidc_provider_arn,
                oidc_issuer=args.oidc_issuer,
                account=account,
                policy=policies[key],
                tags=args.tags,
                opts=child,
            )
            self.roles[key] = created.role.arn
            reader = readers.get(key)
            if reader is not None:
                aws.iam.RolePolicy(
                    f"{name}-{suffix}-features",
                    role=created.role.id,
                    policy=args.feature_policies[reader],
                    opts=child,
                )
        self.register_outputs({"roles": self.roles})

    @staticmethod
    def _platform_policies(
        args: WorkloadIdentitiesArgs, account: pulumi.Output[str]
    ) -> dict[str, pulumi.Output[str]]:
        security_group_arn = pulumi.Output.all(account=account, sg=args.node_security_group_id).apply(
            lambda v: f"arn:aws:ec2:{args.region}:{v['account']}:security-group/{v['sg']}"
        )
        return {
            ROLE_LB_CONTROLLER: pulumi.Output.all(tg=args.target_group_arn, sg=security_group_arn).apply(
                lambda v: lb_controller_policy(v["tg"], v["sg"])
            ),
            ROLE_CLUSTER_AUTOSCALER: pulumi.Output.from_input(cluster_autoscaler_policy(args.cluster_name)),
            ROLE_FLUENT_BIT: pulumi.Output.from_input(args.log_group_arn).apply(log_writer_policy),
            ROLE_OTEL_COLLECTOR: pulumi.Output.from_input(otel_collector_policy()),
        }


def _one_or_list(values: list[str]) -> str | list[str]:
    return values[0] if len(values) == 1 else list(values)


def _model_policy(args: WorkloadIdentitiesArgs, model: str) -> pulumi.Output[str]:
    """Read the model's prefix of the model bucket; an async model also its part of the result bucket
    (`jobs/<model>/`: inputs read, results read and written)."""
    prefix = f"models/{model}/"
    if model not in args.async_models:
        return pulumi.Output.all(bucket=args.model_bucket_arn, key=args.model_key_arn).apply(
            lambda v: model_read_policy(v["bucket"], v["key"], prefix)
        )
    if args.job_bucket_arn is None or args.queue_key_arn is None:
        raise ValueError(f"model {model} takes async requests but the region has no result bucket")
    return pulumi.Output.all(
        bucket=args.model_bucket_arn,
        key=args.model_key_arn,
        jobs=args.job_bucket_arn,
        jobs_key=args.queue_key_arn,
    ).apply(
        lambda v: async_model_policy(
            (v["bucket"], v["key"], prefix), (v["jobs"], v["jobs_key"], f"{job_prefix(model)}/"), args.region
        )
    )


class ModelBucketAccess(NamedTuple):
    """One region's model bucket as the retrain receiver's role sees it."""

    bucket_arn: pulumi.Input[str]
    key_arn: pulumi.Input[str]
    """The bucket's SSE-KMS key."""
    region: str


@dataclass(frozen=True, kw_only=True)
class RetrainIdentityArgs:
    """Inputs of `RetrainIdentity`."""

    cluster_name: str
    """The primary region's EKS cluster, the one that runs the receiver (the role name carries it)."""
    oidc_provider_arn: pulumi.Input[str]
    """That cluster's IAM OIDC provider: the only one the role trusts."""
    oidc_issuer: pulumi.Input[str]
    """That cluster's OIDC issuer URL."""
    buckets: tuple[ModelBucketAccess, ...]
    """Every region's model bucket, the primary's first (the labelled data is read from it)."""
    models: tuple[str, ...]
    """The models it retrains."""
    tags: dict[str, str]
    """Tags."""


class RetrainIdentity(pulumi.ComponentResource):
    """The retrain receiver's IRSA role: trusted by its service account in the primary cluster only, it
    reads the labelled data and publishes new versions to every region's model bucket (a retrain publishes
    version N+1 everywhere, as `servectl publish` does), so it is built once all the regions' stores exist."""

    role_arn: pulumi.Output[str]

    def __init__(
        self, name: str, args: RetrainIdentityArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("model-serving:identity:RetrainIdentity", name, None, opts)
        if not args.buckets or not args.models:
            raise ValueError("the retrain receiver's role needs at least one model bucket and one model")
        regions = tuple(b.region for b in args.buckets)
        policy = pulumi.Output.all(
            arns=pulumi.Output.all(*(b.bucket_arn for b in args.buckets)),
            keys=pulumi.Output.all(*(b.key_arn for b in args.buckets)),
        ).apply(lambda v: retrain_policy(list(zip(v["arns"], v["keys"], regions, strict=True)), args.models))
        created = irsa_role(
            f"{name}-role",
            role_name=iam_name(args.cluster_name, retrain_manifests.NAME),
            oidc_provider_arn=args.oidc_provider_arn,
            oidc_issuer=args.oidc_issuer,
            account=RETRAIN_SERVICE_ACCOUNT,
            policy=policy,
            tags=args.tags,
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.role_arn = created.role.arn
        self.register_outputs({"role_arn": self.role_arn})
