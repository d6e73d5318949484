"""The shipped drift rules with every duration scaled down, so a loop through a real Prometheus is bounded.

Derived from `stacks/monitoring/rules/serving-rules.yaml` at run time, never copied: the drift recording
group and the drift alerts keep their names, labels and expressions; only each range selector's window
(`[1h]`) and each alert's `for` are divided by one factor. Rule names keep their `1h` suffix, so the
alerts' expressions (which read `model:drift_psi:1h`) stay the shipped text apart from the windows. Any
other change to the shipped rules shows up here, and a duration this cannot parse is an error rather than a
rule left at its hour.
"""

import copy
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

RULES_FILE = Path(__file__).resolve().parents[2] / "stacks" / "monitoring" / "rules" / "serving-rules.yaml"
DRIFT_GROUP = "serving-drift-recording"
DRIFT_ALERTS = ("ModelInputDriftWarning", "ModelInputDriftCritical")
_UNITS_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
_DURATION = re.compile(r"(\d+)(ms|s|m|h|d|w)")
_RANGE = re.compile(r"\[([^\]]*)\]")
_QUOTED = re.compile(r"(\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*'|`[^`]*`)")


def duration_ms(text: str) -> int:
    """A Prometheus duration (`1h`, `15m`, `1h30m`) in milliseconds."""
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"not a Prometheus duration: {text!r}")
    return sum(int(n) * _UNITS_MS[u] for n, u in parts)


def scaled(text: str, factor: float) -> str:
    """`text` divided by `factor`, in whole milliseconds (at least 1 ms)."""
    return f"{max(1, round(duration_ms(text) / factor))}ms"


def scale_expression(expr: str, factor: float) -> str:
    """Every range selector's window (and a subquery's range and step) in `expr` divided by `factor`;
    quoted strings are left alone."""

    def window(match: re.Match[str]) -> str:
        return "[" + ":".join(scaled(p, factor) if p else p for p in match.group(1).split(":")) + "]"

    parts = _QUOTED.split(expr)
    # split() with one group alternates: text outside quotes at even positions, quoted strings at odd.
    return "".join(part if i % 2 else _RANGE.sub(window, part) for i, part in enumerate(parts))


def _rule(rule: Mapping[str, Any], factor: float) -> dict[str, Any]:
    out = copy.deepcopy(dict(rule))
    out["expr"] = scale_expression(str(rule["expr"]), factor)
    if "for" in out:
        out["for"] = scaled(str(out["for"]), factor)
    return out


def drift_rules(
    document: Mapping[str, Any], factor: float, alerts: Sequence[str] = DRIFT_ALERTS
) -> dict[str, Any]:
    """A rules document: the drift recording group and the drift alerts of `document`, scaled by `factor`."""
    groups = {g["name"]: g for g in document["groups"]}
    if DRIFT_GROUP not in groups:
        raise ValueError(f"the rules have no group {DRIFT_GROUP!r}")
    recording = [_rule(r, factor) for r in groups[DRIFT_GROUP]["rules"]]
    found = {r["alert"]: r for g in document["groups"] for r in g["rules"] if r.get("alert") in alerts}
    missing = sorted(set(alerts) - set(found))
    if missing:
        raise ValueError(f"the rules have no alert {missing[0]!r}")
    return {
        "groups": [
            {"name": DRIFT_GROUP, "rules": recording},
            {"name": "serving-drift-alerts", "rules": [_rule(found[a], factor) for a in alerts]},
        ]
    }


def write_drift_rules(path: Path, factor: float, source: Path = RULES_FILE) -> Path:
    """The scaled drift rules of `source` written to `path`, for a local Prometheus to load."""
    document = yaml.safe_load(source.read_text(encoding="utf-8"))
    path.write_text(yaml.safe_dump(drift_rules(document, factor), sort_keys=False), encoding="utf-8")
    return path
