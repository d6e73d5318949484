"""The experiment statistics against reference values computed by scipy, at inputs near the decision
thresholds (SRM p = 0.001, alpha = 0.05), where a wrong degree of freedom, variance or tie correction
flips a decision rather than moving a p-value that is far from any threshold anyway.

The always-valid reference is the mixture likelihood ratio of Johari, Pekelis and Walsh (2017) written as
a ratio of two normal densities, which is what integrating N(d; theta, V) over theta ~ N(0, tau^2) gives:
L = N(d; 0, V + tau^2) / N(d; 0, V). The p-value is min(1, 1/L); the interval's bounds are the theta0 at
which L(d - theta0) = 1/alpha.
"""

import numpy as np
import pytest
from scipy import stats as sps  # type: ignore[import-untyped]

from servectl.experiments import stats


def mixture_lr(d: float, variance: float, tau: float) -> float:
    # In logs: far from the estimate both densities underflow, their ratio does not.
    log_lr = sps.norm.logpdf(d, scale=np.sqrt(variance + tau**2)) - sps.norm.logpdf(
        d, scale=np.sqrt(variance)
    )
    return float(np.exp(log_lr))


def assert_always_valid(
    result: stats.SequentialEstimate, d: float, variance: float, *, tau: float, alpha: float
) -> None:
    """The estimate is `d` and its p-value and interval are the mSPRT's for variance `variance`."""
    assert float(result.estimate) == pytest.approx(d, rel=1e-12, abs=1e-15), (
        f"estimate {result.estimate} != {d}"
    )
    p = min(1.0, 1.0 / mixture_lr(d, variance, tau))
    assert float(result.p_value) == pytest.approx(p, rel=1e-7), f"p-value {result.p_value}, reference {p}"
    assert float(result.ci_low) < d < float(result.ci_high), "the interval holds the estimate"
    for bound in (float(result.ci_low), float(result.ci_high)):
        lr = mixture_lr(d - bound, variance, tau)
        assert lr == pytest.approx(1.0 / alpha, rel=1e-6), f"L at the bound {bound} is {lr}, not 1/alpha"


# --- sample-ratio mismatch: Pearson's chi-square with k - 1 degrees of freedom -----------------------------


@pytest.mark.parametrize(
    ("counts", "weights"),
    [
        ([9099, 901], [90, 10]),  # p just under 0.001: a mismatch
        ([9098, 902], [90, 10]),  # p just over 0.001: no mismatch
        ([5180, 2860, 1960], [50, 30, 20]),
        ([2600, 2400, 2550, 2450], [1, 1, 1, 1]),
        ([3, 0], [99, 1]),  # an expected count below one still counts
        ([1, 0], [1, 1]),
    ],
)
def test_sample_ratio_mismatch_is_scipys_chisquare(counts: list[int], weights: list[int]) -> None:
    result = stats.sample_ratio_mismatch(counts, weights)
    expected = np.asarray(weights) / sum(weights) * sum(counts)
    reference = sps.chisquare(counts, expected)  # ddof 0: k - 1 degrees of freedom
    assert float(result.statistic) == pytest.approx(reference.statistic, rel=1e-12), counts
    assert float(result.p_value) == pytest.approx(reference.pvalue, rel=1e-9), f"{counts}: df must be k - 1"
    assert result.observed_share.tolist() == pytest.approx([c / sum(counts) for c in counts]), "shares"


def test_the_srm_threshold_falls_between_two_neighbouring_splits() -> None:
    mismatch = stats.sample_ratio_mismatch([9099, 901], [90, 10])
    fine = stats.sample_ratio_mismatch([9098, 902], [90, 10])
    assert float(mismatch.p_value) < 0.001 < float(fine.p_value), (mismatch.p_value, fine.p_value)


def test_sample_ratio_mismatch_judges_a_batch_of_experiments_each_against_its_own_weights() -> None:
    counts = np.array([[9099, 901], [5100, 4900], [700, 300]])
    weights = np.array([[90, 10], [1, 1], [7, 3]])
    batch = stats.sample_ratio_mismatch(counts, weights)
    for row, (c, w) in enumerate(zip(counts, weights, strict=True)):
        alone = stats.sample_ratio_mismatch(c, w)
        reference = sps.chisquare(c, w / w.sum() * c.sum())
        assert batch.statistic[row] == pytest.approx(reference.statistic, rel=1e-12), f"row {row}"
        assert batch.p_value[row] == pytest.approx(float(alone.p_value), rel=1e-12), f"row {row}"
        assert batch.p_value[row] == pytest.approx(reference.pvalue, rel=1e-9), f"row {row}"


