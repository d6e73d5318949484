"""Render gate results: text grouped by severity, the JSON document, or SARIF 2.1.0."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

SEVERITIES = ("critical", "high", "medium", "low")
_SARIF_LEVEL = {"critical": "error", "high": "error", "medium": "warning", "low": "note"}
FINDING_KEYS = ("id", "severity", "urn", "type", "message", "remediation", "waived")


@dataclass(frozen=True, kw_only=True)
class PlanResult:
    """The gate's answer for one plan file."""

    path: str
    """The plan file as given on the command line."""
    result: dict[str, Any]
    """``{"findings": [...], "summary": {...}}`` from OPA."""

    @property
    def findings(self) -> list[dict[str, Any]]:
        """The findings, most severe first, then by id and resource."""
        order = {s: i for i, s in enumerate(SEVERITIES)}
        return sorted(
            self.result["findings"],
            key=lambda f: (order.get(f["severity"], len(order)), f["id"], f["urn"]),
        )

    @property
    def denied(self) -> int:
        """How many findings no waiver suppresses."""
        return sum(1 for f in self.result["findings"] if not f["waived"])


def active_exceptions(results: Sequence[PlanResult]) -> list[str]:
    """The organisation overrides that loosen the shipped policy data (one sentence each), over every
    plan: allowed, and reported in every format so a loosened gate is never mistaken for the shipped one."""
    return sorted({e for r in results for e in r.result["summary"].get("exceptions", [])})


def exit_code(results: Sequence[PlanResult]) -> int:
    """1 when any plan has an unwaived finding, else 0."""
    return 1 if any(r.denied for r in results) else 0


def as_json(results: Sequence[PlanResult]) -> dict[str, Any]:
    """``{"findings": [...], "summary": {...}}`` over every plan."""
    findings = [{k: f[k] for k in FINDING_KEYS} | {"plan": r.path} for r in results for f in r.findings]
    return {
        "findings": findings,
        "summary": {
            "plans": [{"plan": r.path, **r.result["summary"]} for r in results],
            "findings": len(findings),
            "waived": sum(1 for f in findings if f["waived"]),
            "denied": sum(r.denied for r in results),
            "by_severity": {
                s: sum(1 for f in findings if f["severity"] == s and not f["waived"]) for s in SEVERITIES
            },
            "allow": exit_code(results) == 0,
            "exceptions": active_exceptions(results),
        },
    }


def as_text(results: Sequence[PlanResult]) -> str:
    """Findings grouped by severity per plan, with id, resource, message and remediation."""
    lines = [f"ACTIVE EXCEPTION (organisation override): {e}" for e in active_exceptions(results)]
    for r in results:
        summary = r.result["summary"]
        verdict = "PASS" if r.denied == 0 else "FAIL"
        lines.append(
            f"{verdict} {r.path} (stack {summary['stack']}, {summary['resources']} resources): "
            f"{r.denied} denied, {summary['waived']} waived"
        )
        for severity in SEVERITIES:
            group = [f for f in r.findings if f["severity"] == severity]
            if group:
                lines.append(f"  {severity.upper()} ({len(group)})")
            for f in group:
                mark = " [waived]" if f["waived"] else ""
                lines.append(f"    {f['id']}{mark} {f['urn']}")
                lines.append(f"      {f['message']}")
                lines.append(f"      fix: {f['remediation']}")
    return "\n".join(lines)


def as_sarif(results: Sequence[PlanResult], tool_version: str = "0.1.0") -> dict[str, Any]:
    """A SARIF 2.1.0 log: one rule per finding id, one result per finding, waived ones suppressed."""
    rules: dict[str, dict[str, Any]] = {}
    sarif_results = []
    for r in results:
        for f in r.findings:
            rules.setdefault(
                f["id"],
                {
                    "id": f["id"],
                    "shortDescription": {"text": f["id"]},
                    "help": {"text": f["remediation"]},
                    "defaultConfiguration": {"level": _SARIF_LEVEL.get(f["severity"], "warning")},
                    "properties": {"severity": f["severity"], "tags": ["policy", "pulumi"]},
                },
            )
            entry: dict[str, Any] = {
                "ruleId": f["id"],
                "level": _SARIF_LEVEL.get(f["severity"], "warning"),
                "message": {"text": f"{f['message']}. Fix: {f['remediation']}"},
                "locations": [
                    {
                        "physicalLocation": {"artifactLocation": {"uri": r.path}, "region": {"startLine": 1}},
                        "logicalLocations": [{"fullyQualifiedName": f["urn"], "kind": "resource"}],
                    }
                ],
                "partialFingerprints": {"findingId/v1": f"{f['id']}:{f['urn']}"},
            }
            if f["waived"]:
                entry["suppressions"] = [{"kind": "external", "justification": "recorded waiver"}]
            sarif_results.append(entry)
    return {
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "model-serving-policy-gate",
                        "version": tool_version,
                        "rules": [rules[k] for k in sorted(rules)],
                    }
                },
                "invocations": [
                    {
                        "executionSuccessful": True,
                        "toolConfigurationNotifications": [
                            {
                                "descriptor": {"id": "active-exception"},
                                "level": "warning",
                                "message": {"text": f"Active exception (organisation override): {e}"},
                            }
                            for e in active_exceptions(results)
                        ],
                    }
                ],
                "results": sarif_results,
            }
        ],
    }


def render(results: Sequence[PlanResult], fmt: str) -> str:
    """The report in one of text, json or sarif."""
    if fmt == "json":
        return json.dumps(as_json(results), indent=2)
    if fmt == "sarif":
        return json.dumps(as_sarif(results), indent=2)
    return as_text(results)
