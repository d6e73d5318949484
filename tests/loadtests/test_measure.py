"""From statistics entries to scopes and timeline windows."""

import math

import pytest

from loadtests.measure import Entry, measure, percentile, window


def entry(name: str, times: dict[int, int], failures: int = 0) -> Entry:
    return Entry(name=name, requests=sum(times.values()), failures=failures, response_times=times)


@pytest.mark.parametrize(
    ("fraction", "expected"), [(0.5, 2.0), (0.9, 9.0), (0.95, 100.0), (1.0, 100.0), (0.01, 1.0)]
)
def test_percentile_is_nearest_rank(fraction: float, expected: float) -> None:
    times = {1: 40, 2: 40, 9: 12, 100: 8}
    assert percentile(times, fraction) == expected, fraction


def test_percentile_of_nothing_is_nan() -> None:
    assert math.isnan(percentile({}, 0.95)), "no requests, no percentile"


def test_measure_splits_overall_models_and_variants_with_shares() -> None:
    entries = [
        entry("m v1", {2: 90}),
        entry("m v2", {4: 10}, failures=1),
        entry("m", {1: 5}, failures=5),  # failed before any version answered
        entry("n v1", {3: 20}),
    ]
    scopes = measure(entries, duration_s=10)
    assert scopes[(None, None)].requests == 125 and scopes[(None, None)].failures == 6, scopes[(None, None)]
    assert scopes[("m", None)].requests == 105 and scopes[("m", None)].rps == pytest.approx(10.5)
    assert scopes[("m", "1")].share == pytest.approx(90 / 105), "a variant's share is of its model"
    assert scopes[("m", "2")].value("error_rate") == pytest.approx(0.1), scopes[("m", "2")]
    assert scopes[("n", "1")].share == 1.0 and scopes[("n", None)].share is None
    assert scopes[("m", "1")].latency_ms["p95"] == 2.0 and scopes[("m", None)].latency_ms["max"] == 4.0


def test_window_counts_only_what_happened_since_the_last_snapshot() -> None:
    before = {"POST m v1": entry("m v1", {2: 10}), "POST m v2": entry("m v2", {3: 2})}
    after = {
        "POST m v1": entry("m v1", {2: 10, 50: 10}),
        "POST m v2": entry("m v2", {3: 2}),
        "gRPC m v1": entry("m v1", {4: 10}),
    }
    samples = {s.scope: s for s in window(before, after, t_s=4.0, interval_s=2.0, users=7)}
    assert samples.keys() == {"overall", "m v1", "m v2"}, samples.keys()
    assert samples["m v1"].requests == 20 and samples["m v1"].rps == 10.0, samples["m v1"]
    assert {s.users for s in samples.values()} == {7}, "the users running"
    assert samples["m v1"].p95_ms == 50.0 and samples["m v1"].p50_ms == 4.0, samples["m v1"]
    assert samples["m v2"].requests == 0 and math.isnan(samples["m v2"].p95_ms), samples["m v2"]
