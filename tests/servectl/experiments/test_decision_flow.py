"""How `decide` combines its checks: the order of judgement, consecutive failed checks, the sample minimum,
the steps of the schedule and the weights each decision leads to, and what an analysis records.

The property test at the end states the whole rule over arbitrary counts: the decision and its reasons
follow from the statistics the analysis reports (which test_decision_checks.py ties to the references).
"""

import json
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from servectl.experiments.decision import (
    COMPLETE,
    HOLD,
    PROMOTE,
    ROLLBACK,
    Analysis,
    Inputs,
    decide,
    next_weights,
)
from servectl.experiments.promql import VersionCounts, Window
from tests.servectl.experiments.decision_inputs import (
    FAST,
    HALF,
    QUICK,
    SCHEDULE,
    SLIGHTLY_SLOW,
    SLOW,
    TH,
    arm,
    inputs,
)

ERRORS = [
    "error rate: v2 5.00% vs v1 1.00%, rate ratio 5.00 "
    "(always-valid p = 7.3e-31 <= 0.01, alpha 0.05 shared by 5 rollback tests)"
]
"""The reasons of the error-rate regression 50 -> 250 errors in 5,000 requests an arm."""
GATE = ["the load-test SLO gate failed, a precondition for promotion"]


def _step(base: float, cand: float) -> Window:
    return Window(versions={"1": arm(base), "2": arm(cand)})


# --- order of judgement -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("errors", "gate_passed", "step", "decision", "first_reason"),
    [
        # A mismatch outranks everything: the counts behind the other checks cannot be trusted. It halts
        # (holds) rather than rolls back: nothing says the candidate is to blame.
        pytest.param(
            250,
            False,
            _step(5600, 4400),
            HOLD,
            "sample-ratio mismatch: randomised traffic this step v1 56.0%",
            id="srm",
        ),
        pytest.param(250, False, None, ROLLBACK, GATE[0], id="gate-before-regression"),
        pytest.param(250, None, _step(200, 200), ROLLBACK, ERRORS[0], id="regression-before-sample-minimum"),
        pytest.param(
            60, None, _step(200, 200), HOLD, "v2 served 200 of the 500 requests this step needs", id="minimum"
        ),
    ],
)
def test_the_first_fault_in_the_order_of_judgement_decides_alone(
    errors: int, gate_passed: bool | None, step: Window | None, decision: str, first_reason: str
) -> None:
    case = inputs(arm(5000, 50), arm(5000, errors), step=step, gate_passed=gate_passed)
    result = decide(case, SCHEDULE, TH)
    assert result.decision == decision and result.reasons[0].startswith(first_reason), result.reasons
    assert len(result.reasons) == 1, f"only the deciding fault is given: {result.reasons}"


@pytest.mark.parametrize(("gate_passed", "decision"), [(None, PROMOTE), (True, PROMOTE), (False, ROLLBACK)])
def test_only_a_failed_load_test_gate_rolls_back(gate_passed: bool | None, decision: str) -> None:
    result = decide(inputs(arm(5000), arm(5000), gate_passed=gate_passed), SCHEDULE, TH)
    assert result.decision == decision, f"gate {gate_passed}: {result.reasons}"
    if decision == ROLLBACK:
        assert (result.reasons, result.failed_checks) == (GATE, 0), "the gate's reason, and no failed check"
        assert result.next_weights == {"1": 100, "2": 0}, result.next_weights


# --- consecutive failed checks ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("allowed", "prior", "decision", "failed"),
    [
        (1, 0, ROLLBACK, 1),
        (2, 0, HOLD, 1),
        (2, 1, ROLLBACK, 2),
        (3, 1, HOLD, 2),
        (3, 2, ROLLBACK, 3),
        (2, 4, ROLLBACK, 5),
    ],
)
def test_a_regression_rolls_back_at_the_scheduled_count_of_failed_checks(
    allowed: int, prior: int, decision: str, failed: int
) -> None:
    case = inputs(arm(5000, 50), arm(5000, 250), prior_failed_checks=prior)
    result = decide(case, replace(SCHEDULE, failed_checks=allowed), TH)
    assert (result.decision, result.failed_checks) == (decision, failed), result.reasons
    held = [f"failed check {failed} of {allowed} before rollback"] if decision == HOLD else []
    assert result.reasons == ERRORS + held, result.reasons
    expected = {"1": 100, "2": 0} if decision == ROLLBACK else HALF
    assert result.next_weights == expected, result.next_weights


