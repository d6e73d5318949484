import json

import pulumi
import pytest

from stacks.components.model_store import ModelStore, ModelStoreArgs
from tests.stacks.conftest import TAGS, Built, build_component


@pytest.fixture(scope="module")
def store() -> Built:
    args = ModelStoreArgs(
        bucket_prefix="acme",
        region="eu-central-1",
        inference_log_days=90,
        noncurrent_version_days=30,
        tags=TAGS,
    )
    return build_component(lambda opts: ModelStore("st", args, opts))


def test_buckets_use_sse_kms_with_regional_key(store: Built) -> None:
    configs = store.of_type(
        "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration"
    )
    assert len(configs) == 2, "both buckets need SSE"
    for c in configs:
        rule = c.inputs["rules"][0]["applyServerSideEncryptionByDefault"]
        assert rule["sseAlgorithm"] == "aws:kms", f"{c.name}: {rule}"
        assert rule["kmsMasterKeyId"].startswith("arn:aws:kms:eu-central-1:"), f"{c.name}: key outside region"


def test_versioning_enabled(store: Built) -> None:
    assert len(store.of_type("aws:s3/bucketVersioning:BucketVersioning")) == 2, (
        "one per bucket: models and inference logs"
    )
    for v in store.of_type("aws:s3/bucketVersioning:BucketVersioning"):
        assert v.inputs["versioningConfiguration"]["status"] == "Enabled", f"{v.name} not versioned"


def test_public_access_blocked(store: Built) -> None:
    assert len(store.of_type("aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock")) == 2, (
        "one per bucket: models and inference logs"
    )
    for b in store.of_type("aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock"):
        flags = ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets")
        assert all(b.inputs[f] is True for f in flags), f"{b.name}: {b.inputs}"


def test_bucket_policy_denies_insecure_transport(store: Built) -> None:
    assert len(store.of_type("aws:s3/bucketPolicy:BucketPolicy")) == 2, (
        "one per bucket: models and inference logs"
    )
    for p in store.of_type("aws:s3/bucketPolicy:BucketPolicy"):
        statements = json.loads(p.inputs["policy"])["Statement"]
        deny = [s for s in statements if s["Condition"].get("Bool", {}).get("aws:SecureTransport") == "false"]
        assert deny and deny[0]["Effect"] == "Deny", f"{p.name}: no TLS-only statement"


def test_inference_logs_expire(store: Built) -> None:
    rules = store.one("aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration", "-logs").inputs[
        "rules"
    ]
    assert rules[0]["expiration"]["days"] == 90, f"lifecycle: {rules}"


def test_bucket_names_carry_the_region(store: Built) -> None:
    names = {b.inputs["bucket"] for b in store.of_type("aws:s3/bucket:Bucket")}
    assert names == {"acme-models-eu-central-1", "acme-inference-logs-eu-central-1"}, f"buckets: {names}"


def test_buckets_are_protected_from_destroy() -> None:
    protected: dict[str, bool] = {}

    def record(args: pulumi.ResourceTransformationArgs) -> None:
        if args.type_ == "aws:s3/bucket:Bucket":
            protected[args.name] = bool(args.opts.protect)

    args = ModelStoreArgs(
        bucket_prefix="acme",
        region="eu-central-1",
        inference_log_days=90,
        noncurrent_version_days=30,
        tags=TAGS,
    )
    build_component(
        lambda opts: ModelStore(
            "st", args, pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(transformations=[record]))
        )
    )
    assert protected and all(protected.values()), (
        f"a destroy would delete model artifacts or logs: {protected}"
    )
