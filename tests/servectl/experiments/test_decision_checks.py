"""Each check of `decide` (error rate, latency, conversion, value, sample ratio) in both directions, at and
around its threshold, with the reasons a reviewer reads.

Three kinds of test:
- the statistics an analysis reports are the reference statistics of `stats`, computed here from the same
  counts by hand (per-bucket latency counts written out, rates as literals), rounded as the log keeps them;
- every rule is tried on both sides: a regression rolls back, the same difference not yet significant holds
  or promotes, an improvement promotes; a still-unproven check holds promotion with its own reason;
- every threshold is tried at its value, taken from the statistic itself, and a millionth either side:
  p = alpha is significant, a bound equal to its margin meets it, feedback equal to the minimum is tested.
"""

from collections.abc import Callable
from dataclasses import replace

import numpy as np
import pytest

from servectl.experiments import stats
from servectl.experiments.decision import HOLD, PROMOTE, ROLLBACK, Analysis, decide
from tests.servectl.experiments.decision_inputs import (
    INF,
    QUICK,
    SCHEDULE,
    SLIGHTLY_SLOW,
    SLOW,
    TH,
    arm,
    inputs,
)

PROMOTED = [
    "no regression: every check is within its margin after 5000 candidate requests this step",
    "v2 50% -> 100%",
]
"""The reasons of a promotion from 50% after 5,000 candidate requests."""


def _rounded(at: Callable[[float], stats.SequentialEstimate]) -> dict[str, object]:
    """A sequential estimate as a first analysis reports it, from the reference computed at a given alpha:
    rounded to six places; the interval for promotion at alpha; the p-value and the running interval (this
    look's) of the rollback test, at alpha's share among the rollback tests."""
    promotion, rollback = at(TH.alpha), at(TH.rollback_alpha)
    return {
        "estimate": round(float(promotion.estimate), 6),
        "ci_low": round(float(promotion.ci_low), 6),
        "ci_high": round(float(promotion.ci_high), 6),
        "p_value": round(float(rollback.p_value), 6),
        "running_ci": [round(float(rollback.ci_low), 6), round(float(rollback.ci_high), 6)],
    }


def _assert_decided(result: Analysis, decision: str, reasons: list[str]) -> None:
    assert (result.decision, result.reasons) == (decision, reasons), (
        f"expected {decision} because {reasons}; got {result.decision} because {result.reasons}"
    )


# --- error rate: test_checks_errors.py ---------------------------------------------------------------------


# --- latency ------------------------------------------------------------------------------------------------


def test_latency_statistics_are_the_rank_test_on_the_union_of_both_histograms_bounds() -> None:
    # The versions' histograms have different bounds (a bucket added in a release): each is read on the
    # union of bounds, a missing bound carrying the count of the bound below it.
    base, cand = arm(1000, latency=None), arm(1000, latency=None)
    base.latency_buckets = {0.005: 600.0, 0.01: 900.0, INF: 1000.0}
    cand.latency_buckets = {0.0025: 100.0, 0.005: 500.0, 0.02: 950.0, INF: 1001.0}
    # Bounds 0.0025, 0.005, 0.01, 0.02, inf; per-bucket counts, not cumulative:
    per_bucket_base = np.array([0.0, 600.0, 300.0, 0.0, 100.0])
    per_bucket_cand = np.array([100.0, 400.0, 0.0, 450.0, 51.0])
    rank = stats.binned_rank_test(per_bucket_base, per_bucket_cand, tau=TH.latency_tau, alpha=TH.alpha)
    result = decide(inputs(base, cand), SCHEDULE, TH)
    expected = _rounded(
        lambda alpha: (
            stats.binned_rank_test(
                per_bucket_base, per_bucket_cand, tau=TH.latency_tau, alpha=alpha
            ).sequential
        )
    ) | {
        "p_candidate_slower": round(float(rank.superiority), 4),
        # Each quantile's bucket, by hand from the cumulative counts; the +Inf bucket bounds nothing.
        "quantiles": {
            "p50": {"baseline": [0.0025, 0.005], "candidate": [0.01, 0.02], "difference": [0.005, 0.0175]},
            "p90": {"baseline": [0.005, 0.01], "candidate": [0.01, 0.02], "difference": [0.0, 0.015]},
            "p99": {"baseline": [0.02, None], "candidate": [0.02, None], "difference": [None, None]},
        },
    }
    assert result.statistics["latency"] == expected, result.statistics["latency"]
    # By hand: candidate requests above the baseline's, plus half the ties, over 1000 x 1001 pairs:
    # (400 x (0 + 600/2) + 450 x 900 + 51 x (900 + 100/2)) / 1,001,000 = 573,450 / 1,001,000 = 0.57288.
    assert expected["p_candidate_slower"] == 0.5729, "the reference itself: P(slower) + P(tie)/2"