@pytest.mark.parametrize(
    ("case", "decision"),
    [
        (inputs(arm(5000), arm(5000)), PROMOTE),
        (inputs(arm(5000), arm(5000), step=_step(200, 200)), HOLD),  # too few samples
        (inputs(arm(1000, 10), arm(1000, 15)), HOLD),  # not enough evidence
        (inputs(arm(5000), arm(5000), weights={"1": 0, "2": 100}, step=_step(0, 5000)), COMPLETE),
    ],
)
def test_a_look_without_regression_resets_the_failed_checks(case: Inputs, decision: str) -> None:
    result = decide(replace(case, prior_failed_checks=2), replace(SCHEDULE, failed_checks=3), TH)
    assert (result.decision, result.failed_checks) == (decision, 0), result.reasons


# --- samples, evidence and steps ----------------------------------------------------------------------------


@pytest.mark.parametrize(("served", "decision"), [(499, HOLD), (500, PROMOTE), (501, PROMOTE)])
def test_promotion_needs_min_samples_from_the_candidate_in_this_step(served: int, decision: str) -> None:
    result = decide(inputs(arm(5000), arm(5000), step=_step(served, served)), SCHEDULE, TH)
    assert result.decision == decision, result.reasons
    if decision == HOLD:
        assert result.reasons == ["v2 served 499 of the 500 requests this step needs"], result.reasons
    else:
        assert result.reasons[0] == (
            f"no regression: every check is within its margin after {served} candidate requests this step"
        ), result.reasons


def test_every_unproven_check_is_named_in_order_and_holds() -> None:
    base = arm(500, 5, converted=30, feedback=100, values=(100, 10.0, 4.0))
    cand = arm(500, 5, latency=SLIGHTLY_SLOW, converted=30, feedback=100, values=(100, 10.0, 4.0))
    result = decide(inputs(base, cand), SCHEDULE, TH)
    assert result.decision == HOLD and result.reasons[0] == "not enough evidence yet:", result.reasons
    named = [reason.split(":")[0] for reason in result.reasons[1:]]
    assert named == ["error rate", "latency", "conversion", "value"], result.reasons
    assert result.next_weights == HALF, "a hold keeps the weights"


@pytest.mark.parametrize(
    ("steps", "weights", "after", "reason"),
    [
        ((5, 25, 50, 100), {"1": 95, "2": 5}, {"1": 75, "2": 25}, "v2 5% -> 25%"),
        ((5, 25, 50, 100), {"1": 90, "2": 10}, {"1": 75, "2": 25}, "v2 10% -> 25%"),  # between steps
        ((5, 25, 50, 100), {"1": 50, "2": 50}, {"1": 0, "2": 100}, "v2 50% -> 100%"),
        ((1, 50, 100), {"1": 100, "2": 0}, {"1": 99, "2": 1}, "v2 0% -> 1%"),
        ((1, 50, 100), {"1": 100}, {"1": 99, "2": 1}, "v2 0% -> 1%"),  # a candidate without weight is at 0%
        ((5, 25), {"1": 75, "2": 25}, {"1": 0, "2": 100}, "v2 25% -> 100%"),  # past the last step: 100%
    ],
)
def test_promotion_goes_to_the_next_step_above_the_current_weight(
    steps: tuple[int, ...], weights: dict[str, int], after: dict[str, int], reason: str
) -> None:
    share = weights.get("2", 0)
    step = _step(20000 * (100 - share) / 100, max(20000 * share / 100, 1000))
    result = decide(
        inputs(arm(5000), arm(5000), weights=weights, step=step), replace(SCHEDULE, steps=steps), TH
    )
    assert (result.decision, result.reasons[1:]) == (PROMOTE, [reason]), result.reasons
    assert result.next_weights == after, result.next_weights
    assert result.weights == weights, "the analysis records the weights it judged"


def test_a_candidate_at_100_percent_completes_and_keeps_the_weights() -> None:
    weights = {"1": 0, "2": 100}
    result = decide(inputs(arm(8000), arm(8000), weights=weights, step=_step(0, 3000)), SCHEDULE, TH)
    assert (result.decision, result.failed_checks) == (COMPLETE, 0), result.reasons
    assert result.reasons == [
        "no regression: every check is within its margin after 3000 candidate requests this step",
        "v2 serves all traffic",
    ], result.reasons
    assert result.next_weights == weights == result.weights, result.next_weights


