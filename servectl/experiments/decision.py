"""From counts to a decision: promote, hold, roll back or complete, with reasons a reviewer can check.

Order of judgement: a sample-ratio mismatch halts at once (the data cannot be trusted); a failed load-test
gate rolls back; a significant regression in errors, latency or the business outcome is a failed check,
and `failed_checks` of them in a row roll back; too few samples in the step hold; promotion needs every
always-valid interval to rule out a regression beyond its margin.
"""

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from servectl.experiments import stats
from servectl.experiments.promql import VersionCounts, Window

PROMOTE, HOLD, ROLLBACK, COMPLETE = "promote", "hold", "rollback", "complete"


@dataclass(frozen=True, kw_only=True)
class Schedule:
    """A model's rollout schedule (the stack config's `rollout` block)."""

    steps: tuple[int, ...] = (5, 25, 50, 100)
    """The candidate's percent at each step, increasing, ending at 100."""
    min_samples: int = 500
    """Live requests the candidate must serve in a step before it can be promoted."""
    interval_seconds: int = 300
    """Seconds between analyses."""
    failed_checks: int = 1
    """Consecutive analyses with a significant regression before rolling back."""


@dataclass(frozen=True, kw_only=True)
class Thresholds:
    """Significance levels, mixture widths and margins of the tests."""

    alpha: float = 0.05
    """False-positive rate of each sequential test, however often one looks."""
    srm_p: float = 0.001
    """A split whose chi-square p-value is below this is a sample-ratio mismatch."""
    srm_min_requests: int = 100
    """Requests in a step before the split is tested."""
    error_tau: float = 0.01
    """Mixture sd of the error-rate test: the size of difference it is most sensitive to."""
    error_margin: float = 0.01
    """Promotion needs the error-rate difference's upper bound below this (absolute)."""
    latency_tau: float = 0.05
    """Mixture sd of the latency rank test."""
    latency_tolerance: float = 0.05
    """Slower means P(candidate slower) - 0.5 beyond this; promotion needs the upper bound below it."""
    conversion_tau: float = 0.02
    """Mixture sd of the conversion test."""
    conversion_margin: float = 0.01
    """Promotion needs the conversion difference's lower bound above minus this."""
    min_feedback: int = 50
    """Feedback per arm before the conversion, value or accuracy test runs."""
    accuracy_tau: float = 0.02
    """Mixture sd of the accuracy test (labelled feedback: prediction correct or not)."""
    accuracy_margin: float = 0.01
    """Promotion needs the accuracy difference's lower bound above minus this."""
    value_tau: float = 0.1
    """Mixture sd of the value test, in standard deviations of the value."""
    value_margin: float = 0.05
    """Promotion needs the value difference's lower bound above minus this many standard deviations."""


@dataclass
class Analysis:
    """One analysis: the statistics, the decision, its reasons and the weights it leads to."""

    decision: str
    reasons: list[str]
    statistics: dict[str, Any]
    weights: dict[str, int]
    next_weights: dict[str, int]
    failed_checks: int
    counts: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The analysis as the experiment log keeps it."""
        return {
            "decision": self.decision,
            "reasons": self.reasons,
            "statistics": self.statistics,
            "weights": self.weights,
            "next_weights": self.next_weights,
            "failed_checks": self.failed_checks,
            "counts": self.counts,
        }


@dataclass(frozen=True, kw_only=True)
class Inputs:
    """Everything `decide` judges."""

    baseline: str
    candidate: str
    weights: dict[str, int]
    experiment: Window
    """Counts since the experiment began (the sequential tests)."""
    step: Window
    """Counts since the current weights were applied (the split)."""
    prior_p: dict[str, float] = field(default_factory=dict)
    """Smallest always-valid p-value of each test so far in this experiment."""
    prior_ci: dict[str, tuple[float, float]] = field(default_factory=dict)
    """Running intersection (highest lower bound, lowest upper bound) of each test's interval so far."""
    prior_failed_checks: int = 0
    """Consecutive failed checks before this analysis."""
    gate_passed: bool | None = None
    """The load-test SLO result, when one is given."""


def next_weights(weights: dict[str, int], baseline: str, candidate: str, percent: int) -> dict[str, int]:
    """Weights with the candidate at `percent` and the baseline taking the rest; other versions at 0."""
    out = dict.fromkeys(weights, 0)
    out[baseline], out[candidate] = 100 - percent, percent
    return out


