"""The statistics of an experiment: sample-ratio mismatch, always-valid tests and a rank test on histograms.

Every function takes numpy arrays and broadcasts, so one call judges one experiment or ten thousand
simulated ones (the simulations in `servectl.experiments.simulation` rely on that).

Sequential tests use the mixture sequential probability ratio test (mSPRT) of Johari, Pekelis and Walsh,
"Always Valid Inference" (2017): with a normal mixing distribution of standard deviation `tau` over the
effect, the likelihood ratio of an asymptotically normal estimate `d` with variance `V` is

    L = sqrt(V / (V + tau^2)) * exp(tau^2 d^2 / (2 V (V + tau^2)))

Under the null L is a (super)martingale, so by Ville's inequality P(sup_n L_n >= 1/alpha) <= alpha: the
p-value `min(1, 1/L)`, kept as a running minimum over looks, stays valid however often one looks. Inverting
the same boundary gives an always-valid confidence interval.
"""

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import stats as sps  # type: ignore[import-untyped]  # scipy ships no stubs

FloatArray = npt.NDArray[np.float64]
ArrayLike = npt.ArrayLike
_TINY = 1e-300
_NO_INFORMATION = 1e12
"""The variance of an estimate with no data behind it: its p-value is 1 and its interval unbounded."""


@dataclass(frozen=True)
class SequentialEstimate:
    """An effect estimate with its always-valid p-value and confidence interval (arrays broadcast)."""

    estimate: FloatArray
    """The effect: candidate minus baseline."""
    p_value: FloatArray
    """Always-valid p-value of "no effect" at this look (take the running minimum over looks)."""
    ci_low: FloatArray
    """Lower bound of the always-valid confidence interval at level 1 - alpha."""
    ci_high: FloatArray
    """Upper bound."""


def _f(values: ArrayLike) -> FloatArray:
    return np.asarray(values, dtype=np.float64)


def msprt(estimate: ArrayLike, variance: ArrayLike, tau: float, alpha: float) -> SequentialEstimate:
    """Always-valid p-value and interval for an asymptotically normal estimate with the given variance."""
    d, v = _f(estimate), np.maximum(_f(variance), _TINY)
    t2 = tau * tau
    log_lr = 0.5 * np.log(v / (v + t2)) + t2 * d * d / (2.0 * v * (v + t2))
    p_value = np.minimum(1.0, np.exp(-np.minimum(log_lr, 700.0)))
    # L(theta0) >= 1/alpha  <=>
    #   (d - theta0)^2 >= 2 V (V + tau^2) / tau^2 * (log(1/alpha) + log((V + tau^2) / V) / 2)
    half = np.sqrt(2.0 * v * (v + t2) / t2 * (np.log(1.0 / alpha) + 0.5 * np.log((v + t2) / v)))
    return SequentialEstimate(estimate=d, p_value=p_value, ci_low=d - half, ci_high=d + half)


def stratified(estimate: ArrayLike, variance: ArrayLike, present: ArrayLike) -> tuple[FloatArray, FloatArray]:
    """One estimate from per-stratum ones (last axis: the allocation epochs, i.e. rollout steps).

    Inverse-variance weights over the strata where both arms had data (`present`): a rate that drifts
    over time while the split changes then shifts both arms of each stratum alike, instead of looking
    like a difference between versions (Simpson's paradox, as pooling would give).
    """
    d, v, keep = _f(estimate), np.maximum(_f(variance), _TINY), np.asarray(present, dtype=bool)
    weight = np.where(keep, 1.0 / v, 0.0)
    total = weight.sum(axis=-1)
    safe = np.maximum(total, _TINY)
    combined = np.where(total > 0, (weight * d).sum(axis=-1) / safe, 0.0)
    return combined, np.where(total > 0, 1.0 / safe, _NO_INFORMATION)


