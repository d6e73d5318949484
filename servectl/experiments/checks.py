"""The checks of an analysis: errors, latency, and the feedback metrics, each a regression test and a
promotion bound.

Every check is stratified by allocation epoch (each rollout step's window is a stratum), so a rate that
drifts over time while the split changes does not look like a difference between versions.

Rollback tests share alpha (Bonferroni): each of the `ROLLBACK_TESTS` configured runs at alpha / their
number, fixed before any data, so the chance that any of them ever fires on a candidate as good as the
baseline is at most alpha. Promotion bounds are each at alpha: passing all of them wrongly is no likelier
than passing one. The segment guards (segments.py) split the error test's share among the key segments and
only hold; the cost guardrail (cost.py) is a promotion bound.
"""

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from servectl.experiments import cost, latency, rate_ratio, segments, stats
from servectl.experiments.promql import VersionCounts

FEEDBACK_METRICS = ("conversion", "value", "accuracy")
ROLLBACK_TESTS = ("error_rate", "latency", *FEEDBACK_METRICS)


@dataclass(frozen=True, kw_only=True)
class Thresholds:
    """Significance levels, mixture widths and margins of the tests."""

    alpha: float = 0.05
    """False-rollback rate of the family of rollback tests, and the error of each promotion bound."""
    srm_p: float = 0.001
    """A split whose always-valid SRM p-value (running minimum over the experiment) is at or below this is
    a sample-ratio mismatch: the false-alarm rate of the whole experiment, however often one looks."""
    srm_min_requests: int = 100
    """Randomised units (weighted requests and sticky users) in a step before the split is tested."""
    error_ratio_margin: float = 1.5
    """Promotion needs the candidate's error rate shown at most this many times the baseline's."""
    error_ratio_tau: float = 0.7
    """Mixture scale of the rate-ratio tests on the log ratio (0.7: tuned to about a doubling)."""
    error_margin: float = 0.0005
    """Or shown at most this much above it (absolute): with errors too rare for a ratio, a floor."""
    latency_tau: float = 0.05
    """Mixture sd of the latency rank test."""
    latency_tolerance: float = 0.05
    """Slower means P(candidate slower) - 0.5 beyond this; promotion needs the upper bound below it."""
    conversion_tau: float = 0.02
    """Mixture sd of the conversion test."""
    conversion_margin: float = 0.05
    """Promotion needs the conversion difference's lower bound above minus this share of the baseline's
    conversion (relative: 0.05 of a 30% conversion is 1.5 points)."""
    min_feedback: int = 50
    """Feedback per arm before the conversion, value or accuracy test runs."""
    accuracy_tau: float = 0.02
    """Mixture sd of the accuracy test (labelled feedback: prediction correct or not)."""
    accuracy_margin: float = 0.01
    """Promotion needs the accuracy difference's lower bound above minus this share of the baseline's
    accuracy (relative: 0.01 of 90% is 0.9 points)."""
    value_tau: float = 0.1
    """Mixture sd of the value test, in standard deviations of the value."""
    value_margin: float = 0.05
    """Promotion needs the value difference's lower bound above minus this many standard deviations."""
    optional_metrics: frozenset[str] = frozenset()
    """Feedback metrics (and `cost`) the stack marks optional: not yet measurable, they do not hold
    promotion. `latency` is made optional by a source that has no latency histograms (CloudWatch)."""
    segments: tuple[str, ...] = ()
    """Key user segments, each guarded (servectl/experiments/segments.py): a regression in one holds."""
    cost_margin: float = 1.2
    """Promotion needs the candidate's compute per request shown at most this many times the baseline's."""
    cost_floor_seconds: float = 0.0001
    """Or shown at most this much compute per request above it (0.1 ms): a floor for tiny models."""
    cost_tau: float = 0.1
    """Mixture sd of the cost test, in standard deviations of the per-request compute."""
    cost_min_requests: int = 100
    """Requests with a compute figure per version before the cost test runs."""

    @property
    def rollback_alpha(self) -> float:
        """Each rollback test's share of alpha."""
        return self.alpha / len(ROLLBACK_TESTS)


@dataclass(frozen=True)
class Arms:
    """What the checks judge: both versions' counts per epoch, and what earlier analyses found."""

    baseline: str
    candidate: str
    base: list[VersionCounts]
    """The baseline's counts in each epoch (rollout step) of the experiment, oldest first."""
    cand: list[VersionCounts]
    """The candidate's, in the same epochs."""
    prior_p: dict[str, float] = field(default_factory=dict)
    prior_ci: dict[str, tuple[float, float]] = field(default_factory=dict)


