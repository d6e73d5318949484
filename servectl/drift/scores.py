"""Drift scores of a live distribution of inputs over bins against the training profile's expected one.

Pure functions over numpy arrays: the last axis is the bins, and any leading axes broadcast, so one call
scores one feature or every window of a simulated day (benchmarks/drift_detector.py relies on that). The
same definitions are the recording rules' (stacks/monitoring/rules/serving-rules.yaml), so the report and the
alerts agree.
"""

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
PSI_FLOOR = 1e-4
"""Shares below this count as this inside the logarithm of the PSI, so an empty bin scores finitely."""


def shares(counts: npt.ArrayLike) -> FloatArray:
    """Counts per bin as shares of their total along the last axis (all zero where the total is zero)."""
    c = np.asarray(counts, dtype=np.float64)
    total = c.sum(axis=-1, keepdims=True)
    out: FloatArray = np.divide(c, total, out=np.zeros_like(c), where=total > 0)
    return out


def psi(expected: npt.ArrayLike, live: npt.ArrayLike, floor: float = PSI_FLOOR) -> FloatArray:
    """Population stability index: the sum over bins of
    (live - expected) * ln(max(live, floor) / max(expected, floor)).

    The PSI of credit scoring (Siddiqi, "Credit Risk Scorecards", 2006, ch. 8; Yurdakul, "Statistical
    Properties of Population Stability Index", 2018, eq. 1): the symmetrised Kullback-Leibler divergence
    KL(live || expected) + KL(expected || live) of the binned distributions, with the floor keeping an empty
    bin finite (a bin the profile never saw, such as "nan", has expected share 0). Every term is >= 0. Rules
    of thumb: below 0.1 stable, 0.1 to 0.25 a moderate shift, above 0.25 a major one.
    """
    e = np.asarray(expected, dtype=np.float64)
    x = np.asarray(live, dtype=np.float64)
    terms = (x - e) * np.log(np.maximum(x, floor) / np.maximum(e, floor))
    out: FloatArray = terms.sum(axis=-1)
    return out


def js_distance(expected: npt.ArrayLike, live: npt.ArrayLike) -> FloatArray:
    """Jensen-Shannon distance in base 2: the square root of the JS divergence, in [0, 1].

    Lin, "Divergence measures based on the Shannon entropy" (IEEE Trans. Inf. Theory 37(1), 1991, eq. 4.1)
    with equal weights: JS(P, Q) = H(M) - (H(P) + H(Q)) / 2 with M = (P + Q) / 2, equivalently
    (KL(P || M) + KL(Q || M)) / 2; its square root is a metric (Endres and Schindelin, 2003). Zero shares need
    no floor (0 log 0 = 0). Both inputs are normalised to sum to 1 first, as scipy's `jensenshannon` does.
    """
    p, q = np.broadcast_arrays(shares(expected), shares(live))
    m = (p + q) / 2.0
    divergence = (_kl_to(p, m) + _kl_to(q, m)) / 2.0
    out: FloatArray = np.sqrt(np.maximum(divergence, 0.0))
    return out


def _kl_to(p: FloatArray, m: FloatArray) -> FloatArray:
    """KL(p || m) in bits, where m > 0 wherever p > 0 (m is a mixture containing p)."""
    ratio = np.divide(p, m, out=np.ones_like(p), where=p > 0)
    out: FloatArray = (p * np.log2(ratio)).sum(axis=-1)
    return out