def test_every_request_in_one_bucket_is_unresolvable_not_equal() -> None:
    # Both versions wholly under 5 ms: the rank test has no variance, so "no difference" would be a guess.
    one_bucket = {0.005: 1000.0, 0.01: 1000.0, INF: 1000.0}
    result = decide(inputs(arm(5000, latency=one_bucket), arm(5000, latency=one_bucket)), SCHEDULE, TH)
    assert result.decision == HOLD, result.reasons
    assert result.reasons[1].startswith("latency: every request of both versions fell in one histogram"), (
        result.reasons
    )
    assert result.statistics["latency"]["tested"] is False, result.statistics["latency"]
    assert result.statistics["latency"]["quantiles"]["p50"]["difference"] == [-0.005, 0.005]


@pytest.mark.parametrize(
    ("base_latency", "cand_latency"),
    [(None, QUICK), (QUICK, None), (None, None)],
    ids=["baseline-without-histogram", "candidate-without-histogram", "neither"],
)
def test_latency_without_samples_on_both_sides_holds_promotion(
    base_latency: dict[float, float] | None, cand_latency: dict[float, float] | None
) -> None:
    result = decide(inputs(arm(5000, latency=base_latency), arm(5000, latency=cand_latency)), SCHEDULE, TH)
    _assert_decided(
        result, HOLD, ["not enough evidence yet:", "latency: no histogram samples for both versions yet"]
    )
    assert "latency" not in result.statistics, result.statistics


@pytest.mark.parametrize("side", ["baseline", "candidate"])
def test_one_latency_sample_is_enough_to_run_the_rank_test(side: str) -> None:
    single = arm(5000, latency=None)
    single.latency_buckets = {0.005: 1.0, INF: 1.0}
    base, cand = (single, arm(5000)) if side == "baseline" else (arm(5000), single)
    result = decide(inputs(base, cand), SCHEDULE, TH)
    assert "latency" in result.statistics, f"one {side} sample was not tested: {result.reasons}"
    assert result.decision == HOLD and result.reasons[1].startswith("latency: CI upper bound +1."), (
        f"one sample cannot prove anything: {result.reasons}"
    )


@pytest.mark.parametrize(
    ("requests", "cand_latency", "decision", "reasons"),
    [
        pytest.param(
            5000,
            SLOW,
            ROLLBACK,
            [
                "latency: v2 is slower than v1 in 60.1% of request pairs "
                "(CI of the excess +0.086..+0.116 above the 0.05 tolerance)"
            ],
            id="slower-beyond-tolerance-rolls-back",
        ),
        pytest.param(
            500,
            SLIGHTLY_SLOW,
            HOLD,
            ["not enough evidence yet:", "latency: CI upper bound +0.052 above the 0.05 tolerance"],
            id="slightly-slower-not-yet-bounded-holds",
        ),
        pytest.param(
            600,
            SLIGHTLY_SLOW,
            PROMOTE,
            [
                "no regression: every check is within its margin after 600 candidate requests this step",
                "v2 50% -> 100%",
            ],
            id="slightly-slower-bounded-within-tolerance-promotes",
        ),
        pytest.param(5000, QUICK, PROMOTE, PROMOTED, id="faster-promotes"),
    ],
)
def test_latency_rule_in_both_directions(
    requests: int, cand_latency: dict[float, float], decision: str, reasons: list[str]
) -> None:
    result = decide(inputs(arm(requests), arm(requests, latency=cand_latency)), SCHEDULE, TH)
    _assert_decided(result, decision, reasons)


@pytest.mark.parametrize(("shift", "decision"), [(0.0, HOLD), (1e-6, HOLD), (-1e-6, ROLLBACK)])
def test_latency_rolls_back_only_when_the_lower_bound_exceeds_the_tolerance(
    shift: float, decision: str
) -> None:
    # The rollback test's interval (the running one, at alpha's share among the rollback tests).
    case = inputs(arm(5000), arm(5000, latency=SLOW))
    ci_low = decide(case, SCHEDULE, TH).statistics["latency"]["running_ci"][0]
    result = decide(case, SCHEDULE, replace(TH, latency_tolerance=ci_low + shift))
    assert result.decision == decision, f"lower bound {ci_low}, tolerance {ci_low + shift}: {result.reasons}"
    if decision == HOLD:
        assert result.reasons[1].startswith("latency: CI upper bound +0.114 above the 0.0857"), result.reasons