def proportion_parts(
    x_base: ArrayLike, n_base: ArrayLike, x_cand: ArrayLike, n_cand: ArrayLike
) -> tuple[FloatArray, FloatArray]:
    """Candidate minus baseline rate and its variance, per stratum.

    The variance adds one event and one non-event to each arm (Agresti and Caffo), so an arm with no
    events yet still has an honest, non-zero uncertainty.
    """
    xb, nb, xc, nc = _f(x_base), _f(n_base), _f(x_cand), _f(n_cand)
    safe_nb, safe_nc = np.maximum(nb, 1.0), np.maximum(nc, 1.0)
    pb, pc = (xb + 1.0) / (nb + 2.0), (xc + 1.0) / (nc + 2.0)
    variance = pb * (1.0 - pb) / safe_nb + pc * (1.0 - pc) / safe_nc
    return xc / safe_nc - xb / safe_nb, variance


def proportion_difference(
    x_base: ArrayLike, n_base: ArrayLike, x_cand: ArrayLike, n_cand: ArrayLike, *, tau: float, alpha: float
) -> SequentialEstimate:
    """Candidate minus baseline rate of an event (errors, conversions), as an always-valid estimate."""
    return msprt(*proportion_parts(x_base, n_base, x_cand, n_cand), tau, alpha)


def stratified_proportion_difference(
    x_base: ArrayLike, n_base: ArrayLike, x_cand: ArrayLike, n_cand: ArrayLike, *, tau: float, alpha: float
) -> SequentialEstimate:
    """`proportion_difference` stratified by the last axis (epochs); one epoch gives the plain test."""
    d, v = proportion_parts(x_base, n_base, x_cand, n_cand)
    present = (_f(n_base) > 0) & (_f(n_cand) > 0)
    return msprt(*stratified(d, v, present), tau, alpha)


def mean_difference(
    base: tuple[ArrayLike, ArrayLike, ArrayLike],
    cand: tuple[ArrayLike, ArrayLike, ArrayLike],
    *,
    tau: float,
    alpha: float,
) -> SequentialEstimate:
    """Candidate minus baseline mean of a reported value, in pooled standard deviations, always valid."""
    return msprt(*mean_parts(base, cand), tau, alpha)


def stratified_mean_difference(
    base: tuple[ArrayLike, ArrayLike, ArrayLike],
    cand: tuple[ArrayLike, ArrayLike, ArrayLike],
    *,
    tau: float,
    alpha: float,
) -> SequentialEstimate:
    """`mean_difference` stratified by the last axis (epochs), each epoch in its own standard deviations."""
    d, v = mean_parts(base, cand)
    present = (_f(base[0]) > 1) & (_f(cand[0]) > 1)
    return msprt(*stratified(d, v, present), tau, alpha)


def mean_parts(
    base: tuple[ArrayLike, ArrayLike, ArrayLike], cand: tuple[ArrayLike, ArrayLike, ArrayLike]
) -> tuple[FloatArray, FloatArray]:
    """Candidate minus baseline mean of a reported value in pooled standard deviations, and its variance.

    Each arm is (count, sum, sum of squares), which is what the server's counters keep. Working in
    standard deviations makes `tau` scale-free: 0.1 means "most sensitive to a tenth of an sd". The
    pooled sd is only the unit; the estimate's variance is Welch's, each arm's own variance over its own
    count. With a pooled variance a candidate whose values merely vary more, on a small share of the
    traffic, looks different when it is not (tests/servectl/experiments/test_simulation.py measures it).
    """
    nb, sb, qb = (_f(x) for x in base)
    nc, sc, qc = (_f(x) for x in cand)
    safe_nb, safe_nc = np.maximum(nb, 1.0), np.maximum(nc, 1.0)
    mean_b, mean_c = sb / safe_nb, sc / safe_nc
    squares_b, squares_c = (
        np.maximum(qb - safe_nb * mean_b**2, 0.0),
        np.maximum(qc - safe_nc * mean_c**2, 0.0),
    )
    unit = (squares_b + squares_c) / np.maximum(nb + nc - 2.0, 1.0)
    var_b, var_c = squares_b / np.maximum(nb - 1.0, 1.0), squares_c / np.maximum(nc - 1.0, 1.0)
    unit = np.maximum(unit, _TINY)
    welch = (var_b / safe_nb + var_c / safe_nc) / unit
    return (mean_c - mean_b) / np.sqrt(unit), welch


def running_min(p_values: ArrayLike, axis: int = -1) -> FloatArray:
    """Always-valid p-values over looks along `axis`: each look keeps the smallest value seen so far."""
    return np.minimum.accumulate(_f(p_values), axis=axis)


