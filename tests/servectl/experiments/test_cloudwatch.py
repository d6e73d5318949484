"""The CloudWatch source against moto's server (a process on loopback, aws_emulator.py): per-variant counts
of whole minutes, minutes not published holding the analysis, and the decisions of the shared core on them.
"""

import math
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from servectl.experiments.cloudwatch import (
    LATENCY_NOTE,
    CloudWatchSource,
    endpoint_differs,
    minute_ranges,
    whole_minutes,
)
from servectl.experiments.decision import Schedule, Thresholds
from servectl.experiments.run import STARTED, Experiment, analyze, report
from tests.servectl.experiments.aws_emulator import client, put_minutes

MODEL = "tabular-classifier"
NO_FEEDBACK = frozenset({"conversion", "value", "accuracy", "cost"})
"""CloudWatch carries no feedback nor compute counters: the stack marks them optional (docs)."""


def _t0() -> float:
    """A minute boundary an hour ago: the tests' history lies in the past, as CloudWatch's does."""
    return math.floor((time.time() - 3600) / 60) * 60


def _iso_seconds(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="seconds")


def _iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%MZ")


def _source(endpoint: str, versions: tuple[str, ...] = ("1", "2"), delay: float = 0.0) -> CloudWatchSource:
    return CloudWatchSource(
        endpoint, versions, client("cloudwatch"), client("sagemaker"), delay_seconds=delay
    )


@pytest.mark.parametrize(
    ("start", "end", "delay", "expected"),
    [
        (120.0, 600.0, 0.0, (120.0, 600.0)),  # on boundaries: every minute
        (130.0, 590.0, 0.0, (180.0, 540.0)),  # partial minutes at both ends excluded
        (130.0, 590.0, 180.0, (180.0, 360.0)),  # and the last three minutes not yet expected
        (130.0, 170.0, 0.0, (180.0, 120.0)),  # no whole minute: an empty span
    ],
)
def test_a_window_is_its_whole_minutes(
    start: float, end: float, delay: float, expected: tuple[float, float]
) -> None:
    assert whole_minutes(start, end, delay) == expected


def test_missing_minutes_are_named_as_runs() -> None:
    t0 = 1_800_000_000.0 - 1_800_000_000.0 % 60
    shown = minute_ranges([t0 + 240, t0, t0 + 60, t0 + 120])
    assert shown == f"{_iso(t0)}..{_iso(t0 + 120)[11:]}, {_iso(t0 + 240)}", shown
    assert minute_ranges([t0, t0 + 120]) == f"{_iso(t0)}, {_iso(t0 + 120)}"


def test_counts_are_the_sums_of_the_whole_minutes_inside_the_window(aws: str) -> None:
    t0 = _t0()
    # Minutes -1 and 5 carry traffic too: they are the partial minutes at the ends, never counted.
    put_minutes("ep-whole", "1", {t0 + 60 * i: (100 + i, 2, 1) for i in range(-1, 6)})
    put_minutes("ep-whole", "2", {t0 + 60 * i: (10, 1, 0) for i in range(-1, 6)})
    window = _source("ep-whole").read(t0 - 20, t0 + 300 + 20, frozenset({"1", "2"}))
    assert window.aligned == (t0, t0 + 300), window.aligned
    invocations = sum(100 + i for i in range(5))
    v1, v2 = window.get("1"), window.get("2")
    assert (v1.weighted, v1.requests, v1.errors) == (invocations, invocations - 10, 5), v1
    assert (v2.weighted, v2.requests, v2.errors) == (50, 45, 0), v2
    assert window.missing == [], window.missing
    assert window.notes["1"] == {"model_latency_mean_ms": 4.0, "model_latency_samples": invocations}
    assert window.notes["latency"] == LATENCY_NOTE


