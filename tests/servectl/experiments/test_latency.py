import math

import numpy as np
import pytest

from servectl.experiments import latency
from servectl.experiments.promql import VersionCounts

BOUNDS = [0.005, 0.01, 0.025, math.inf]


@pytest.mark.parametrize(
    ("q", "bucket"),
    [(0.5, (0.0, 0.005)), (0.6, (0.0, 0.005)), (0.61, (0.005, 0.01)), (0.99, (0.025, math.inf))],
)
def test_a_quantile_is_known_to_its_bucket(q: float, bucket: tuple[float, float]) -> None:
    # 60 under 5 ms, 30 more under 10 ms, 5 under 25 ms, 5 above: the 60th percentile is the first bucket's.
    assert latency.quantile_bucket(np.array([60.0, 30.0, 5.0, 5.0]), BOUNDS, q) == bucket


def test_no_samples_no_quantile() -> None:
    assert latency.quantile_bucket(np.zeros(4), BOUNDS, 0.5) is None


def test_a_bound_missing_from_one_histogram_carries_the_count_below_it() -> None:
    older = VersionCounts(latency_buckets={0.005: 10.0, math.inf: 12.0})
    newer = VersionCounts(latency_buckets={0.005: 5.0, 0.01: 8.0, math.inf: 9.0})
    bounds = latency.common_bounds([older, newer])
    assert bounds == [0.005, 0.01, math.inf]
    assert latency.per_bucket([older, newer], bounds).tolist() == [[10.0, 0.0, 2.0], [5.0, 3.0, 1.0]]


def test_a_difference_of_quantiles_spans_what_the_buckets_allow() -> None:
    base, cand = np.array([90.0, 10.0, 0.0, 0.0]), np.array([10.0, 90.0, 0.0, 0.0])
    p50 = latency.quantile_differences(base, cand, BOUNDS)["p50"]
    assert p50 == {"baseline": [0.0, 0.005], "candidate": [0.005, 0.01], "difference": [0.0, 0.01]}