def _promotion_step(schedule: Schedule, current: int) -> int:
    return next((s for s in schedule.steps if s > current), 100)


def _ci(est: stats.SequentialEstimate, inputs: Inputs, test: str) -> dict[str, Any]:
    """The estimate and this look's interval, the running minimum of the p-value, and `running_ci`, the
    running intersection of the intervals.

    Regressions are judged on the intersection: it covers the effect at every look at once with
    probability 1 - alpha, so it may be read in one direction. A small running p-value alone says only
    that some look excluded 0, possibly on the other side (a candidate once significantly better).
    Promotion is judged on this look's interval: a lucky early interval must not prove it for good."""
    p = min(float(est.p_value), inputs.prior_p.get(test, 1.0))
    low, high = inputs.prior_ci.get(test, (-math.inf, math.inf))
    return {
        "estimate": round(float(est.estimate), 6),
        "ci_low": round(float(est.ci_low), 6),
        "ci_high": round(float(est.ci_high), 6),
        "p_value": round(p, 6),
        "running_ci": [round(max(float(est.ci_low), low), 6), round(min(float(est.ci_high), high), 6)],
    }


def _srm(inputs: Inputs, th: Thresholds) -> tuple[dict[str, Any], str | None]:
    arms = [v for v, w in inputs.weights.items() if w > 0]
    counts = [inputs.step.get(v).requests for v in arms]
    result: dict[str, Any] = {"arms": arms, "counts": counts, "weights": [inputs.weights[v] for v in arms]}
    if len(arms) < 2 or sum(counts) < th.srm_min_requests:
        return result | {"tested": False}, None
    test = stats.sample_ratio_mismatch(counts, [inputs.weights[v] for v in arms])
    result |= {"tested": True, "chi2": round(float(test.statistic), 4), "p_value": float(test.p_value)}
    if float(test.p_value) >= th.srm_p:
        return result, None
    shares = ", ".join(f"v{v} {s:.1%}" for v, s in zip(arms, test.observed_share.tolist(), strict=True))
    wanted = ", ".join(f"v{v} {inputs.weights[v]}%" for v in arms)
    return result, (
        f"sample-ratio mismatch: observed {shares} against configured {wanted} "
        f"(chi-square p = {float(test.p_value):.2g} < {th.srm_p}); the data cannot be trusted"
    )


def _latency_counts(base: VersionCounts, cand: VersionCounts) -> tuple[np.ndarray, np.ndarray]:
    bounds = sorted(set(base.latency_buckets) | set(cand.latency_buckets))

    def per_bucket(c: VersionCounts) -> np.ndarray:
        cumulative = np.array([c.latency_buckets.get(b, 0.0) for b in bounds])
        return np.diff(np.r_[0.0, np.maximum.accumulate(cumulative)])

    return per_bucket(base), per_bucket(cand)


def _checks(inputs: Inputs, th: Thresholds) -> tuple[dict[str, Any], list[str], list[str]]:
    """Statistics of errors, latency and conversion; regressions found; what still blocks promotion."""
    base, cand = inputs.experiment.get(inputs.baseline), inputs.experiment.get(inputs.candidate)
    b, c = f"v{inputs.baseline}", f"v{inputs.candidate}"
    out: dict[str, Any] = {}
    regressions: list[str] = []
    unproven: list[str] = []
    err = _ci(
        stats.proportion_difference(
            base.errors, base.requests, cand.errors, cand.requests, tau=th.error_tau, alpha=th.alpha
        ),
        inputs,
        "error_rate",
    )
    rates = (base.errors / max(base.requests, 1), cand.errors / max(cand.requests, 1))
    out["error_rate"] = err | {"baseline": round(rates[0], 6), "candidate": round(rates[1], 6)}
    if err["running_ci"][0] > 0:
        regressions.append(
            f"error rate: {c} {rates[1]:.2%} vs {b} {rates[0]:.2%}, difference {err['estimate']:+.2%} "
            f"(always-valid {1 - th.alpha:.0%} CI {err['ci_low']:+.2%}..{err['ci_high']:+.2%}, "
            f"p = {err['p_value']:.2g} <= {th.alpha})"
        )
    elif err["ci_high"] > th.error_margin:
        unproven.append(
            f"error rate: CI upper bound {err['ci_high']:+.2%} above the {th.error_margin:.2%} margin"
        )
    _latency(base, cand, inputs, th, out, regressions, unproven)
    _conversion(base, cand, inputs, th, out, regressions, unproven)
    _value(base, cand, inputs, th, out, regressions, unproven)
    _accuracy(base, cand, inputs, th, out, regressions, unproven)
    return out, regressions, unproven


