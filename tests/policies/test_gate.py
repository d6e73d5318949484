"""The whole gate through a real OPA server: shipped plans pass, crafted bad plans raise exactly their ids."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from policies.normalize import load_plan
from policies.opa import Gate
from tests.policies.conftest import FIXTURES
from tests.policies.fixtures.make_plans import LAYERS, STACKS, bad_plans, good_plan

REPO = Path(__file__).resolve().parents[2]


CRAFTED = [f"{stack}.{layer}" for stack in sorted(STACKS) for layer in LAYERS]
"""Every crafted good plan: `<stack>.<layer>`."""


@pytest.mark.parametrize("plan", CRAFTED)
def test_crafted_stack_plans_pass(gate: Gate, plan: str) -> None:
    result = gate.evaluate(load_plan(FIXTURES / f"{plan}.preview.json"))
    assert result["findings"] == [], f"{plan}: {result['findings']}"
    assert result["summary"]["allow"] is True


@pytest.mark.parametrize(("name", "expected"), [(k, v[1]) for k, v in sorted(bad_plans().items())])
def test_bad_plans_raise_exactly_their_ids(gate: Gate, name: str, expected: list[str]) -> None:
    result = gate.evaluate(load_plan(FIXTURES / f"bad-{name}.preview.json"))
    got = Counter(f["id"] for f in result["findings"])
    assert got == Counter(expected), f"{name}: got {sorted(got.elements())}"
    assert result["summary"]["denied"] == len(expected)


@pytest.mark.parametrize("plan", CRAFTED)
def test_fixtures_are_current(plan: str) -> None:
    """The committed fixtures are what make_plans builds (regenerate with python -m ...make_plans)."""
    import json

    stack, layer = plan.split(".")
    committed = json.loads((FIXTURES / f"{plan}.preview.json").read_text())
    assert committed == good_plan(stack, layer), f"{plan}.preview.json is stale"


def test_stack_export_of_a_bad_plan_is_checked_too(gate: Gate, tmp_path: Path) -> None:
    import json

    preview = json.loads((FIXTURES / "bad-uae-prod-insecure-cluster.preview.json").read_text())
    export = {"version": 3, "deployment": {"resources": [s["newState"] for s in preview["steps"]]}}
    path = tmp_path / "export.json"
    path.write_text(json.dumps(export))
    result = gate.evaluate(load_plan(path))
    assert sorted(f["id"] for f in result["findings"]) == [
        "AUD-001",
        "AUD-003",
        "ENC-003",
        "ENC-004",
        "NET-001",
    ]
