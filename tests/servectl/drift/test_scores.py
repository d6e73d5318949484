"""The drift scores against hand-computed cases and scipy on random distributions (fixed seeds)."""

import math

import numpy as np
import pytest
from scipy.spatial.distance import jensenshannon  # type: ignore[import-untyped]  # no stubs
from scipy.stats import entropy  # type: ignore[import-untyped]

from servectl.drift import scores


@pytest.mark.parametrize(
    ("expected", "live", "want"),
    [
        ([0.5, 0.5], [0.5, 0.5], 0.0),
        # -0.25 ln(0.5) + 0.25 ln(1.5) = 0.25 ln 3
        ([0.5, 0.5], [0.25, 0.75], 0.25 * math.log(3)),
        # an empty live bin counts as 1e-4 inside the log: -0.5 ln(1e-4 / 0.5) + 0.5 ln(1 / 0.5)
        ([0.5, 0.5], [0.0, 1.0], 0.5 * math.log(0.5 / 1e-4) + 0.5 * math.log(2)),
        # a "nan" bin the profile never saw: expected 0 is floored the same way
        ([0.5, 0.5, 0.0], [0.5, 0.4, 0.1], -0.1 * math.log(0.8) + 0.1 * math.log(0.1 / 1e-4)),
        # ten deciles, all the mass moved from bin 0 to bin 9
        ([0.1] * 10, [0.0] + [0.1] * 8 + [0.2], 0.1 * math.log(0.1 / 1e-4) + 0.1 * math.log(2)),
    ],
)
def test_psi_by_hand(expected: list[float], live: list[float], want: float) -> None:
    got = float(scores.psi(expected, live))
    assert got == pytest.approx(want, rel=1e-12), (expected, live, got, want)


@pytest.mark.parametrize(
    ("expected", "live", "want"),
    [
        ([0.5, 0.5], [0.5, 0.5], 0.0),
        # disjoint supports: JS divergence 1 bit, distance 1
        ([1.0, 0.0], [0.0, 1.0], 1.0),
        # M = (0.75, 0.25): JS = H(M) - (H(P) + H(Q)) / 2 = H(0.75, 0.25) - 1/2
        ([1.0, 0.0], [0.5, 0.5], math.sqrt(-(0.75 * math.log2(0.75) + 0.25 * math.log2(0.25)) - 0.5)),
    ],
)
def test_js_distance_by_hand(expected: list[float], live: list[float], want: float) -> None:
    got = float(scores.js_distance(expected, live))
    assert got == pytest.approx(want, abs=1e-12), (expected, live, got, want)


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_js_distance_matches_scipy_on_random_distributions(seed: int) -> None:
    rng = np.random.default_rng(seed)
    p = rng.dirichlet(np.ones(10), size=200)
    q = rng.dirichlet(np.full(10, 0.3), size=200)
    q[:50, 3] = 0.0  # zero shares on one side
    q[:50] /= q[:50].sum(axis=1, keepdims=True)
    got = scores.js_distance(p, q)
    want = np.array([jensenshannon(a, b, base=2) for a, b in zip(p, q, strict=True)])
    assert got.shape == (200,), got.shape
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12, err_msg=f"seed {seed}")


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_psi_is_the_symmetrised_kl_divergence_above_the_floor(seed: int) -> None:
    rng = np.random.default_rng(seed)
    e = rng.dirichlet(np.ones(10), size=100) * 0.99 + 0.001  # every share well above the 1e-4 floor
    x = rng.dirichlet(np.ones(10), size=100) * 0.99 + 0.001
    want = np.array([entropy(a, b) + entropy(b, a) for a, b in zip(x, e, strict=True)])
    np.testing.assert_allclose(scores.psi(e, x), want, rtol=1e-9, err_msg=f"seed {seed}")


def test_scores_broadcast_over_leading_axes() -> None:
    expected = np.full(10, 0.1)
    live = scores.shares(np.random.default_rng(7).integers(0, 100, size=(4, 3, 10)))
    assert scores.psi(expected, live).shape == (4, 3)
    assert scores.js_distance(expected, live).shape == (4, 3)


def test_shares_of_no_counts_are_zero_not_nan() -> None:
    got = scores.shares([[0, 0, 0], [1, 1, 2]])
    np.testing.assert_array_equal(got, [[0.0, 0.0, 0.0], [0.25, 0.25, 0.5]])


def test_psi_is_never_negative_and_zero_only_when_equal() -> None:
    rng = np.random.default_rng(21)
    e = rng.dirichlet(np.ones(5), size=500)
    x = rng.dirichlet(np.ones(5), size=500)
    got = scores.psi(e, x)
    assert (got > 0).all(), got.min()
    assert float(scores.psi(e[0], e[0])) == 0.0
