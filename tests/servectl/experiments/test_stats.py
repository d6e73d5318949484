import numpy as np
import pytest
from scipy import stats as sps  # type: ignore[import-untyped]

from servectl.experiments import stats


def test_binned_rank_test_matches_mann_whitney_on_the_expanded_samples() -> None:
    base, cand = np.array([5, 10, 3, 0, 2]), np.array([1, 4, 9, 6, 0])
    result = stats.binned_rank_test(base, cand, tau=0.05, alpha=0.05)
    expanded_b, expanded_c = np.repeat(np.arange(5), base), np.repeat(np.arange(5), cand)
    u = sps.mannwhitneyu(expanded_c, expanded_b).statistic
    assert result.superiority == pytest.approx(u / (base.sum() * cand.sum())), "U / (n_a n_b) is the effect"


def test_identical_histograms_show_no_effect() -> None:
    counts = np.array([0, 100, 50, 3])
    result = stats.binned_rank_test(counts, counts, tau=0.05, alpha=0.05)
    assert result.superiority == pytest.approx(0.5)
    assert result.sequential.p_value == pytest.approx(1.0), "no evidence against the null"


def test_sample_ratio_mismatch_flags_a_skewed_split_only() -> None:
    fair = stats.sample_ratio_mismatch([9010, 990], [90, 10])
    skewed = stats.sample_ratio_mismatch([9300, 700], [90, 10])
    assert fair.p_value > 0.1, f"a 90.1/9.9 split of 90/10 is fine, p = {fair.p_value}"
    assert skewed.p_value < 1e-6, f"93/7 for 90/10 is a mismatch, p = {skewed.p_value}"


@pytest.mark.parametrize(
    ("x_base", "x_cand", "significant"), [(50, 50, False), (50, 200, True), (50, 70, False)]
)
def test_proportion_difference(x_base: int, x_cand: int, significant: bool) -> None:
    result = stats.proportion_difference(x_base, 5000, x_cand, 5000, tau=0.01, alpha=0.05)
    assert (result.p_value <= 0.05) == significant, f"p = {result.p_value}"
    assert result.ci_low <= result.estimate <= result.ci_high
    assert (result.ci_low > 0) == significant, "the interval excludes 0 exactly when the test rejects"


def test_an_arm_without_events_still_has_uncertainty() -> None:
    result = stats.proportion_difference(0, 30, 0, 30, tau=0.01, alpha=0.05)
    assert result.ci_high > 0.01, f"30 requests without errors cannot prove a rate below 1%: {result.ci_high}"


def test_fixed_horizon_sample_size_is_the_textbook_figure() -> None:
    n = stats.required_samples_per_arm(0.01, 0.01, alpha=0.05, power=0.8)
    assert 2300 <= n <= 2330, f"1% -> 2% at alpha 0.05, power 0.8 needs about 2,313 per arm, got {n}"


def test_mean_difference_is_in_standard_deviations_and_always_valid() -> None:
    rng = np.random.default_rng(3)
    # 400 A/A experiments, 20 looks each: the always-valid p-value stays above alpha in >= 95% of them.
    looks, per_look, experiments = 20, 100, 400
    a = rng.normal(10.0, 4.0, size=(experiments, looks * per_look))
    b = rng.normal(10.0, 4.0, size=(experiments, looks * per_look))
    n = np.arange(1, looks + 1) * per_look

    def cumulative(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        sums = np.cumsum(x, axis=1)[:, n - 1]
        squares = np.cumsum(x * x, axis=1)[:, n - 1]
        return np.broadcast_to(n, sums.shape), sums, squares

    est = stats.mean_difference(cumulative(a), cumulative(b), tau=0.1, alpha=0.05)
    false_positives = (stats.running_min(est.p_value)[:, -1] <= 0.05).mean()
    assert false_positives <= 0.05, false_positives
    base, cand = (2000, 20000, 2000 * (16 + 100)), (2000, 18000, 2000 * (16 + 81))
    shifted = stats.mean_difference(base, cand, tau=0.1, alpha=0.05)
    assert float(shifted.estimate) == pytest.approx(-0.25, abs=0.01), "a mean 1 lower at sd 4 is -0.25 sd"
    assert float(shifted.p_value) < 0.05 and float(shifted.ci_high) < 0
