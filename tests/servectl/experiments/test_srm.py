"""The sequential SRM test: against direct closed-form computations, its martingale property, and its
false-alarm rate and power in seeded simulations of whole rollouts."""

import itertools
import math
from fractions import Fraction

import numpy as np
import pytest
from scipy import integrate  # type: ignore[import-untyped]
from scipy import stats as sps

from servectl.experiments import simulation, srm
from servectl.experiments.simulation import Design


def _rising(a: Fraction, k: int) -> Fraction:
    out = Fraction(1)
    for j in range(k):
        out *= a + j
    return out


def _exact_bf(counts: tuple[int, ...], shares: tuple[Fraction, ...], concentration: int) -> Fraction:
    """B(alpha + x) / B(alpha) / prod theta^x with rising factorials: Gamma(a + k) / Gamma(a) = a (a + 1) ...
    (a + k - 1), exact in rationals for small counts."""
    alphas = [concentration * s for s in shares]
    marginal = math.prod((_rising(a, x) for a, x in zip(alphas, counts, strict=True)), start=Fraction(1))
    marginal /= _rising(Fraction(concentration), sum(counts))
    null = math.prod((s**x for s, x in zip(shares, counts, strict=True)), start=Fraction(1))
    return marginal / null


@pytest.mark.parametrize(
    ("counts", "shares", "concentration"),
    [
        ((3, 1), (Fraction(1, 2), Fraction(1, 2)), 2),
        ((0, 7), (Fraction(9, 10), Fraction(1, 10)), 10),
        ((5, 2, 0), (Fraction(1, 2), Fraction(1, 4), Fraction(1, 4)), 4),
        ((12, 3), (Fraction(3, 4), Fraction(1, 4)), 1000),
    ],
)
def test_the_bayes_factor_equals_the_closed_form(
    counts: tuple[int, ...], shares: tuple[Fraction, ...], concentration: int
) -> None:
    exact = float(_exact_bf(counts, shares, concentration))
    got = math.exp(float(srm.log_bayes_factor(counts, [float(s) for s in shares], concentration)))
    assert got == pytest.approx(exact, rel=1e-9), f"{counts} against {shares}: {got} != {exact}"


def test_the_bayes_factor_equals_the_beta_mixture_integral_for_two_arms() -> None:
    # Two arms: the Dirichlet is a Beta(A theta_1, A theta_2) on the first arm's share.
    x1, x2, theta, conc = 40, 7, 0.8, 50.0
    prior = sps.beta(conc * theta, conc * (1 - theta))
    mixture, _ = integrate.quad(lambda p: p**x1 * (1 - p) ** x2 * prior.pdf(p), 0, 1, epsabs=0, epsrel=1e-12)
    expected = mixture / (theta**x1 * (1 - theta) ** x2)
    got = math.exp(float(srm.log_bayes_factor([x1, x2], [theta, 1 - theta], conc)))
    assert got == pytest.approx(expected, rel=1e-7), f"{got} != {expected} by quadrature"


def test_the_bayes_factor_has_mean_one_under_the_null() -> None:
    """Every sequence of n units summed with its probability under the configured shares: E[BF_n] = 1,
    what makes 1 / BF an always-valid p-value (Ville). A test on a wrong formula (e.g. a multinomial
    coefficient left in) fails here."""
    shares, n = (0.6, 0.3, 0.1), 9
    total = 0.0
    for counts in itertools.product(range(n + 1), repeat=3):
        if sum(counts) != n:
            continue
        probability = sps.multinomial.pmf(counts, n, shares)
        total += probability * math.exp(float(srm.log_bayes_factor(counts, shares, 20.0)))
    assert total == pytest.approx(1.0, rel=1e-9), f"E[BF_{n}] = {total} under the null"


def test_arrays_broadcast_over_experiments_and_looks() -> None:
    counts = np.array([[[950, 50], [1900, 100]], [[960, 40], [1910, 90]]])
    test = srm.sequential_srm(counts, [95, 5])
    assert test.p_value.shape == (2, 2), test.p_value.shape
    one = srm.sequential_srm([1910, 90], [0.95, 0.05])
    assert float(test.p_value[1, 1]) == pytest.approx(float(one.p_value)), "one call judges one or many"
    assert test.observed_share[1, 1].tolist() == pytest.approx([1910 / 2000, 90 / 2000])


def test_the_completed_steps_bayes_factor_multiplies_the_current_one() -> None:
    alone = srm.sequential_srm([900, 100], [0.9, 0.1])
    carried = srm.sequential_srm([900, 100], [0.9, 0.1], prior_log_bf=3.0)
    assert float(carried.log_bayes_factor) == pytest.approx(float(alone.log_bayes_factor) + 3.0)
    assert float(srm.sequential_srm([0, 0], [0.5, 0.5]).p_value) == 1.0, "no units, no evidence"


@pytest.mark.parametrize(
    ("counts", "shares", "problem"),
    [([10, -1], [0.5, 0.5], "negative"), ([10, 10], [1.0, 0.0], "positive")],
)
def test_bad_input_is_refused(counts: list[int], shares: list[float], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        srm.log_bayes_factor(counts, shares)


DESIGN = Design(experiments=2000)
"""20 looks of 1,000 requests, the candidate at 5% (5 looks), 25% (5), 50% (10)."""
LONG = Design(experiments=2000, requests_per_look=5000)
"""The same rollout with 5,000 requests a look."""


@pytest.mark.parametrize(("design", "seed"), [(DESIGN, 61), (LONG, 62)])
@pytest.mark.parametrize("alpha", [0.05, 0.001])
def test_a_a_false_alarms_over_every_look_stay_within_alpha(design: Design, seed: int, alpha: float) -> None:
    rate = simulation.srm_detections(design, design.candidate_shares, threshold=alpha, seed=seed)
    # Binomial noise over 2,000 runs: allow three standard errors above alpha.
    bound = alpha + 3 * math.sqrt(alpha * (1 - alpha) / design.experiments)
    assert rate <= bound, f"A/A false alarms {rate:.4f} over {design.looks} looks at alpha {alpha}"


@pytest.mark.parametrize(
    ("design", "seed", "power"),
    [
        (DESIGN, 63, 0.95),  # measured 0.969 over the rollout (the 25% and 50% steps find most of it)
        (LONG, 64, 0.99),  # measured 1.000
    ],
)
def test_a_version_that_loses_a_tenth_of_its_requests_is_caught(
    design: Design, seed: int, power: float
) -> None:
    served = [s * 0.9 / (1 - s * 0.1) for s in design.candidate_shares]  # 5% -> 4.5% of what is served
    rate = simulation.srm_detections(design, served, threshold=0.001, seed=seed)
    assert rate >= power, f"a 10% shortfall caught in {rate:.3f} of runs at p <= 0.001"


@pytest.mark.parametrize(
    ("requests_per_look", "power"),
    [(2500, 0.25), (5000, 0.8), (10000, 0.99)],  # measured 0.342, 0.858, 0.999 (seed 65)
)
def test_five_percent_configured_four_and_a_half_served_within_one_step(
    requests_per_look: int, power: float
) -> None:
    """Ten looks at a 5% step: the sample a 0.5-point shortfall needs at p <= 0.001."""
    design = Design(experiments=2000, requests_per_look=requests_per_look, candidate_shares=(0.05,) * 10)
    rate = simulation.srm_detections(design, (0.045,) * 10, threshold=0.001, seed=65)
    assert rate >= power, (
        f"5% configured, 4.5% served, {10 * requests_per_look} requests: caught in {rate:.3f}"
    )
