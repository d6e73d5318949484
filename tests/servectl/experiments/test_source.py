"""One decision core for both sources: the same traffic, written as the servers' counters into a real
Prometheus (backfilled) and as SageMaker's per-variant metrics into moto's CloudWatch, is analysed by
`run.analyze` through each source and gives the same decision, reasons, statistics and counts.

What this proves that the per-source tests cannot: the CloudWatch mapping (requests = Invocations minus
4XX, errors = 5XX, the split's units = Invocations) lands on the same `VersionCounts` as the PromQL reading
of `serving_requests_total` by outcome, so the thresholds mean the same on both paths.
"""

import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from servectl.experiments.cloudwatch import CloudWatchSource
from servectl.experiments.decision import Schedule, Thresholds
from servectl.experiments.local_prometheus import RunningPrometheus
from servectl.experiments.run import Experiment, analyze
from tests.servectl.backfill import Exposition, backfilled_prometheus
from tests.servectl.experiments.aws_emulator import client, put_minutes

MINUTES = 12
WEIGHTS = {"1": 50, "2": 50}
# Per minute and version: invocations, client errors (4XX), server errors (5XX).
TRAFFIC = {
    "worse": {"1": (2000, 10, 20), "2": (2000, 10, 60)},  # three times the baseline's error rate
    "equal": {"1": (3000, 5, 30), "2": (3000, 5, 30)},
}
OPTIONAL = frozenset({"conversion", "value", "accuracy", "cost", "latency"})
"""The same on both paths: no feedback, no compute counters, no latency histogram in either history."""


def _t0() -> float:
    return math.floor((time.time() - 3 * 3600) / 60) * 60


def _exposition(t0: float) -> str:
    """Each version's counters by outcome, sampled mid-minute, from two minutes before the window."""
    out = Exposition()
    for model, versions in TRAFFIC.items():
        for version, (calls, client_errors, server_errors) in versions.items():
            per_outcome = {"success": calls - client_errors - server_errors, "client_error": client_errors,
                           "server_error": server_errors}  # fmt: skip
            for outcome, per_minute in per_outcome.items():
                labels = {"model": model, "version": version, "pod": f"{model}-{version}", "protocol": "rest",
                          "outcome": outcome, "assignment": "weighted"}  # fmt: skip
                for i in range(-2, MINUTES):
                    out.add(
                        "serving_requests", "counter", labels, t0 + 60 * i + 30, float(per_minute * (i + 3))
                    )
    return out.text()


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningPrometheus, float]]:
    t0 = _t0()
    with backfilled_prometheus(tmp_path_factory.mktemp("same-counts"), _exposition(t0)) as running:
        yield running, t0


def _decide(experiment: Experiment, t0: float) -> dict[str, Any]:
    analyze(experiment, WEIGHTS, now=t0)  # the start
    return analyze(experiment, WEIGHTS, now=t0 + 60 * MINUTES)


@pytest.mark.parametrize(("model", "decision"), [("worse", "rollback"), ("equal", "promote")])
def test_the_same_counts_give_the_same_decision_through_prometheus_and_cloudwatch(
    prometheus: tuple[RunningPrometheus, float], aws: str, tmp_path: Path, model: str, decision: str
) -> None:
    running, t0 = prometheus
    for version, values in TRAFFIC[model].items():
        put_minutes(model, version, {t0 + 60 * i: values for i in range(-2, MINUTES)})
    common: dict[str, Any] = {
        "model": model, "start": t0, "schedule": Schedule(min_samples=500, failed_checks=1),
        "thresholds": Thresholds(optional_metrics=OPTIONAL),
    }  # fmt: skip
    source = CloudWatchSource(model, ("1", "2"), client("cloudwatch"), client("sagemaker"), delay_seconds=0)
    by_prometheus = _decide(Experiment(prometheus=running.url, log_path=tmp_path / "p.jsonl", **common), t0)
    by_cloudwatch = _decide(
        Experiment(prometheus="", log_path=tmp_path / "c.jsonl", source=source, **common), t0
    )
    assert by_prometheus["decision"] == by_cloudwatch["decision"] == decision, (by_prometheus, by_cloudwatch)
    for key in ("reasons", "statistics", "counts", "next_weights", "failed_checks"):
        assert by_prometheus[key] == by_cloudwatch[key], (
            key,
            _differ(by_prometheus[key], by_cloudwatch[key]),
        )
    calls, client_errors, server_errors = TRAFFIC[model]["2"]
    assert by_cloudwatch["counts"]["2"]["requests"] == MINUTES * (calls - client_errors)
    assert by_cloudwatch["counts"]["2"]["errors"] == MINUTES * server_errors


def _differ(a: Any, b: Any, path: str = "") -> list[str]:
    """Where two JSON values differ, as paths (for the assertion's message)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b)) for d in _differ(a.get(k), b.get(k), f"{path}.{k}")]
    return [] if a == b else [f"{path}: {a!r} != {b!r}"]
