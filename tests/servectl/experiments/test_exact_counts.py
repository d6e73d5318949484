"""Exact counts under pod churn (issue 14 point 1): each series counted on its own from its raw samples,
restarts added, a pod scaled away counted until it went, then summed by version.

`series_count` against hand-worked sequences, then `read_window` against a real Prometheus holding a
backfilled history whose true counts are known because the test generated them.
"""

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from servectl.experiments.decision import HOLD, Inputs, Schedule, Thresholds, decide
from servectl.experiments.local_prometheus import RunningPrometheus
from servectl.experiments.promql import STALE_SECONDS, Prometheus, SeriesCount, read_window, series_count
from tests.servectl.backfill import Exposition, backfilled_prometheus

MODEL = "m"
STEP = 15.0
HISTORY = 2 * 3600.0


@pytest.mark.parametrize(
    ("base", "samples", "base_time", "expected"),
    [
        pytest.param(10.0, [(1, 12.0), (2, 15.0)], 0.0, SeriesCount(5.0, 0, False), id="steady"),
        pytest.param(10.0, [(1, 12.0), (2, 3.0), (3, 7.0)], 0.0, SeriesCount(9.0, 1, False), id="restart"),
        pytest.param(0.0, [(1, 4.0), (2, 6.0)], None, SeriesCount(6.0, 0, False), id="born-inside"),
        pytest.param(10.0, [(1, 12.0)], 0.0, SeriesCount(2.0, 0, False), id="scaled-away-after-one"),
        pytest.param(10.0, [], 0.0, SeriesCount(0.0, 0, False), id="gone-before-the-window"),
        pytest.param(
            10.0, [(1, 12.0), (2 + STALE_SECONDS, 3.0)], 0.0, SeriesCount(5.0, 1, True), id="gap-restart"
        ),
        pytest.param(
            10.0, [(1 + STALE_SECONDS, 13.0)], 0.0, SeriesCount(3.0, 0, True), id="change-across-start-gap"
        ),
        pytest.param(
            10.0, [(1 + STALE_SECONDS, 10.0), (2 + STALE_SECONDS, 11.0)], 0.0, SeriesCount(1.0, 0, False),
            id="no-change-across-the-start-gap",
        ),
        pytest.param(
            10.0, [(1, 11.0), (2 + STALE_SECONDS, 15.0)], 0.0, SeriesCount(5.0, 0, False),
            id="rise-across-a-gap-inside-the-window",
        ),
    ],
)  # fmt: skip
def test_a_series_counts_its_increments_and_restarts(
    base: float, samples: list[tuple[float, float]], base_time: float | None, expected: SeriesCount
) -> None:
    assert series_count(base, samples, base_time) == expected


class Pods:
    """A request counter per pod, generated scrape by scrape, with the true number of requests kept."""

    def __init__(self, start: float) -> None:
        self.out = Exposition()
        self.times = [start + i * STEP for i in range(int(HISTORY / STEP))]
        self.served: dict[str, list[tuple[float, int, str]]] = {}

    def pod(self, pod: str, version: str, per_scrape: int, *, since: float = 0.0,
            restart: float | None = None, until: float = float("inf"),
            gap: tuple[float, float] = (0.0, 0.0), assignment: str = "weighted") -> None:  # fmt: skip
        """`per_scrape` requests before each scrape from `since` until `until`; the process restarts
        (its counter from 0) just before the first scrape at or after `restart`; not scraped during `gap`."""
        value, served = 0, self.served.setdefault(version, [])
        labels = {"model": MODEL, "version": version, "pod": pod, "protocol": "rest", "outcome": "success",
                  "assignment": assignment}  # fmt: skip
        for at in (t for t in self.times if since <= t < until):
            if restart is not None and restart <= at < restart + STEP:
                value = 0
            value += per_scrape
            served.append((at, per_scrape, assignment))
            if not gap[0] <= at < gap[1]:
                self.out.add("serving_requests", "counter", labels, at, float(value))

    def truth(self, version: str, start: float, end: float, assignment: str | None = None) -> int:
        """Requests counted at scrapes in (start, end] (only those so assigned, if given)."""
        return sum(
            n
            for at, n, how in self.served.get(version, [])
            if start < at <= end and assignment in {None, how}
        )