@dataclass
class Findings:
    """The checks' statistics, the regressions found, and what still blocks promotion."""

    statistics: dict[str, Any] = field(default_factory=dict)
    regressions: list[str] = field(default_factory=list)
    unproven: list[str] = field(default_factory=list)
    holds: list[str] = field(default_factory=list)
    """Findings that hold the rollout at its step without rolling back (a key segment regressed)."""


def _sum(counts: list[VersionCounts], key: str) -> float:
    return float(sum(getattr(c, key) for c in counts))


def _per_epoch(counts: list[VersionCounts], key: str) -> np.ndarray:
    return np.array([getattr(c, key) for c in counts], dtype=np.float64)


def _ci(
    arms: Arms, test: str, rollback: stats.SequentialEstimate, promotion: stats.SequentialEstimate
) -> dict[str, Any]:
    """This look's estimate and promotion interval, the running minimum of the rollback test's p-value,
    and `running_ci`, the running intersection of the rollback test's intervals.

    Regressions are judged on the intersection: it covers the effect at every look at once, so it may be
    read in one direction; a small running p-value alone says only that some look excluded 0, possibly on
    the other side (a candidate once significantly better). Promotion is judged on this look's interval:
    a lucky early interval must not prove it for good."""
    p = min(float(rollback.p_value), arms.prior_p.get(test, 1.0))
    low, high = arms.prior_ci.get(test, (-math.inf, math.inf))
    return {
        "estimate": round(float(promotion.estimate), 6),
        "ci_low": round(float(promotion.ci_low), 6),
        "ci_high": round(float(promotion.ci_high), 6),
        "p_value": round(p, 6),
        "running_ci": [
            round(max(float(rollback.ci_low), low), 6),
            round(min(float(rollback.ci_high), high), 6),
        ],
    }


def run_checks(arms: Arms, th: Thresholds) -> Findings:
    """Every check, in order: errors, latency, then the feedback metrics."""
    found = Findings()
    _errors(arms, th, found)
    _latency(arms, th, found)
    _conversion(arms, th, found)
    _value(arms, th, found)
    _accuracy(arms, th, found)
    _segments(arms, th, found)
    _cost(arms, th, found)
    return found


def _segments(arms: Arms, th: Thresholds, found: Findings) -> None:
    """The per-segment error guards, splitting the error test's share of alpha."""
    guards, holds = segments.segment_guards(
        arms.base, arms.cand, th.segments, alpha=th.rollback_alpha, tau=th.error_ratio_tau,
        margin=th.error_ratio_margin, prior_p=arms.prior_p,
    )  # fmt: skip
    found.statistics |= guards
    found.holds.extend(holds)


def _cost(arms: Arms, th: Thresholds, found: Findings) -> None:
    """Compute per request within `cost_margin` of the baseline's, else promotion waits."""
    result = cost.compute_noninferiority(
        arms.base, arms.cand, margin=th.cost_margin, floor=th.cost_floor_seconds, tau=th.cost_tau,
        alpha=th.alpha, min_requests=th.cost_min_requests,
    )  # fmt: skip
    found.statistics[cost.KEY] = result.statistics
    figures = result.statistics
    if not result.measured:
        if cost.KEY not in th.optional_metrics:
            found.unproven.append(
                f"cost: compute per request not measured yet ({figures['requests'][0]:.0f} and "
                f"{figures['requests'][1]:.0f} requests with a compute figure, {th.cost_min_requests} per "
                "version needed; servers export serving_request_compute_seconds)"
            )
        return
    if not result.shown:
        ratio = figures["ratio"]
        found.unproven.append(
            f"cost: v{arms.candidate}'s compute per request not yet shown within {th.cost_margin}x of "
            f"v{arms.baseline}'s nor within +{th.cost_floor_seconds * 1000:g} ms "
            f"({figures['candidate_seconds'] * 1000:.3g} ms vs "
            f"{figures['baseline_seconds'] * 1000:.3g} ms, ratio {ratio})"
        )