# --- weights ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("percent", [0, 1, 25, 100])
def test_next_weights_give_the_rest_to_the_baseline_and_nothing_to_other_versions(percent: int) -> None:
    before = {"1": 60, "2": 30, "3": 10, "4": 0}
    after = next_weights(before, "1", "2", percent)
    assert after == {"1": 100 - percent, "2": percent, "3": 0, "4": 0}, after
    assert before == {"1": 60, "2": 30, "3": 10, "4": 0}, "the weights passed in are left as they were"


@pytest.mark.parametrize(
    ("cand", "decision", "after"),
    [
        (arm(5000, 250), ROLLBACK, {"1": 100, "2": 0, "3": 0}),
        (arm(5000), PROMOTE, {"1": 0, "2": 100, "3": 0}),
        (arm(5000, 60, latency=SLOW), ROLLBACK, {"1": 100, "2": 0, "3": 0}),
        (arm(1000, 15), HOLD, {"1": 50, "2": 50, "3": 0}),
    ],
)
def test_each_decision_leads_to_its_weights_with_a_retired_version_kept_at_0(
    cand: VersionCounts, decision: str, after: dict[str, int]
) -> None:
    weights = {"1": 50, "2": 50, "3": 0}
    base = arm(cand.requests, 50 * cand.requests / 5000)
    result = decide(inputs(base, cand, weights=weights), SCHEDULE, TH)
    assert (result.decision, result.next_weights) == (decision, after), result.reasons
    assert result.weights == weights, result.weights


# --- what an analysis records -------------------------------------------------------------------------------


def test_an_analysis_records_statistics_of_every_check_and_the_counts_it_judged() -> None:
    base = arm(5000, 50, converted=600, feedback=2000, values=(100, 10.0, 4.0))
    cand = arm(5000, 60, latency=QUICK, converted=610, feedback=2000, values=(100, 10.2, 4.0))
    result = decide(inputs(base, cand), SCHEDULE, TH)
    assert list(result.statistics) == [
        "srm",
        "error_rate",
        "latency",
        "conversion",
        "value",
        "accuracy",
        "cost",
    ], (  # fmt: skip
        result.statistics
    )
    assert result.statistics["srm"]["tested"] is True, result.statistics["srm"]
    assert result.counts == {"1": base.to_json(), "2": cand.to_json()}, result.counts


def test_an_analysis_as_json_has_every_field_under_its_name() -> None:
    analysis = Analysis(
        decision=HOLD,
        reasons=["why"],
        statistics={"srm": {"tested": False}},
        weights={"1": 50, "2": 50},
        next_weights={"1": 50, "2": 50},
        failed_checks=1,
        counts={"1": {"requests": 3.0}},
    )
    assert analysis.to_json() == {
        "decision": "hold",
        "reasons": ["why"],
        "statistics": {"srm": {"tested": False}},
        "weights": {"1": 50, "2": 50},
        "next_weights": {"1": 50, "2": 50},
        "failed_checks": 1,
        "counts": {"1": {"requests": 3.0}},
    }, analysis.to_json()
    real = decide(inputs(arm(5000), arm(5000)), SCHEDULE, TH).to_json()
    assert json.loads(json.dumps(real)) == real, "an analysis of real counts is plain JSON"


# --- the whole rule, over arbitrary counts ------------------------------------------------------------------

HISTOGRAMS = [FAST, QUICK, SLIGHTLY_SLOW, SLOW, None]


