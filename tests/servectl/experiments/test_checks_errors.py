"""The error gate at its default settings: a one-sided regression test on the rate ratio, and promotion
only once the candidate's rate is shown within 1.5x of the baseline's (or, for errors too rare for a
ratio, within 0.05 points of it)."""

from dataclasses import replace

import pytest

from servectl.experiments.checks import FEEDBACK_METRICS, Thresholds
from servectl.experiments.decision import HOLD, PROMOTE, ROLLBACK, decide
from servectl.experiments.promql import Window
from tests.servectl.experiments.decision_inputs import SCHEDULE, arm, inputs

DEFAULTS = Thresholds(optional_metrics=frozenset(FEEDBACK_METRICS))
"""The shipped error settings; feedback metrics optional so that only errors and latency decide."""


def test_a_doubled_error_rate_within_the_old_absolute_margin_holds() -> None:
    # 0.1% -> 0.2%: a difference of 0.1 points, within a one-point absolute margin, so promoted before;
    # 10 of 5,000 errors cannot show the ratio below 1.5.
    result = decide(inputs(arm(5000, 5), arm(5000, 10)), SCHEDULE, DEFAULTS)
    assert result.decision == HOLD, result.reasons
    assert result.reasons[1].startswith("error rate: not yet shown within 1.5x of v1's"), result.reasons
    need = result.statistics["error_rate"]["required_candidate_requests"]
    assert f"about {need:,} v2 requests in all show it at this split (80% power)" in result.reasons[1], (
        result.reasons
    )


def test_a_candidate_shown_within_the_ratio_margin_is_promoted() -> None:
    result = decide(inputs(arm(100_000, 1000), arm(100_000, 980)), SCHEDULE, DEFAULTS)
    err = result.statistics["error_rate"]
    assert err["noninferiority_p"] <= DEFAULTS.alpha / 2 and err["ratio_upper_bound"] < 1.5, err
    assert result.decision == PROMOTE, result.reasons


@pytest.mark.parametrize(("requests", "decision"), [(5000, HOLD), (50_000, PROMOTE)])
def test_without_any_error_the_floor_decides_once_enough_requests_were_served(
    requests: int, decision: str
) -> None:
    result = decide(inputs(arm(requests), arm(requests)), SCHEDULE, DEFAULTS)
    err = result.statistics["error_rate"]
    assert err["ratio"] is None and err["ratio_upper_bound"] is None, err
    assert result.decision == decision, f"{requests}: {result.reasons} {err}"


@pytest.mark.parametrize(("shift", "rolled_back"), [(1e-6, True), (-1e-6, False)])
def test_a_regression_is_the_one_sided_p_value_at_alphas_share(shift: float, rolled_back: bool) -> None:
    case = inputs(arm(5000, 50), arm(5000, 75))
    p = decide(case, SCHEDULE, DEFAULTS).statistics["error_rate"]["p_value"]
    # alpha is shared by the five rollback tests: the error test fires at p <= alpha / 5.
    result = decide(case, SCHEDULE, replace(DEFAULTS, alpha=(p + shift) * 5))
    assert (result.decision == ROLLBACK) == rolled_back, (p, result.reasons)


def test_the_regression_p_value_is_the_running_minimum() -> None:
    case = inputs(arm(5000, 50), arm(5000, 50), prior_p={"error_rate": 0.004})
    result = decide(case, SCHEDULE, DEFAULTS)
    assert result.statistics["error_rate"]["p_value"] == 0.004, result.statistics["error_rate"]
    assert result.decision == ROLLBACK, "an earlier look's evidence of a rise stands: the test is one-sided"


def test_a_candidate_once_better_is_never_a_regression_for_it() -> None:
    better = decide(inputs(arm(20000, 200), arm(20000, 100)), SCHEDULE, DEFAULTS)
    assert better.statistics["error_rate"]["p_value"] == 1.0, "no evidence of a rise in a fall"


def test_a_rate_that_drifts_across_steps_is_stratified_away() -> None:
    # Step one: both at 1% with the candidate on 5%; step two: both at 3% with the candidate on 50%.
    first = Window(versions={"1": arm(19000, 190), "2": arm(1000, 10)})
    second = Window(versions={"1": arm(10000, 300), "2": arm(10000, 300)})
    whole = Window(versions={"1": arm(29000, 490), "2": arm(11000, 310)})
    case = replace(inputs(arm(1), arm(1)), experiment=whole, step=second, epochs=(first, second))
    err = decide(case, SCHEDULE, DEFAULTS).statistics["error_rate"]
    assert err["candidate"] > 1.6 * err["baseline"], "pooled, the candidate looks 1.7 times as bad"
    assert err["ratio"] == pytest.approx(1.0) and err["p_value"] == 1.0, err