@pytest.mark.parametrize(("shift", "decision"), [(0.0, PROMOTE), (1e-6, PROMOTE), (-1e-6, HOLD)])
def test_the_latency_tolerance_is_met_by_an_upper_bound_equal_to_it(shift: float, decision: str) -> None:
    case = inputs(arm(5000), arm(5000, latency=SLIGHTLY_SLOW))
    ci_high = decide(case, SCHEDULE, TH).statistics["latency"]["ci_high"]
    result = decide(case, SCHEDULE, replace(TH, latency_tolerance=ci_high + shift))
    assert result.decision == decision, (
        f"upper bound {ci_high}, tolerance {ci_high + shift}: {result.reasons}"
    )


# --- conversion ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("feedback", "tested"),
    [((49, 5000), False), ((5000, 49), False), ((50, 50), True), ((0, 0), False)],
)
def test_conversion_is_tested_from_min_feedback_on_each_arm(feedback: tuple[int, int], tested: bool) -> None:
    base = arm(5000, converted=feedback[0] // 2, feedback=feedback[0])
    cand = arm(5000, converted=feedback[1] // 2, feedback=feedback[1])
    conversion = decide(inputs(base, cand), SCHEDULE, TH).statistics["conversion"]
    if tested:
        assert conversion["tested"] is True, conversion
    else:
        assert conversion == {"tested": False, "feedback": [float(feedback[0]), float(feedback[1])]}, (
            conversion
        )


def test_conversion_statistics_are_the_reference_difference_of_proportions() -> None:
    base, cand = arm(5000, converted=601, feedback=2003), arm(5000, converted=700, feedback=1999)
    conversion = decide(inputs(base, cand), SCHEDULE, TH).statistics["conversion"]
    expected = _rounded(
        lambda alpha: stats.proportion_difference(601, 2003, 700, 1999, tau=TH.conversion_tau, alpha=alpha)
    ) | {"tested": True, "baseline": 601 / 2003, "candidate": 700 / 1999}
    assert conversion == expected, conversion


@pytest.mark.parametrize(
    ("base", "cand", "decision", "reasons"),
    [
        pytest.param(
            (1500, 5000),
            (1000, 5000),
            ROLLBACK,
            ["conversion: v2 20.00% vs v1 30.00% (CI -13.12%..-6.88%, p = 0)"],
            id="significant-drop-rolls-back",
        ),
        pytest.param((600, 2000), (700, 2000), PROMOTE, PROMOTED, id="significant-rise-promotes"),
        pytest.param(
            (30000, 100000),
            (29900, 100000),
            PROMOTE,
            PROMOTED,
            id="insignificant-drop-within-margin-promotes",
        ),
        pytest.param(
            (300, 1000),
            (250, 1000),
            HOLD,
            [
                "not enough evidence yet:",
                "conversion: CI lower bound -12.29% below -1.50% (5% of v1's 30.00%)",
            ],
            id="drop-not-yet-bounded-holds",
        ),
    ],
)
def test_conversion_rule_in_both_directions(
    base: tuple[int, int], cand: tuple[int, int], decision: str, reasons: list[str]
) -> None:
    result = decide(
        inputs(
            arm(5000, converted=base[0], feedback=base[1]), arm(5000, converted=cand[0], feedback=cand[1])
        ),
        SCHEDULE,
        TH,
    )
    _assert_decided(result, decision, reasons)


@pytest.mark.parametrize(("shift", "decision"), [(0.0, PROMOTE), (1e-6, PROMOTE), (-1e-6, HOLD)])
def test_the_conversion_margin_is_met_by_a_lower_bound_equal_to_minus_it(shift: float, decision: str) -> None:
    case = inputs(arm(5000, converted=30000, feedback=100000), arm(5000, converted=29900, feedback=100000))
    # The margin is relative: a share of the baseline's 30% conversion.
    ci_low = decide(case, SCHEDULE, TH).statistics["conversion"]["ci_low"]
    result = decide(case, SCHEDULE, replace(TH, conversion_margin=(-ci_low + shift) / 0.3))
    assert result.decision == decision, f"lower bound {ci_low}, margin {-ci_low + shift}: {result.reasons}"
    if decision == HOLD:
        assert result.reasons[1] == "conversion: CI lower bound -0.77% below -0.77% (3% of v1's 30.00%)", (
            result.reasons
        )


# --- accuracy on labelled feedback ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("labelled", "expected"),
    [
        ((49, 5000), {"tested": False, "feedback": [49.0, 5000.0]}),
        ((0, 0), {"tested": False, "feedback": [0.0, 0.0]}),
        ((50, 50), True),
    ],
)
def test_accuracy_is_tested_from_min_feedback_labels_on_each_arm(
    labelled: tuple[int, int], expected: dict[str, object] | bool
) -> None:
    base = arm(5000, correct=labelled[0] * 0.9, labelled=labelled[0])
    cand = arm(5000, correct=labelled[1] * 0.9, labelled=labelled[1])
    statistics = decide(inputs(base, cand), SCHEDULE, TH).statistics
    if expected is True:
        assert statistics["accuracy"]["tested"] is True, statistics["accuracy"]
    else:
        assert statistics["accuracy"] == expected, statistics["accuracy"]


def test_accuracy_statistics_are_the_reference_difference_of_proportions() -> None:
    base, cand = arm(5000, correct=1801, labelled=2003), arm(5000, correct=1700, labelled=1999)
    accuracy = decide(inputs(base, cand), SCHEDULE, TH).statistics["accuracy"]
    expected = _rounded(
        lambda alpha: stats.proportion_difference(1801, 2003, 1700, 1999, tau=TH.accuracy_tau, alpha=alpha)
    ) | {"tested": True, "baseline": 1801 / 2003, "candidate": 1700 / 1999}
    assert accuracy == expected, accuracy


@pytest.mark.parametrize(
    ("base", "cand", "decision", "first_reason"),
    [
        pytest.param(
            (4500, 5000), (4000, 5000), ROLLBACK, "accuracy: v2 80.00% vs v1 90.00% on labelled feedback",
            id="significant-drop-rolls-back",
        ),
        pytest.param((1800, 2000), (1900, 2000), PROMOTE, PROMOTED[0], id="significant-rise-promotes"),
        pytest.param((90000, 100000), (89900, 100000), PROMOTE, PROMOTED[0], id="drop-within-margin"),
        pytest.param((900, 1000), (885, 1000), HOLD, "not enough evidence yet:", id="drop-not-yet-bounded"),
    ],
)  # fmt: skip
def test_accuracy_rule_in_both_directions(
    base: tuple[int, int], cand: tuple[int, int], decision: str, first_reason: str
) -> None:
    case = inputs(arm(5000, correct=base[0], labelled=base[1]), arm(5000, correct=cand[0], labelled=cand[1]))
    result = decide(case, SCHEDULE, TH)
    assert result.decision == decision and result.reasons[0].startswith(first_reason), result.reasons
    if decision == HOLD:
        assert result.reasons[1].startswith("accuracy: CI lower bound"), result.reasons


# --- reported value -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ((0, 0), {"tested": False, "feedback": [0.0, 0.0]}),  # none reported: shown, as not measured
        ((0, 80), {"tested": False, "feedback": [0.0, 80.0]}),
        ((80, 0), {"tested": False, "feedback": [80.0, 0.0]}),
        ((49, 5000), {"tested": False, "feedback": [49.0, 5000.0]}),
    ],
)
def test_values_below_min_feedback_on_an_arm_are_shown_untested(
    values: tuple[int, int], expected: dict[str, object]
) -> None:
    base, cand = (arm(5000, values=(n, 10.0, 4.0) if n else None) for n in values)
    result = decide(inputs(base, cand), SCHEDULE, TH)
    assert result.statistics.get("value") == expected, result.statistics
    assert not any(reason.startswith("value") for reason in result.reasons), result.reasons


