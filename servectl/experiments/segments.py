"""The segment guards: the error-rate regression test in each key user segment, so that a candidate better
on the whole but worse for one segment (say `enterprise`) is held.

Segments are a bounded set of values of one request header, configured in the stack's rollout block
(`segments: {header: x-segment, values: [enterprise, free]}`) and counted by the servers (the `segment`
label of `serving_requests_total`; serving_image/segments.py). Each configured segment gets the rate-ratio
regression test of rate_ratio.py on its own requests, stratified by epoch like the whole.

A regression in a segment HOLDS, it does not roll back. The whole-population tests own rollback and its
alpha; a segment regression while the whole is fine is a trade-off between users (one segment loses what
others gain) that a person should weigh, and a segment is a small sample among several, so its evidence is
weaker. The rollout stays at its step, with the segment's figures in the log, until someone rolls back or
restarts the experiment.

Alpha: the guards split the error test's share of the rollback family (`Thresholds.rollback_alpha`), each
at `rollback_alpha / len(segments)` (Bonferroni), with the running minimum of each segment's always-valid
p-value. So the chance that any segment guard ever holds a candidate no worse than the baseline in every
segment is at most `rollback_alpha`; they never roll back, so the family's false-rollback bound (alpha) is
unchanged.
"""

import math
from typing import Any

import numpy as np

from servectl.experiments import rate_ratio
from servectl.experiments.promql import VersionCounts

PREFIX = "segment:"
"""Statistics keys are `segment:<value>`, so the experiment log keeps each guard's running minimum p."""


def _counts(counts: list[VersionCounts], segment: str) -> tuple[np.ndarray, np.ndarray]:
    errors = np.array([c.segment_errors.get(segment, 0.0) for c in counts], dtype=np.float64)
    requests = np.array([c.segment_requests.get(segment, 0.0) for c in counts], dtype=np.float64)
    return errors, requests


def segment_guards(
    base: list[VersionCounts],
    cand: list[VersionCounts],
    segments: tuple[str, ...],
    *,
    alpha: float,
    tau: float,
    margin: float,
    prior_p: dict[str, float],
) -> tuple[dict[str, Any], list[str]]:
    """Each segment's statistics (keyed `segment:<value>`) and the hold reasons of those that regressed.

    `alpha` is the share of the family the guards split (the error test's); `prior_p` the running minimum
    of each guard's p-value so far; `margin` only feeds the unused non-inferiority side of the test."""
    statistics: dict[str, Any] = {}
    holds: list[str] = []
    each = alpha / max(len(segments), 1)
    for segment in segments:
        xb, nb = _counts(base, segment)
        xc, nc = _counts(cand, segment)
        test = rate_ratio.rate_ratio_test(xb, nb, xc, nc, margin=margin, tau=tau)
        key = PREFIX + segment
        p = min(float(test.regression_p), prior_p.get(key, 1.0))
        rates = (float(xb.sum()) / max(float(nb.sum()), 1.0), float(xc.sum()) / max(float(nc.sum()), 1.0))
        ratio = float(test.estimate)
        statistics[key] = {
            "requests": [float(nb.sum()), float(nc.sum())],
            "errors": [float(xb.sum()), float(xc.sum())],
            "baseline": round(rates[0], 6),
            "candidate": round(rates[1], 6),
            "ratio": None if math.isnan(ratio) else round(ratio, 4),
            "p_value": round(p, 6),
            "alpha": each,
        }
        if p <= each:
            holds.append(
                f"segment {segment}: error rate {rates[1]:.2%} vs the baseline's {rates[0]:.2%} in this "
                f"segment (always-valid p = {p:.2g} <= {each:.3g}, the error test's alpha split over "
                f"{len(segments)} segments); held, not rolled back: a person weighs a loss for one segment "
                "against the whole"
            )
    return statistics, holds
