"""The sample-ratio mismatch in the decision: the sequential test on randomised units only, a halt (HOLD,
`halted: "srm"`) rather than a rollback, and one that lasts until the experiment is restarted."""

import math
from dataclasses import replace

import numpy as np
import pytest

from servectl.experiments import srm
from servectl.experiments.decision import HOLD, PROMOTE, decide
from servectl.experiments.promql import Window
from tests.servectl.experiments.decision_inputs import SCHEDULE, TH, arm, inputs


@pytest.mark.parametrize(
    ("weights", "counts", "arms"),
    [
        ({"1": 90, "2": 10}, {"1": 9099.0, "2": 901.0}, ["1", "2"]),
        ({"1": 99, "2": 1}, {"1": 9895.0, "2": 105.0}, ["1", "2"]),  # an arm at 1% is an arm
        ({"1": 50, "2": 50, "3": 0}, {"1": 5013.0, "2": 4987.0, "3": 0.0}, ["1", "2"]),  # one at 0% is not
    ],
)
def test_the_split_is_the_sequential_test_over_the_arms_with_weight(
    weights: dict[str, int], counts: dict[str, float], arms: list[str]
) -> None:
    window = Window(versions={v: arm(n) for v, n in counts.items()})
    case = inputs(arm(5000), arm(5000), weights=weights, step=window)
    reference = srm.sequential_srm([counts[v] for v in arms], [weights[v] for v in arms])
    result = decide(case, SCHEDULE, TH).statistics["srm"]
    assert result == {
        "arms": arms,
        "counts": [counts[v] for v in arms],
        "weights": [weights[v] for v in arms],
        "tested": True,
        "log_bf": round(float(reference.log_bayes_factor), 6),
        "p_value": float(reference.p_value),
    }, result


@pytest.mark.parametrize(
    ("weights", "counts", "tested"),
    [
        ({"1": 0, "2": 100}, (0.0, 5000.0), False),  # one arm: nothing to compare
        ({"1": 50, "2": 50}, (50.0, 49.0), False),  # 99 units, one under srm_min_requests
        ({"1": 50, "2": 50}, (50.0, 50.0), True),
    ],
)
def test_the_split_is_tested_from_two_arms_and_srm_min_requests(
    weights: dict[str, int], counts: tuple[float, float], tested: bool
) -> None:
    step = Window(versions={"1": arm(counts[0]), "2": arm(counts[1])})
    result = decide(inputs(arm(5000), arm(5000), weights=weights, step=step), SCHEDULE, TH)
    assert result.statistics["srm"]["tested"] is tested, result.statistics["srm"]
    if not tested:
        assert result.statistics["srm"] | {"counts": None} == {
            "arms": [v for v in ("1", "2") if weights[v] > 0],
            "counts": None,
            "weights": [w for w in weights.values() if w > 0],
            "tested": False,
            "log_bf": 0.0,
            "p_value": 1.0,
        }, result.statistics["srm"]


def test_header_routes_and_named_versions_are_left_out_of_the_split() -> None:
    # v1 took 5,600 requests, 600 of them through a header route or by name: the weighted 5,000 vs 4,400
    # split is off, the whole one is not. And the other way round.
    skewed_weighted = inputs(arm(5600, weighted=5000), arm(5000, weighted=4400))
    skewed_total = inputs(arm(5600, weighted=5000), arm(4400, weighted=5000))
    flagged = decide(skewed_weighted, SCHEDULE, TH)
    clean = decide(skewed_total, SCHEDULE, TH)
    assert (flagged.decision, flagged.halted) == (HOLD, "srm"), flagged.reasons
    assert clean.halted is None and clean.statistics["srm"]["p_value"] == 1.0, clean.statistics["srm"]
    assert clean.counts["1"]["requests"] == 5600, "counts.<version>.requests stay ALL requests of the version"


def test_sticky_users_count_as_units_of_the_split() -> None:
    users = inputs(arm(20000, weighted=0, sticky_users=560), arm(20000, weighted=0, sticky_users=440))
    balanced = inputs(arm(20000, weighted=0, sticky_users=500), arm(20000, weighted=0, sticky_users=500))
    assert decide(users, SCHEDULE, replace(TH, srm_p=0.05)).halted == "srm", "560 vs 440 users at 50/50"
    assert decide(balanced, SCHEDULE, replace(TH, srm_p=0.05)).halted is None


@pytest.mark.parametrize(("at", "halted"), [(False, None), (True, "srm")])
def test_a_mismatch_is_a_p_value_at_or_under_srm_p(at: bool, halted: str | None) -> None:
    case = inputs(arm(5200), arm(4800))
    p = decide(case, SCHEDULE, TH).statistics["srm"]["p_value"]
    srm_p = p if at else float(np.nextafter(p, 0.0))
    result = decide(case, SCHEDULE, replace(TH, srm_p=srm_p))
    assert result.halted == halted, f"p = {p!r} against srm_p = {srm_p!r}: {result.reasons}"
    assert result.decision == (HOLD if at else PROMOTE), result.reasons


def test_a_mismatch_halts_names_the_split_and_keeps_the_failed_checks() -> None:
    result = decide(inputs(arm(5600), arm(4400), prior_failed_checks=1), SCHEDULE, TH)
    p = float(srm.sequential_srm([5600, 4400], [50, 50]).p_value)
    assert result.reasons == [
        "sample-ratio mismatch: randomised traffic this step v1 56.0%, v2 44.0% against configured v1 50%, "
        f"v2 50% (always-valid p = {p:.2g} <= 0.001); the data cannot be trusted: the rollout is halted "
        "until the cause is found and the experiment restarted"
    ], result.reasons
    assert (result.decision, result.next_weights) == (HOLD, {"1": 50, "2": 50}), "halted, not rolled back"
    assert result.to_json()["halted"] == "srm", "the log entry marks it for a controller or an alert"
    assert result.failed_checks == 1, "a mismatch is no failed check of the candidate, nor clears one"


def test_once_halted_it_stays_halted_on_a_balanced_split() -> None:
    """The running minimum of p: a later look that looks fine does not resume the rollout."""
    balanced = inputs(arm(5000), arm(5000), prior_p={"srm": 1e-6})
    result = decide(balanced, SCHEDULE, TH)
    assert (result.decision, result.halted) == (HOLD, "srm"), result.reasons
    assert result.statistics["srm"]["p_value"] == 1e-6, result.statistics["srm"]
    fresh = decide(inputs(arm(5000), arm(5000)), SCHEDULE, TH)
    assert (fresh.decision, fresh.halted) == (PROMOTE, None), "without the earlier minimum it would promote"


def test_the_completed_steps_evidence_carries_into_this_step() -> None:
    # Earlier steps ended with a Bayes factor of 900; this step's alone is about 18 (p 0.055), together past
    # 1 / 0.001.
    step = inputs(arm(5150), arm(4850))
    alone = decide(step, SCHEDULE, TH).statistics["srm"]
    carried = decide(replace(step, prior_srm_log_bf=math.log(900)), SCHEDULE, TH)
    assert alone["p_value"] > TH.srm_p, alone
    assert carried.statistics["srm"]["log_bf"] == pytest.approx(alone["log_bf"] + math.log(900), abs=1e-5)
    assert carried.halted == "srm", carried.statistics["srm"]
