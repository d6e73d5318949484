"""The error-rate test on the rate ratio: the exact conditional binomial, mixed over the ratio, per direction.

Within one allocation epoch (a rollout step: one split of the traffic) with n_b and n_c requests, if the
candidate's error rate is theta times the baseline's, then whichever the baseline's rate is, each error
is the candidate's with probability pi(theta) = r theta / (1 + r theta), r = n_c / n_b. Conditioning on
the errors' total removes the baseline's rate (a nuisance that may drift over time) and each epoch keeps
its own r, so the test is stratified by epoch by construction.

Two one-sided always-valid tests, each a likelihood ratio mixed over the log ratio with a half-normal of
scale `tau` on the alternative's side only (a mixture martingale; Ville's inequality bounds by alpha the
chance it ever reaches 1/alpha under the null, however often one looks):
- regression: null theta <= 1, alternatives theta > 1; a rollback test.
- non-inferiority: null theta >= margin, alternatives theta < margin; promotion needs it.
Both nulls are composite; the binomial family has a monotone likelihood ratio in theta, so the boundary
(theta = 1, theta = margin) is the worst case and the bound holds for the whole null.
"""

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import stats as sps  # type: ignore[import-untyped]  # scipy ships no stubs
from scipy.special import logsumexp  # type: ignore[import-untyped]

FloatArray = npt.NDArray[np.float64]
_GRID = 64
"""Points of the half-normal mixture (midpoint rule out to 4 scales; the mass beyond is 6e-5)."""
_BOUND_MARGINS = np.exp(np.linspace(0.0, np.log(50.0), 81))
"""Margins tried for the reported upper bound of the ratio: 1 to 50, about 5% apart."""


@dataclass(frozen=True)
class RatioTest:
    """The rate ratio (candidate over baseline) with its two one-sided always-valid p-values."""

    estimate: FloatArray
    """Mantel-Haenszel rate ratio over the epochs (nan before any error)."""
    regression_p: FloatArray
    """Always-valid p-value of "the candidate's rate is at most the baseline's" (take the running minimum)."""
    noninferiority_p: FloatArray
    """Always-valid p-value of "the candidate's rate is at least `margin` times the baseline's"."""


def _epochs(x_b: npt.ArrayLike, n_b: npt.ArrayLike, x_c: npt.ArrayLike, n_c: npt.ArrayLike) -> tuple[
    FloatArray, FloatArray, FloatArray
]:  # fmt: skip
    """Errors and log r per epoch; an epoch where one arm had no requests carries no information."""
    xb, nb, xc, nc = (np.asarray(a, dtype=np.float64) for a in (x_b, n_b, x_c, n_c))
    both = (nb > 0) & (nc > 0)
    log_r = np.where(both, np.log(np.where(both, nc, 1.0) / np.where(both, nb, 1.0)), 0.0)
    return np.where(both, xb, 0.0), np.where(both, xc, 0.0), log_r


def _log_likelihood(xb: FloatArray, xc: FloatArray, log_r: FloatArray, log_theta: FloatArray) -> FloatArray:
    """Conditional binomial log-likelihood summed over epochs (last axis of the counts), per log_theta
    (last axis; the result's last axis too; leading axes broadcast)."""
    z = log_r[..., :, None] + log_theta[..., None, :]  # log(r theta), epochs by thetas
    log_1m_pi = -np.logaddexp(0.0, z)  # log(1 / (1 + r theta))
    log_pi = z + log_1m_pi
    ll: FloatArray = (xc[..., None] * log_pi + xb[..., None] * log_1m_pi).sum(axis=-2)
    return ll


def _half_normal(tau: float) -> tuple[FloatArray, FloatArray]:
    """Offsets from the null (positive) and the log of their mixture weights (summing to 1)."""
    offsets = np.asarray((np.arange(_GRID) + 0.5) * (4.0 * tau / _GRID), dtype=np.float64)
    log_weights = -0.5 * (offsets / tau) ** 2
    return offsets, np.asarray(log_weights - logsumexp(log_weights), dtype=np.float64)


