"""`servectl demo` end to end: plans, policy gate, serving, load test with gates, one report, all stopped."""

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from servectl import demo as demo_module
from servectl.cli import cli
from servectl.cluster.state import Layout, read_state
from servectl.demo import Phase, report_markdown


@pytest.mark.slow
def test_demo_runs_every_phase_and_reports(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["demo", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "server stopped with exit code 0" in result.output
    for title in ("plan every stack", "policy gate", "serve the bundled models", "load test `smoke`"):
        assert f"==> {title}" in result.output, f"phase {title!r} missing"
    summary = json.loads((tmp_path / "summary.json").read_text())
    results = [p["result"] for p in summary["phases"]]
    assert results[:4] == ["ok", "PASS", "ok", "PASS"] and results[5] == "ok", summary["phases"]
    assert results[4] in {"PROMOTE", "HOLD", "COMPLETE"}, (
        f"a healthy v2 is never rolled back: {summary['serving']['experiment']['reasons']}"
    )
    assert results[6] in {"PROMOTE", "HOLD", "ROLLBACK"}, f"the drift loop completes: {summary['phases']}"
    loop = summary["serving"]["drift_loop"]
    assert set(loop["timings"]) == {"shift_to_alert", "alert_to_receiver", "retrain", "alert_to_canary"}, loop
    assert (tmp_path / "drift" / "loop.json").exists(), "the drift loop's files are in the report"
    assert summary["serving"]["experiment"]["reasons"], "a decision comes with its reasons"
    assert (tmp_path / "experiment" / "experiment.jsonl").exists(), "the experiment log is in the report"
    assert summary["policy"]["allow"] is True, summary["policy"]
    split = summary["serving"]["variant_split"]
    assert sum(split.values()) == 200 and split.get("1", 0) > split.get("2", 0), split
    assert "dimension 1 is 3" in summary["serving"]["bad_request_error"]
    plans = sorted(p.name for p in (tmp_path / "plans").glob("*.json"))
    assert len(plans) == 9 and "onprem-ae.platform.json" in plans, f"a plan per layer of every stack: {plans}"
    assert (tmp_path / "policy" / "findings.json").exists(), "the policy findings"
    for chart in ("latency.png", "throughput.png"):
        assert (tmp_path / "loadtest" / chart).stat().st_size > 0, f"{chart} missing"
    readme = (tmp_path / "README.md").read_text()
    assert "## Variant split observed" in readme and "](loadtest/latency.png)" in readme, readme
    assert f"demo report: {(tmp_path / 'README.md').resolve()}" in result.output.replace("\n", "")
    _check_the_real_engine_phase(summary["serving"]["cluster"], tmp_path / "cluster", readme)


def _check_the_real_engine_phase(deployed: dict[str, object], out: Path, readme: str) -> None:
    """The real-engine phase, as the demo ran it: onprem-ae deployed with the stack file's weights, its
    objects read back, destroyed with nothing left, the control plane stopped and its state gone."""
    assert deployed.get("passed") is True, deployed
    assert deployed["routes"] == {"banking/tabular-classifier": {"v1": 90, "v2": 10}}, deployed
    objects = deployed["objects"]
    assert isinstance(objects, dict) and objects["Deployment"] >= 4 and objects["PrometheusRule"] == 2, (
        objects
    )
    assert objects["AuthorizationPolicy"] >= 5 and deployed["left"] == [] and deployed["destroy_code"] == 0
    assert read_state(Layout(out / "cluster")) is None, "the control plane is stopped and its state gone"
    assert "deployed onprem-ae's add-ons" in (out / "deploy-addons.log").read_text(), "the admin's run"
    assert "deployed onprem-ae's platform layer" in (out / "deploy.log").read_text(), "the deployer's run"
    assert "--destroy --addons" in (out / "deploy-destroy.log").read_text(), "the deployer left the add-ons"
    assert "| banking/tabular-classifier | v1 90%, v2 10% |" in readme, readme


def test_report_front_page_lists_phases_and_totals(tmp_path: Path) -> None:
    phases = [Phase("plan", 1.0, "ok"), Phase("load", 2.0, "FAIL")]
    text = report_markdown(
        phases, "s: 3 steps, 2 resources\n     2  r  t", "Policy gate: **PASS**\n", tmp_path, {}
    )
    assert "| load | FAIL | 2.0 |" in text and "s: 3 steps, 2 resources" in text, text
    assert "     2  r  t" not in text, "details stay in plans/summary.txt"


PLAN_PHASE = "plan every stack offline (Pulumi under mocks)"
POLICY_PHASE = "policy gate on the plans (real OPA server)"


DEPLOYED = {"stack": "onprem-ae", "passed": True, "deploy_code": 0, "deploy_seconds": 1.0,
            "destroy_seconds": 1.0, "routes": {}, "objects": {}, "left": []}  # fmt: skip
"""What the real-engine phase returns when it deploys and destroys cleanly."""


@pytest.mark.parametrize(
    ("policy_code", "load_code", "expected", "verdict"),
    [
        (0, 0, 0, "PASS"),
        (1, 0, 1, "FAIL"),
        (0, 1, 1, "PASS"),
        (2, 0, 1, "error"),  # the gate did not report at all
        (0, 3, 1, "PASS"),
    ],
)
def test_demo_exits_1_when_any_gate_fails(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    policy_code: int,
    load_code: int,
    expected: int,
    verdict: str,
) -> None:
    """The phases are stubbed; what is checked is what the demo makes of their exit codes."""

    def serve_and_load(*args: object) -> tuple[dict[str, object], int]:
        return {}, load_code

    # As check_policies answers: the findings document, or nothing when the gate did not report.
    summary = {"allow": policy_code == 0, "findings": 0, "denied": policy_code, "waived": 0, "plans": []}
    findings = {} if policy_code == 2 else {"summary": summary}
    monkeypatch.setattr(demo_module, "plan_stacks", lambda out: "s: 1 steps, 1 resources")
    monkeypatch.setattr(demo_module, "check_policies", lambda plans, out: (policy_code, findings))
    monkeypatch.setattr(demo_module, "serve_and_load", serve_and_load)
    monkeypatch.setattr(demo_module, "drift_loop_phase", lambda out, phases: {})
    monkeypatch.setattr(demo_module, "smb_phase", lambda repository, out, phases: {})
    monkeypatch.setattr(demo_module, "cluster_phase", lambda out, phases: DEPLOYED)
    result = CliRunner().invoke(cli, ["demo", "--out", str(tmp_path)])
    assert result.exit_code == expected, result.output
    written = json.loads((tmp_path / "summary.json").read_text())
    assert written["exit_code"] == expected, written
    phases = [(phase["title"], phase["result"]) for phase in written["phases"]]
    assert phases == [(PLAN_PHASE, "ok"), (POLICY_PHASE, verdict)], "the phases the demo ran itself"
    if policy_code == 2:
        assert written["policy"] == {"error": "exit 2"}, "a gate that did not report is recorded as such"
    readme = (tmp_path / "README.md").read_text()
    assert f"| {POLICY_PHASE} | {verdict} |" in readme, f"the report is written either way: {readme}"
    closing = rf"^  {verdict} +[0-9.]+ s  {re.escape(POLICY_PHASE)}$"
    assert re.search(closing, result.output, re.MULTILINE), f"the closing summary: {result.output}"


def test_serve_help_is_the_servers_own(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["serve", "--help"])
    assert result.exit_code == 0
    assert "--model-repository" in result.output and "--grpc-port" in result.output


def test_demo_exits_1_when_the_platform_layer_does_not_deploy_cleanly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    findings = {"summary": {"allow": True, "findings": 0, "denied": 0, "waived": 0, "plans": []}}
    monkeypatch.setattr(demo_module, "plan_stacks", lambda out: "s: 1 steps, 1 resources")
    monkeypatch.setattr(demo_module, "check_policies", lambda plans, out: (0, findings))
    monkeypatch.setattr(demo_module, "serve_and_load", lambda *args: ({}, 0))
    monkeypatch.setattr(demo_module, "drift_loop_phase", lambda out, phases: {})
    monkeypatch.setattr(demo_module, "smb_phase", lambda repository, out, phases: {})
    failed = {"stack": "onprem-ae", "passed": False, "deploy_code": 2, "error": "the engine failed"}
    monkeypatch.setattr(demo_module, "cluster_phase", lambda out, phases: failed)
    result = CliRunner().invoke(cli, ["demo", "--out", str(tmp_path)])
    assert result.exit_code == 1, result.output
    readme = (tmp_path / "README.md").read_text()
    assert "Did not deploy: the engine failed" in readme, readme
