"""The loop's drift rules are the shipped ones with only their windows and `for` scaled, and promtool
accepts them."""

import subprocess
from pathlib import Path

import pytest
import yaml

from servectl.drift.processes import alertmanager_config
from servectl.drift.scaled_rules import (
    RULES_FILE,
    drift_rules,
    duration_ms,
    scale_expression,
    write_drift_rules,
)


@pytest.mark.parametrize(
    ("text", "ms"), [("1h", 3_600_000), ("15m", 900_000), ("1h30m", 5_400_000), ("500ms", 500)]
)
def test_durations_parse(text: str, ms: int) -> None:
    assert duration_ms(text) == ms


@pytest.mark.parametrize("text", ["", "1x", "h", "1h 2m", "-1h"])
def test_a_duration_it_cannot_read_is_an_error(text: str) -> None:
    with pytest.raises(ValueError, match="not a Prometheus duration"):
        duration_ms(text)


def test_subqueries_scale_and_an_unreadable_window_is_an_error() -> None:
    assert scale_expression("max_over_time(x[1h:1m])", 60) == "max_over_time(x[60000ms:1000ms])"
    with pytest.raises(ValueError, match="not a Prometheus duration"):
        scale_expression("x[$window]", 60)


def test_only_range_windows_are_scaled() -> None:
    expr = "sum(increase(x[1h])) / sum(increase(x[6h])) > 0.1 and y{a='[1h]x'}"
    assert (
        scale_expression(expr, 120)
        == "sum(increase(x[30000ms])) / sum(increase(x[180000ms])) > 0.1 and y{a='[1h]x'}"
    )


def test_the_derived_rules_are_the_shipped_ones_but_for_their_durations() -> None:
    shipped = yaml.safe_load(RULES_FILE.read_text())
    derived = drift_rules(shipped, 120)
    originals = {r.get("record") or r["alert"]: r for g in shipped["groups"] for r in g["rules"]}
    rules = [r for g in derived["groups"] for r in g["rules"]]
    names = [r.get("record") or r["alert"] for r in rules]
    assert "ModelInputDriftCritical" in names and "model:drift_psi:1h" in names, names
    for rule in rules:
        original = originals[rule.get("record") or rule["alert"]]
        windows = {"[1h]": "[30000ms]", "[6h]": "[180000ms]"}
        expected = str(original["expr"])
        for old, new in windows.items():
            expected = expected.replace(old, new)
        assert rule["expr"] == expected, rule
        assert {k: v for k, v in rule.items() if k not in {"expr", "for"}} == {
            k: v for k, v in original.items() if k not in {"expr", "for"}
        }, "names, labels and annotations are kept"
        if "for" in original:
            assert rule["for"] == "7500ms", rule


def test_promtool_accepts_the_written_rules(tmp_path: Path) -> None:
    path = write_drift_rules(tmp_path / "drift-rules.yaml", 120)
    done = subprocess.run(
        ["promtool", "check", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_missing_rules_are_named() -> None:
    with pytest.raises(ValueError, match="no group"):
        drift_rules({"groups": []}, 2)
    shipped = yaml.safe_load(RULES_FILE.read_text())
    with pytest.raises(ValueError, match="no alert 'Nope'"):
        drift_rules(shipped, 2, alerts=("Nope",))


def test_alertmanagers_waits_are_the_stacks_scaled_once() -> None:
    config = alertmanager_config("http://127.0.0.1:1/alerts", 120)
    root = config["route"]
    assert (root["group_wait"], root["group_interval"], root["repeat_interval"]) == (
        "250ms",
        "2500ms",
        "120000ms",
    )
    retrain = next(r for r in root["routes"] if r["receiver"] == "retrain")
    assert retrain["group_wait"] == "83ms", retrain
    assert "group_interval" not in retrain and "repeat_interval" not in retrain, "inherited from the root"
    assert retrain["continue"] is True and "ModelInputDriftCritical" in retrain["matchers"][0], retrain
