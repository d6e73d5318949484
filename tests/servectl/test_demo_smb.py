"""The demo's SMB phase: the variants come from the real SMB plan, each is served by the real image in
SageMaker mode and answers /ping and /invocations over HTTP, and what the phase makes of failures."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
import pytest

from servectl import demo_smb
from servectl.demo import BUNDLED_MODELS, Phase
from servectl.demo_smb import Variant, serve_variants, served_as_planned, smb_phases, smb_stack, variants


@pytest.fixture(scope="module")
def smb_plan(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any], str]:
    """The SMB stack's plan and cost, as the phase writes them."""
    return demo_smb.plan_smb(smb_stack(), tmp_path_factory.mktemp("smb"))


def test_the_phase_plans_an_smb_stack_and_prices_it(smb_plan: tuple[Path, dict[str, Any], str]) -> None:
    path, document, cost = smb_plan
    assert path.name == f"{smb_stack()}.infra.json" and json.loads(path.read_text()) == document
    types = {s["newState"]["type"] for s in document["steps"]}
    assert "aws:eks/cluster:Cluster" not in types and "aws:apigatewayv2/api:Api" in types, (
        "managed, no cluster"
    )
    assert "total of priced kinds" in cost and (path.parent / "cost.txt").read_text().strip() == cost.strip()
    peer = demo_smb.ENTERPRISE_PEERS[smb_stack()]
    assert f"{smb_stack()} against {peer} at 10,000,000 requests/month" in cost, cost[-600:]
    assert f"{smb_stack()} saves" in cost, "the managed profile is set against its jurisdiction's EKS stack"


def test_variants_are_the_plans_production_variants(smb_plan: tuple[Path, dict[str, Any], str]) -> None:
    found = variants(smb_plan[1])
    assert [v.name for v in found] == [f"v{v.version}" for v in found] and len(found) >= 2, found
    assert all(v.model == "tabular-classifier" for v in found), found


def test_a_variant_without_its_model_is_an_error() -> None:
    config = {"type": demo_smb.CONFIG, "urn": "urn::c", "inputs": {"productionVariants": [
        {"variantName": "v1", "modelName": "gone-v1-1234567", "initialVariantWeight": 100}]}}  # fmt: skip
    with pytest.raises(click.ClickException, match="variant v1: no Model named gone-v1-1234567"):
        variants({"steps": [{"newState": config}]})


def test_each_variant_answers_as_sagemaker_calls_it(tmp_path: Path) -> None:
    found = [Variant("v1", "tabular-classifier", "1", 90), Variant("v2", "tabular-classifier", "2", 10)]
    answers = serve_variants(found, BUNDLED_MODELS, tmp_path)
    for v in found:
        answer = answers[v.name]
        assert (answer["ping"], answer["status"], answer["served_version"]) == (200, 200, v.version), answer
        assert len(answer["labels"]) == 4 and set(answer["labels"]) <= {0, 1}, answer
        log = (tmp_path / f"logs-{v.name}" / "access.log").read_text()
        entries = [json.loads(line) for line in log.splitlines() if '"event":"request"' in line]
        assert [(e["model"], e["version"], e["status"]) for e in entries] == [(v.model, v.version, 200)], (
            f"the one /invocations request is in the server's own access log: {log[-300:]}"
        )
    assert served_as_planned(found, answers)


def test_a_variant_serving_another_version_fails_the_phase() -> None:
    found = [Variant("v1", "m", "1", 90)]
    ok = {"v1": {"ping": 200, "status": 200, "served_version": "1"}}
    assert served_as_planned(found, ok)
    assert not served_as_planned(found, {"v1": {**ok["v1"], "served_version": "2"}})
    assert not served_as_planned(found, {"v1": {**ok["v1"], "status": 500}})
    assert not served_as_planned([], {}), "no variant served is no pass"


def test_a_missing_model_version_is_an_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(click.ClickException, match=r"variant v9: no .*tabular-classifier/9/model.onnx"):
        serve_variants([Variant("v9", "tabular-classifier", "9", 1)], BUNDLED_MODELS, tmp_path)


@pytest.mark.parametrize(("gate_code", "passed"), [(0, True), (1, False)])
def test_a_denied_plan_fails_the_phase(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, gate_code: int, passed: bool
) -> None:
    """The gate is stubbed to deny; what is checked is that the phase records it and does not pass."""
    monkeypatch.setattr(demo_smb, "check_policies", lambda plans, out: (gate_code, {"summary": {}}))
    monkeypatch.setattr(demo_smb, "serve_variants", lambda found, repository, out: {
        v.name: {"ping": 200, "status": 200, "served_version": v.version} for v in found})  # fmt: skip
    phases: list[Phase] = []
    result = smb_phases(BUNDLED_MODELS, tmp_path, phases)
    assert result["passed"] is passed, result
    assert [p.result for p in phases] == ["ok", "PASS" if passed else "FAIL", "PASS"], phases


def test_the_report_has_an_smb_section(tmp_path: Path) -> None:
    from servectl.demo import report_markdown

    smb = {
        "stack": "smb-eu",
        "cost": "smb-eu: estimated USD per month\n  462.21  total of priced kinds",
        "policy": {"allow": False, "findings": 2, "denied": 1, "waived": 1},
        "answers": {"v1": {"ping": 200, "status": 200, "served_version": "1"}},
    }
    text = report_markdown([], "", "", tmp_path, {"smb": smb})
    assert "## SMB profile: smb-eu" in text and "462.21  total of priced kinds" in text, text
    assert "Policy gate on the plan: **FAIL**: 2 findings, 1 denied, 1 waived." in text, text
    assert "- variant v1: /ping 200, /invocations 200 from version 1" in text, text
