"""FeatureStore: one region's online feature store and the identities that touch it (docs/features.md).

A DynamoDB table per feature view, named as Feast names it, under the region's customer-managed key, with
point-in-time recovery and deletion protection; the registry's and the offline data's prefixes in the
region's model bucket, under the same key; a DynamoDB gateway endpoint so pods reach it through the
private route tables; the materialization job's IRSA role. The serving side's read policy is built here too
(one per model, scoped to its views' tables) and attached by `WorkloadIdentities` to the model's own role,
because a pod has one service account and so one role.
"""

import base64
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pulumi
import pulumi_aws as aws

from stacks import features
from stacks.components.identities import ServiceAccount, iam_name, irsa_role
from stacks.manifests.features import NAME as MATERIALIZE_NAME

PolicyBuilder = Callable[[Sequence[str], str, str, str], str]
"""`features.serving_policy` or `features.materialize_policy`: (tables, bucket, key, region) -> document."""


@dataclass(frozen=True, kw_only=True)
class FeatureStoreArgs:
    """Inputs of `FeatureStore`."""

    stack: str
    """The stack: tables are `<stack>.<project>.<view>` (`stacks.features.table_name`)."""
    project: str
    """The Feast project."""
    region: str
    """The region of the tables, the endpoint and the key."""
    cluster_name: str
    """The region's EKS cluster (the materialization role's name carries it)."""
    views: tuple[str, ...]
    """Every feature view some model reads: a table each."""
    model_views: Mapping[str, tuple[str, ...]]
    """Model name -> the views its feature services read (its pods may read those tables only)."""
    key_arn: pulumi.Input[str]
    """The region's customer-managed key (the model store's): tables, registry and offline data."""
    bucket: pulumi.Input[str]
    """The region's model bucket's name: registry at `feast/registry.db`, offline data under `features/`."""
    bucket_arn: pulumi.Input[str]
    """That bucket's ARN (IAM names it)."""
    vpc_id: pulumi.Input[str]
    """The VPC whose private route tables get the DynamoDB gateway endpoint."""
    route_table_ids: list[pulumi.Output[str]]
    """The private route tables (nodes and pods)."""
    oidc_provider_arn: pulumi.Input[str]
    """The cluster's IAM OIDC provider."""
    oidc_issuer: pulumi.Input[str]
    """The cluster's OIDC issuer URL."""
    namespace: str
    """The namespace the materialization CronJob runs in (its service account's)."""
    tags: dict[str, str]
    """Tags."""
    offline_seed: Mapping[str, str] = field(default_factory=lambda: dict(features.BUNDLED_OFFLINE_DATA))
    """View -> a local parquet uploaded as `features/<view>.parquet` (the bundled models' data, which the
    set-up builds); views of the stack without one get their offline data from the user's pipelines."""