def _latency(
    base: VersionCounts,
    cand: VersionCounts,
    inputs: Inputs,
    th: Thresholds,
    out: dict[str, Any],
    regressions: list[str],
    unproven: list[str],
) -> None:
    a, z = _latency_counts(base, cand)
    if a.sum() > 0 and z.sum() > 0:
        rank = stats.binned_rank_test(a, z, tau=th.latency_tau, alpha=th.alpha)
        lat = _ci(rank.sequential, inputs, "latency")
        out["latency"] = lat | {"p_candidate_slower": round(float(rank.superiority), 4)}
        if lat["running_ci"][0] > th.latency_tolerance:
            regressions.append(
                f"latency: v{inputs.candidate} is slower than v{inputs.baseline} "
                f"in {float(rank.superiority):.1%} of request pairs "
                f"(CI of the excess {lat['ci_low']:+.3f}..{lat['ci_high']:+.3f} above the "
                f"{th.latency_tolerance:.2f} tolerance)"
            )
        elif lat["ci_high"] > th.latency_tolerance:
            unproven.append(
                f"latency: CI upper bound {lat['ci_high']:+.3f} above the {th.latency_tolerance} tolerance"
            )
    else:
        unproven.append("latency: no histogram samples for both versions yet")


def _conversion(
    base: VersionCounts,
    cand: VersionCounts,
    inputs: Inputs,
    th: Thresholds,
    out: dict[str, Any],
    regressions: list[str],
    unproven: list[str],
) -> None:
    nb, nc = base.converted + base.not_converted, cand.converted + cand.not_converted
    if min(nb, nc) < th.min_feedback:
        out["conversion"] = {"tested": False, "feedback": [nb, nc]}
        return
    rate = _Rate(
        "conversion", (base.converted, nb), (cand.converted, nc), th.conversion_tau, th.conversion_margin
    )
    _rate_check(rate, inputs, th, out, regressions, unproven)


@dataclass(frozen=True)
class _Rate:
    """A share where higher is better (conversion, accuracy): per arm its successes and trials."""

    key: str
    base: tuple[float, float]
    cand: tuple[float, float]
    tau: float
    margin: float
    qualifier: str = ""


def _rate_check(
    rate: _Rate,
    inputs: Inputs,
    th: Thresholds,
    out: dict[str, Any],
    regressions: list[str],
    unproven: list[str],
) -> None:
    """The sequential two-proportion test: a significant drop is a regression; a wide interval, unproven."""
    (hits_b, nb), (hits_c, nc) = rate.base, rate.cand
    result = _ci(
        stats.proportion_difference(hits_b, nb, hits_c, nc, tau=rate.tau, alpha=th.alpha),
        inputs,
        rate.key,
    )
    out[rate.key] = result | {"tested": True, "baseline": hits_b / nb, "candidate": hits_c / nc}
    if result["running_ci"][1] < 0:
        regressions.append(
            f"{rate.key}: v{inputs.candidate} {hits_c / nc:.2%} vs v{inputs.baseline} {hits_b / nb:.2%}"
            f"{rate.qualifier} (CI {result['ci_low']:+.2%}..{result['ci_high']:+.2%}, "
            f"p = {result['p_value']:.2g})"
        )
    elif result["ci_low"] < -rate.margin:
        unproven.append(f"{rate.key}: CI lower bound {result['ci_low']:+.2%} below -{rate.margin:.2%}")


def _value(
    base: VersionCounts,
    cand: VersionCounts,
    inputs: Inputs,
    th: Thresholds,
    out: dict[str, Any],
    regressions: list[str],
    unproven: list[str],
) -> None:
    """Reported values (e.g. revenue per request), where higher is better."""
    if min(base.values, cand.values) < th.min_feedback:
        if base.values or cand.values:
            out["value"] = {"tested": False, "feedback": [base.values, cand.values]}
        return
    value = _ci(
        stats.mean_difference(
            (base.values, base.value_sum, base.value_squares),
            (cand.values, cand.value_sum, cand.value_squares),
            tau=th.value_tau,
            alpha=th.alpha,
        ),
        inputs,
        "value",
    )
    means = (base.value_sum / base.values, cand.value_sum / cand.values)
    out["value"] = value | {"tested": True, "baseline": means[0], "candidate": means[1]}
    if value["running_ci"][1] < 0:
        regressions.append(
            f"value: v{inputs.candidate} mean {means[1]:.4g} vs v{inputs.baseline} {means[0]:.4g} "
            f"({value['estimate']:+.3f} sd, CI {value['ci_low']:+.3f}..{value['ci_high']:+.3f}, "
            f"p = {value['p_value']:.2g})"
        )
    elif value["ci_low"] < -th.value_margin:
        unproven.append(f"value: CI lower bound {value['ci_low']:+.3f} sd below -{th.value_margin} sd")