def _log_mixture(
    xb: FloatArray, xc: FloatArray, log_r: FloatArray, null: FloatArray, direction: float, tau: float
) -> FloatArray:
    """log of the mixture likelihood ratio against `null` (log ratios, broadcast over leading axes), with
    the alternatives on the side `direction` (+1 above, -1 below)."""
    offsets, log_weights = _half_normal(tau)
    null = np.asarray(null, dtype=np.float64)
    points = np.concatenate([null[..., None], null[..., None] + direction * offsets], axis=-1)
    ll = _log_likelihood(xb, xc, log_r, points)
    return np.asarray(logsumexp(ll[..., 1:] - ll[..., :1] + log_weights, axis=-1), dtype=np.float64)


def _p(log_lr: FloatArray) -> FloatArray:
    return np.minimum(1.0, np.exp(-np.clip(log_lr, -700.0, 700.0)))


def rate_ratio_test(
    x_b: npt.ArrayLike,
    n_b: npt.ArrayLike,
    x_c: npt.ArrayLike,
    n_c: npt.ArrayLike,
    *,
    margin: float,
    tau: float,
) -> RatioTest:
    """Both one-sided tests of the error-rate ratio, from per-epoch counts (last axis: epochs).

    `margin` (> 1) is the non-inferiority bound: "errors at most margin x the baseline's". `tau` is the
    mixture's scale on the log ratio (0.7: most sensitive to about a doubling).
    """
    xb, xc, log_r = _epochs(x_b, n_b, x_c, n_c)
    shape = xb.shape[:-1]
    regression = _log_mixture(xb, xc, log_r, np.zeros(shape), +1.0, tau)
    noninferior = _log_mixture(xb, xc, log_r, np.full(shape, np.log(margin)), -1.0, tau)
    nb, nc = (np.asarray(a, dtype=np.float64) for a in (n_b, n_c))
    total = np.maximum(nb + nc, 1.0)
    top, bottom = (xc * nb / total).sum(axis=-1), (xb * nc / total).sum(axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        estimate = np.where(top + bottom > 0, top / bottom, np.nan)
    return RatioTest(estimate=estimate, regression_p=_p(regression), noninferiority_p=_p(noninferior))


def upper_bound(
    x_b: npt.ArrayLike,
    n_b: npt.ArrayLike,
    x_c: npt.ArrayLike,
    n_c: npt.ArrayLike,
    *,
    tau: float,
    alpha: float,
) -> float | None:
    """The smallest margin (1 to 50) the non-inferiority test shows at `alpha` for one experiment's
    epochs: what the data rule out now. None when no margin up to 50 is shown yet."""
    xb, xc, log_r = _epochs(x_b, n_b, x_c, n_c)
    log_lr = _log_mixture(xb, xc, log_r, np.log(_BOUND_MARGINS), -1.0, tau)
    shown = np.flatnonzero(_p(log_lr) <= alpha)
    return float(_BOUND_MARGINS[shown[0]]) if shown.size else None


def required_candidate_requests(
    base_rate: float, share: float, *, margin: float, tau: float, alpha: float, power: float = 0.8
) -> int | None:
    """Candidate requests the non-inferiority test needs to pass with probability about `power` when the
    candidate is as good as the baseline, at one split (`share` of traffic to the candidate): a planning
    figure printed with a hold. None when the baseline has shown no error rate to plan with.

    At n candidate requests the expected errors are base_rate * n and base_rate * n (1 - share) / share;
    the candidate's are raised by z_power standard errors of the log ratio (power against noise)."""
    if base_rate <= 0.0 or not 0.0 < share < 1.0:
        return None
    z = float(sps.norm.ppf(power))
    n_c = np.exp(np.linspace(np.log(10.0), np.log(1e10), 400))
    n_b = n_c * (1.0 - share) / share
    se = np.sqrt(1.0 / (base_rate * n_c) + 1.0 / (base_rate * n_b))
    x_c, x_b = base_rate * n_c * np.exp(z * se), base_rate * n_b
    test = rate_ratio_test(x_b[:, None], n_b[:, None], x_c[:, None], n_c[:, None], margin=margin, tau=tau)
    enough = np.flatnonzero(test.noninferiority_p <= alpha)
    return int(np.ceil(n_c[enough[0]])) if enough.size else None
