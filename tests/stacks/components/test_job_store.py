"""JobStore: the result bucket of asynchronous inference, private, encrypted with the region's async key,
and emptied by expiry."""

import json
from typing import Any

import pytest

from stacks.components.job_store import JobStore, JobStoreArgs, bucket_name
from stacks.preview.mocks import ACCOUNT_ID
from stacks.settings import JobQueueConfig
from tests.stacks.conftest import TAGS, Built, build_component

KEY = f"arn:aws:kms:eu-central-1:{ACCOUNT_ID}:key/0000abcd-12ab-34cd-56ef-1234567890ab"
SSE = "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration"
LIFECYCLE = "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration"


def store_args(**overrides: Any) -> JobStoreArgs:
    values: dict[str, Any] = {
        "bucket_prefix": "acme-eu-serving",
        "region": "eu-central-1",
        "key_arn": KEY,
        "models": ("ticket-router", "tabular-classifier"),
        "result_days": 1,
        "input_retention_days": 7,
        "tags": TAGS,
    } | overrides
    return JobStoreArgs(**values)


@pytest.fixture(scope="module")
def store() -> Built:
    return build_component(lambda opts: JobStore("jobs", store_args(), opts))


def test_the_bucket_is_named_after_the_stores_prefix_and_region(store: Built) -> None:
    bucket = store.one("aws:s3/bucket:Bucket")
    assert bucket.inputs["bucket"] == "acme-eu-serving-async-eu-central-1", bucket.inputs
    assert bucket_name("acme-eu-serving", "eu-central-1") == bucket.inputs["bucket"]
    assert not bucket.inputs.get("forceDestroy"), "a destroy must not silently empty the bucket"


def test_objects_are_encrypted_with_the_regions_async_key(store: Built) -> None:
    (rule,) = store.one(SSE).inputs["rules"]
    default = rule["applyServerSideEncryptionByDefault"]
    assert default == {"sseAlgorithm": "aws:kms", "kmsMasterKeyId": KEY}, default
    assert rule["bucketKeyEnabled"] is True, rule


def test_public_access_is_blocked_by_all_four_settings(store: Built) -> None:
    block = store.one("aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock").inputs
    settings = ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets")
    assert {s: block.get(s) for s in settings} == dict.fromkeys(settings, True), block


def test_the_bucket_policy_refuses_plain_http_and_old_tls(store: Built) -> None:
    policy = store.one("aws:s3/bucketPolicy:BucketPolicy")
    statements = json.loads(policy.inputs["policy"])["Statement"]
    conditions = [s["Condition"] for s in statements if s["Effect"] == "Deny" and s["Principal"] == "*"]
    assert {"Bool": {"aws:SecureTransport": "false"}} in conditions, conditions
    assert {"NumericLessThan": {"s3:TlsVersion": "1.2"}} in conditions, conditions
    block = store.one("aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock")
    assert block.urn in policy.dependencies, "S3 aborts a policy change racing the public access block"


def test_the_bucket_owns_every_object_and_keeps_no_versions(store: Built) -> None:
    ownership = store.one("aws:s3/bucketOwnershipControls:BucketOwnershipControls").inputs
    assert ownership["rule"] == {"objectOwnership": "BucketOwnerEnforced"}, ownership
    assert store.of_type("aws:s3/bucketVersioning:BucketVersioning") == [], (
        "versioning would keep every expired input and result as a noncurrent version"
    )


def test_inputs_and_results_expire_per_model_after_their_days(store: Built) -> None:
    rules = {r["id"]: r for r in store.one(LIFECYCLE).inputs["rules"]}
    expiring = {(r["filter"]["prefix"], r["expiration"]["days"]) for r in rules.values() if "expiration" in r}
    assert expiring == {
        ("jobs/ticket-router/results/", 1),
        ("jobs/ticket-router/inputs/", 7),
        ("jobs/tabular-classifier/results/", 1),
        ("jobs/tabular-classifier/inputs/", 7),
    }, expiring
    assert all(r["status"] == "Enabled" for r in rules.values()), rules
    abort = rules["abort-incomplete-uploads"]
    assert abort["abortIncompleteMultipartUpload"] == {"daysAfterInitiation": 1}, abort


def test_a_bucket_without_async_models_is_refused() -> None:
    with pytest.raises(ValueError, match="without async models"):
        JobStore("jobs", store_args(models=()))


@pytest.mark.parametrize(("ttl", "days"), [(1, 1), (86_400, 1), (86_401, 2), (3 * 86_400, 3)])
def test_results_are_kept_the_ttl_rounded_up_to_whole_days(
    monkeypatch: pytest.MonkeyPatch, ttl: int, days: int
) -> None:
    monkeypatch.setattr("stacks.settings.ASYNC_RESULT_TTL_SECONDS", ttl)
    config = JobQueueConfig(
        node_type="cache.r7g.large",
        engine_version="7.1",
        replicas=1,
        snapshot_retention_days=0,
        input_retention_days=1,
    )
    assert config.result_days == days, f"TTL {ttl} s kept {config.result_days} days"
