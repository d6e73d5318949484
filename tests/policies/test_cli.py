"""`servectl policy check` end to end with a real OPA: exit codes 0, 1 and 2 and the three formats."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from policies.opa import Endpoint
from servectl.cli import cli
from tests.policies.conftest import FIXTURES

GOOD = str(FIXTURES / "uae-prod.infra.preview.json")
BAD = str(FIXTURES / "bad-uae-prod-insecure-cluster.preview.json")


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["policy", "check", *args])
    return result.exit_code, result.stdout, result.stderr


def test_clean_plan_exits_0(opa_bin: Path) -> None:
    code, out, _ = run(GOOD)
    assert code == 0, out
    assert out.startswith("PASS "), out


def test_bad_plan_exits_1_with_findings(opa_bin: Path) -> None:
    code, out, _ = run(GOOD, BAD, "--format", "json")
    assert code == 1
    doc = json.loads(out)
    assert sorted(f["id"] for f in doc["findings"]) == ["AUD-001", "AUD-003", "ENC-003", "ENC-004", "NET-001"]
    assert [p["allow"] for p in doc["summary"]["plans"]] == [True, False]


def test_sarif_written_to_file(opa_bin: Path, tmp_path: Path) -> None:
    out = tmp_path / "policy.sarif"
    code, _, err = run(BAD, "--format", "sarif", "--out", str(out))
    assert code == 1
    assert "wrote sarif report for 1 plan(s)" in err
    assert len(json.loads(out.read_text())["runs"][0]["results"]) == 5


def test_org_override_relaxes_a_setting(opa_bin: Path, tmp_path: Path) -> None:
    override = tmp_path / "org.json"
    override.write_text(json.dumps({"overrides": {"settings": {"min_log_retention_days": 7}}}))
    code, out, _ = run(BAD, "--format", "json", "--data", str(override))
    assert code == 1
    assert "AUD-003" not in {f["id"] for f in json.loads(out)["findings"]}


@pytest.mark.parametrize("fmt", ["text", "json", "sarif"])
def test_a_loosening_override_is_an_active_exception_in_every_format(
    opa_bin: Path, tmp_path: Path, fmt: str
) -> None:
    override = tmp_path / "org.json"
    override.write_text(
        json.dumps({"overrides": {"jurisdictions": {"AE": {"regions": ["me-central-1", "eu-west-1"]}}}})
    )
    code, out, _ = run(GOOD, "--format", fmt, "--data", str(override))
    assert code == 0, out
    expected = 'jurisdiction AE gains regions ["eu-west-1"]'
    if fmt == "text":
        assert f"ACTIVE EXCEPTION (organisation override): {expected}" in out, out
    elif fmt == "json":
        assert json.loads(out)["summary"]["exceptions"] == [expected], out
    else:
        notes = json.loads(out)["runs"][0]["invocations"][0]["toolConfigurationNotifications"]
        texts = [n["message"]["text"] for n in notes]
        assert texts == [f"Active exception (organisation override): {expected}"], out


def test_without_overrides_there_is_no_active_exception(opa_bin: Path) -> None:
    code, out, _ = run(GOOD, "--format", "json")
    assert code == 0 and json.loads(out)["summary"]["exceptions"] == [], out


def test_waiver_from_override_suppresses(opa_bin: Path, tmp_path: Path) -> None:
    urn = "urn:pulumi:uae-prod::model-serving::aws:eks/cluster:Cluster::cluster-me-central-1"
    waivers = [
        {"id": i, "urn": urn, "reason": "r", "owner": "o", "expires": "2999-01-01"}
        for i in ("NET-001", "ENC-003", "AUD-001")
    ]
    log = "urn:pulumi:uae-prod::model-serving::aws:cloudwatch/logGroup:LogGroup::flow-logs-me-central-1"
    waivers += [
        {"id": i, "urn": log, "reason": "r", "owner": "o", "expires": "2999-01-01"}
        for i in ("ENC-004", "AUD-003")
    ]
    override = tmp_path / "org.json"
    override.write_text(json.dumps({"overrides": {"waivers": waivers}}))
    code, out, _ = run(BAD, "--data", str(override))
    assert code == 0, out
    assert "0 denied, 5 waived" in out


@pytest.mark.parametrize(("content", "problem"), [("{", "not JSON"), ('{"a": 1}', "not a Pulumi plan")])
def test_unreadable_plan_exits_2(tmp_path: Path, content: str, problem: str) -> None:
    plan = tmp_path / "plan.json"
    plan.write_text(content)
    code, _, err = run(str(plan))
    assert code == 2
    assert err.startswith(f"error: {plan}: {problem}"), err


def test_opa_url_uses_that_server(opa_server: Endpoint) -> None:
    code, out, _ = run(GOOD, "--opa-url", f"http://{opa_server.host}:{opa_server.port}")
    assert code == 0, out


def test_unreachable_opa_url_exits_2(tmp_path: Path) -> None:
    code, _, err = run(GOOD, "--opa-url", "http://127.0.0.1:9")
    assert code == 2
    assert "OPA could not evaluate" in err


def test_opa_load_error_is_one_line_with_opa_message(opa_bin: Path, tmp_path: Path) -> None:
    broken = tmp_path / "org.rego"
    broken.write_text("package org\n\nallow if {\n\tinput.a ==\n")
    code, out, err = run(GOOD, "--data", str(broken))
    assert (code, out) == (2, ""), out
    assert err == (
        "error: OPA exited with code 1 before it was ready; it printed: error: load error: "
        f"1 error occurred during loading: {broken}:5: rego_parse_error: unexpected eof token | input.a ==\n"
    ), err


def test_data_with_opa_url_is_refused(tmp_path: Path) -> None:
    override = tmp_path / "org.json"
    override.write_text("{}")
    code, _, err = run(GOOD, "--opa-url", "http://127.0.0.1:9", "--data", str(override))
    assert code == 2
    assert "--data applies to the local OPA server" in err
