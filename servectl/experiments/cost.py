"""The resource guardrail: compute seconds per request, the candidate's shown at most `margin` times the
baseline's before promotion.

What is measured: each answered request's share of the ONNX Runtime time of the batch it ran in, by rows
(0 for a response-cache hit), from the servers' own counters (`serving_request_compute_seconds` count and
sum, and `..._squares_total`; serving_image/dataplane.py). So a version that batches worse, or whose graph
is heavier, costs more per request; the comparison is of compute, not of wall time or of pods.

The method: non-inferiority of a ratio of means turned into a difference (Fieller's approach, as used for
the ratio-to-reference tests of Hauschke, Kieser and Hothorn, "Proof of safety in toxicology based on the
ratio of two means for normally distributed data", Biometrical Journal 41, 1999): mean_c <= m * mean_b
exactly when mean_c - m * mean_b <= 0, and m * baseline is a sample with n, m * sum and m^2 * squares. The
difference runs through the existing always-valid machinery (stats.stratified_mean_difference: Welch
variances per epoch, inverse-variance stratified by rollout step, the normal-mixture mSPRT of Johari et
al.), and non-inferiority is shown when the upper bound of its confidence sequence at level 1 - alpha is
below 0.

Or, as the error test has a floor for rare errors, the candidate shown at most `floor` seconds above the
baseline per request (the baseline shifted by `floor`: n, sum + n floor, squares + 2 floor sum + n floor^2):
a model whose compute is a few microseconds of timer and scheduler noise (the doubler: 0.09 ms with an sd
several times that) would otherwise need far more requests than its rollout serves to show a ratio, for a
cost nobody would hold a release for. Each of the two bounds gets half of alpha.

It is a promotion guard only (like the other margins, at alpha): a costlier candidate is held, not rolled
back, so it takes no share of the rollback tests' alpha. Not measured (a server image without the counters,
or too few requests) holds too, unless the stack marks `cost` optional.
"""

from dataclasses import dataclass
from typing import Any

import numpy as np

from servectl.experiments import stats
from servectl.experiments.promql import VersionCounts

KEY = "cost"


@dataclass(frozen=True)
class CostResult:
    """Per-request compute of both versions and whether the candidate was shown within the margin."""

    statistics: dict[str, Any]
    shown: bool
    measured: bool


def _arm(
    counts: list[VersionCounts], scale: float = 1.0, shift: float = 0.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per epoch (count, sum, squares) of `scale * x + shift` for every compute share x."""
    n = np.array([c.computed for c in counts], dtype=np.float64)
    total = np.array([c.compute_sum for c in counts], dtype=np.float64)
    squares = np.array([c.compute_squares for c in counts], dtype=np.float64)
    squares = scale * scale * squares + 2.0 * scale * shift * total + n * shift * shift
    return n, scale * total + n * shift, squares


def compute_noninferiority(
    base: list[VersionCounts],
    cand: list[VersionCounts],
    *,
    margin: float,
    floor: float,
    tau: float,
    alpha: float,
    min_requests: int,
) -> CostResult:
    """Whether the candidate's mean compute per request is shown at most `margin` times the baseline's, or
    at most `floor` seconds above it."""
    nb, sb, _ = _arm(base)
    nc, sc, _ = _arm(cand)
    per_request = (float(sb.sum()) / max(float(nb.sum()), 1.0), float(sc.sum()) / max(float(nc.sum()), 1.0))
    figures: dict[str, Any] = {
        "requests": [float(nb.sum()), float(nc.sum())],
        "baseline_seconds": per_request[0],
        "candidate_seconds": per_request[1],
        "ratio": round(per_request[1] / per_request[0], 4) if per_request[0] > 0 else None,
        "margin": margin,
        "floor_seconds": floor,
    }
    if min(float(nb.sum()), float(nc.sum())) < min_requests or per_request[0] <= 0:
        return CostResult(figures | {"tested": False}, shown=False, measured=False)
    ratio = stats.stratified_mean_difference(_arm(base, margin), _arm(cand), tau=tau, alpha=alpha / 2)
    above = stats.stratified_mean_difference(_arm(base, shift=floor), _arm(cand), tau=tau, alpha=alpha / 2)
    figures |= {
        "tested": True,
        "ratio_upper_bound_sd": round(float(ratio.ci_high), 6),
        "floor_upper_bound_sd": round(float(above.ci_high), 6),
    }
    return CostResult(figures, shown=float(ratio.ci_high) < 0.0 or float(above.ci_high) < 0.0, measured=True)