@st.composite
def arms(draw: st.DrawFn) -> tuple[VersionCounts, VersionCounts]:
    requests = draw(st.integers(min_value=0, max_value=20000))
    drift = draw(st.integers(min_value=-100, max_value=100)) * requests // 1000  # up to 10%: at times an SRM
    pair = []
    for n in (requests, requests + drift):
        feedback = draw(st.integers(min_value=0, max_value=min(n, 4000)))
        count = draw(st.integers(min_value=0, max_value=3000))
        pair.append(
            arm(
                n,
                draw(st.integers(min_value=0, max_value=n // 10)),
                latency=draw(st.sampled_from(HISTOGRAMS)),
                converted=draw(st.integers(min_value=0, max_value=feedback)),
                feedback=feedback,
                values=(count, draw(st.floats(9.0, 11.0)), 4.0) if count > 1 else None,
            )
        )
    return pair[0], pair[1]


def _verdicts(statistics: dict[str, dict[str, Any]]) -> tuple[list[str], list[str]]:
    """The checks whose reported statistics show a regression, and those still unproven, in reason order."""
    regressions, unproven = [], []
    err, lat = statistics["error_rate"], statistics.get("latency")
    if err["p_value"] <= TH.rollback_alpha:
        regressions.append("error rate")
    elif err["noninferiority_p"] > TH.alpha / 2 and err["difference_upper_bound"] >= TH.error_margin:
        unproven.append("error rate")
    if lat is None:
        unproven.append("latency")
    elif lat["running_ci"][0] > TH.latency_tolerance:
        regressions.append("latency")
    elif lat["ci_high"] > TH.latency_tolerance:
        unproven.append("latency")
    margins = (
        ("conversion", TH.conversion_margin),
        ("value", TH.value_margin),
        ("accuracy", TH.accuracy_margin),
    )
    for name, margin in margins:
        stat = statistics.get(name, {"tested": False})
        if not stat["tested"]:
            continue
        if stat["running_ci"][1] < 0:
            regressions.append(name)
        elif stat["ci_low"] < -margin * (1.0 if name == "value" else stat["baseline"]):  # rates: relative
            unproven.append(name)
    return regressions, unproven


@settings(max_examples=150, derandomize=True, database=None, deadline=None)
@given(
    pair=arms(), allowed=st.integers(min_value=1, max_value=3), prior=st.integers(min_value=0, max_value=2)
)
def test_the_decision_and_its_reasons_follow_from_the_statistics_it_reports(
    pair: tuple[VersionCounts, VersionCounts], allowed: int, prior: int
) -> None:
    result = decide(inputs(*pair, prior_failed_checks=prior), replace(SCHEDULE, failed_checks=allowed), TH)
    srm, (regressions, unproven) = result.statistics["srm"], _verdicts(result.statistics)
    served, failed = pair[1].requests, 0
    if srm["p_value"] <= TH.srm_p:
        expected, named, failed = HOLD, ["sample-ratio mismatch"], prior
    elif regressions:
        failed = prior + 1
        expected = ROLLBACK if failed >= allowed else HOLD
        held = [] if expected == ROLLBACK else [f"failed check {failed} of {allowed} before rollback"]
        named = regressions + held
    elif served < SCHEDULE.min_samples:
        expected, named = HOLD, [f"v2 served {served:.0f} of the 500 requests this step needs"]
    elif unproven:
        expected, named = HOLD, ["not enough evidence yet", *unproven]
    else:
        expected, named = PROMOTE, ["no regression", "v2 50% -> 100%"]
    assert result.decision == expected, f"{result.reasons}\n{result.statistics}"
    assert [reason.split(":")[0] for reason in result.reasons] == named, result.reasons
    assert result.failed_checks == failed, f"{result.failed_checks} failed checks: {result.reasons}"


GUARDED = replace(SCHEDULE, holdback_percent=5, guard_seconds=600)


@pytest.mark.parametrize(
    ("weights", "elapsed", "decision", "after"),
    [
        ({"1": 50, "2": 50}, None, PROMOTE, {"1": 5, "2": 95}),  # the last step is the guard, not 100
        ({"1": 5, "2": 95}, 599.0, HOLD, {"1": 5, "2": 95}),
        ({"1": 5, "2": 95}, 600.0, COMPLETE, {"1": 0, "2": 100}),
    ],
)
def test_a_post_promotion_guard_holds_the_baseline_back_for_its_period(
    weights: dict[str, int], elapsed: float | None, decision: str, after: dict[str, int]
) -> None:
    base, cand = (arm(5000), arm(5000)) if weights["2"] == 50 else (arm(1000), arm(19000))
    case = replace(inputs(base, cand, weights=weights), step_seconds=elapsed)
    result = decide(case, GUARDED, TH)
    assert (result.decision, result.next_weights) == (decision, after), result.reasons
    if decision == HOLD:
        assert result.reasons[1].startswith("post-promotion guard: v2 at 95% with v1 held back at 5%"), (
            result.reasons
        )


def test_a_regression_during_the_guard_rolls_back() -> None:
    case = replace(inputs(arm(1000, 10), arm(19000, 950), weights={"1": 5, "2": 95}), step_seconds=100.0)
    result = decide(case, GUARDED, TH)
    assert (result.decision, result.next_weights) == (ROLLBACK, {"1": 100, "2": 0}), result.reasons
