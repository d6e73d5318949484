"""Vectorised simulations of whole experiments: how often the tests fire with and without a real effect.

Each function draws every look of every simulated experiment in one numpy call, applies the same
statistics `analyze` uses to the cumulative counts, and returns the share of experiments in which the
test fired at any look. The tests and `benchmarks/experiments.py` call these with fixed seeds.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps  # type: ignore[import-untyped]  # scipy ships no stubs

from servectl.experiments import srm, stats


@dataclass(frozen=True, kw_only=True)
class Design:
    """A simulated experiment: traffic per look and the candidate's share of it at each look."""

    experiments: int = 1000
    """Simulated experiments."""
    requests_per_look: int = 1000
    """Requests between two looks (both arms)."""
    candidate_shares: Sequence[float] = (0.05,) * 5 + (0.25,) * 5 + (0.5,) * 10
    """The candidate's configured share at each look; its length is the number of looks."""
    alpha: float = 0.05
    """Significance level of the sequential tests."""
    tau: float = 0.01
    """Mixture standard deviation of the rate test (the effect size it is tuned for)."""

    @property
    def looks(self) -> int:
        """Looks per experiment."""
        return len(self.candidate_shares)


def _split(
    rng: np.random.Generator, design: Design, true_shares: Sequence[float]
) -> tuple[np.ndarray, np.ndarray]:
    shape = (design.experiments, design.looks)
    cand = rng.binomial(design.requests_per_look, np.broadcast_to(np.asarray(true_shares), shape))
    return design.requests_per_look - cand, cand


def _cumulative_rates(design: Design, base_rate: float, cand_rate: float, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    n_base, n_cand = _split(rng, design, design.candidate_shares)
    x_base, x_cand = rng.binomial(n_base, base_rate), rng.binomial(n_cand, cand_rate)
    return [np.cumsum(a, axis=1) for a in (x_base, n_base, x_cand, n_cand)]


def rate_test_rejections(design: Design, base_rate: float, cand_rate: float, seed: int) -> float:
    """Share of experiments whose always-valid p-value of the error-rate difference fell to alpha."""
    result = stats.proportion_difference(
        *_cumulative_rates(design, base_rate, cand_rate, seed), tau=design.tau, alpha=design.alpha
    )
    p = stats.running_min(result.p_value, axis=1)
    return float(np.mean(p[:, -1] <= design.alpha))


def naive_rejections(design: Design, base_rate: float, cand_rate: float, seed: int) -> float:
    """The same with a fixed-horizon two-proportion z-test at every look: what peeking costs."""
    xb, nb, xc, nc = _cumulative_rates(design, base_rate, cand_rate, seed)
    pooled = (xb + xc) / np.maximum(nb + nc, 1)
    se = np.sqrt(np.maximum(pooled * (1 - pooled) * (1 / np.maximum(nb, 1) + 1 / np.maximum(nc, 1)), 1e-300))
    z = (xc / np.maximum(nc, 1) - xb / np.maximum(nb, 1)) / se
    fired = np.abs(z) > sps.norm.isf(design.alpha / 2)
    return float(fired.any(axis=1).mean())


def srm_detections(design: Design, true_shares: Sequence[float], threshold: float, seed: int) -> float:
    """Share of experiments in which the sequential SRM test (`servectl.experiments.srm`) flagged a
    mismatch at any look: its p-value, 1 / BF, at or below `threshold`.

    Each look tests the counts since its step began against that step's configured share, as `analyze`
    does, times the Bayes factor the completed steps ended with; every request here is randomised.
    """
    rng = np.random.default_rng(seed)
    n_base, n_cand = _split(rng, design, true_shares)
    shares = np.asarray(design.candidate_shares, dtype=np.float64)
    step_start = np.r_[0, np.flatnonzero(np.diff(shares)) + 1]
    step_of_look = np.searchsorted(step_start, np.arange(design.looks), side="right") - 1
    flagged = np.zeros(design.experiments, dtype=bool)
    carried = np.zeros(design.experiments)
    for step, start in enumerate(step_start):
        looks = np.flatnonzero(step_of_look == step)
        counts = np.stack([np.cumsum(n_base[:, looks], axis=1), np.cumsum(n_cand[:, looks], axis=1)], axis=-1)
        weights = np.array([1.0 - shares[start], shares[start]])
        test = srm.sequential_srm(counts, weights, prior_log_bf=carried[:, None])
        flagged |= (test.p_value <= threshold).any(axis=1)
        carried = test.log_bayes_factor[:, -1]
    return float(flagged.mean())


def latency_test_rejections(
    design: Design, slowdown: float, tolerance: float, tau: float, seed: int
) -> float:
    """Share of experiments whose latency rank test found the candidate slower beyond `tolerance`.

    Latencies are log-normal around 5 ms, binned into the server's histogram buckets; the candidate's
    are multiplied by `1 + slowdown`.
    """
    rng = np.random.default_rng(seed)
    n_base, n_cand = _split(rng, design, design.candidate_shares)
    edges = np.array([0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0])

    def bucket_probs(scale: float) -> np.ndarray:
        cdf = sps.lognorm.cdf(edges, s=0.5, scale=0.005 * scale)
        return np.diff(np.r_[0.0, cdf, 1.0])

    a = rng.multinomial(n_base, bucket_probs(1.0))
    b = rng.multinomial(n_cand, bucket_probs(1.0 + slowdown))
    result = stats.binned_rank_test(np.cumsum(a, axis=1), np.cumsum(b, axis=1), tau=tau, alpha=design.alpha)
    fired = result.sequential.ci_low > tolerance
    return float(fired.any(axis=1).mean())


ValueArm = tuple[np.ndarray, np.ndarray, np.ndarray]
"""Cumulative count, sum and sum of squares of an arm's values, per experiment and look."""


def value_arms(design: Design, cand_sd: float, cand_shift: float, seed: int) -> tuple[ValueArm, ValueArm]:
    """Cumulative (count, sum, sum of squares) of reported values per arm and look: one value per request,
    the baseline's N(10, 1), the candidate's N(10 + cand_shift, cand_sd^2).

    Each look's sums are drawn from their exact distributions (the mean is normal, (n - 1) s^2 / sd^2 is
    chi-square with n - 1 degrees of freedom, independent of it), so a look of a million values costs
    what a look of ten does."""
    rng = np.random.default_rng(seed)
    n_base, n_cand = _split(rng, design, design.candidate_shares)

    def sums(n: np.ndarray, mean: float, sd: float) -> ValueArm:
        safe = np.maximum(n, 1)
        sample_mean = rng.normal(mean, sd / np.sqrt(safe))
        spread = sd * sd * rng.chisquare(np.maximum(n - 1, 1)) * (n > 1)
        total, squares = n * sample_mean, spread + n * sample_mean**2
        return np.cumsum(n.astype(np.float64), axis=1), np.cumsum(total, axis=1), np.cumsum(squares, axis=1)

    return sums(n_base, 10.0, 1.0), sums(n_cand, 10.0 + cand_shift, cand_sd)


def value_test_rollbacks(design: Design, cand_sd: float, cand_shift: float, tau: float, seed: int) -> float:
    """Share of experiments the value test would roll back at some look: its running-minimum p-value at or
    below alpha with the candidate's mean below the baseline's at that look, as `decide` judges."""
    base, cand = value_arms(design, cand_sd, cand_shift, seed)
    result = stats.mean_difference(base, cand, tau=tau, alpha=design.alpha)
    p = stats.running_min(result.p_value, axis=1)
    return float(((p <= design.alpha) & (result.estimate < 0)).any(axis=1).mean())
