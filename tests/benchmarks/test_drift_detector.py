"""The drift detector benchmark's pieces: the server's binning, the 1h window and the alerts' `for`."""

import bisect

import numpy as np

from benchmarks import drift_detector as dd


def test_binning_is_bisect_right_like_the_server() -> None:
    edges = np.array([-1.0, 0.0, 1.0])
    values = np.array([-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0])
    want = [bisect.bisect_right(list(edges), float(x)) for x in values]
    assert dd.binned(edges, values).tolist() == want == [0, 1, 1, 2, 2, 3, 3]


def test_the_profile_has_ten_bins_summing_to_one() -> None:
    edges, expected = dd.profile(np.random.default_rng(1), 3)
    assert edges.shape == (3, 9) and expected.shape == (3, 10), (edges.shape, expected.shape)
    np.testing.assert_allclose(expected.sum(axis=1), 1.0)
    np.testing.assert_allclose(expected, 0.1, atol=1e-3)


def test_the_window_is_the_last_twelve_intervals() -> None:
    counts = np.zeros((13, 1, dd.BINS), dtype=np.int64)
    counts[0, 0, 0] = 100  # only in the first hour's window
    counts[1:, 0, 1] = 10
    psi, rows = dd.hourly_psi(counts, np.full(dd.BINS, 0.1))
    assert rows.tolist() == [210.0, 120.0], rows
    assert psi.shape == (2, 1) and psi[0, 0] < psi[1, 0], psi


def test_an_alert_fires_at_the_fourth_consecutive_evaluation_with_enough_rows() -> None:
    psi = np.array([[0.3], [0.3], [0.0], [0.3], [0.3], [0.3], [0.3], [0.3]])
    rows = np.full(8, 1000.0)
    assert dd.firing(psi, rows, 0.25)[:, 0].tolist() == [False] * 6 + [True, True]
    assert not dd.firing(psi, np.full(8, 499.0), 0.25).any()
    assert not dd.firing(psi, rows, 0.3).any()  # strictly above the threshold


def test_a_one_sd_shift_is_caught_and_unshifted_traffic_is_quiet() -> None:
    traffic = dd.Traffic(requests_per_second=20, sample_rate=0.1, features=3)
    delays = dd.detection_delays(5, traffic, 1.0)
    assert 20 <= delays["warning"] <= delays["critical"] <= 90, delays
    alarms, highest = dd.false_alarm_day(5, traffic)
    assert alarms == {"warning": False, "critical": False} and highest < 0.05, (alarms, highest)