def test_minutes_not_published_are_named_and_never_read_as_no_traffic(aws: str) -> None:
    t0 = _t0()
    put_minutes("ep-late", "1", {t0 + 60 * i: (100, 0, 1) for i in range(5)})
    put_minutes("ep-late", "2", {t0 + 60 * i: (100, 0, 1) for i in range(3)})  # the last two not yet
    window = _source("ep-late").read(t0, t0 + 300, frozenset({"1", "2"}))
    late = f"{_iso(t0 + 180)}..{_iso(t0 + 240)[11:]}"
    assert window.missing == [
        f"v2 Invocations at {late}",
        f"v2 Invocation4XXErrors at {late}",
        f"v2 Invocation5XXErrors at {late}",
    ], window.missing
    # A version without weight takes no traffic: its silence is not a gap.
    assert _source("ep-late").read(t0, t0 + 300, frozenset({"1"})).missing == []


def _experiment(log_path: Path, endpoint: str, start: float, **schedule: Any) -> Experiment:
    return Experiment(
        prometheus="",
        model=MODEL,
        log_path=log_path,
        source=_source(endpoint),
        schedule=Schedule(**({"min_samples": 500, "failed_checks": 1} | schedule)),
        thresholds=Thresholds(optional_metrics=NO_FEEDBACK),
        start=start,
    )


def _traffic(endpoint: str, t0: float, minutes: int, per_minute: dict[str, tuple[int, int, int]]) -> None:
    for version, values in per_minute.items():
        put_minutes(endpoint, version, {t0 + 60 * i: values for i in range(minutes)})


WEIGHTS = {"1": 50, "2": 50}


def test_a_candidate_with_three_times_the_errors_is_rolled_back(aws: str, tmp_path: Path) -> None:
    t0 = _t0()
    _traffic("ep-worse", t0, 10, {"1": (2000, 10, 20), "2": (2000, 10, 60)})
    experiment = _experiment(tmp_path / "log.jsonl", "ep-worse", t0)
    first = analyze(experiment, WEIGHTS, now=t0)
    assert (first["decision"], first["reasons"]) == ("hold", [STARTED]), first
    entry = analyze(experiment, WEIGHTS, now=t0 + 600)
    assert entry["decision"] == "rollback", entry["reasons"]
    assert entry["next_weights"] == {"1": 100, "2": 0}, entry["next_weights"]
    assert entry["statistics"]["error_rate"]["ratio"] == pytest.approx(3.0, rel=0.01), entry["statistics"]
    assert entry["counts"]["2"]["requests"] == 10 * 1990 and entry["counts"]["2"]["errors"] == 600


def test_an_equal_candidate_is_promoted_once_it_has_served_enough(aws: str, tmp_path: Path) -> None:
    t0 = _t0()
    _traffic("ep-equal", t0, 3, {"1": (100, 0, 1), "2": (100, 0, 1)})
    _traffic("ep-equal", t0 + 180, 12, {"1": (3000, 5, 30), "2": (3000, 5, 30)})
    experiment = _experiment(tmp_path / "log.jsonl", "ep-equal", t0)
    analyze(experiment, WEIGHTS, now=t0)
    early = analyze(experiment, WEIGHTS, now=t0 + 180)
    assert early["decision"] == "hold", early["reasons"]
    assert early["reasons"] == ["v2 served 300 of the 500 requests this step needs"], early["reasons"]
    entry = analyze(experiment, WEIGHTS, now=t0 + 900)
    assert entry["decision"] == "promote", entry["reasons"]
    assert entry["next_weights"] == {"1": 0, "2": 100}, entry["next_weights"]
    assert entry["statistics"]["latency"] == {"tested": False, "measured": False}, entry["statistics"]
    assert entry["notes"]["latency"] == LATENCY_NOTE
    assert entry["window"]["experiment_counted"] == {"from": t0, "to": t0 + 900}, entry["window"]
    assert "whole minutes only" in entry["window"]["alignment"]
    assert f"  counted: whole minutes {_iso_seconds(t0)} to {_iso_seconds(t0 + 900)};" in report(entry), (
        report(entry)
    )