def test_no_requests_at_all_is_no_evidence_of_a_mismatch() -> None:
    result = stats.sample_ratio_mismatch([0, 0, 0], [50, 30, 20])
    assert float(result.statistic) == 0.0 and float(result.p_value) == 1.0, (result.statistic, result.p_value)
    assert result.observed_share.tolist() == [0.0, 0.0, 0.0], result.observed_share


# --- proportions: Agresti-Caffo adjusted rates in the variance -------------------------------------------


def proportion_variance(x_base: int, n_base: int, x_cand: int, n_cand: int) -> float:
    # One event and one non-event added to each arm's rate, over the arm's own count (at least one).
    pb, pc = (x_base + 1) / (n_base + 2), (x_cand + 1) / (n_cand + 2)
    return pb * (1 - pb) / max(n_base, 1) + pc * (1 - pc) / max(n_cand, 1)


@pytest.mark.parametrize(
    ("x_base", "n_base", "x_cand", "n_cand"),
    [
        (50, 5000, 86, 5000),  # p just under 0.05
        (50, 5000, 84, 5000),  # p just over 0.05
        (50, 5000, 40, 4000),
        (970, 1000, 990, 1000),  # rates near one: pb (1 - pb) is small, pb (1 + pb) is not
        (0, 30, 0, 30),
        (0, 1, 1, 1),  # one request per arm: the arm's count is not floored above one
        (0, 0, 3, 10),  # an arm without requests
    ],
)
def test_proportion_difference_is_the_msprt_of_the_rate_difference(
    x_base: int, n_base: int, x_cand: int, n_cand: int
) -> None:
    result = stats.proportion_difference(x_base, n_base, x_cand, n_cand, tau=0.01, alpha=0.05)
    d = x_cand / max(n_cand, 1) - x_base / max(n_base, 1)
    assert_always_valid(result, d, proportion_variance(x_base, n_base, x_cand, n_cand), tau=0.01, alpha=0.05)


def test_the_error_rate_decision_flips_between_86_and_84_errors_in_5000() -> None:
    worse = stats.proportion_difference(50, 5000, 86, 5000, tau=0.01, alpha=0.05)
    unproven = stats.proportion_difference(50, 5000, 84, 5000, tau=0.01, alpha=0.05)
    assert float(worse.p_value) <= 0.05 < float(unproven.p_value), (worse.p_value, unproven.p_value)
    assert float(worse.ci_low) > 0 > float(unproven.ci_low), "the interval excludes 0 exactly when p <= alpha"


# --- means: in pooled standard deviations, the two-sample t statistic's numerator ------------------------


def arm(samples: np.ndarray) -> tuple[int, float, float]:
    return len(samples), float(samples.sum()), float((samples**2).sum())


@pytest.mark.parametrize(
    ("base", "cand"),
    [
        ([10.0, 12.0, 9.5, 11.0, 10.5, 13.0, 8.0, 12.5], [11.0, 13.5, 12.0, 14.0, 12.5, 13.0, 11.5, 15.0]),
        ([10.0, 10.5], [11.0, 19.5, 2.0, 24.0, 12.5, 0.5]),  # a candidate far more variable
        ([10.0, 12.0, 9.5, 11.0], [11.0, 11.2]),  # two values in the candidate
        ([10.0, 12.5], [11.0, 13.0]),  # two values each
    ],
)
def test_mean_difference_is_welchs_t_statistic_in_pooled_standard_deviations(
    base: list[float], cand: list[float]
) -> None:
    b, c = np.asarray(base), np.asarray(cand)
    result = stats.mean_difference(arm(b), arm(c), tau=0.1, alpha=0.05)
    welch = sps.ttest_ind(c, b, equal_var=False).statistic
    pooled = sps.ttest_ind(c, b, equal_var=True).statistic
    unit = np.sqrt(((len(b) - 1) * b.var(ddof=1) + (len(c) - 1) * c.var(ddof=1)) / (len(b) + len(c) - 2))
    effect = (c.mean() - b.mean()) / unit
    # Welch: t = (mean_c - mean_b) / sqrt(s_b^2/n_b + s_c^2/n_c), so in units of the pooled sd the estimate's
    # variance is (effect / t)^2; the pooled t would give 1/n_b + 1/n_c instead.
    variance = float((effect / welch) ** 2)
    assert variance == pytest.approx((b.var(ddof=1) / len(b) + c.var(ddof=1) / len(c)) / unit**2)
    assert_always_valid(result, float(effect), variance, tau=0.1, alpha=0.05)
    if abs(welch - pooled) > 0.01:
        assert variance != pytest.approx(1 / len(b) + 1 / len(c)), "the pooled variance is not used"


