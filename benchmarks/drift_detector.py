"""How good is the drift detector: false alarms on unshifted traffic and detection delay after a mean shift.

A seeded simulation of the whole decision, as the server and Prometheus make it (issue 15 point 8):

- the profile: per feature, 9 inner decile edges of a standard-normal training sample of 10,000 rows, and the
  training rows' share per bin (`bisect_right`, as serving_image bins), a fresh training sample per seed;
- the traffic: Poisson requests at `--rates` requests/s, each sampled with probability `--sample-rate` (the
  server's SERVING_DRIFT_SAMPLE_RATE, default 0.1), one row per request, every feature standard normal, and
  after the shift one feature's mean moved by `delta` standard deviations;
- the recording rule every 5 minutes: the 1h PSI of the counts in the last 12 five-minute intervals
  (`servectl.drift.scores.psi`, the one implementation, floor 1e-4), per feature;
- the alerts: PSI > 0.1 (warning) or > 0.25 (critical) with at least 500 sampled rows in the hour, held at
  four consecutive evaluations (`for: 15m` at a 5-minute evaluation interval).

(a) False alarms: days of unshifted traffic (after an hour's warm-up, so every window is full), the share of
days with any warning, or any critical alert, on any of the model's features. (b) Detection delay: an hour
of unshifted traffic, then the shift; the time from the shift to the shifted feature's alert firing, median
and p90 over seeds (">6h" when more than that share of seeds had no alert within 6 hours).

Run: `make drift-detector` (or `.venv/bin/python benchmarks/drift_detector.py --help`).
"""

import argparse
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from servectl.drift import scores

BINS = 10
TRAINING_ROWS = 10_000
INTERVAL_S = 300
"""Rule evaluation interval of the simulation: a 5-minute grid."""
WINDOW_INTERVALS = 12
"""The 1h window."""
HOLD_EVALUATIONS = 4
"""`for: 15m` at 5-minute evaluations: pending at the first true one, firing at the fourth in a row."""
THRESHOLDS = {"warning": 0.1, "critical": 0.25}
MIN_ROWS = 500
DAY_INTERVALS = 24 * 3600 // INTERVAL_S
HORIZON_INTERVALS = 6 * 3600 // INTERVAL_S
SHIFTS = (0.25, 0.5, 1.0)
FALSE_ALARM_SEED = 1_000
DETECTION_SEED = 100_000

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class Traffic:
    """The simulated live traffic."""

    requests_per_second: float
    sample_rate: float
    features: int

    @property
    def sampled_per_interval(self) -> float:
        """Mean sampled rows per 5-minute interval."""
        return self.requests_per_second * self.sample_rate * INTERVAL_S


def profile(rng: np.random.Generator, features: int) -> tuple[FloatArray, FloatArray]:
    """(edges [features, 9], expected shares [features, 10]) from a standard-normal training sample."""
    train = rng.standard_normal((TRAINING_ROWS, features))
    edges = np.quantile(train, np.arange(1, BINS) / BINS, axis=0).T
    counts = np.stack([np.bincount(binned(edges[f], train[:, f]), minlength=BINS) for f in range(features)])
    return edges, scores.shares(counts)


def binned(edges: FloatArray, values: FloatArray) -> IntArray:
    """The bin of each value: `bisect.bisect_right(edges, x)`, as the server counts it."""
    out: IntArray = np.searchsorted(edges, values, side="right").astype(np.int64)
    return out


def interval_counts(
    rng: np.random.Generator, traffic: Traffic, edges: FloatArray, shift: FloatArray
) -> IntArray:
    """Sampled rows counted per (interval, feature, bin); `shift` [intervals, features] moves the means."""
    intervals, features = shift.shape
    rows = rng.poisson(traffic.sampled_per_interval, size=intervals)
    interval_of_row = np.repeat(np.arange(intervals), rows)
    values = rng.standard_normal((interval_of_row.size, features)) + shift[interval_of_row]
    counts = np.zeros((intervals, features, BINS), dtype=np.int64)
    for f in range(features):
        cell = interval_of_row * BINS + binned(edges[f], values[:, f])
        counts[:, f, :] = np.bincount(cell, minlength=intervals * BINS).reshape(intervals, BINS)
    return counts


def hourly_psi(counts: IntArray, expected: FloatArray) -> tuple[FloatArray, FloatArray]:
    """(PSI [evaluations, features], sampled rows [evaluations]) at the end of every interval with a full
    hour behind it, as `model:drift_psi:1h` records them."""
    cumulative = np.concatenate([np.zeros_like(counts[:1]), np.cumsum(counts, axis=0)])
    window = cumulative[WINDOW_INTERVALS:] - cumulative[:-WINDOW_INTERVALS]
    rows = window[:, 0, :].sum(axis=-1).astype(np.float64)
    return scores.psi(expected, scores.shares(window)), rows


def firing(psi: FloatArray, rows: FloatArray, threshold: float) -> BoolArray:
    """Whether the alert fires at each evaluation, per feature: the condition held at `HOLD_EVALUATIONS` in
    a row (Prometheus's `for`, evaluated on the same grid)."""
    condition = (psi > threshold) & (rows >= MIN_ROWS)[:, None]
    run = np.zeros(condition.shape[1:], dtype=np.int64)
    fired = np.zeros_like(condition)
    for k in range(condition.shape[0]):
        run = np.where(condition[k], run + 1, 0)
        fired[k] = run >= HOLD_EVALUATIONS
    return fired