def _errors(arms: Arms, th: Thresholds, found: Findings) -> None:
    """The rate ratio's two one-sided tests; the absolute difference as the floor for rare errors."""
    xb, nb = _per_epoch(arms.base, "errors"), _per_epoch(arms.base, "requests")
    xc, nc = _per_epoch(arms.cand, "errors"), _per_epoch(arms.cand, "requests")
    ratio = rate_ratio.rate_ratio_test(xb, nb, xc, nc, margin=th.error_ratio_margin, tau=th.error_ratio_tau)
    half = th.alpha / 2  # the promotion bound is ratio OR floor: each gets half its alpha
    diff = stats.stratified_proportion_difference(xb, nb, xc, nc, tau=th.error_margin, alpha=half)
    p = min(float(ratio.regression_p), arms.prior_p.get("error_rate", 1.0))
    rates = (float(xb.sum()) / max(float(nb.sum()), 1.0), float(xc.sum()) / max(float(nc.sum()), 1.0))
    estimate = float(ratio.estimate)
    upper = rate_ratio.upper_bound(xb, nb, xc, nc, tau=th.error_ratio_tau, alpha=half)
    found.statistics["error_rate"] = {
        "baseline": round(rates[0], 6),
        "candidate": round(rates[1], 6),
        "ratio": None if math.isnan(estimate) else round(estimate, 4),
        "ratio_upper_bound": upper,
        "p_value": round(p, 6),
        "noninferiority_p": round(float(ratio.noninferiority_p), 6),
        "difference": round(float(diff.estimate), 6),
        "difference_upper_bound": round(float(diff.ci_high), 6),
    }
    b, c = f"v{arms.baseline}", f"v{arms.candidate}"
    if p <= th.rollback_alpha:
        found.regressions.append(
            f"error rate: {c} {rates[1]:.2%} vs {b} {rates[0]:.2%}, rate ratio {estimate:.2f} "
            f"(always-valid p = {p:.2g} <= {th.rollback_alpha:.3g}, alpha {th.alpha} shared by "
            f"{len(ROLLBACK_TESTS)} rollback tests)"
        )
        return
    if float(ratio.noninferiority_p) <= half or float(diff.ci_high) < th.error_margin:
        return
    n = _required(arms, th, rates[0])
    found.statistics["error_rate"]["required_candidate_requests"] = n
    need = f"; about {n:,} v{arms.candidate} requests in all show it at this split (80% power)" if n else ""
    shown = f"{upper:.2f}x" if upper is not None else "none yet"
    found.unproven.append(
        f"error rate: not yet shown within {th.error_ratio_margin}x of {b}'s (ratio upper bound: {shown}) "
        f"nor within +{th.error_margin:.3%} (difference upper bound {float(diff.ci_high):+.3%}){need}"
    )


def _required(arms: Arms, th: Thresholds, base_rate: float) -> int | None:
    """The candidate requests the ratio test needs at the current split (a planning figure, printed with
    a hold); None before the baseline has shown an error rate or while the step has no traffic."""
    last_b, last_c = arms.base[-1].requests, arms.cand[-1].requests
    if last_b + last_c <= 0:
        return None
    return rate_ratio.required_candidate_requests(
        base_rate, last_c / (last_b + last_c), margin=th.error_ratio_margin, tau=th.error_ratio_tau,
        alpha=th.alpha / 2,
    )  # fmt: skip


def _latency(arms: Arms, th: Thresholds, found: Findings) -> None:
    """The rank test on the histograms' buckets, with each quantile's bucket-resolution bounds beside it."""
    bounds = latency.common_bounds([*arms.base, *arms.cand])
    a, z = latency.per_bucket(arms.base, bounds), latency.per_bucket(arms.cand, bounds)
    if not bounds or a.sum() <= 0 or z.sum() <= 0:
        if "latency" in th.optional_metrics:  # a source with no histograms (CloudWatch): not measured
            found.statistics["latency"] = {"tested": False, "measured": False}
            return
        found.unproven.append("latency: no histogram samples for both versions yet")
        return
    quantiles = latency.quantile_differences(a.sum(axis=0), z.sum(axis=0), bounds)
    if not (stats.rank_parts(a, z)[1] > 0).any():
        # Every request of both versions in one bucket: ties only, no variance, nothing to compare.
        found.statistics["latency"] = {"tested": False, "quantiles": quantiles}
        found.unproven.append(
            "latency: every request of both versions fell in one histogram bucket, which cannot tell them "
            "apart; the histogram needs finer buckets around this latency"
        )
        return
    rank = stats.stratified_rank_test(a, z, tau=th.latency_tau, alpha=th.rollback_alpha)
    promotion = stats.stratified_rank_test(a, z, tau=th.latency_tau, alpha=th.alpha)
    lat = _ci(arms, "latency", rank.sequential, promotion.sequential)
    found.statistics["latency"] = lat | {
        "p_candidate_slower": round(float(rank.superiority), 4),
        "quantiles": quantiles,
    }
    if lat["running_ci"][0] > th.latency_tolerance:
        found.regressions.append(
            f"latency: v{arms.candidate} is slower than v{arms.baseline} "
            f"in {float(rank.superiority):.1%} of request pairs "
            f"(CI of the excess {lat['running_ci'][0]:+.3f}..{lat['running_ci'][1]:+.3f} above the "
            f"{th.latency_tolerance:.2f} tolerance)"
        )
    elif lat["ci_high"] > th.latency_tolerance:
        found.unproven.append(
            f"latency: CI upper bound {lat['ci_high']:+.3f} above the {th.latency_tolerance} tolerance"
        )


@dataclass(frozen=True)
class _Rate:
    """A share where higher is better (conversion, accuracy): its hits and trials per epoch and arm."""

    key: str
    hits: str
    misses: str
    tau: float
    margin: float
    qualifier: str = ""


