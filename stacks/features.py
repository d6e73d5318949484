"""The feature store in the stacks, as pure functions: table names, the in-cluster `feature_store.yaml`
and the IAM documents of the two roles that touch it (docs/features.md, "In the stacks").

Online store: DynamoDB, one table per feature view, named as Feast's DynamoDB online store names it
(its `table_name_template`: Feast's default `{project}.{view}` after the stack's name, so two stacks in one
account and region never share a table), created by the infra layer rather than by
`feast apply` so that encryption, point-in-time recovery and deletion protection are the stack's. Registry:
Feast's S3 registry in the region's model bucket. Offline store: Feast's file store over parquet under the
model bucket's `features/` prefix. No Pulumi here, so tests check every document without an engine.
"""

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

REGISTRY_PREFIX = "feast/"
"""The registry's prefix in the model bucket."""
REGISTRY_KEY = f"{REGISTRY_PREFIX}registry.db"
REGISTRY_STORE = "serving_image.features.registry_store.ObjectOnlyS3RegistryStore"
"""Feast's S3 registry store without its HeadBucket (serving_image/features/registry_store.py)."""
"""The registry object in the model bucket."""
OFFLINE_PREFIX = "features/"
"""Where the offline store's parquet files sit in the model bucket."""
BUNDLED_OFFLINE_DATA = {
    "tumour_measurements": str(
        Path(__file__).resolve().parents[1] / "serving_image/feature_repo/data/tumour_measurements.parquet"
    )
}
"""View -> the parquet the set-up builds for the bundled models (`make setup`; a file, not an import: stacks
and serving_image meet through files). Infra uploads it to `features/<view>.parquet` so a fresh region has
the offline data its first materialization reads; a real stack's data comes from the user's pipelines."""
TABLE_KEY = "entity_id"
"""The hash key Feast's DynamoDB online store reads and writes (a string: the serialized entity key)."""
FEAST_TABLE_NAME_TEMPLATE = "{project}.{table_name}"
"""Feast's default `table_name_template` for DynamoDB (tests check it against the installed Feast)."""
SERVING_READ_ACTIONS = ("dynamodb:GetItem", "dynamodb:BatchGetItem")
"""What a serving pod does to the online store: Feast's `online_read` is BatchGetItem."""
MATERIALIZE_ACTIONS = ("dynamodb:BatchWriteItem", "dynamodb:DescribeTable")
"""What materialization does: Feast's `online_write_batch` (a batch writer) and `feast apply`'s check that a
table exists before it would create one (it never creates a table that exists)."""


def table_name_template(stack: str) -> str:
    """The in-cluster `table_name_template`: the stack, then Feast's default. Written into the config
    explicitly, so a change of Feast's default cannot move the tables away from the ones infra created."""
    return f"{stack}.{FEAST_TABLE_NAME_TEMPLATE}"


def table_name(stack: str, project: str, view: str) -> str:
    """The DynamoDB table of a feature view, as Feast's `_get_table_name` builds it from the template
    (unversioned views: the config leaves online feature view versioning off)."""
    return table_name_template(stack).format(project=project, table_name=view)


def table_arn(region: str, account: str, stack: str, project: str, view: str) -> str:
    """The ARN of a view's table in a region (IAM needs ARNs; the names are known before the tables exist)."""
    return f"arn:aws:dynamodb:{region}:{account}:table/{table_name(stack, project, view)}"


def registry_url(bucket: str) -> str:
    """The S3 registry's path in the model bucket."""
    return f"s3://{bucket}/{REGISTRY_KEY}"


def offline_url(bucket: str) -> str:
    """The offline store's root in the model bucket (the feature views' file sources sit below it)."""
    return f"s3://{bucket}/{OFFLINE_PREFIX}"


def offline_key(view: str) -> str:
    """A view's parquet in the model bucket: what the file source says once applied with `offline_url`
    as the offline root (the repository's `data/<view>.parquet` moved under `features/`)."""
    return f"{OFFLINE_PREFIX}{view}.parquet"


