"""From counts to a decision: promote, hold, roll back or complete, with reasons a reviewer can check.

Order of judgement: a sample-ratio mismatch halts the rollout (HOLD, `halted: "srm"`, until a person restarts
the experiment: the data cannot be trusted, and nothing says the candidate is to blame); a failed load-test
gate rolls back; a significant regression in errors, latency or the business outcome is a failed check,
and `failed_checks` of them in a row roll back; too few samples in the step hold; promotion needs every
always-valid interval to rule out a regression beyond its margin.
"""

from dataclasses import dataclass, field
from typing import Any

from servectl.experiments.checks import Arms, Thresholds, run_checks
from servectl.experiments.promql import Window
from servectl.experiments.srm import sequential_srm

__all__ = [
    "COMPLETE",
    "HOLD",
    "PROMOTE",
    "ROLLBACK",
    "Analysis",
    "Inputs",
    "Schedule",
    "Thresholds",
    "decide",
]

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
    holdback_percent: int = 0
    """The baseline's share during the post-promotion guard: the last step gives the candidate 100 minus
    this, and every check goes on (0: no guard; the candidate goes to 100% at once)."""
    guard_seconds: int = 3600
    """How long the guard step lasts without a regression before the candidate takes all traffic."""
    settle_seconds: float = 30.0
    """Seconds after every server reports a step's weights before its window begins (docs/experiments.md
    "The window"): one 15 s scrape interval, so each counter's base sample is taken under the new
    weights, plus 15 s for requests queued or in flight at the switch."""

    segments: tuple[str, ...] = ()
    """The stack's key user segments, each guarded (servectl/experiments/segments.py)."""

    @property
    def guard_step(self) -> int | None:
        """The candidate's percent during the guard, or None without one."""
        return 100 - self.holdback_percent if self.holdback_percent else None


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
    halted: str | None = None
    """What halted the rollout ("srm"), for a controller or an alert; None when nothing did."""

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
        } | ({"halted": self.halted} if self.halted else {})


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
    epochs: tuple[Window, ...] = ()
    """Counts in each rollout step of the experiment, oldest first, the current step last: the strata of
    the tests. Empty: the experiment's counts as one stratum."""
    prior_p: dict[str, float] = field(default_factory=dict)
    """Smallest always-valid p-value of each test so far in this experiment."""
    prior_ci: dict[str, tuple[float, float]] = field(default_factory=dict)
    """Running intersection (highest lower bound, lowest upper bound) of each test's interval so far."""
    prior_srm_log_bf: float = 0.0
    """Log Bayes factor the SRM test ended the experiment's completed steps with (srm.sequential_srm)."""
    prior_failed_checks: int = 0
    """Consecutive failed checks before this analysis."""
    gate_passed: bool | None = None
    """The load-test SLO result, when one is given."""
    step_seconds: float | None = None
    """How long the current weights have been in effect (the post-promotion guard's clock)."""


def next_weights(weights: dict[str, int], baseline: str, candidate: str, percent: int) -> dict[str, int]:
    """Weights with the candidate at `percent` and the baseline taking the rest; other versions at 0."""
    out = dict.fromkeys(weights, 0)
    out[baseline], out[candidate] = 100 - percent, percent
    return out


def _promotion_step(schedule: Schedule, current: int) -> int:
    """The next step; with a guard, the last one is the guard step, then 100."""
    step = next((s for s in schedule.steps if s > current), 100)
    guard = schedule.guard_step
    if guard is not None and current < guard < step:
        return guard
    return step


def _srm(inputs: Inputs, th: Thresholds) -> tuple[dict[str, Any], str | None]:
    """The sequential SRM test (servectl/experiments/srm.py) on the step's randomised units only: weighted
    requests and sticky users; header routes and named versions choose their version themselves.

    The p-value is the running minimum over the experiment, so once it falls to `srm_p` the rollout stays
    halted until a person restarts the experiment (`servectl experiment restart`)."""
    arms = [v for v, w in inputs.weights.items() if w > 0]
    counts = [inputs.step.get(v).randomised for v in arms]
    weights = [inputs.weights[v] for v in arms]
    result: dict[str, Any] = {"arms": arms, "counts": counts, "weights": weights}
    p, log_bf = inputs.prior_p.get("srm", 1.0), inputs.prior_srm_log_bf
    if len(arms) >= 2 and sum(counts) >= th.srm_min_requests:
        test = sequential_srm(counts, weights, prior_log_bf=log_bf)
        log_bf, p = float(test.log_bayes_factor), min(p, float(test.p_value))
        result["tested"] = True
    else:
        result["tested"] = False
    result |= {"log_bf": round(log_bf, 6), "p_value": p}
    if p > th.srm_p:
        return result, None
    total = max(sum(counts), 1.0)
    shares = ", ".join(f"v{v} {c / total:.1%}" for v, c in zip(arms, counts, strict=True))
    wanted = ", ".join(f"v{v} {w}%" for v, w in zip(arms, weights, strict=True))
    return result, (
        f"sample-ratio mismatch: randomised traffic this step {shares} against configured {wanted} "
        f"(always-valid p = {p:.2g} <= {th.srm_p}); the data cannot be trusted: the rollout is halted "
        "until the cause is found and the experiment restarted"
    )


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
    if srm_reason:  # a halt, not a rollback: nothing says the candidate is to blame
        return HOLD, [srm_reason], inputs.prior_failed_checks
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
    if current == schedule.guard_step:
        elapsed = inputs.step_seconds or 0.0
        if elapsed < schedule.guard_seconds:
            left = schedule.guard_seconds - elapsed
            guard = (
                f"post-promotion guard: v{inputs.candidate} at {current}% with v{inputs.baseline} held "
                f"back at {100 - current}% for {schedule.guard_seconds} s, {left:.0f} s to go"
            )
            return HOLD, [passed, guard], 0
        return (
            COMPLETE,
            [passed, f"guard of {schedule.guard_seconds} s passed: v{inputs.candidate} -> 100%"],
            0,
        )
    return PROMOTE, [passed, f"v{inputs.candidate} {current}% -> {_promotion_step(schedule, current)}%"], 0


def decide(inputs: Inputs, schedule: Schedule, th: Thresholds) -> Analysis:
    """Judge one analysis interval."""
    srm, srm_reason = _srm(inputs, th)
    epochs = inputs.epochs or (inputs.experiment,)
    found = run_checks(
        Arms(
            baseline=inputs.baseline,
            candidate=inputs.candidate,
            base=[e.get(inputs.baseline) for e in epochs],
            cand=[e.get(inputs.candidate) for e in epochs],
            prior_p=inputs.prior_p,
            prior_ci=inputs.prior_ci,
        ),
        th,
    )
    checks, regressions, unproven = found.statistics, found.regressions, found.unproven
    held = (HOLD, found.holds, 0) if found.holds else None  # a key segment regressed (segments.py)
    verdict = (
        _halt(inputs, schedule, srm_reason, regressions) or held or _progress(inputs, schedule, unproven)
    )
    decision, reasons, failed = verdict
    current = inputs.weights.get(inputs.candidate, 0)
    weights = {
        ROLLBACK: next_weights(inputs.weights, inputs.baseline, inputs.candidate, 0),
        COMPLETE: next_weights(inputs.weights, inputs.baseline, inputs.candidate, 100),
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
        halted="srm" if srm_reason and decision == HOLD and reasons == [srm_reason] else None,
    )