def _not_measured(arms: Arms, th: Thresholds, found: Findings, key: str, feedback: list[float]) -> bool:
    """Whether a feedback metric lacks data; if so it holds promotion unless the stack made it optional."""
    if min(feedback) >= th.min_feedback:
        return False
    found.statistics[key] = {"tested": False, "feedback": feedback}
    if key not in th.optional_metrics:
        found.unproven.append(
            f"{key}: not measured yet ({feedback[0]:.0f} and {feedback[1]:.0f} feedback of the "
            f"{th.min_feedback} per version it needs); mark it optional in the rollout block if the model "
            "gets none"
        )
    return True


def _rate_check(arms: Arms, th: Thresholds, found: Findings, rate: _Rate) -> None:
    """The sequential two-proportion test: a significant drop is a regression; a wide interval, unproven."""
    hits_b, hits_c = _per_epoch(arms.base, rate.hits), _per_epoch(arms.cand, rate.hits)
    nb = hits_b + _per_epoch(arms.base, rate.misses)
    nc = hits_c + _per_epoch(arms.cand, rate.misses)
    if _not_measured(arms, th, found, rate.key, [float(nb.sum()), float(nc.sum())]):
        return
    rollback = stats.stratified_proportion_difference(
        hits_b, nb, hits_c, nc, tau=rate.tau, alpha=th.rollback_alpha
    )
    promotion = stats.stratified_proportion_difference(hits_b, nb, hits_c, nc, tau=rate.tau, alpha=th.alpha)
    result = _ci(arms, rate.key, rollback, promotion)
    shares = (float(hits_b.sum() / nb.sum()), float(hits_c.sum() / nc.sum()))
    found.statistics[rate.key] = result | {"tested": True, "baseline": shares[0], "candidate": shares[1]}
    if result["running_ci"][1] < 0:
        found.regressions.append(
            f"{rate.key}: v{arms.candidate} {shares[1]:.2%} vs v{arms.baseline} {shares[0]:.2%}"
            f"{rate.qualifier} (CI {result['running_ci'][0]:+.2%}..{result['running_ci'][1]:+.2%}, "
            f"p = {result['p_value']:.2g})"
        )
    elif result["ci_low"] < -rate.margin * shares[0]:
        found.unproven.append(
            f"{rate.key}: CI lower bound {result['ci_low']:+.2%} below -{rate.margin * shares[0]:.2%} "
            f"({rate.margin:.0%} of v{arms.baseline}'s {shares[0]:.2%})"
        )


def _conversion(arms: Arms, th: Thresholds, found: Findings) -> None:
    _rate_check(arms, th, found, _Rate("conversion", "converted", "not_converted", th.conversion_tau,
                                       th.conversion_margin))  # fmt: skip


def _accuracy(arms: Arms, th: Thresholds, found: Findings) -> None:
    """Online accuracy from labelled feedback (the prediction each request got against its true label)."""
    rate = _Rate(
        "accuracy", "correct", "incorrect", th.accuracy_tau, th.accuracy_margin, " on labelled feedback"
    )
    _rate_check(arms, th, found, rate)


def _value(arms: Arms, th: Thresholds, found: Findings) -> None:
    """Reported values (e.g. revenue per request), where higher is better; Welch's variance per epoch."""
    base = tuple(_per_epoch(arms.base, k) for k in ("values", "value_sum", "value_squares"))
    cand = tuple(_per_epoch(arms.cand, k) for k in ("values", "value_sum", "value_squares"))
    if _not_measured(arms, th, found, "value", [float(base[0].sum()), float(cand[0].sum())]):
        return
    rollback = stats.stratified_mean_difference(base, cand, tau=th.value_tau, alpha=th.rollback_alpha)  # type: ignore[arg-type]
    promotion = stats.stratified_mean_difference(base, cand, tau=th.value_tau, alpha=th.alpha)  # type: ignore[arg-type]
    value = _ci(arms, "value", rollback, promotion)
    means = (float(base[1].sum() / base[0].sum()), float(cand[1].sum() / cand[0].sum()))
    found.statistics["value"] = value | {"tested": True, "baseline": means[0], "candidate": means[1]}
    if value["running_ci"][1] < 0:
        found.regressions.append(
            f"value: v{arms.candidate} mean {means[1]:.4g} vs v{arms.baseline} {means[0]:.4g} "
            f"({value['estimate']:+.3f} sd, CI {value['running_ci'][0]:+.3f}..{value['running_ci'][1]:+.3f}, "
            f"p = {value['p_value']:.2g})"
        )
    elif value["ci_low"] < -th.value_margin:
        found.unproven.append(f"value: CI lower bound {value['ci_low']:+.3f} sd below -{th.value_margin} sd")
