"""Latency histograms as the checks read them: per-bucket counts on a common set of bounds, and quantiles
known only to the resolution of the buckets.

Prometheus keeps a histogram as cumulative counts per upper bound; a quantile is only known to lie in the
bucket where the cumulative share crosses it. So a quantile is reported as that bucket's [lower, upper]
bounds, and a difference of quantiles as the widest difference those bounds allow: a reviewer sees what the
histogram can and cannot tell apart, instead of an interpolated figure that looks exact.
"""

import math

import numpy as np

from servectl.experiments.promql import VersionCounts

QUANTILES = (0.5, 0.9, 0.99)


def common_bounds(counts: list[VersionCounts]) -> list[float]:
    """Every upper bound any of the histograms has (a bucket added in a release is read by all)."""
    return sorted({b for c in counts for b in c.latency_buckets})


def per_bucket(counts: list[VersionCounts], bounds: list[float]) -> np.ndarray:
    """Per-bucket (not cumulative) counts, one row per window; a missing bound carries the count below it."""
    cumulative = np.array([[c.latency_buckets.get(b, 0.0) for b in bounds] for c in counts], dtype=np.float64)
    filled = np.maximum.accumulate(cumulative, axis=1)
    return np.diff(np.concatenate([np.zeros((len(counts), 1)), filled], axis=1), axis=1)


def quantile_bucket(buckets: np.ndarray, bounds: list[float], q: float) -> tuple[float, float] | None:
    """The [lower, upper] bounds (seconds) of the bucket holding the q-quantile; None without samples."""
    total = float(buckets.sum())
    if total <= 0:
        return None
    index = int(np.searchsorted(np.cumsum(buckets), q * total, side="left"))
    index = min(index, len(bounds) - 1)
    return (bounds[index - 1] if index else 0.0), bounds[index]


def _seconds(value: float) -> float | None:
    return None if math.isinf(value) else round(value, 6)


def quantile_differences(base: np.ndarray, cand: np.ndarray, bounds: list[float]) -> dict[str, object]:
    """Each quantile's bucket per version and the candidate-minus-baseline difference's bounds (None:
    unbounded, the quantile lies in the +Inf bucket)."""
    out: dict[str, object] = {}
    for q in QUANTILES:
        b, c = quantile_bucket(base, bounds, q), quantile_bucket(cand, bounds, q)
        if b is None or c is None:
            continue
        out[f"p{q * 100:g}"] = {
            "baseline": [_seconds(b[0]), _seconds(b[1])],
            "candidate": [_seconds(c[0]), _seconds(c[1])],
            "difference": [_seconds(c[0] - b[1]), _seconds(c[1] - b[0])],
        }
    return out