def test_without_the_latency_exemption_the_same_counts_would_hold() -> None:
    """The promotion above owes nothing to invented latency: the Prometheus path, which has histograms,
    holds on the same counts while latency is unmeasured (checks._latency)."""
    from servectl.experiments.checks import Arms, run_checks
    from servectl.experiments.promql import VersionCounts

    counts = VersionCounts(requests=36_000, errors=360)
    found = run_checks(Arms("1", "2", [counts], [counts]), Thresholds(optional_metrics=NO_FEEDBACK))
    assert "latency: no histogram samples for both versions yet" in found.unproven, found.unproven
    exempt = Thresholds(optional_metrics=NO_FEEDBACK | {"latency"})
    assert not any(
        u.startswith("latency") for u in run_checks(Arms("1", "2", [counts], [counts]), exempt).unproven
    )


def test_minutes_not_yet_published_hold_the_analysis(aws: str, tmp_path: Path) -> None:
    t0 = _t0()
    _traffic("ep-gap", t0, 10, {"1": (3000, 5, 30)})
    _traffic("ep-gap", t0, 8, {"2": (3000, 5, 30)})
    experiment = _experiment(tmp_path / "log.jsonl", "ep-gap", t0)
    analyze(experiment, WEIGHTS, now=t0)
    entry = analyze(experiment, WEIGHTS, now=t0 + 600)
    assert entry["decision"] == "hold", entry
    late = f"{_iso(t0 + 480)}..{_iso(t0 + 540)[11:]}"
    assert entry["reasons"][0].startswith("the source has not published every minute"), entry["reasons"]
    assert f"v2 Invocations at {late}" in entry["reasons"][0], entry["reasons"]
    assert entry["statistics"] == {}, "a window with missing minutes judges nothing"


def _described(status: str, variants: dict[str, tuple[float, float]]) -> dict[str, Any]:
    """DescribeEndpoint's answer, in its own shape (moto cannot show an endpoint mid-update)."""
    return {
        "EndpointName": "ep",
        "EndpointStatus": status,
        "ProductionVariants": [
            {"VariantName": k, "CurrentWeight": c, "DesiredWeight": d} for k, (c, d) in variants.items()
        ],
    }


@pytest.mark.parametrize(
    ("described", "reason"),
    [
        (_described("InService", {"v1": (75.0, 75.0), "v2": (25.0, 25.0)}), None),
        (
            _described("InService", {"v1": (3.0, 3.0), "v2": (1.0, 1.0)}),
            None,
        ),  # relative weights: same shares
        (_described("Updating", {"v1": (95.0, 75.0), "v2": (5.0, 25.0)}), "is Updating, not InService"),
        (_described("InService", {"v1": (95.0, 75.0), "v2": (5.0, 25.0)}), "still shifting traffic"),
        (
            _described("InService", {"v1": (95.0, 95.0), "v2": (5.0, 5.0)}),
            "routes v1 95 / v2 5, not the stack's",
        ),
        (_described("InService", {"v1": (100.0, 100.0)}), "has no production variant v2"),
    ],
)
def test_a_step_is_confirmed_only_in_service_at_the_stacks_weights(
    described: dict[str, Any], reason: str | None
) -> None:
    found = endpoint_differs(described, {"1": 75, "2": 25})
    assert (found is None) if reason is None else (found is not None and reason in found), found


def test_a_rollout_with_key_segments_is_refused_on_cloudwatch(aws: str, tmp_path: Path) -> None:
    """Segment guards need the request's header, which SageMaker's metrics do not carry: an unguarded
    segment would pass silently, so the experiment is refused with what to change."""
    from dataclasses import replace

    from servectl.experiments.run import ExperimentError

    experiment = _experiment(tmp_path / "log.jsonl", "ep-segments", _t0())
    segmented = replace(experiment, thresholds=replace(experiment.thresholds, segments=("enterprise",)))
    with pytest.raises(ExperimentError, match=r"key segments \['enterprise'\] cannot be measured"):
        analyze(segmented, WEIGHTS, now=_t0())
    assert not (tmp_path / "log.jsonl").exists(), "nothing logged"
    analyze(experiment, WEIGHTS, now=_t0())  # without segments it starts
