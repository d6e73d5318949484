"""Report rendering: text by severity, the JSON document, SARIF 2.1.0."""

from __future__ import annotations

import json
from typing import Any

from policies.report import PlanResult, as_json, as_sarif, as_text, exit_code, render


def finding(id_: str, severity: str, waived: bool = False) -> dict[str, Any]:
    return {
        "id": id_,
        "severity": severity,
        "urn": f"urn:pulumi:s::p::t::{id_}",
        "type": "t",
        "message": f"{id_} found",
        "remediation": "fix",
        "waived": waived,
    }


def plan(*findings: dict[str, Any]) -> PlanResult:
    summary = {"stack": "s", "resources": 3, "waived": sum(f["waived"] for f in findings)}
    return PlanResult(path="plan.json", result={"findings": list(findings), "summary": summary})


def test_exit_code_ignores_waived_findings() -> None:
    assert exit_code([plan(finding("A-1", "low", waived=True))]) == 0
    assert exit_code([plan(), plan(finding("A-1", "low"))]) == 1


def test_text_groups_by_severity_most_severe_first() -> None:
    text = as_text(
        [plan(finding("B-1", "low"), finding("A-1", "critical"), finding("C-1", "high", waived=True))]
    )
    assert text.splitlines()[0] == "FAIL plan.json (stack s, 3 resources): 2 denied, 1 waived"
    assert text.index("CRITICAL (1)") < text.index("HIGH (1)") < text.index("LOW (1)")
    assert "C-1 [waived] urn:pulumi:s::p::t::C-1" in text
    assert "fix: fix" in text


def test_json_document_shape() -> None:
    doc = as_json([plan(finding("A-1", "high"), finding("B-1", "low", waived=True))])
    assert [f["id"] for f in doc["findings"]] == ["A-1", "B-1"]
    assert set(doc["findings"][0]) == {
        "id",
        "severity",
        "urn",
        "type",
        "message",
        "remediation",
        "waived",
        "plan",
    }
    assert doc["summary"]["denied"] == 1
    assert doc["summary"]["waived"] == 1
    assert doc["summary"]["by_severity"] == {"critical": 0, "high": 1, "medium": 0, "low": 0}
    assert doc["summary"]["allow"] is False
    assert json.loads(render([plan()], "json"))["summary"]["allow"] is True


def test_sarif_has_rules_results_and_suppressions() -> None:
    log = as_sarif([plan(finding("A-1", "critical"), finding("B-1", "medium", waived=True))])
    assert log["version"] == "2.1.0"
    run = log["runs"][0]
    assert [r["id"] for r in run["tool"]["driver"]["rules"]] == ["A-1", "B-1"]
    first, second = run["results"]
    assert (first["ruleId"], first["level"]) == ("A-1", "error")
    assert first["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == "plan.json"
    assert first["locations"][0]["logicalLocations"][0]["fullyQualifiedName"] == "urn:pulumi:s::p::t::A-1"
    assert "suppressions" not in first
    assert second["level"] == "warning"
    assert second["suppressions"] == [{"kind": "external", "justification": "recorded waiver"}]


def loosened(*findings: dict[str, Any]) -> PlanResult:
    """A plan judged under an organisation override that raised a threshold."""
    result = plan(*findings)
    result.result["summary"]["exceptions"] = ["setting max_canary_step raised from 25 to 50"]
    return result


def test_an_active_exception_heads_the_text() -> None:
    text = as_text([loosened(), loosened()])
    assert text.splitlines()[:2] == [
        "ACTIVE EXCEPTION (organisation override): setting max_canary_step raised from 25 to 50",
        "PASS plan.json (stack s, 3 resources): 0 denied, 0 waived",
    ], "once, however many plans"


def test_an_active_exception_is_in_the_json_summary() -> None:
    assert as_json([loosened()])["summary"]["exceptions"] == ["setting max_canary_step raised from 25 to 50"]
    assert as_json([plan()])["summary"]["exceptions"] == []


def test_an_active_exception_is_a_sarif_configuration_notification() -> None:
    (invocation,) = as_sarif([loosened()])["runs"][0]["invocations"]
    (notice,) = invocation["toolConfigurationNotifications"]
    assert (
        notice["level"] == "warning" and "max_canary_step raised from 25 to 50" in notice["message"]["text"]
    )
    assert as_sarif([plan()])["runs"][0]["invocations"][0]["toolConfigurationNotifications"] == []
