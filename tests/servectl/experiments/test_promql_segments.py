"""What an analysis reads of the new labels, from a real Prometheus holding a backfilled history: latency
of successful requests only (`outcome_class`), requests and errors per `segment`, and the compute shares."""

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from servectl.experiments.local_prometheus import RunningPrometheus
from servectl.experiments.promql import Prometheus, VersionCounts, read_window
from tests.servectl.backfill import Exposition, backfilled_prometheus

MODEL = "m"
STEP = 15.0
SCRAPES = 240  # an hour


def _history(start: float) -> Exposition:
    """Per scrape on one pod of version 1: 5 enterprise successes and 1 enterprise server error, 10 free
    successes and 2 from a server without segments (no label); 15 successful requests under 0.1 s and 3
    failed ones (all fast); 18 compute shares of 1 ms each."""
    out = Exposition()
    base = {"model": MODEL, "version": "1", "protocol": "rest", "assignment": "weighted"}
    requests = [
        ({"segment": "enterprise", "outcome": "success"}, 5),
        ({"segment": "enterprise", "outcome": "server_error"}, 1),
        ({"segment": "free", "outcome": "success"}, 10),
        ({"outcome": "success"}, 2),
    ]
    rest = {"model": MODEL, "version": "1", "protocol": "rest"}
    buckets = [
        ({"outcome_class": "success", "le": "0.1"}, 15),
        ({"outcome_class": "success", "le": "+Inf"}, 15),
        ({"outcome_class": "failure", "le": "0.1"}, 3),
        ({"outcome_class": "failure", "le": "+Inf"}, 3),
    ]
    compute = {"model": MODEL, "version": "1"}
    for i in range(1, SCRAPES + 1):
        at = start + i * STEP
        for labels, n in requests:
            out.add("serving_requests", "counter", base | labels, at, float(n * i))
        for labels, n in buckets:
            out.add("serving_request_duration_seconds_bucket", "unknown", rest | labels, at, float(n * i))
        out.add("serving_request_compute_seconds_count", "unknown", compute, at, 18.0 * i)
        out.add("serving_request_compute_seconds_sum", "unknown", compute, at, 0.018 * i)
        out.add("serving_request_compute_seconds_squares", "counter", compute, at, 18e-6 * i)
    return out


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningPrometheus, float]]:
    start = time.time() - 5 - (SCRAPES + 1) * STEP
    with backfilled_prometheus(Path(tmp_path_factory.mktemp("segments")), _history(start).text()) as running:
        yield running, start + SCRAPES * STEP


def _window(history: tuple[RunningPrometheus, float]) -> tuple[VersionCounts, int]:
    running, last = history
    scrapes = 100  # the window's (start, end] holds the last 100 scrapes' increments
    window = read_window(Prometheus(running.url), MODEL, last - scrapes * STEP, last)
    return window.versions["1"], scrapes


def test_latency_is_read_from_successful_requests_only(history: tuple[RunningPrometheus, float]) -> None:
    counts, scrapes = _window(history)
    assert counts.latency_buckets == {0.1: 15 * scrapes, float("inf"): 15 * scrapes}, (
        f"the 3 failures per scrape must be left out: {counts.latency_buckets}"
    )


def test_requests_and_errors_are_counted_per_segment(history: tuple[RunningPrometheus, float]) -> None:
    counts, scrapes = _window(history)
    assert counts.segment_requests == {"enterprise": 6 * scrapes, "free": 10 * scrapes, "other": 2 * scrapes}
    assert counts.segment_errors == {"enterprise": 1 * scrapes}, counts.segment_errors
    assert counts.requests == sum(counts.segment_requests.values()), "the segments partition the whole"


def test_compute_shares_are_counted(history: tuple[RunningPrometheus, float]) -> None:
    counts, scrapes = _window(history)
    assert (counts.computed, counts.compute_sum, counts.compute_squares) == pytest.approx(
        (18 * scrapes, 0.018 * scrapes, 18e-6 * scrapes)
    ), counts