@dataclass(frozen=True)
class RatioMismatch:
    """The chi-square goodness-of-fit test of an observed split against the configured weights."""

    statistic: FloatArray
    """Pearson's chi-square."""
    p_value: FloatArray
    """Its p-value with k - 1 degrees of freedom."""
    observed_share: FloatArray
    """Observed share of each arm (last axis)."""


def sample_ratio_mismatch(counts: ArrayLike, weights: ArrayLike) -> RatioMismatch:
    """Chi-square test of counts (last axis: arms) against expected weights (any positive scale)."""
    observed, w = _f(counts), _f(weights)
    total = observed.sum(axis=-1, keepdims=True)
    expected = total * w / w.sum(axis=-1, keepdims=True)
    statistic = np.where(expected > 0, (observed - expected) ** 2 / np.maximum(expected, _TINY), 0.0)
    chi2 = statistic.sum(axis=-1)
    p_value = sps.chi2.sf(chi2, df=observed.shape[-1] - 1)
    share = observed / np.maximum(total, 1.0)
    return RatioMismatch(statistic=chi2, p_value=np.asarray(p_value, dtype=np.float64), observed_share=share)


@dataclass(frozen=True)
class RankComparison:
    """Mann-Whitney comparison of two binned distributions (e.g. latency histograms)."""

    superiority: FloatArray
    """P(candidate > baseline) + P(tie) / 2, the common-language effect size (0.5: no difference)."""
    sequential: SequentialEstimate
    """Always-valid estimate of `superiority - 0.5`."""


def binned_rank_test(
    base_counts: ArrayLike, cand_counts: ArrayLike, *, tau: float, alpha: float
) -> RankComparison:
    """Mann-Whitney U on per-bucket counts (last axis: buckets in increasing order, not cumulative)."""
    superiority, variance = rank_parts(base_counts, cand_counts)
    return RankComparison(superiority=superiority, sequential=msprt(superiority - 0.5, variance, tau, alpha))


def stratified_rank_test(
    base_counts: ArrayLike, cand_counts: ArrayLike, *, tau: float, alpha: float
) -> RankComparison:
    """`binned_rank_test` stratified by the second-last axis (epochs; the last is the buckets)."""
    superiority, variance = rank_parts(base_counts, cand_counts)
    present = (_f(base_counts).sum(axis=-1) > 0) & (_f(cand_counts).sum(axis=-1) > 0)
    effect, combined = stratified(superiority - 0.5, variance, present)
    return RankComparison(superiority=effect + 0.5, sequential=msprt(effect, combined, tau, alpha))


def rank_parts(base_counts: ArrayLike, cand_counts: ArrayLike) -> tuple[FloatArray, FloatArray]:
    """P(candidate slower) + ties / 2 and the variance of that estimate, from per-bucket counts.

    Observations in one bucket are ties; the variance carries the tie correction, which is what makes a
    rank test on histogram buckets honest (Kayenta's judge ranks raw samples; Prometheus only keeps buckets).
    """
    a, b = _f(base_counts), _f(cand_counts)
    na, nb = a.sum(axis=-1), b.sum(axis=-1)
    below = np.cumsum(a, axis=-1) - a
    u = (b * (below + 0.5 * a)).sum(axis=-1)
    pairs = np.maximum(na * nb, 1.0)
    n = na + nb
    ties = a + b
    tie_term = (ties**3 - ties).sum(axis=-1) / np.maximum(n * (n - 1.0), 1.0)
    var_u = na * nb / 12.0 * ((n + 1.0) - tie_term)
    superiority = np.where(na * nb > 0, u / pairs, 0.5)
    return superiority, np.maximum(var_u, 0.0) / pairs**2


def required_samples_per_arm(effect: float, base_rate: float, *, alpha: float, power: float) -> int:
    """Fixed-horizon sample size per arm for a difference in proportions (a planning figure, two-sided)."""
    p2 = base_rate + effect
    z_a, z_b = sps.norm.isf(alpha / 2), sps.norm.isf(1 - power)
    var = base_rate * (1 - base_rate) + p2 * (1 - p2)
    return int(np.ceil((z_a + z_b) ** 2 * var / effect**2))
