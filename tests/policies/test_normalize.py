"""The normalizer: preview and export documents to one input shape; bad files fail with exit-2 errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from policies.normalize import PlanError, from_document, load_plan, provider_urn, split_urn
from tests.policies.conftest import FIXTURES, load_fixture

PROVIDER = "urn:pulumi:uae-prod::model-serving::pulumi:providers:aws::default_7_0_0"


def export_of(preview: dict[str, Any]) -> dict[str, Any]:
    """The `pulumi stack export` document of the resources a preview creates."""
    resources = []
    for step in preview["steps"]:
        state = dict(step["newState"])
        state["outputs"] = {"arn": f"arn:{state['urn']}"}
        state["id"] = "id-1"
        resources.append(state)
    return {
        "version": 3,
        "deployment": {"manifest": {"time": "2026-01-01T00:00:00Z"}, "resources": resources},
    }


def test_preview_normalizes_every_created_resource() -> None:
    doc = load_fixture("uae-prod.infra.preview.json")
    got = from_document(doc)
    assert got["stack"] == "uae-prod", got["stack"]
    assert got["project"] == "model-serving"
    assert got["jurisdiction"] == "AE", "the jurisdiction comes from the preview's config"
    assert len(got["resources"]) == len(doc["steps"])
    bucket = next(r for r in got["resources"] if r["type"] == "aws:s3/bucket:Bucket")
    assert bucket["provider"] == PROVIDER, "the provider reference loses its ::id"
    assert bucket["name"] == "models-me-central-1"
    assert bucket["properties"]["bucket"] == "models-me-central-1"


def test_export_normalizes_to_the_same_shape() -> None:
    preview = load_fixture("uae-prod.infra.preview.json")
    from_preview = from_document(preview)
    from_export = from_document(export_of(preview))
    assert from_export["source"] == "export"
    assert [r["urn"] for r in from_export["resources"]] == [r["urn"] for r in from_preview["resources"]]
    assert from_export["resources"][5]["properties"]["arn"].startswith("arn:urn:"), "outputs are merged in"
    assert from_export["resources"][5]["id"] == "id-1", "an export's ids come along for the rules' joins"
    assert "id" not in from_preview["resources"][5], "a preview of new resources knows no ids"
    assert from_export["jurisdiction"] == "", "exports carry no config; the rules map the stack name"


def test_deleted_resources_are_left_out() -> None:
    doc = load_fixture("uae-prod.infra.preview.json")
    doc["steps"][3]["op"] = "delete"
    got = from_document(doc)
    assert doc["steps"][3]["urn"] not in {r["urn"] for r in got["resources"]}


def test_stack_file_supplies_jurisdiction(tmp_path: Path) -> None:
    doc = load_fixture("uae-prod.infra.preview.json")
    del doc["config"]
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps(doc))
    (tmp_path / "Pulumi.uae-prod.yaml").write_text("config:\n  model-serving:jurisdiction: AE\n")
    assert load_plan(plan, tmp_path)["jurisdiction"] == "AE"
    assert load_plan(plan, tmp_path / "elsewhere")["jurisdiction"] == ""


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("{", "not JSON: Expecting property name"),
        ("[]", "neither a `pulumi preview --json` document"),
        ('{"steps": {}}', "`steps` is not a list"),
        ('{"steps": []}', "it describes no resources"),
        (
            '{"steps": [{"op": "create", "newState": {"type": "aws:s3/bucket:Bucket"}}]}',
            "has no string `urn` and `type`",
        ),
        ('{"steps": [{"op": "create", "newState": {"urn": "x", "type": "t"}}]}', "not a Pulumi URN: 'x'"),
        ('{"version": 3, "deployment": {"resources": 5}}', "`deployment.resources` is not a list"),
        (
            '{"steps": [{"op": "create", "newState": '
            '{"urn": "urn:pulumi:a::p::t::n", "type": "t", "inputs": []}}]}',
            "steps[0].newState.inputs is a list, not an object",
        ),
    ],
)
def test_bad_documents_name_file_and_problem(tmp_path: Path, content: str, problem: str) -> None:
    plan = tmp_path / "plan.json"
    plan.write_text(content)
    with pytest.raises(PlanError) as err:
        load_plan(plan)
    assert str(err.value).startswith(f"{plan}: "), err.value
    assert problem in str(err.value), err.value


def test_missing_file_is_a_plan_error(tmp_path: Path) -> None:
    with pytest.raises(PlanError, match="cannot read it"):
        load_plan(tmp_path / "absent.json")


def test_two_stacks_in_one_document_are_refused() -> None:
    doc = load_fixture("uae-prod.infra.preview.json")
    doc["steps"][2]["newState"]["urn"] = doc["steps"][2]["urn"].replace("uae-prod", "eu-prod")
    with pytest.raises(ValueError, match="belong to 2 stacks"):
        from_document(doc)


def test_urn_helpers() -> None:
    assert split_urn("urn:pulumi:s::p::a:b:C$d:e:F::n::x") == ("s", "p", "n::x")
    assert provider_urn(f"{PROVIDER}::0000") == PROVIDER
    assert provider_urn(PROVIDER) == PROVIDER
    assert provider_urn("") == ""
    assert FIXTURES.is_dir()