def test_values_at_min_feedback_are_tested_against_the_reference_mean_difference() -> None:
    base, cand = arm(5000, values=(50, 10.0, 4.0)), arm(5000, values=(50, 10.5, 3.0))
    value = decide(inputs(base, cand), SCHEDULE, TH).statistics["value"]
    expected = _rounded(
        lambda alpha: stats.mean_difference(
            (50, 500.0, 49 * 16.0 + 50 * 100.0),
            (50, 525.0, 49 * 9.0 + 50 * 110.25),
            tau=TH.value_tau,
            alpha=alpha,
        )
    ) | {"tested": True, "baseline": 10.0, "candidate": 10.5}
    assert value == expected, value


@pytest.mark.parametrize(
    ("cand_mean", "count", "decision", "reasons"),
    [
        pytest.param(
            9.0,
            2000,
            ROLLBACK,
            ["value: v2 mean 9 vs v1 10 (-0.250 sd, CI -0.363..-0.137, p = 0)"],
            id="significant-drop-rolls-back",
        ),
        pytest.param(11.0, 2000, PROMOTE, PROMOTED, id="significant-rise-promotes"),
        pytest.param(9.98, 30000, PROMOTE, PROMOTED, id="insignificant-drop-within-margin-promotes"),
        pytest.param(
            9.8,
            2000,
            HOLD,
            ["not enough evidence yet:", "value: CI lower bound -0.146 sd below -0.05 sd"],
            id="drop-not-yet-bounded-holds",
        ),
    ],
)
def test_value_rule_in_both_directions(
    cand_mean: float, count: int, decision: str, reasons: list[str]
) -> None:
    base, cand = arm(5000, values=(count, 10.0, 4.0)), arm(5000, values=(count, cand_mean, 4.0))
    _assert_decided(decide(inputs(base, cand), SCHEDULE, TH), decision, reasons)


