import pytest

from stacks.preview.document import DefaultProviderDisabledError, preview_document
from stacks.preview.mocks import UNKNOWN_ID
from stacks.preview.monitor import Registration

STACK_URN = "urn:pulumi:s::p::pulumi:pulumi:Stack::p-s"


def bucket() -> Registration:
    return Registration(
        op="create",
        urn="urn:pulumi:s::p::aws:s3/bucket:Bucket::b",
        type="aws:s3/bucket:Bucket",
        name="b",
        custom=True,
        parent=STACK_URN,
        provider="",
        version="7.0.0",
        inputs={"bucket": "b", "n": 3.0},
        dependencies=(),
    )


def document(config: dict[str, str]) -> dict[str, object]:
    return preview_document(
        [bucket()], stack="s", project="p", config=config, plugin_versions={"aws": "7.0.0"}, duration_ns=1
    )


def test_resource_without_provider_gets_the_default_provider() -> None:
    doc = document({"aws:region": "eu-west-1"})
    steps = doc["steps"]
    assert isinstance(steps, list)
    provider, resource = steps
    assert provider["urn"] == "urn:pulumi:s::p::pulumi:providers:aws::default_7_0_0", provider["urn"]
    assert provider["newState"]["inputs"] == {"region": "eu-west-1", "version": "7.0.0"}, provider["newState"]
    assert resource["provider"] == f"{provider['urn']}::{UNKNOWN_ID}", "provider reference is not urn::id"


def test_disabled_default_providers_refuse_a_resource_without_provider() -> None:
    with pytest.raises(DefaultProviderDisabledError, match="names no provider"):
        document({"aws:region": "eu-west-1", "pulumi:disable-default-providers": '["*"]'})


def test_integral_numbers_print_as_integers() -> None:
    steps = document({"aws:region": "eu-west-1"})["steps"]
    assert isinstance(steps, list)
    assert steps[1]["newState"]["inputs"]["n"] == 3, "protobuf doubles must print as the engine prints them"
