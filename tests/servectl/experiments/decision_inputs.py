"""Builders for the decision tests: an arm's counts and the inputs of one analysis, so that each test
states only what it varies."""

import math

from servectl.experiments.checks import FEEDBACK_METRICS
from servectl.experiments.decision import Inputs, Schedule, Thresholds
from servectl.experiments.promql import VersionCounts, Window

INF = math.inf
FAST = {0.005: 900.0, 0.01: 990.0, 0.025: 1000.0, INF: 1000.0}
"""A cumulative latency histogram per 1,000 requests: 90% under 5 ms."""
SLOW = {0.005: 700.0, 0.01: 950.0, 0.025: 1000.0, INF: 1000.0}
"""70% under 5 ms: slower than FAST in 60% of request pairs, beyond the 0.05 tolerance."""
SLIGHTLY_SLOW = {0.005: 860.0, 0.01: 985.0, 0.025: 1000.0, INF: 1000.0}
"""Slower than FAST in 52% of request pairs: within the 0.05 tolerance, proven only with enough samples."""
QUICK = {0.005: 950.0, 0.01: 995.0, 0.025: 1000.0, INF: 1000.0}
"""Faster than FAST."""

HALF = {"1": 50, "2": 50}
SCHEDULE = Schedule(steps=(5, 25, 50, 100), min_samples=500, failed_checks=1)
TH = Thresholds(optional_metrics=frozenset({*FEEDBACK_METRICS, "cost"}), error_margin=0.01)
"""The tests' settings: feedback metrics and cost optional and a one-point error floor, so that each test
states only what it varies (test_checks_errors.py tests the error gate at its defaults, test_cost.py the
cost guard; `arm` still gives compute figures, so cost is checked where they exist)."""


def arm(
    requests: float,
    errors: float = 0.0,
    *,
    latency: dict[float, float] | None = FAST,
    converted: float = 0.0,
    feedback: float = 0.0,
    values: tuple[float, float, float] | None = None,
    correct: float = 0.0,
    labelled: float = 0.0,
    weighted: float | None = None,
    sticky_users: float = 0.0,
    compute: tuple[float, float] | None = (0.002, 0.001),
) -> VersionCounts:
    """One version's counts: `latency` per 1,000 requests (scaled to `requests`; None: no histogram),
    `converted` of `feedback` conversions, `values` as (count, mean, sd), `correct` of `labelled` rows;
    `weighted` of the requests assigned by the weights (default: all of them); `compute` the mean and sd
    of compute seconds per request (None: the servers export none)."""
    counts = VersionCounts(
        requests=requests,
        weighted=requests if weighted is None else weighted,
        sticky_users=sticky_users,
        errors=errors,
        converted=converted,
        not_converted=feedback - converted,
        correct=correct,
        incorrect=labelled - correct,
        latency_buckets={b: n * requests / 1000 for b, n in (latency or {}).items()},
    )
    if compute is not None:
        counts.computed, counts.compute_sum = requests, requests * compute[0]
        counts.compute_squares = (requests - 1) * compute[1] ** 2 + requests * compute[0] ** 2
    if values is not None:
        n, mean, sd = values
        counts.values, counts.value_sum = n, n * mean
        counts.value_squares = (n - 1) * sd * sd + n * mean * mean
    return counts


def inputs(
    base: VersionCounts,
    cand: VersionCounts,
    *,
    weights: dict[str, int] | None = None,
    step: Window | None = None,
    prior_p: dict[str, float] | None = None,
    prior_ci: dict[str, tuple[float, float]] | None = None,
    prior_failed_checks: int = 0,
    gate_passed: bool | None = None,
    prior_srm_log_bf: float = 0.0,
) -> Inputs:
    """Baseline v1 and candidate v2; the step's counts are the experiment's unless `step` is given."""
    whole = Window(versions={"1": base, "2": cand})
    return Inputs(
        baseline="1",
        candidate="2",
        weights=dict(HALF if weights is None else weights),
        experiment=whole,
        step=whole if step is None else step,
        prior_p=dict(prior_p or {}),
        prior_ci=dict(prior_ci or {}),
        prior_failed_checks=prior_failed_checks,
        gate_passed=gate_passed,
        prior_srm_log_bf=prior_srm_log_bf,
    )