@pytest.mark.parametrize(("shift", "decision"), [(0.0, PROMOTE), (1e-6, PROMOTE), (-1e-6, HOLD)])
def test_the_value_margin_is_met_by_a_lower_bound_equal_to_minus_it(shift: float, decision: str) -> None:
    case = inputs(arm(5000, values=(30000, 10.0, 4.0)), arm(5000, values=(30000, 9.98, 4.0)))
    ci_low = decide(case, SCHEDULE, TH).statistics["value"]["ci_low"]
    result = decide(case, SCHEDULE, replace(TH, value_margin=-ci_low + shift))
    assert result.decision == decision, f"lower bound {ci_low}, margin {-ci_low + shift}: {result.reasons}"
    if decision == HOLD:
        assert result.reasons[1].startswith("value: CI lower bound -0.032 sd below -0.032"), result.reasons


# --- what all sequential checks share -----------------------------------------------------------------------

CHECKED = {
    "error_rate": (arm(5000, 50), arm(5000, 60)),
    "latency": (arm(600), arm(600, latency=SLIGHTLY_SLOW)),
    "conversion": (arm(5000, converted=30000, feedback=100000), arm(5000, converted=29900, feedback=100000)),
    "value": (arm(5000, values=(30000, 10.0, 4.0)), arm(5000, values=(30000, 9.98, 4.0))),
    "accuracy": (arm(5000, correct=90000, labelled=100000), arm(5000, correct=89900, labelled=100000)),
}
"""For each sequential test, a candidate slightly worse, not significantly, within the margin: promoted."""


@pytest.mark.parametrize("test", sorted(CHECKED))
def test_each_p_value_is_the_running_minimum_under_its_own_name(test: str) -> None:
    base, cand = CHECKED[test]
    alone = decide(inputs(base, cand), SCHEDULE, TH)
    now = alone.statistics[test]["p_value"]
    assert alone.decision == PROMOTE and now > 0.5, f"{test}: {alone.reasons} {alone.statistics[test]}"
    others = {name: 0.001 for name in CHECKED if name != test}  # priors of the other tests
    for prior in (0.0123, 0.5, 0.99):
        result = decide(inputs(base, cand, prior_p={test: prior}), SCHEDULE, TH)
        assert result.statistics[test]["p_value"] == min(prior, now), f"{test}: prior {prior}, now {now}"
    apart = decide(inputs(base, cand, prior_p=others), SCHEDULE, TH)
    assert apart.statistics[test]["p_value"] == now, f"{test} took another test's prior"


@pytest.mark.parametrize("test", ["conversion", "value", "accuracy"])
@pytest.mark.parametrize(("bound", "decision"), [(1e-6, ROLLBACK), (0.0, PROMOTE)])
def test_each_regression_needs_its_running_interval_wholly_on_the_bad_side(
    test: str, bound: float, decision: str
) -> None:
    # Errors have a one-sided test of their own (test_checks_errors.py); these are worse downwards.
    base, cand = CHECKED[test]
    prior = (-1.0, -bound)
    result = decide(inputs(base, cand, prior_ci={test: prior}), SCHEDULE, TH)
    assert result.decision == decision, f"{test} with the running interval {prior}: {result.reasons}"
    if decision == ROLLBACK:
        assert result.reasons[0].startswith(test.replace("_", " ") + ":"), result.reasons


# The sample-ratio mismatch's checks are in test_decision_srm.py.