@pytest.fixture(scope="module")
def churn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningPrometheus, Pods, float]]:
    """Two hours of counters: version 1 on a steady pod, a pod restarted mid-window and a pod scaled away
    mid-window; version 2 on a pod born mid-window; version 3 restarted at the end of a 10-minute gap in
    its scrapes (what it served in the gap is lost with the restart)."""
    end = time.time() - 5
    pods = Pods(end - HISTORY)
    middle = end - 1800
    pods.pod("a", "1", 7)
    pods.pod("b", "1", 11, restart=middle)
    pods.pod("c", "1", 13, until=middle)
    pods.pod("d", "2", 5, since=middle)
    pods.pod("h", "2", 2, assignment="header")  # a header route's requests: counted, never in the split
    pods.pod("e", "3", 3, restart=middle, gap=(middle - 600, middle))
    with backfilled_prometheus(Path(tmp_path_factory.mktemp("churn")), pods.out.text()) as running:
        yield running, pods, pods.times[-1]


def test_counts_equal_the_requests_served_through_a_restart_and_a_scale_down(
    churn: tuple[RunningPrometheus, Pods, float],
) -> None:
    running, pods, last = churn
    start = last - 3600
    window = read_window(Prometheus(running.url), MODEL, start, last)
    prom = Prometheus(running.url)
    window = read_window(prom, MODEL, start, last)
    truth = pods.truth("1", start, last)
    assert window.versions["1"].requests == truth, (window.versions["1"], truth)
    assert window.versions["2"].requests == pods.truth("2", start, last), window.versions["2"]
    for version in ("1", "2"):
        weighted = pods.truth(version, start, last, "weighted")
        assert window.versions[version].weighted == weighted, (version, window.versions[version], weighted)
    assert window.versions["2"].weighted < window.versions["2"].requests, "the header route is left out"
    assert [s for s in window.resets if 'pod="b"' in s], window.resets
    assert not [s for s in window.unreconciled if 'version="1"' in s], "a scale-down and a restart reconcile"
    # What the earlier reading did: sum by version at each end, subtract (pod c is missing at the end).
    expr = f'sum(serving_requests_total{{model="{MODEL}",version="1"}})'
    naive = prom.query(expr, last)[0][1] - prom.query(expr, start)[0][1]
    assert naive < truth / 2, f"the sum-then-subtract reading is far off ({naive} of {truth})"


def test_a_restart_across_a_gap_is_unreconciled_and_the_decision_holds(
    churn: tuple[RunningPrometheus, Pods, float],
) -> None:
    running, _, last = churn
    window = read_window(Prometheus(running.url), MODEL, last - 3600, last)
    assert [s for s in window.unreconciled if 'pod="e"' in s], window.unreconciled
    inputs = Inputs(baseline="1", candidate="3", weights={"1": 95, "3": 5}, experiment=window, step=window)
    analysis = decide(inputs, Schedule(), Thresholds())
    assert analysis.decision == HOLD and analysis.reasons[0].startswith("counts cannot be reconciled"), (
        analysis.reasons
    )
    assert 'pod="e"' in analysis.reasons[0], analysis.reasons


def test_a_series_born_inside_the_window_counts_from_zero(
    churn: tuple[RunningPrometheus, Pods, float],
) -> None:
    running, pods, last = churn
    start = pods.times[0] - 60  # before any sample: every series is born inside the window
    window = read_window(Prometheus(running.url), MODEL, start, last)
    for version in ("1", "2"):
        assert window.versions[version].requests == pods.truth(version, start, last), window.versions[version]
