"""The whole decision's error rates, measured by seeded simulations of whole rollouts (rollouts.py runs
`decide` at every interval, as `servectl experiment step` does).

test_rate_ratio.py and test_simulation.py measure each statistical test alone; these are the figures a
user of the default settings gets from all of them together. benchmarks/experiment_rollouts.py prints the
full table (both starting splits, both error rates, with and without feedback).
"""

import functools

import pytest

from servectl.experiments.checks import FEEDBACK_METRICS, Thresholds
from servectl.experiments.decision import COMPLETE, ROLLBACK
from servectl.experiments.rollouts import SLOW, Design, Tally, Version, simulate

WITH_FEEDBACK = Design(thresholds=Thresholds(optional_metrics=frozenset({"value", "accuracy"})))
"""Conversion feedback on half the requests; value and accuracy marked optional (the model has none)."""
WITHOUT_FEEDBACK = Design(thresholds=Thresholds(optional_metrics=frozenset(FEEDBACK_METRICS)))
"""No feedback at all, every feedback metric marked optional: errors and latency alone decide."""
BASE, SILENT = Version(), Version(feedback=0.0)


@functools.cache
def _run(design: Design, base: Version, cand: Version, start: int, seed: int, rollouts: int) -> Tally:
    return simulate(design, base, cand, start=start, seed=seed, rollouts=rollouts)


@pytest.mark.parametrize(
    ("design", "version", "seed"),
    [(WITH_FEEDBACK, BASE, 101), (WITHOUT_FEEDBACK, SILENT, 105)],
    ids=["with-feedback", "without"],
)
def test_a_candidate_like_the_baseline_is_rolled_back_in_at_most_alpha_of_rollouts(
    design: Design, version: Version, seed: int
) -> None:
    tally = _run(design, version, version, 5, seed, 150)
    assert tally.share(ROLLBACK) <= design.thresholds.alpha, f"A/A rolled back in {tally.share(ROLLBACK):.3f}"


@pytest.mark.parametrize(
    ("design", "base", "rate"),
    [(WITH_FEEDBACK, BASE, 0.01), (WITHOUT_FEEDBACK, SILENT, 0.01), (WITHOUT_FEEDBACK, SILENT, 0.001)],
    ids=["with-feedback-1%", "without-1%", "without-0.1%"],
)
def test_a_candidate_with_twice_the_errors_never_reaches_all_traffic(
    design: Design, base: Version, rate: float
) -> None:
    # Before the rate-ratio gate, 40% to 94% of these rollouts reached 100% without feedback.
    base = Version(error_rate=rate, feedback=base.feedback)
    doubled = Version(error_rate=2 * rate, feedback=base.feedback)
    tally = _run(design, base, doubled, 5, 107, 100)
    assert tally.reached_full() <= 0.05, f"a 2x-error candidate reached 100% in {tally.reached_full():.3f}"


def test_without_feedback_a_better_candidate_completes() -> None:
    better = Version(error_rate=0.005, feedback=0.0)
    tally = _run(WITHOUT_FEEDBACK, SILENT, better, 5, 108, 100)
    assert tally.share(COMPLETE) >= 0.9, f"completed in {tally.share(COMPLETE):.3f}"


def test_a_required_metric_that_is_never_measured_holds_every_rollout() -> None:
    required = Design(looks=20)  # conversion, value and accuracy required; no feedback arrives
    tally = _run(required, SILENT, SILENT, 5, 109, 20)
    assert tally.share(COMPLETE) == 0.0 and tally.reached_full() == 0.0, tally.outcomes[:3]


@pytest.mark.parametrize(
    ("cand", "seed"),
    [
        pytest.param(Version(error_rate=0.03), 102, id="errors-1%-to-3%"),
        pytest.param(Version(latency=SLOW), 103, id="latency-slower-in-57%-of-pairs"),
        pytest.param(Version(conversion=0.25), 104, id="conversion-30%-to-25%"),
    ],
)
def test_a_regressed_candidate_is_rolled_back_at_the_first_step(cand: Version, seed: int) -> None:
    tally = _run(WITH_FEEDBACK, BASE, cand, 5, seed, 60)
    first = sum(o.decision == ROLLBACK and o.peak == 5 for o in tally.outcomes) / len(tally.outcomes)
    assert first >= 0.95, f"rolled back before any promotion in {first:.3f}"
