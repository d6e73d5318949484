"""The normalizer's exact error messages, defaults and encoding: what a user reads when a plan is wrong."""

from __future__ import annotations

import json
import locale
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from policies.normalize import (
    PlanError,
    config_jurisdiction,
    from_document,
    from_export,
    load_plan,
    split_urn,
    stack_file_jurisdiction,
)

URN = "urn:pulumi:uae-prod::model-serving::aws:s3/bucket:Bucket::models"
STATE = {"urn": URN, "type": "aws:s3/bucket:Bucket"}


def exactly(message: str) -> str:
    """A `match` pattern for this message and nothing else."""
    return f"^{re.escape(message)}$"


def preview(*steps: Any, **doc: Any) -> dict[str, Any]:
    return {"steps": list(steps), **doc}


def export(*resources: Any) -> dict[str, Any]:
    return {"version": 3, "deployment": {"resources": list(resources)}}


@pytest.mark.parametrize(
    ("doc", "problem"),
    [
        (
            [],
            "it is neither a `pulumi preview --json` document (no `steps`) "
            "nor a `pulumi stack export` document (no `deployment.resources`)",
        ),
        ({"steps": {}}, "`steps` is not a list"),
        ({"steps": []}, "it describes no resources"),
        (preview({"op": "create", "newState": STATE}, "create"), "steps[1] is not an object"),
        (preview({"op": "create", "newState": [STATE]}), "steps[0].newState is a list, not an object"),
        (
            preview({"op": "create", "newState": STATE | {"dependencies": URN}}),
            "steps[0].newState.dependencies is not a list",
        ),
        (preview({"op": "create", "newState": STATE}, config=[]), "`config` is a list, not an object"),
        (
            preview({"op": "create", "newState": STATE | {"urn": "urn:pulumi:uae-prod::model-serving::x"}}),
            "not a Pulumi URN: 'urn:pulumi:uae-prod::model-serving::x'",
        ),
        ({"deployment": {"resources": 5}}, "`deployment.resources` is not a list"),
        (export(STATE, [STATE]), "deployment.resources[1] is not an object"),
        (export(STATE, {"urn": URN}), "deployment.resources[1] has no string `urn` and `type`"),
        (
            export(STATE | {"outputs": ["arn"]}),
            "deployment.resources[0].outputs is a list, not an object",
        ),
    ],
)
def test_bad_documents_say_exactly_what_is_wrong(tmp_path: Path, doc: Any, problem: str) -> None:
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps(doc))
    with pytest.raises(PlanError) as err:
        load_plan(plan)
    assert str(err.value) == f"{plan}: not a Pulumi plan: {problem}", err.value


def test_a_deployment_that_is_not_an_object_is_named() -> None:
    with pytest.raises(ValueError, match=exactly("`deployment` is a list, not an object")):
        from_export({"deployment": ["resources"]})


def test_an_unreadable_file_says_why_in_words(tmp_path: Path) -> None:
    absent = tmp_path / "absent.json"
    with pytest.raises(PlanError) as err:
        load_plan(absent)
    assert str(err.value) == f"{absent}: cannot read it: No such file or directory", err.value


def test_a_resource_without_parent_or_outputs_gets_empty_ones() -> None:
    (resource,) = from_document(preview({"op": "create", "newState": STATE}))["resources"]
    assert resource == {
        "urn": URN,
        "type": "aws:s3/bucket:Bucket",
        "name": "models",
        "provider": "",
        "parent": "",
        "dependencies": [],
        "properties": {},
    }, resource


@pytest.mark.parametrize(
    ("config", "jurisdiction"),
    [
        ({"aws:region": "me-central-1", "model-serving:jurisdiction": "AE"}, "AE"),
        ({"model-serving:jurisdiction": 7, "other:jurisdiction": "EU"}, "EU"),
        ({"aws:region": "me-central-1"}, ""),
    ],
)
def test_config_jurisdiction_is_the_first_jurisdiction_string(
    config: dict[str, Any], jurisdiction: str
) -> None:
    assert config_jurisdiction(config) == jurisdiction, config


def test_a_stack_file_without_jurisdiction_claims_none(tmp_path: Path) -> None:
    (tmp_path / "Pulumi.uae-prod.yaml").write_text("config:\n  aws:region: me-central-1\n")
    assert stack_file_jurisdiction(tmp_path, "uae-prod") == ""


def test_a_urn_with_too_few_parts_is_refused() -> None:
    urn = "urn:pulumi:uae-prod::model-serving::aws:s3/bucket:Bucket"
    with pytest.raises(ValueError, match=exactly(f"not a Pulumi URN: {urn!r}")):
        split_urn(urn)


@pytest.fixture
def ascii_locale() -> Iterator[None]:
    """A process whose locale encoding is ASCII, as on a CI machine with LANG unset."""
    saved = locale.setlocale(locale.LC_CTYPE)
    locale.setlocale(locale.LC_CTYPE, "C")
    try:
        assert locale.getpreferredencoding(False) != "UTF-8", "the C locale should not be UTF-8"
        yield
    finally:
        locale.setlocale(locale.LC_CTYPE, saved)


@pytest.mark.usefixtures("ascii_locale")
def test_plans_and_stack_files_are_read_as_utf8_whatever_the_locale(tmp_path: Path) -> None:
    plan = tmp_path / "plan.json"
    state = STATE | {"inputs": {"tags": {"city": "Zürich"}}}
    plan.write_text(json.dumps(preview({"op": "create", "newState": state}), ensure_ascii=False), "utf-8")
    (tmp_path / "Pulumi.uae-prod.yaml").write_text(
        "# Zürich and Dubai\nconfig:\n  model-serving:jurisdiction: AE\n", "utf-8"
    )
    got = load_plan(plan, tmp_path)
    assert got["resources"][0]["properties"]["tags"] == {"city": "Zürich"}, got["resources"]
    assert got["jurisdiction"] == "AE", "the stack file is read as UTF-8 too"
