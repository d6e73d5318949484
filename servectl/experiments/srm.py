"""Sample-ratio mismatch as an always-valid sequential test (issue 14 point 5).

Lindon and Malek, "Anytime-Valid Inference for Multinomial Count Data" (NeurIPS 2022), the test published
for SRM: under the null the randomised units fall on the arms with the configured shares `theta`; the
alternative puts a Dirichlet(alpha) prior on the shares. The Bayes factor of counts `x` (n in all) is the
Dirichlet-multinomial marginal likelihood over the null's likelihood (the multinomial coefficient cancels):

    BF_n = Gamma(A) / Gamma(A + n) * prod_i Gamma(alpha_i + x_i) / Gamma(alpha_i) / prod_i theta_i^x_i,

with A = sum_i alpha_i. Under the null BF_n is a nonnegative martingale with mean 1 (the posterior
predictive is a valid sequential bet on each unit), so by Ville's inequality P(sup_n BF_n >= 1/alpha) <=
alpha, and the p-value `min(1, 1 / BF_n)`, kept as a running minimum over looks, is valid however often one
looks. A rollout changes the shares at each step: each step's counts get a Bayes factor of their own (a
fresh prior around that step's shares) and the experiment's is the product of the completed steps' last
values with the current step's, still a martingale with mean 1 (`prior_log_bf`).

The prior is centred on the configured shares, alpha_i = CONCENTRATION * theta_i. The concentration sets
the size of mismatch the test is most sensitive to: the prior sd of a share is sqrt(theta (1 - theta) /
(A + 1)), so A = 1000 bets on a deviation of about 0.7 point at a 5% share, the size of a version that
loses a tenth of its requests, and detects it within a step of some tens of thousands of units. In a
one-off simulation of 20 looks of 1,000 units at a 5% share, a 4.5% share was caught at alpha 0.05 in 67% of
2,000 runs with A = 1000, against 57% with A = 100 and 56% with A = 10,000 (seed 1); a larger A waits for more
units, a smaller one pays for bets on mismatches nobody would miss. `tests/servectl/experiments/test_srm.py`
measures false alarms and power at the threshold the decision uses.

Arrays broadcast (last axis: arms), so one call judges one experiment or ten thousand simulated ones.
"""

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy.special import gammaln  # type: ignore[import-untyped]  # scipy ships no stubs

FloatArray = npt.NDArray[np.float64]
CONCENTRATION = 1000.0
"""A, the Dirichlet prior's total concentration (see the module docstring for why 1000)."""
_MAX_LOG = 700.0


@dataclass(frozen=True)
class SrmTest:
    """One look of the sequential SRM test (arrays broadcast over experiments and looks)."""

    log_bayes_factor: FloatArray
    """Log Bayes factor of the whole experiment (completed steps and this one) against the shares."""
    p_value: FloatArray
    """min(1, 1 / BF) at this look; keep the running minimum over looks."""
    observed_share: FloatArray
    """Observed share of each arm (last axis)."""


def _shares(shares: npt.ArrayLike) -> FloatArray:
    theta = np.asarray(shares, dtype=np.float64)
    if np.any(theta <= 0):
        raise ValueError(f"SRM shares must be positive, got {theta.tolist()}")
    return np.asarray(theta / theta.sum(axis=-1, keepdims=True), dtype=np.float64)


def log_bayes_factor(
    counts: npt.ArrayLike, shares: npt.ArrayLike, concentration: float = CONCENTRATION
) -> FloatArray:
    """Log of the Dirichlet-multinomial Bayes factor of `counts` (last axis: arms) against `shares`
    (any positive scale, normalised here), with prior alpha = concentration * shares (Lindon and Malek,
    2022, the Bayes factor of their multinomial test; 0 when there are no counts)."""
    x = np.asarray(counts, dtype=np.float64)
    if np.any(x < 0):
        raise ValueError(f"SRM counts must not be negative, got {x.tolist()}")
    theta = _shares(shares)
    alpha = concentration * theta
    n = x.sum(axis=-1)
    marginal = gammaln(concentration) - gammaln(concentration + n)
    marginal = marginal + (gammaln(alpha + x) - gammaln(alpha)).sum(axis=-1)
    null = (x * np.log(theta)).sum(axis=-1)
    return np.asarray(marginal - null, dtype=np.float64)


def sequential_srm(
    counts: npt.ArrayLike,
    shares: npt.ArrayLike,
    *,
    prior_log_bf: npt.ArrayLike = 0.0,
    concentration: float = CONCENTRATION,
) -> SrmTest:
    """The test at one look: the current step's `counts` against its `shares`, times the Bayes factor
    the experiment's completed steps ended with (`prior_log_bf`, a log)."""
    x = np.asarray(counts, dtype=np.float64)
    total = log_bayes_factor(x, shares, concentration) + np.asarray(prior_log_bf, dtype=np.float64)
    p_value = np.minimum(1.0, np.exp(-np.clip(total, -_MAX_LOG, _MAX_LOG)))
    share = x / np.maximum(x.sum(axis=-1, keepdims=True), 1.0)
    return SrmTest(log_bayes_factor=total, p_value=p_value, observed_share=share)