def false_alarm_day(seed: int, traffic: Traffic) -> tuple[dict[str, bool], float]:
    """One day of unshifted traffic: whether each alert fired on any feature, and the highest 1h PSI seen."""
    rng = np.random.default_rng(seed)
    edges, expected = profile(rng, traffic.features)
    shift = np.zeros((WINDOW_INTERVALS - 1 + DAY_INTERVALS, traffic.features))
    psi, rows = hourly_psi(interval_counts(rng, traffic, edges, shift), expected)
    alarms = {name: bool(firing(psi, rows, t).any()) for name, t in THRESHOLDS.items()}
    return alarms, float(psi.max())


def detection_delays(seed: int, traffic: Traffic, delta: float) -> dict[str, float]:
    """Minutes from the shift to each alert firing on the shifted feature (inf: not within 6 hours), and
    under "settled" the 1h PSI at the end, when the window has long held only shifted rows."""
    rng = np.random.default_rng(seed)
    edges, expected = profile(rng, 1)
    before = 2 * WINDOW_INTERVALS
    shift = np.zeros((before + HORIZON_INTERVALS, 1))
    shift[before:] = delta
    psi, rows = hourly_psi(interval_counts(rng, traffic, edges, shift), expected)
    # evaluation k ends interval k + WINDOW_INTERVALS - 1; the shift starts at interval `before`
    first_after = before - WINDOW_INTERVALS + 1
    delays = {"settled": float(psi[-1, 0])}
    for name, t in THRESHOLDS.items():
        fired = np.flatnonzero(firing(psi, rows, t)[first_after:, 0])
        delays[name] = float((fired[0] + 1) * INTERVAL_S / 60) if fired.size else float("inf")
    return delays


def quantile(delays: FloatArray, q: float) -> float:
    """A quantile that is one of the delays (no interpolation), so undetected seeds (inf) count as late."""
    return float(np.quantile(delays, q, method="inverted_cdf"))


def minutes(value: float) -> str:
    """A delay for the table."""
    return ">6h" if value == float("inf") else f"{value:.0f} min"


def run(traffic: Traffic, days: int, seeds: int) -> list[str]:
    """The table's lines for one traffic level."""
    per_hour = traffic.sampled_per_interval * WINDOW_INTERVALS
    lines = [
        f"traffic {traffic.requests_per_second:g} req/s, sample rate {traffic.sample_rate:g} "
        f"({per_hour:,.0f} sampled rows/h), {traffic.features} features"
    ]
    days_alarmed = dict.fromkeys(THRESHOLDS, 0)
    highest: list[float] = []
    for day in range(days):
        alarms, top = false_alarm_day(FALSE_ALARM_SEED + day, traffic)
        highest.append(top)
        for name in THRESHOLDS:
            days_alarmed[name] += alarms[name]
    share = {name: n / days for name, n in days_alarmed.items()}
    lines.append(
        f"  (a) unshifted, {days} days (seeds {FALSE_ALARM_SEED}..{FALSE_ALARM_SEED + days - 1}): days with "
        f"a warning {share['warning']:.3f}, with a critical {share['critical']:.3f}; highest 1h PSI "
        f"of a day: median {np.median(highest):.4f}, max {max(highest):.4f}"
    )
    lines.append(
        f"  (b) {'shift':>8}  {'settled PSI':>11}  {'alert':<9} {'detected':>8}  {'median':>8}  {'p90':>8}"
    )
    for i, delta in enumerate(SHIFTS):
        first = DETECTION_SEED * (i + 1)
        delays = [detection_delays(first + s, traffic, delta) for s in range(seeds)]
        settled = np.median([x["settled"] for x in delays])
        for name in THRESHOLDS:
            d = np.array([x[name] for x in delays])
            lines.append(
                f"      {delta:>6g}sd  {settled:11.3f}  {name:<9} {np.isfinite(d).mean():8.1%}  "
                f"{minutes(quantile(d, 0.5)):>8}  {minutes(quantile(d, 0.9)):>8}"
            )
    lines.append(f"      ({seeds} seeds per shift, from {DETECTION_SEED}, {2 * DETECTION_SEED}, ...)")
    return lines


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--rates", default="20,2,0.5", help="Requests/s to simulate, comma-separated.")
    parser.add_argument("--sample-rate", type=float, default=0.1, help="SERVING_DRIFT_SAMPLE_RATE.")
    parser.add_argument("--features", type=int, default=30, help="Features of the model (false alarms).")
    parser.add_argument("--days", type=int, default=200, help="Simulated days of unshifted traffic.")
    parser.add_argument("--seeds", type=int, default=200, help="Seeds per shift for the delays.")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    """Print the table."""
    args = parse_args(argv)
    started = time.perf_counter()
    print("drift detector: 10 decile bins of 10,000 standard-normal training rows; 1h PSI every 5 min;")
    print("warning PSI > 0.1, critical > 0.25, for 15m, at least 500 sampled rows in the hour")
    for rate in (float(r) for r in args.rates.split(",")):
        traffic = Traffic(requests_per_second=rate, sample_rate=args.sample_rate, features=args.features)
        for line in run(traffic, args.days, args.seeds):
            print(line, flush=True)
    print(f"({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