# --- ranks: Mann-Whitney U with the tie correction, as scipy's asymptotic test computes it ---------------


def scipy_u_and_sd(base: list[int], cand: list[int]) -> tuple[float, float]:
    """U of the candidate and its tie-corrected standard deviation, recovered from scipy's normal test."""
    xb, xc = np.repeat(np.arange(len(base)), base), np.repeat(np.arange(len(cand)), cand)
    test = sps.mannwhitneyu(xc, xb, method="asymptotic", use_continuity=False)
    mean = len(xb) * len(xc) / 2
    return float(test.statistic), abs(float(test.statistic) - mean) / float(sps.norm.isf(test.pvalue / 2))


@pytest.mark.parametrize(
    ("base", "cand"),
    [
        ([40, 60, 30, 10], [28, 48, 30, 34]),  # heavy ties, p just under 0.05
        ([40, 60, 30, 10], [30, 50, 30, 30]),  # heavy ties, p over 0.05
        ([5, 10, 3, 0, 2], [1, 4, 9, 6, 0]),
        ([1, 0], [0, 1]),  # one observation each
        ([0, 3, 0], [1, 0, 2]),
    ],
)
def test_binned_rank_test_is_mann_whitney_with_the_tie_correction(base: list[int], cand: list[int]) -> None:
    result = stats.binned_rank_test(base, cand, tau=0.05, alpha=0.05)
    u, sd = scipy_u_and_sd(base, cand)
    pairs = sum(base) * sum(cand)
    assert float(result.superiority) == pytest.approx(u / pairs, rel=1e-12), "U / (n_a n_b)"
    assert_always_valid(result.sequential, u / pairs - 0.5, (sd / pairs) ** 2, tau=0.05, alpha=0.05)


def test_the_latency_decision_flips_between_two_neighbouring_histograms() -> None:
    slower = stats.binned_rank_test([40, 60, 30, 10], [28, 48, 30, 34], tau=0.05, alpha=0.05)
    unproven = stats.binned_rank_test([40, 60, 30, 10], [30, 50, 30, 30], tau=0.05, alpha=0.05)
    assert float(slower.sequential.p_value) <= 0.05 < float(unproven.sequential.p_value)


def test_an_empty_arm_shows_no_effect() -> None:
    for base, cand in (([0, 0], [3, 4]), ([3, 4], [0, 0]), ([0, 0], [0, 0])):
        result = stats.binned_rank_test(base, cand, tau=0.05, alpha=0.05)
        assert float(result.superiority) == 0.5, f"{base} vs {cand}: {result.superiority}"
        assert float(result.sequential.p_value) == 1.0, f"{base} vs {cand}: {result.sequential.p_value}"


def test_histograms_of_millions_are_counted_without_overflow() -> None:
    # A day of traffic puts millions of requests in one latency bucket; cubing that count (the tie
    # correction) overflows 64-bit integers, so the counts must be taken as floats.
    base, cand = [3_000_000, 1_000_000], [1_000_000, 3_000_000]
    as_ints = stats.binned_rank_test(base, cand, tau=0.05, alpha=0.05)
    as_floats = stats.binned_rank_test(np.asarray(base, float), np.asarray(cand, float), tau=0.05, alpha=0.05)
    assert float(as_ints.superiority) == pytest.approx(0.75), as_ints.superiority
    for field in ("p_value", "ci_low", "ci_high"):
        got, want = getattr(as_ints.sequential, field), getattr(as_floats.sequential, field)
        assert float(got) == pytest.approx(float(want), rel=1e-12), (
            f"{field}: {got} from ints, {want} from floats"
        )


def test_the_planning_sample_size_is_the_textbook_figure_exactly() -> None:
    # (z_0.975 + z_0.8)^2 (0.01 * 0.99 + 0.02 * 0.98) / 0.01^2 = 2315.4, rounded up.
    assert stats.required_samples_per_arm(0.01, 0.01, alpha=0.05, power=0.8) == 2316
