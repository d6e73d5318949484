"""When a step's weights are in effect (issue 14 point 2): `confirm` against a real Prometheus holding a
backfilled history of the weights gauge, where the test knows when each pod switched; and the replay's
time parsing."""

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from servectl.experiments.local_prometheus import RunningPrometheus
from servectl.experiments.promql import Prometheus
from servectl.experiments.window import WindowError, confirm, parse_time, replay_window
from tests.servectl.backfill import Exposition, backfilled_prometheus

STEP = 15.0
OLD, NEW = {"1": 95, "2": 5}, {"1": 75, "2": 25}


def _gauge(
    out: Exposition, model: str, pod: str, times: list[float], switch: float | None, **extra: str
) -> None:
    """The pod reports OLD until `switch` (None: never), NEW from the first scrape at or after it."""
    for at in times:
        weights = NEW if switch is not None and at >= switch else OLD
        for version, weight in weights.items():
            labels = {"model": model, "version": version, "pod": pod, **extra}
            out.add("serving_variant_weight", "gauge", labels, at, float(weight))


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningPrometheus, list[float]]]:
    """An hour of scrapes. Model `m`: pod a switches 20 scrapes before the end, pod b 10 before, pod c was
    scaled away (still at the old weights) 30 minutes before the end. Model `lag`: pod a switched, pod b
    never did."""
    end = float(int(time.time()) - 5)  # whole seconds: Prometheus keeps milliseconds
    times = [end - 3600 + i * STEP for i in range(int(3600 / STEP))]
    out = Exposition()
    _gauge(out, "m", "a", times, times[-20])
    _gauge(out, "m", "b", times, times[-10])
    _gauge(out, "m", "c", times[: len(times) // 2], None)
    _gauge(out, "lag", "a", times, times[-20])
    _gauge(out, "lag", "b", times, None)
    _gauge(out, "meshed", "controller", times, times[-5], source="mesh")
    _gauge(out, "meshed", "a", times, None)  # a pod's own config, which the mesh does not route by
    with backfilled_prometheus(Path(tmp_path_factory.mktemp("weights")), out.text()) as running:
        yield running, times


def test_the_window_begins_when_the_last_server_reports_the_new_weights(
    history: tuple[RunningPrometheus, list[float]],
) -> None:
    running, times = history
    prom = Prometheus(running.url)
    since, end = times[-25], times[-1]
    confirmed = confirm(prom, "m", NEW, since, end)
    assert (confirmed.confirmed_at, confirmed.servers) == (times[-10], 2), (
        f"pod b's first new scrape, the scaled-away pod not counted: {confirmed}"
    )
    assert confirm(prom, "m", NEW, since, end) == confirmed, "the same end, the same reading"
    before = confirm(prom, "m", NEW, since, times[-15])
    assert before.confirmed_at is None and before.reason == (
        "weights v1 75 / v2 25 not yet reported by all servers: 1 of 2 still at v1 95 / v2 5"
    ), before


def test_a_server_that_never_applied_the_step_keeps_the_window_closed(
    history: tuple[RunningPrometheus, list[float]],
) -> None:
    running, times = history
    lagging = confirm(Prometheus(running.url), "lag", NEW, times[-25], times[-1])
    assert lagging.confirmed_at is None and lagging.servers == 2, lagging
    assert lagging.reason is not None and "1 of 2 still at v1 95 / v2 5" in lagging.reason, lagging
    unchanged = confirm(Prometheus(running.url), "lag", OLD, times[-25], times[-1])
    assert unchanged.confirmed_at is None, "pod a left the old weights, so they are not everywhere"


def test_no_gauge_means_the_weights_cannot_be_confirmed(
    history: tuple[RunningPrometheus, list[float]],
) -> None:
    running, times = history
    missing = confirm(Prometheus(running.url), "other", NEW, times[-25], times[-1])
    assert missing.confirmed_at is None and missing.reason is not None, missing
    assert missing.reason.startswith("no server reports serving_variant_weight for model 'other'"), missing


NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1799999000", 1_799_999_000.0), ("1799999000.5", 1_799_999_000.5),
     ("2027-01-15T07:40:00Z", 1_799_998_800.0), ("2027-01-15T08:40:00+01:00", 1_799_998_800.0)],
)  # fmt: skip
def test_times_are_rfc3339_or_unix_seconds(text: str, expected: float) -> None:
    assert parse_time(text, NOW) == expected


@pytest.mark.parametrize(
    ("start", "end", "reason"),
    [
        ("1800000100", None, "is in the future"),
        ("1799990000", "1800000100", "is in the future"),
        ("2027-01-15T08:00:00", None, "has no time zone"),
        ("yesterday", None, "is neither RFC 3339"),
        ("1799990000", "1799990000", "must be after --start"),
        ("1799990000", "1799980000", "must be after --start"),
    ],
)
def test_a_replay_window_that_cannot_be_counted_is_refused(start: str, end: str | None, reason: str) -> None:
    with pytest.raises(WindowError, match=reason):
        replay_window(start, end, NOW)


def test_a_replay_window_ends_now_by_default() -> None:
    assert replay_window("1799990000", None, NOW) == (1_799_990_000.0, NOW)


def test_in_the_mesh_the_weights_istio_applies_are_read_not_the_pods(
    history: tuple[RunningPrometheus, list[float]],
) -> None:
    running, times = history
    prom = Prometheus(running.url)
    mesh = confirm(prom, "meshed", NEW, times[-25], times[-1], source="mesh")
    assert (mesh.confirmed_at, mesh.servers) == (times[-5], 1), mesh
    pods = confirm(prom, "meshed", NEW, times[-25], times[-1])
    assert pods.confirmed_at is None and pods.servers == 1, f"the pod's own series are read apart: {pods}"
