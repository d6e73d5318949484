"""stacks/contract.py's reader of the model buckets: both shapes of the `regions` output, and each refusal."""

from dataclasses import fields
from typing import Any

import pytest

from stacks.contract import ModelBucketOutputs, RegionOutputs, model_bucket_export, model_buckets, to_export

KEY = "arn:aws:kms:eu-west-1:567890123456:key/0b3c"


def cluster_region(region: str, bucket: str) -> dict[str, Any]:
    values: dict[str, Any] = {f.name: f"x-{f.name}" for f in fields(RegionOutputs)}
    return to_export(RegionOutputs(**(values | {"region": region, "model_bucket": bucket, "roles": {}})))


def test_a_cluster_stacks_regions_give_their_buckets_without_a_key() -> None:
    raw = {"eu-central-1": cluster_region("eu-central-1", "a"), "eu-west-1": cluster_region("eu-west-1", "b")}
    assert model_buckets(raw) == {
        "eu-central-1": ModelBucketOutputs(region="eu-central-1", model_bucket="a"),
        "eu-west-1": ModelBucketOutputs(region="eu-west-1", model_bucket="b"),
    }


def test_an_smb_stacks_regions_give_bucket_and_key() -> None:
    raw = {"eu-west-1": model_bucket_export(region="eu-west-1", model_bucket="m", model_key_arn=KEY)}
    assert model_buckets(raw) == {
        "eu-west-1": ModelBucketOutputs(region="eu-west-1", model_bucket="m", model_key_arn=KEY)
    }


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ([], "must map regions to their outputs, got list"),
        ({}, "got an empty mapping"),
        ({"eu-west-1": {"region": "eu-west-1"}}, "regions.eu-west-1 lacks modelBucket"),
        ({"eu-west-1": {"modelBucket": ""}}, "regions.eu-west-1 lacks modelBucket"),
        ({"eu-west-1": {"region": "us-east-1", "modelBucket": "m"}}, "region 'us-east-1' under the key"),
        (
            {"eu-west-1": {"modelBucket": "m", "modelKeyArn": KEY.replace("eu-west-1", "us-east-1")}},
            "is not a KMS key of eu-west-1",
        ),
    ],
    ids=["list", "empty", "no-bucket", "blank-bucket", "other-region", "foreign-key"],
)
def test_refusals_name_the_entry_and_the_reason(raw: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        model_buckets(raw)