def feature_store_config(stack: str, project: str, region: str, bucket: str) -> dict[str, Any]:
    """The in-cluster `feature_store.yaml`: DynamoDB in the cluster's region, the S3 registry and the file
    offline store, all in the region's model bucket. The registry is cached for a minute: serving reads it
    to resolve a feature service, and every read is an S3 GET. It is read by
    `serving_image.features.registry_store.ObjectOnlyS3RegistryStore`: Feast's own store asks HeadBucket
    first, which AWS authorizes as `s3:ListBucket` on the whole model bucket, which neither role holds."""
    return {
        "project": project,
        "provider": "aws",
        "registry": {
            "registry_type": "file",
            "registry_store_type": REGISTRY_STORE,
            "path": registry_url(bucket),
            "cache_ttl_seconds": 60,
        },
        "online_store": {
            "type": "dynamodb",
            "region": region,
            "table_name_template": table_name_template(stack),
            "consistent_reads": False,
        },
        "offline_store": {"type": "file"},
        "entity_key_serialization_version": 3,
    }


def feature_store_yaml(stack: str, project: str, region: str, bucket: str) -> str:
    """`feature_store_config` as the file Feast reads."""
    return yaml.safe_dump(feature_store_config(stack, project, region, bucket), sort_keys=False)


def _doc(*statements: dict[str, Any]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def _key_via(key_arn: str, actions: list[str], services: Sequence[str]) -> dict[str, Any]:
    """The key, only when a named service (S3 or DynamoDB in the region) uses it on the role's behalf."""
    return {
        "Sid": "KeyThroughServices",
        "Effect": "Allow",
        "Action": actions,
        "Resource": key_arn,
        "Condition": {"StringEquals": {"kms:ViaService": list(services)}},
    }


def _services(region: str) -> list[str]:
    return [f"s3.{region}.amazonaws.com", f"dynamodb.{region}.amazonaws.com"]


def serving_policy(table_arns: Sequence[str], bucket_arn: str, key_arn: str, region: str) -> str:
    """A model's pods: read items of its views' tables and the registry object, nothing else of either."""
    if not table_arns:
        raise ValueError("a feature reader needs at least one table")
    return _doc(
        {
            "Sid": "ReadFeatures",
            "Effect": "Allow",
            "Action": list(SERVING_READ_ACTIONS),
            "Resource": list(table_arns),
        },
        {
            "Sid": "ReadRegistry",
            "Effect": "Allow",
            "Action": "s3:GetObject",
            "Resource": f"{bucket_arn}/{REGISTRY_KEY}",
        },
        _key_via(key_arn, ["kms:Decrypt"], _services(region)),
    )


def materialize_policy(table_arns: Sequence[str], bucket_arn: str, key_arn: str, region: str) -> str:
    """The materialization job: write items of the views' tables, read the offline data under `features/`,
    read and write the registry (Feast records each materialized interval in it)."""
    if not table_arns:
        raise ValueError("materialization needs at least one table")
    return _doc(
        {
            "Sid": "WriteFeatures",
            "Effect": "Allow",
            "Action": list(MATERIALIZE_ACTIONS),
            "Resource": list(table_arns),
        },
        {
            "Sid": "ReadOfflineData",
            "Effect": "Allow",
            "Action": "s3:GetObject",
            "Resource": f"{bucket_arn}/{OFFLINE_PREFIX}*",
        },
        {
            "Sid": "ListOfflineData",
            "Effect": "Allow",
            "Action": "s3:ListBucket",
            "Resource": bucket_arn,
            "Condition": {"StringLike": {"s3:prefix": [f"{OFFLINE_PREFIX}*", REGISTRY_KEY]}},
        },
        {
            "Sid": "ReadWriteRegistry",
            "Effect": "Allow",
            "Action": ["s3:GetObject", "s3:PutObject"],
            "Resource": f"{bucket_arn}/{REGISTRY_KEY}",
        },
        _key_via(key_arn, ["kms:Decrypt", "kms:GenerateDataKey"], _services(region)),
    )
