"""The report's pure parts: window parsing, the PromQL, bin order, statuses and the moved bins."""

import math

import pytest

from servectl.drift import report as rep
from servectl.drift.source import Reading, VersionDrift, parse_window, queries, selector


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("1h", 3600), ("30m", 1800), ("6h", 21600), ("1d", 86400), ("1h30m", 5400), ("90s", 90), ("1w", 604800)],
)
def test_windows_parse_as_prometheus_durations(text: str, seconds: int) -> None:
    assert parse_window(text) == seconds


@pytest.mark.parametrize("text", ["", " ", "1", "1x", "h", "-1h", "30m1h", "0h", "1.5h", "1h 30m"])
def test_bad_windows_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match=r"is not a duration|is empty"):
        parse_window(text)


def test_the_selector_quotes_label_values() -> None:
    assert selector("m", None) == '{model="m"}'
    assert selector('a"b', "2") == '{model="a\\"b",version="2"}'


def test_the_queries_read_the_contract_series_over_the_window() -> None:
    got = queries("m", "1", "6h")
    assert got["live"] == (
        'sum by (version, feature, bin) (increase(serving_drift_input_total{model="m",version="1"}[6h]))'
    )
    assert got["rows"] == 'sum by (version) (increase(serving_drift_rows_total{model="m",version="1"}[6h]))'
    assert "serving_drift_expected_share" in got["expected"] and "[6h]" in got["expected"], got
    assert "serving_drift_monitored" in got["monitored"] and "[6h]" in got["monitored"], got


def test_bins_sort_numbers_then_categories_then_other_then_nan() -> None:
    labels = ["nan", "10", "other", "b", "2", "a", "0"]
    assert sorted(labels, key=rep.bin_order) == ["0", "2", "10", "a", "b", "other", "nan"]


def test_a_live_nan_bin_always_counts_as_moved() -> None:
    expected = {"0": 0.5, "1": 0.5}
    feature = rep.score_feature("f", expected, {"0": 40.0, "1": 45.0, "nan": 15.0})
    assert [b.bin for b in feature.bins] == ["0", "1", "nan"], feature.bins
    nan = feature.bins[2]
    assert (nan.expected, nan.live) == (0.0, 0.15), nan
    want = -0.1 * math.log(0.8) - 0.05 * math.log(0.9) + 0.15 * math.log(0.15 / 1e-4)
    assert feature.psi == pytest.approx(want, rel=1e-12), feature.psi
    assert [b.bin for b in feature.moved] == ["nan", "0", "1"], feature.moved


def test_a_bin_never_counted_is_a_live_share_of_zero() -> None:
    feature = rep.score_feature("f", {"0": 0.5, "1": 0.5}, {"0": 10.0})
    assert [(b.bin, b.live) for b in feature.bins] == [("0", 1.0), ("1", 0.0)], feature.bins
    assert feature.rows == 10.0, feature.rows


def _reading(**versions: VersionDrift) -> Reading:
    return Reading("http://p", "m", "1h", 0.0, {k.removeprefix("v"): v for k, v in versions.items()})


def test_statuses_not_monitored_no_data_and_ok() -> None:
    ok = VersionDrift(monitored=True, rows=100.0)
    ok.expected["f"] = {"0": 0.5, "1": 0.5}
    ok.live["f"] = {"0": 60.0, "1": 40.0}
    idle = VersionDrift(monitored=True)
    idle.expected["f"] = {"0": 0.5, "1": 0.5}
    idle.live["f"] = {"0": 0.0, "1": 0.0}
    off = VersionDrift(monitored=False)
    built = rep.build(_reading(v10=ok, v2=idle, v1=off))
    assert [(v.version, v.status) for v in built.versions] == [
        ("1", "not_monitored"),
        ("2", "no_data"),
        ("10", "ok"),
    ], built.versions
    assert built.has_scores
    assert "no sampled rows in the last 1h" in built.versions[1].reason, built.versions[1]
    assert not rep.build(_reading(v2=idle)).has_scores


def test_features_sort_by_psi_and_the_table_marks_a_trickle() -> None:
    found = VersionDrift(monitored=True, rows=100.0)
    for name, live in (("calm", {"0": 50.0, "1": 50.0}), ("moved", {"0": 90.0, "1": 10.0})):
        found.expected[name] = {"0": 0.5, "1": 0.5}
        found.live[name] = live
    built = rep.build(_reading(v1=found))
    assert [f.feature for f in built.versions[0].features] == ["moved", "calm"], built.versions[0]
    text = rep.table(built)
    assert "version 1: 100 sampled rows (fewer than 500: the alerts stay quiet)" in text, text
    assert "0 +40.0pp, 1 -40.0pp" in text, text