class FeatureStore(pulumi.ComponentResource):
    """Tables, the DynamoDB gateway endpoint and the materialization role of one region."""

    table_arns: dict[str, pulumi.Output[str]]
    materialize_role_arn: pulumi.Output[str]
    serving_policies: dict[str, pulumi.Output[str]]

    def __init__(self, name: str, args: FeatureStoreArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        if not args.views:
            raise ValueError("a feature store without feature views would hold nothing")
        unknown = sorted({v for vs in args.model_views.values() for v in vs} - set(args.views))
        if unknown:
            raise ValueError(f"models read feature views without a table: {unknown}")
        super().__init__("model-serving:features:FeatureStore", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.table_arns = {view: self._table(name, args, view, child).arn for view in args.views}
        for suffix, prefix in (("registry", features.REGISTRY_PREFIX), ("offline", features.OFFLINE_PREFIX)):
            # The prefixes as objects of the plan: the policy gate sees where the registry and the offline
            # data live (RES-012), and with which key, before Feast writes anything there.
            aws.s3.BucketObjectv2(
                f"{name}-{suffix}-prefix",
                bucket=args.bucket,
                key=prefix,
                content="",
                server_side_encryption="aws:kms",
                kms_key_id=args.key_arn,
                bucket_key_enabled=True,
                tags=args.tags,
                opts=child,
            )
        for view in (v for v in args.views if v in args.offline_seed):
            self._seed(name, args, view, child)
        aws.ec2.VpcEndpoint(
            f"{name}-dynamodb",
            vpc_id=args.vpc_id,
            service_name=f"com.amazonaws.{args.region}.dynamodb",
            vpc_endpoint_type="Gateway",
            route_table_ids=args.route_table_ids,
            tags=args.tags,
            opts=child,
        )
        self.serving_policies = {
            model: self._policy(args, views, features.serving_policy)
            for model, views in args.model_views.items()
        }
        role = irsa_role(
            f"{name}-materialize",
            role_name=iam_name(args.cluster_name, MATERIALIZE_NAME),
            oidc_provider_arn=args.oidc_provider_arn,
            oidc_issuer=args.oidc_issuer,
            account=ServiceAccount(args.namespace, MATERIALIZE_NAME),
            policy=self._policy(args, args.views, features.materialize_policy),
            tags=args.tags,
            opts=child,
        )
        self.materialize_role_arn = role.role.arn
        self.register_outputs(
            {
                "table_arns": self.table_arns,
                "materialize_role_arn": self.materialize_role_arn,
                "serving_policies": self.serving_policies,
            }
        )

    @staticmethod
    def _table(
        name: str, args: FeatureStoreArgs, view: str, child: pulumi.ResourceOptions
    ) -> aws.dynamodb.Table:
        """The key schema Feast's DynamoDB store creates (`entity_id`, a string hash key, on demand), so
        `feast apply` finds the table and leaves it alone. Protected, and deletion-protected in AWS too:
        the online store is rebuilt only by a full materialization."""
        return aws.dynamodb.Table(
            f"{name}-{view.replace('_', '-')}",
            name=features.table_name(args.stack, args.project, view),
            billing_mode="PAY_PER_REQUEST",
            hash_key=features.TABLE_KEY,
            attributes=[aws.dynamodb.TableAttributeArgs(name=features.TABLE_KEY, type="S")],
            server_side_encryption=aws.dynamodb.TableServerSideEncryptionArgs(
                enabled=True, kms_key_arn=args.key_arn
            ),
            point_in_time_recovery=aws.dynamodb.TablePointInTimeRecoveryArgs(enabled=True),
            deletion_protection_enabled=True,
            tags=args.tags,
            opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(protect=True)),
        )

    @staticmethod
    def _seed(name: str, args: FeatureStoreArgs, view: str, child: pulumi.ResourceOptions) -> None:
        """A view's offline parquet, so the first materialization in a fresh region has rows to read (the
        CronJob's apply points the view's source here). SSE-KMS under the region's key, as the gate checks.
        The bytes go in as base64 content rather than a FileAsset: the plan document the policy gate reads
        is plain JSON, and the bundled file is about 110 KB; a real stack's data never passes through here."""
        path = Path(args.offline_seed[view])
        if not path.is_file():
            raise ValueError(f"{path}: no such file; `make setup` builds the bundled offline data")
        aws.s3.BucketObjectv2(
            f"{name}-{view.replace('_', '-')}-offline",
            bucket=args.bucket,
            key=features.offline_key(view),
            content_base64=base64.b64encode(path.read_bytes()).decode("ascii"),
            server_side_encryption="aws:kms",
            kms_key_id=args.key_arn,
            bucket_key_enabled=True,
            tags=args.tags,
            opts=child,
        )

    def _policy(
        self, args: FeatureStoreArgs, views: tuple[str, ...], build: PolicyBuilder
    ) -> pulumi.Output[str]:
        tables = pulumi.Output.all(*(self.table_arns[v] for v in views))
        return pulumi.Output.all(tables=tables, bucket=args.bucket_arn, key=args.key_arn).apply(
            lambda v: build(list(v["tables"]), v["bucket"], v["key"], args.region)
        )