def _accuracy(
    base: VersionCounts,
    cand: VersionCounts,
    inputs: Inputs,
    th: Thresholds,
    out: dict[str, Any],
    regressions: list[str],
    unproven: list[str],
) -> None:
    """Online accuracy from labelled feedback (the prediction each request got against its true label)."""
    nb, nc = base.correct + base.incorrect, cand.correct + cand.incorrect
    if min(nb, nc) < th.min_feedback:
        if nb or nc:
            out["accuracy"] = {"tested": False, "labels": [nb, nc]}
        return
    rate = _Rate(
        "accuracy", (base.correct, nb), (cand.correct, nc), th.accuracy_tau, th.accuracy_margin,
        " on labelled feedback",
    )  # fmt: skip
    _rate_check(rate, inputs, th, out, regressions, unproven)


def _halt(
    inputs: Inputs, schedule: Schedule, srm_reason: str | None, regressions: list[str]
) -> tuple[str, list[str], int] | None:
    """Roll back or hold on what went wrong, or None when nothing did."""
    unreconciled = sorted({*inputs.experiment.unreconciled, *inputs.step.unreconciled})
    if unreconciled:
        more = f" and {len(unreconciled) - 3} more" if len(unreconciled) > 3 else ""
        reason = (
            "counts cannot be reconciled (a counter's samples have a gap at a restart or at the window's "
            f"start, so requests may be missing): {', '.join(unreconciled[:3])}{more}"
        )
        return HOLD, [reason], inputs.prior_failed_checks
    if srm_reason:
        return ROLLBACK, [srm_reason], 0
    if inputs.gate_passed is False:
        return ROLLBACK, ["the load-test SLO gate failed, a precondition for promotion"], 0
    if not regressions:
        return None
    failed = inputs.prior_failed_checks + 1
    if failed >= schedule.failed_checks:
        return ROLLBACK, regressions, failed
    return HOLD, [*regressions, f"failed check {failed} of {schedule.failed_checks} before rollback"], failed


def _progress(inputs: Inputs, schedule: Schedule, unproven: list[str]) -> tuple[str, list[str], int]:
    """Hold, promote or complete when no check failed."""
    served = inputs.step.get(inputs.candidate).requests
    if served < schedule.min_samples:
        need = (
            f"v{inputs.candidate} served {served:.0f} of the {schedule.min_samples} requests this step needs"
        )
        return HOLD, [need], 0
    if unproven:
        return HOLD, ["not enough evidence yet:", *unproven], 0
    passed = (
        f"no regression: every check is within its margin after {served:.0f} candidate requests this step"
    )
    current = inputs.weights.get(inputs.candidate, 0)
    if current >= 100:
        return COMPLETE, [passed, f"v{inputs.candidate} serves all traffic"], 0
    return PROMOTE, [passed, f"v{inputs.candidate} {current}% -> {_promotion_step(schedule, current)}%"], 0


def decide(inputs: Inputs, schedule: Schedule, th: Thresholds) -> Analysis:
    """Judge one analysis interval."""
    srm, srm_reason = _srm(inputs, th)
    checks, regressions, unproven = _checks(inputs, th)
    verdict = _halt(inputs, schedule, srm_reason, regressions) or _progress(inputs, schedule, unproven)
    decision, reasons, failed = verdict
    current = inputs.weights.get(inputs.candidate, 0)
    weights = {
        ROLLBACK: next_weights(inputs.weights, inputs.baseline, inputs.candidate, 0),
        PROMOTE: next_weights(
            inputs.weights, inputs.baseline, inputs.candidate, _promotion_step(schedule, current)
        ),
    }.get(decision, dict(inputs.weights))
    return Analysis(
        decision=decision,
        reasons=reasons,
        statistics={"srm": srm, **checks},
        weights=dict(inputs.weights),
        next_weights=weights,
        failed_checks=failed,
        counts={v: c.to_json() for v, c in inputs.experiment.versions.items()},
    )
