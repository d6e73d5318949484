"""The whole program, per shipped stack, through the offline plan."""

from typing import Any

import pytest

from stacks.jurisdictions import JURISDICTION_REGIONS
from stacks.preview.run import Plan
from tests.stacks.schemas import validate

STACKS = ["uae-prod", "eu-prod", "us-prod", "smb-dev"]
JURISDICTION = {"uae-prod": "AE", "eu-prod": "EU", "us-prod": "US", "smb-dev": "EU"}
GLOBAL_TYPES = ("aws:route53/", "aws:iam/")


def _region_of(plan: Plan, step: dict[str, Any], providers: dict[str, dict[str, Any]]) -> str | None:
    ref = step.get("provider", "")
    region = providers.get(ref.rsplit("::", 1)[0], {}).get("inputs", {}).get("region")
    return str(region) if region is not None else None


@pytest.mark.parametrize("stack", STACKS)
def test_every_aws_resource_resolves_to_a_region_of_the_jurisdiction(
    plans: dict[str, Plan], stack: str
) -> None:
    steps = plans[stack].document["steps"]
    providers = {s["urn"]: s["newState"] for s in steps if s["newState"]["type"] == "pulumi:providers:aws"}
    allowed = JURISDICTION_REGIONS[JURISDICTION[stack]]
    for step in steps:
        if not step["newState"]["type"].startswith("aws:"):
            continue
        region = _region_of(plans[stack], step, providers)
        assert region in allowed, (
            f"{stack}: {step['urn']} resolves to region {region!r}, outside {sorted(allowed)}"
        )


@pytest.mark.parametrize("stack", STACKS)
def test_every_custom_resource_names_an_explicit_provider(plans: dict[str, Plan], stack: str) -> None:
    steps = plans[stack].document["steps"]
    urns = {s["urn"] for s in steps}
    for step in steps:
        state = step["newState"]
        if state["custom"] and not state["type"].startswith("pulumi:providers:"):
            ref = step.get("provider", "")
            assert ref.rsplit("::", 1)[0] in urns, (
                f"{stack}: {step['urn']} has provider {ref!r} not in the plan"
            )


@pytest.mark.parametrize("stack", STACKS)
def test_every_kubernetes_object_validates(plans: dict[str, Plan], stack: str) -> None:
    for step in plans[stack].document["steps"]:
        state = step["newState"]
        if not state["type"].startswith("kubernetes:") or "helm.sh" in state["type"] or step["op"] == "read":
            continue
        try:
            validate(state["inputs"])
        except Exception as exc:
            pytest.fail(f"{stack}: {state['urn']} does not validate: {str(exc)[:400]}")


@pytest.mark.parametrize("stack", STACKS)
def test_document_has_preview_shape(plans: dict[str, Plan], stack: str) -> None:
    doc = plans[stack].document
    assert set(doc) >= {"steps", "changeSummary", "config"}, f"top-level keys: {set(doc)}"
    first = doc["steps"][0]["newState"]
    assert first["type"] == "pulumi:pulumi:Stack", f"{stack}: the stack resource comes first"
    for step in doc["steps"]:
        assert set(step["newState"]) >= {"urn", "type", "custom"}, step["urn"]
        assert step["op"] in {"create", "read"}, step["op"]


def test_smb_has_one_region_and_one_nat(plans: dict[str, Plan]) -> None:
    types = [s["newState"]["type"] for s in plans["smb-dev"].document["steps"]]
    assert types.count("aws:ec2/natGateway:NatGateway") == 1, "SMB runs one NAT"
    assert types.count("aws:eks/cluster:Cluster") == 1, "SMB runs one region"


def test_eu_prod_spans_two_eu_regions(plans: dict[str, Plan]) -> None:
    regions = {
        s["newState"]["inputs"]["region"]
        for s in plans["eu-prod"].document["steps"]
        if s["newState"]["type"] == "pulumi:providers:aws"
    }
    assert regions == {"eu-central-1", "eu-west-1"}, f"providers: {regions}"
