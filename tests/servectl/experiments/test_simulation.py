"""Simulated experiments, fixed seeds: the guarantees of the tests `analyze` runs, measured.

Design: 1,000 experiments, 20 looks of 1,000 requests each, the candidate at 5% for five looks, 25% for
five and 50% for ten (the default schedule), a look at every interval.
"""

import numpy as np
import pytest

from servectl.experiments import simulation, stats
from servectl.experiments.simulation import Design

DESIGN = Design()


def test_the_design_is_at_least_1000_experiments_of_20_looks() -> None:
    assert DESIGN.experiments >= 1000 and DESIGN.looks >= 20


@pytest.mark.parametrize(("rate", "seed"), [(0.002, 11), (0.01, 12), (0.05, 13)])
def test_aa_false_positive_rate_stays_at_or_below_alpha(rate: float, seed: int) -> None:
    fpr = simulation.rate_test_rejections(DESIGN, rate, rate, seed)
    assert fpr <= DESIGN.alpha, f"A/A at error rate {rate}: {fpr:.3f} of experiments rejected at some look"


def test_peeking_with_a_fixed_horizon_test_would_not_hold_alpha() -> None:
    # Why the sequential test: the textbook z-test, looked at every interval, rejects far more often.
    naive = simulation.naive_rejections(DESIGN, 0.05, 0.05, seed=13)
    assert naive > 2 * DESIGN.alpha, f"a z-test at each of 20 looks: {naive:.3f}"


def test_power_for_one_point_more_errors() -> None:
    # 1% -> 2% errors, 50/50 split, 20 looks of 500 requests: 5,000 per arm by the end (a fixed-horizon
    # test needs 2,313 per arm for 80% power; the price of looking at every interval is more samples).
    design = Design(requests_per_look=500, candidate_shares=(0.5,) * 20)
    power = simulation.rate_test_rejections(design, 0.01, 0.02, seed=21)
    assert power >= 0.8, f"power {power:.3f} for +1 point at 5,000 per arm"


def test_power_for_a_gross_regression_within_the_first_steps() -> None:
    power = simulation.rate_test_rejections(DESIGN, 0.01, 0.05, seed=22)
    assert power >= 0.99, f"1% -> 5% errors must be caught: power {power:.3f}"


def test_srm_false_alarms_are_rare() -> None:
    rate = simulation.srm_detections(DESIGN, DESIGN.candidate_shares, threshold=0.001, seed=31)
    # Always valid: at most 0.001 however many looks, plus three standard errors of 1,000 runs.
    assert rate <= 0.004, f"sequential SRM at p <= 0.001 over 20 looks: {rate:.3f}"


def test_srm_is_caught() -> None:
    # The candidate gets 10% fewer requests than configured (e.g. its pods drop some): 4.5% for 5%, ...
    shares = [s * 0.9 for s in DESIGN.candidate_shares]
    rate = simulation.srm_detections(DESIGN, shares, threshold=0.001, seed=32)
    assert rate >= 0.99, f"a 10% relative shortfall must be flagged: {rate:.3f}"


def test_latency_rank_test_false_positives_and_power() -> None:
    fpr = simulation.latency_test_rejections(DESIGN, 0.0, tolerance=0.05, tau=0.05, seed=41)
    power = simulation.latency_test_rejections(DESIGN, 0.25, tolerance=0.05, tau=0.05, seed=42)
    assert fpr <= DESIGN.alpha, f"A/A latency: {fpr:.3f}"
    assert power >= 0.9, f"25% slower: power {power:.3f}"


VALUES = Design(candidate_shares=(0.05,) * 20)
"""A candidate held at 5% for 20 looks of 1,000 values: where a pooled variance goes wrong most."""


def test_a_candidate_whose_values_merely_vary_more_is_rarely_rolled_back() -> None:
    rate = simulation.value_test_rollbacks(VALUES, cand_sd=3.0, cand_shift=0.0, tau=0.1, seed=51)
    assert rate <= VALUES.alpha, f"same mean, 3x the sd: rolled back in {rate:.3f} of experiments"


def test_with_a_pooled_variance_the_same_candidate_would_be_rolled_back_often() -> None:
    # Why Welch: the same simulated values judged with 1/n_b + 1/n_c in pooled sds.
    base, cand = simulation.value_arms(VALUES, cand_sd=3.0, cand_shift=0.0, seed=51)
    (nb, sb, qb), (nc, sc, qc) = base, cand
    pooled = np.sqrt((qb - sb**2 / nb + qc - sc**2 / nc) / (nb + nc - 2))
    effect = (sc / np.maximum(nc, 1) - sb / nb) / pooled
    result = stats.msprt(effect, 1 / nb + 1 / np.maximum(nc, 1), 0.1, VALUES.alpha)
    p = stats.running_min(result.p_value, axis=1)
    rate = float(((p <= VALUES.alpha) & (result.estimate < 0)).any(axis=1).mean())
    assert rate > 3 * VALUES.alpha, f"a pooled variance rolled back only {rate:.3f}"


def test_the_value_test_still_catches_a_lower_mean_on_a_more_variable_candidate() -> None:
    rate = simulation.value_test_rollbacks(VALUES, cand_sd=3.0, cand_shift=-0.5, tau=0.1, seed=52)
    assert rate >= 0.9, f"mean 0.5 baseline sd lower at 3x the sd: caught in {rate:.3f}"
