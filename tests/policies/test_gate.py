"""The whole gate through a real OPA server: shipped plans pass, crafted bad plans raise exactly their ids."""

from __future__ import annotations

import re
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


POLICIES = REPO / "policies"


def rule_packages() -> set[str]:
    """Every Rego package under policies/ that defines `deny` (test packages aside)."""
    found = set()
    for path in POLICIES.glob("*/*.rego"):
        text = path.read_text()
        package = re.search(r"^package (\S+)$", text, re.MULTILINE)
        if not path.name.endswith("_test.rego") and re.search(r"^deny contains ", text, re.MULTILINE):
            assert package, f"{path} has no package line"
            found.add(package[1])
    return found


def gate_collects() -> set[str]:
    """The packages whose `deny` the gate's `raw` collects, imports resolved."""
    text = (POLICIES / "gate" / "report.rego").read_text()
    imports = {m.rpartition(".")[2]: m for m in re.findall(r"^import data\.(\S+)$", text, re.MULTILINE)}
    refs = re.findall(r"^raw contains f if some f in (?:data\.)?([\w.]+)\.deny$", text, re.MULTILINE)
    return {imports.get(ref, ref) for ref in refs}


def test_gate_collects_every_rule_package_and_its_tests_cover_each() -> None:
    packages = rule_packages()
    assert len(packages) == 13, sorted(packages)
    assert gate_collects() == packages, f"the gate misses {sorted(packages - gate_collects())}"
    tests = (POLICIES / "gate" / "report_test.rego").read_text()
    mocked = r"^test_findings_from_\w+ if \{\n.*with data\.([\w.]+)\.deny as"
    per_package = set(re.findall(mocked, tests, re.MULTILINE))
    assert per_package == packages, f"gate/report_test.rego has no test of {packages - per_package}"
