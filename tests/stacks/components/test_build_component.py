"""The component harness refuses a resource that escaped its component's regional provider."""

import pulumi
import pulumi_aws as aws
import pytest

from tests.stacks.conftest import build_component


def test_a_resource_on_the_default_provider_fails_the_build() -> None:
    def make(opts: pulumi.ResourceOptions) -> None:
        aws.s3.BucketV2("kept", opts=opts)
        aws.s3.BucketV2("escaped")

    with pytest.raises(AssertionError, match=r"default provider.*BucketV2::escaped") as raised:
        build_component(make)
    assert "::kept" not in str(raised.value), "the resource on the component's provider was reported"


def test_every_resource_on_the_components_provider_is_in_its_region() -> None:
    def make(opts: pulumi.ResourceOptions) -> None:
        parent = pulumi.ComponentResource("test:index:Group", "group", None, opts)
        aws.s3.BucketV2("child", opts=pulumi.ResourceOptions(parent=parent))

    built = build_component(make, region="me-central-1")
    buckets = built.of_type("aws:s3/bucketV2:BucketV2")
    assert len(buckets) == 1, buckets
    assert built.regions[buckets[0].urn] == "me-central-1", "the child did not inherit its parent's provider"
