"""The resource guardrail (servectl/experiments/cost.py): compute per request shown within 1.2x of the
baseline's (or 0.1 ms above it) before promotion; a costlier or unmeasured candidate is held."""

from dataclasses import replace

import numpy as np
import pytest

from servectl.experiments import cost
from servectl.experiments.checks import FEEDBACK_METRICS
from servectl.experiments.decision import HOLD, PROMOTE, decide
from servectl.experiments.promql import VersionCounts
from tests.servectl.experiments.decision_inputs import SCHEDULE, TH, arm, inputs

STRICT = replace(TH, optional_metrics=frozenset(FEEDBACK_METRICS))
"""Cost required, as the shipped default has it."""


def test_a_candidate_costing_half_as_much_again_is_held() -> None:
    result = decide(
        inputs(arm(20_000, compute=(0.002, 0.001)), arm(20_000, compute=(0.003, 0.001))), SCHEDULE, STRICT
    )
    assert result.decision == HOLD, result.reasons
    assert result.reasons[1].startswith("cost: v2's compute per request not yet shown within 1.2x"), (
        result.reasons
    )
    assert result.statistics["cost"]["ratio"] == pytest.approx(1.5), result.statistics["cost"]


def test_a_candidate_costing_the_same_is_promoted() -> None:
    result = decide(inputs(arm(20_000), arm(20_000)), SCHEDULE, STRICT)
    assert result.decision == PROMOTE, result.reasons
    assert result.statistics["cost"]["ratio_upper_bound_sd"] < 0, result.statistics["cost"]


@pytest.mark.parametrize(("optional", "decision"), [(False, HOLD), (True, PROMOTE)])
def test_cost_not_measured_holds_unless_the_stack_marks_it_optional(optional: bool, decision: str) -> None:
    th = replace(STRICT, optional_metrics=STRICT.optional_metrics | {"cost"}) if optional else STRICT
    result = decide(inputs(arm(20_000, compute=None), arm(20_000, compute=None)), SCHEDULE, th)
    assert result.decision == decision, result.reasons
    if not optional:
        assert result.reasons[1].startswith("cost: compute per request not measured yet"), result.reasons


@pytest.mark.parametrize(("floor", "decision"), [(0.0001, PROMOTE), (0.0, HOLD)])
def test_a_tiny_noisy_model_is_promoted_by_the_floor_not_the_ratio(floor: float, decision: str) -> None:
    # What the doubler measured on the controller test: 0.085 vs 0.093 ms, sd several times the mean.
    base, cand = arm(16_000, compute=(0.000085, 0.0005)), arm(16_000, compute=(0.000093, 0.0005))
    result = decide(inputs(base, cand), SCHEDULE, replace(STRICT, cost_floor_seconds=floor))
    assert result.decision == decision, (result.reasons, result.statistics["cost"])
    assert result.statistics["cost"]["ratio_upper_bound_sd"] > 0, "the ratio alone is not shown"


def test_scaling_and_shifting_the_baseline_matches_the_samples_it_stands_for() -> None:
    x = np.random.default_rng(3).gamma(2.0, 0.001, size=500)
    counts = VersionCounts(computed=500, compute_sum=float(x.sum()), compute_squares=float((x * x).sum()))
    n, total, squares = cost._arm([counts], scale=1.2, shift=0.0001)
    y = 1.2 * x + 0.0001
    assert (n[0], total[0], squares[0]) == pytest.approx((500, y.sum(), (y * y).sum())), (
        "the moments of 1.2x + f"
    )


def _shown_share(rng: np.random.Generator, ratio: float, runs: int, looks: int, per_look: int) -> float:
    """Share of rollouts in which the candidate (mean compute `ratio` x the baseline's, gamma-distributed
    per request) is ever shown non-inferior at the 1.2x margin, looking after every `per_look` requests."""
    shown = 0
    for _ in range(runs):
        base, cand = VersionCounts(), VersionCounts()
        for _look in range(looks):
            for counts, mean in ((base, 0.002), (cand, 0.002 * ratio)):
                x = rng.gamma(2.0, mean / 2.0, size=per_look)
                counts.computed += per_look
                counts.compute_sum += float(x.sum())
                counts.compute_squares += float((x * x).sum())
            result = cost.compute_noninferiority(
                [base], [cand], margin=1.2, floor=0.0, tau=0.1, alpha=0.05, min_requests=100
            )
            if result.shown:
                shown += 1
                break
    return shown / runs


def test_simulated_error_rates_at_the_margin_and_at_equal_cost() -> None:
    """Seeded: a candidate exactly at the 1.2x margin is wrongly shown non-inferior at some look in at most
    alpha / 2 of rollouts (the ratio bound's half); one as cheap as the baseline is shown in most."""
    rng = np.random.default_rng(20261130)
    at_margin = _shown_share(rng, 1.2, runs=300, looks=30, per_look=500)
    equal = _shown_share(rng, 1.0, runs=100, looks=30, per_look=500)
    assert at_margin <= 0.025, f"false non-inferiority {at_margin:.1%} at the margin"
    assert equal >= 0.9, f"an equal-cost candidate shown in only {equal:.0%} of rollouts"
