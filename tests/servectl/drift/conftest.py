"""A real Prometheus holding real drift series: three hours of the serving image's drift counters, backfilled
(tests/servectl/backfill.py), so the windows, the shift's timing and the counters' increases are
Prometheus's own."""

import time
from collections import defaultdict
from collections.abc import Iterator

import numpy as np
import pytest

from servectl.experiments.local_prometheus import RunningPrometheus
from tests.servectl.backfill import Exposition, backfilled_prometheus

MODEL = "tabular-classifier"
UNMONITORED = "legacy-model"
IDLE = "idle-model"
"""Monitored, with a profile, but no sampled rows in the last hours (its counters stand still)."""
NUMERIC = ("mean_radius", "mean_texture", "mean_area")
CATEGORICAL = {"segment": ("a", "b", "c", "other")}
SHIFTED_FEATURE = "mean_radius"
SHIFTED_SHARES = (0.01, 0.02, 0.03, 0.04, 0.05, 0.07, 0.1, 0.18, 0.22, 0.28)
"""Version 2's mean_radius after the shift: mass moved to the top bins (9, 8, 7)."""
SHIFT_AGO_SECONDS = 45 * 60
HISTORY_SECONDS = 3 * 3600
STEP_SECONDS = 30
ROWS_PER_STEP = 60
"""Sampled rows per scrape: 7,200 an hour, as 20 requests/s at the default 10% sampling would give."""


def profile() -> dict[str, dict[str, float]]:
    """Feature to bin to expected share: deciles for the numeric features, a categorical one."""
    shares: dict[str, dict[str, float]] = {f: {str(b): 0.1 for b in range(10)} for f in NUMERIC}
    shares["segment"] = dict(zip(CATEGORICAL["segment"], (0.5, 0.3, 0.15, 0.05), strict=True))
    return shares


def add_version(
    out: Exposition, rng: np.random.Generator, version: str, times: list[float], shift_at: float | None
) -> None:
    """A monitored version's counters and gauges over `times`; from `shift_at` on, mean_radius is shifted."""
    expected = profile()
    totals: dict[tuple[str, str], float] = defaultdict(float)
    rows = 0.0
    base = {"model": MODEL, "version": version}
    for at in times:
        rows += ROWS_PER_STEP
        out.add("serving_drift_rows", "counter", base, at, rows)
        out.add("serving_drift_monitored", "gauge", base, at, 1.0)
        for feature, shares in expected.items():
            live = (
                SHIFTED_SHARES
                if shift_at is not None and at >= shift_at and feature == SHIFTED_FEATURE
                else None
            )
            probabilities = np.array(live or list(shares.values()))
            counts = rng.multinomial(ROWS_PER_STEP, probabilities / probabilities.sum())
            for b, n in zip(shares, counts, strict=True):
                totals[feature, b] += float(n)
                labels = base | {"feature": feature, "bin": b}
                out.add("serving_drift_input", "counter", labels, at, totals[feature, b])
                out.add("serving_drift_expected_share", "gauge", labels, at, shares[b])


def history(now: float) -> str:
    """Three hours up to `now`: version 1 unshifted, version 2 with mean_radius shifted for the last 45
    minutes, an unmonitored model (monitored 0, no counts) and an idle one (counters standing still)."""
    rng = np.random.default_rng(20261130)
    times = [now - HISTORY_SECONDS + i * STEP_SECONDS for i in range(HISTORY_SECONDS // STEP_SECONDS)]
    out = Exposition()
    add_version(out, rng, "1", times, None)
    add_version(out, rng, "2", times, now - SHIFT_AGO_SECONDS)
    for at in times:
        out.add("serving_drift_monitored", "gauge", {"model": UNMONITORED, "version": "1"}, at, 0.0)
        idle = {"model": IDLE, "version": "1"}
        out.add("serving_drift_monitored", "gauge", idle, at, 1.0)
        out.add("serving_drift_rows", "counter", idle, at, 1200.0)
        for b, share in profile()["mean_area"].items():
            labels = idle | {"feature": "mean_area", "bin": b}
            out.add("serving_drift_input", "counter", labels, at, 120.0)
            out.add("serving_drift_expected_share", "gauge", labels, at, share)
    return out.text()


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPrometheus]:
    """Prometheus started on blocks backfilled from `history`, ending a few seconds before now."""
    with backfilled_prometheus(
        tmp_path_factory.mktemp("drift-prometheus"), history(time.time() - 5)
    ) as running:
        yield running
