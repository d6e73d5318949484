"""The segment guards (servectl/experiments/segments.py): a candidate better on the whole but worse for a
key segment is held, not rolled back; the guards split the error test's share of alpha."""

from dataclasses import replace
from pathlib import Path

import pytest

from servectl.experiments.decision import HOLD, PROMOTE, decide
from servectl.experiments.promql import VersionCounts
from servectl.experiments.targets import ROOT, StackTarget
from tests.servectl.experiments.decision_inputs import SCHEDULE, TH, arm, inputs

SEGMENTED = replace(TH, segments=("enterprise", "free"))


def _split(counts: VersionCounts, **segments: tuple[float, float]) -> VersionCounts:
    """Give an arm its per-segment (requests, errors); they are a partition of the whole."""
    counts.segment_requests = {s: n for s, (n, _) in segments.items()}
    counts.segment_errors = {s: x for s, (_, x) in segments.items()}
    return counts


def _better_overall_worse_for_enterprise() -> tuple[VersionCounts, VersionCounts]:
    # Baseline 1.0% everywhere; candidate 0.1% for free users (7,000) but 2.5% for enterprise (3,000).
    base = _split(arm(10_000, 100), enterprise=(3000, 30), free=(7000, 70))
    cand = _split(arm(10_000, 82), enterprise=(3000, 75), free=(7000, 7))
    return base, cand


def test_a_candidate_better_overall_but_worse_for_a_key_segment_is_held_not_rolled_back() -> None:
    result = decide(inputs(*_better_overall_worse_for_enterprise()), SCHEDULE, SEGMENTED)
    assert result.statistics["error_rate"]["ratio"] < 1, "overall the candidate has fewer errors"
    assert result.decision == HOLD, result.reasons
    assert len(result.reasons) == 1 and result.reasons[0].startswith(
        "segment enterprise: error rate 2.50%"
    ), result.reasons
    assert result.next_weights == result.weights, "a hold keeps the weights: nothing is rolled back"
    guard = result.statistics["segment:enterprise"]
    assert guard["p_value"] <= SEGMENTED.rollback_alpha / 2, guard
    assert guard["requests"] == [3000, 3000] and guard["errors"] == [30, 75], guard
    assert result.statistics["segment:free"]["p_value"] == 1.0, "free users are better off: no rise there"


def test_the_same_candidate_without_configured_segments_is_promoted() -> None:
    result = decide(inputs(*_better_overall_worse_for_enterprise()), SCHEDULE, TH)
    assert result.decision == PROMOTE, result.reasons
    assert not any(key.startswith("segment:") for key in result.statistics), result.statistics


def test_a_candidate_as_good_in_every_segment_is_promoted() -> None:
    base = _split(arm(10_000, 100), enterprise=(1000, 10), free=(9000, 90))
    cand = _split(arm(10_000, 95), enterprise=(1000, 9), free=(9000, 86))
    result = decide(inputs(base, cand), SCHEDULE, SEGMENTED)
    assert result.decision == PROMOTE, result.reasons


@pytest.mark.parametrize(("shift", "held"), [(1e-6, True), (-1e-6, False)])
def test_each_guard_runs_at_the_error_tests_share_split_over_the_segments(shift: float, held: bool) -> None:
    base, cand = _better_overall_worse_for_enterprise()
    p = decide(inputs(base, cand), SCHEDULE, SEGMENTED).statistics["segment:enterprise"]["p_value"]
    # Five rollback tests share alpha; the error test's fifth is split over the two segments.
    th = replace(SEGMENTED, alpha=(p + shift) * 5 * 2)
    result = decide(inputs(base, cand), SCHEDULE, th)
    assert (result.decision == HOLD) == held, (p, result.reasons)


def test_a_segments_running_minimum_p_value_holds_after_the_evidence_fades() -> None:
    base = _split(arm(10_000, 100), enterprise=(1000, 10), free=(9000, 90))
    cand = _split(arm(10_000, 100), enterprise=(1000, 10), free=(9000, 90))
    result = decide(inputs(base, cand, prior_p={"segment:enterprise": 1e-6}), SCHEDULE, SEGMENTED)
    assert result.decision == HOLD and result.reasons[0].startswith("segment enterprise"), result.reasons


def test_a_segment_with_no_traffic_yet_does_not_hold() -> None:
    base = _split(arm(10_000, 100), free=(10_000, 100))
    cand = _split(arm(10_000, 100), free=(10_000, 100))
    result = decide(inputs(base, cand), SCHEDULE, SEGMENTED)
    assert result.decision == PROMOTE, result.reasons
    assert result.statistics["segment:enterprise"]["requests"] == [0, 0], result.statistics


def test_the_stacks_segments_reach_the_schedule(tmp_path: Path) -> None:
    text = (ROOT / "Pulumi.eu-prod.yaml").read_text()
    anchor = "        failedChecks: 2\n"
    assert anchor in text, "the eu-prod classifier's rollout block"
    segments = "        segments: {header: x-segment, values: [enterprise, free]}\n"
    (tmp_path / "Pulumi.eu-prod.yaml").write_text(text.replace(anchor, anchor + segments, 1))
    schedule = StackTarget("eu-prod", "tabular-classifier", root=tmp_path).schedule()
    assert schedule is not None and schedule.segments == ("enterprise", "free"), schedule
    shipped = StackTarget("eu-prod", "tabular-classifier").schedule()
    assert shipped is not None and shipped.segments == (), "the shipped stack guards no segments"
