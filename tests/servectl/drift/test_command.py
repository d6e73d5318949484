"""`servectl drift report` against a real Prometheus holding backfilled drift series (see conftest.py).

What the real engine proves that a pure test cannot: the PromQL parses and selects the contract's series,
`increase()` over the window and the per-version grouping give the counts the scores need, and the window
option reaches the query.
"""

import json
import struct
import time
from pathlib import Path
from typing import Any

import yaml
from click.testing import CliRunner

from servectl.cli import cli
from servectl.drift import report as rep
from servectl.drift.source import read
from servectl.experiments.local_prometheus import RunningPrometheus, free_port
from servectl.experiments.promql import Prometheus
from tests.servectl.drift.conftest import (
    IDLE,
    MODEL,
    ROWS_PER_STEP,
    SHIFTED_FEATURE,
    SHIFTED_SHARES,
    STEP_SECONDS,
    UNMONITORED,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def run(prometheus: str, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["drift", "report", "--prometheus", prometheus, *args])
    return result.exit_code, result.output


def report(prometheus: RunningPrometheus, *args: str) -> dict[str, Any]:
    code, output = run(prometheus.url, "--model", MODEL, "--json", *args)
    assert code == 0, output
    document: dict[str, Any] = json.loads(output)
    return document


def features(document: dict[str, Any], version: str) -> list[dict[str, Any]]:
    found = [v for v in document["versions"] if v["version"] == version]
    assert len(found) == 1, document["versions"]
    assert found[0]["status"] == "ok", found[0]
    scored: list[dict[str, Any]] = found[0]["features"]
    return scored


def test_unshifted_version_scores_below_the_warning_threshold(prometheus: RunningPrometheus) -> None:
    scored = features(report(prometheus, "--version", "1"), "1")
    assert sorted(f["feature"] for f in scored) == ["mean_area", "mean_radius", "mean_texture", "segment"]
    assert all(f["psi"] < 0.1 for f in scored), [(f["feature"], f["psi"]) for f in scored]


def test_the_version_filter_reads_only_that_version(prometheus: RunningPrometheus) -> None:
    assert [v["version"] for v in report(prometheus, "--version", "2")["versions"]] == ["2"]
    assert [v["version"] for v in report(prometheus)["versions"]] == ["1", "2"]


def test_only_the_shifted_feature_is_above_0_25_with_its_moved_bins_first(
    prometheus: RunningPrometheus,
) -> None:
    scored = features(report(prometheus, "--version", "2"), "2")
    assert scored[0]["feature"] == SHIFTED_FEATURE and scored[0]["psi"] > 0.25, scored[0]
    assert all(f["psi"] < 0.1 for f in scored[1:]), [(f["feature"], f["psi"]) for f in scored]
    moved = scored[0]["moved"]
    assert [m["bin"] for m in moved] == ["9", "8", "0"], moved
    # the last hour holds 15 unshifted minutes and 45 shifted ones
    mixed = {m["bin"]: 0.25 * 0.1 + 0.75 * SHIFTED_SHARES[int(m["bin"])] for m in moved}
    assert all(abs(m["live"] - mixed[m["bin"]]) < 0.02 for m in moved), (moved, mixed)


def test_the_table_names_the_shifted_feature_first(prometheus: RunningPrometheus) -> None:
    code, output = run(prometheus.url, "--model", MODEL, "--version", "2")
    assert code == 0, output
    lines = output.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:2] == ["feature", "psi"])
    first = lines[header + 1].split()
    assert first[0] == SHIFTED_FEATURE and float(first[1]) > 0.25, output
    assert "9 +" in lines[header + 1] and "8 +" in lines[header + 1], output
    assert lines[header - 1].startswith("version 2: 7,"), output


def test_the_window_reaches_the_query(prometheus: RunningPrometheus) -> None:
    """The shift began 45 minutes ago: 30 minutes see only shifted rows, 3 hours mostly unshifted ones."""
    short = report(prometheus, "--version", "2", "--window", "30m")["versions"][0]
    long = report(prometheus, "--version", "2", "--window", "3h")["versions"][0]
    assert short["features"][0]["feature"] == long["features"][0]["feature"] == SHIFTED_FEATURE, (short, long)
    assert short["features"][0]["psi"] > 2 * long["features"][0]["psi"], (short, long)
    per_hour = ROWS_PER_STEP * 3600 / STEP_SECONDS
    assert abs(short["rows"] - per_hour / 2) < 0.05 * per_hour / 2, short["rows"]
    assert abs(long["rows"] - 3 * per_hour) < 0.05 * 3 * per_hour, long["rows"]


def test_the_png_shows_four_features_at_1000_by_600(prometheus: RunningPrometheus, tmp_path: Path) -> None:
    path = tmp_path / "out" / "drift.png"
    document = report(prometheus, "--png", str(path))
    assert document["png"] == str(path), document["png"]
    head = path.read_bytes()[:24]
    assert head[:8] == PNG_SIGNATURE and head[12:16] == b"IHDR", head
    assert struct.unpack(">II", head[16:24]) == (1000, 600), head
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.image

    assert matplotlib.image.imread(path).shape[:2] == (600, 1000)


def test_the_table_says_where_the_png_went(prometheus: RunningPrometheus, tmp_path: Path) -> None:
    path = tmp_path / "drift.png"
    code, output = run(prometheus.url, "--model", MODEL, "--png", str(path))
    assert code == 0 and output.splitlines()[-1] == f"wrote {path}", output
    assert path.stat().st_size > 10_000, path.stat()


def test_json_shape(prometheus: RunningPrometheus) -> None:
    document = report(prometheus, "--version", "2", "--window", "1h")
    assert set(document) == {"prometheus", "model", "window", "at", "png", "versions"}, document.keys()
    assert (document["prometheus"], document["model"], document["window"]) == (prometheus.url, MODEL, "1h")
    version = document["versions"][0]
    assert set(version) == {"version", "status", "reason", "rows", "features"}, version.keys()
    feature = version["features"][0]
    assert set(feature) == {"feature", "psi", "js", "rows", "moved", "bins"}, feature.keys()
    assert [b["bin"] for b in feature["bins"]] == [str(b) for b in range(10)], feature["bins"]
    assert set(feature["bins"][0]) == {"bin", "expected", "live", "change"}, feature["bins"][0]
    assert abs(sum(b["live"] for b in feature["bins"]) - 1) < 1e-9, feature["bins"]
    segment = next(f for f in version["features"] if f["feature"] == "segment")
    assert [b["bin"] for b in segment["bins"]] == ["a", "b", "c", "other"], segment["bins"]


def test_a_model_not_monitored_says_so(prometheus: RunningPrometheus) -> None:
    code, output = run(prometheus.url, "--model", UNMONITORED)
    assert code == 0, output
    assert "version 1: drift not monitored" in output, output


def test_no_data_exits_non_zero_naming_the_model_and_url(prometheus: RunningPrometheus) -> None:
    for args in (["--model", "no-such-model"], ["--model", MODEL, "--version", "9"]):
        code, output = run(prometheus.url, *args)
        assert code == 1, output
        assert output.startswith("Error: no drift series for model ") and prometheus.url in output, output
    code, output = run(prometheus.url, "--model", MODEL, "--version", "9")
    assert "model tabular-classifier version 9" in output, output


def test_a_model_without_sampled_rows_in_the_window_exits_non_zero(prometheus: RunningPrometheus) -> None:
    code, output = run(prometheus.url, "--model", IDLE, "--window", "30m")
    assert code == 1, output
    assert output.startswith(f"Error: no drift data for model {IDLE} at {prometheus.url}: "), output
    assert "version 1: no sampled rows in the last 30m" in output, output


def test_unreachable_prometheus_exits_non_zero_naming_the_url() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    code, output = run(url, "--model", MODEL)
    assert code == 1, output
    assert output.startswith(f"Error: query failed at {url}") and "is Prometheus running?" in output, output
    assert len(output.strip().splitlines()) == 1, output


def test_a_bad_window_is_a_usage_error() -> None:
    code, output = run("http://127.0.0.1:1", "--model", MODEL, "--window", "1x")
    assert code == 2 and "'1x' is not a duration" in output, output


CONTRACT_PSI = """
sum by (version, feature) (
  ({live} - on (version, feature, bin) {expected})
  * ln(clamp_min({live}, 1e-4) / on (version, feature, bin) clamp_min({expected}, 1e-4))
)
"""
"""The contract's recording rule for model:drift_psi:1h, written out here as a cross-check (the rules file
is the other half of issue 15's drift work)."""


def test_the_report_agrees_with_the_contracts_psi_in_promql(prometheus: RunningPrometheus) -> None:
    at = time.time()
    sel = '{model="tabular-classifier"}'
    counts = f"sum by (version, feature, bin) (increase(serving_drift_input_total{sel}[1h]))"
    live = f"({counts} / ignoring (bin) group_left sum by (version, feature) ({counts}))"
    expected = f"max by (version, feature, bin) (serving_drift_expected_share{sel})"
    query = CONTRACT_PSI.format(live=live, expected=expected)
    promql = {
        (labels["version"], labels["feature"]): value
        for labels, value in Prometheus(prometheus.url).query(query, at)
    }
    built = rep.build(read(Prometheus(prometheus.url), MODEL, None, "1h", at))
    python = {(v.version, f.feature): f.psi for v in built.versions for f in v.features}
    assert len(python) == 8 and promql.keys() == python.keys(), (promql, python)
    assert all(abs(promql[k] - python[k]) < 1e-9 for k in python), (promql, python)


RULES_FILE = Path(__file__).resolve().parents[3] / "stacks" / "monitoring" / "rules" / "serving-rules.yaml"


def _recording_rule(record: str) -> str:
    """The expression of a recording rule of the one rules file the stacks and the local Prometheus load."""
    groups = yaml.safe_load(RULES_FILE.read_text(encoding="utf-8"))["groups"]
    (expr,) = [r["expr"] for g in groups for r in g["rules"] if r.get("record") == record]
    return str(expr)


def test_the_report_agrees_with_the_shipped_recording_rule(prometheus: RunningPrometheus) -> None:
    # The rule reads the live shares' own recorded series; inlined here, so this Prometheus (which holds only
    # backfilled counters) evaluates the rules file's text itself at one instant.
    live = f"({_recording_rule('model:drift_live_share:ratio_rate1h')})"
    query = _recording_rule("model:drift_psi:1h").replace("model:drift_live_share:ratio_rate1h", live)
    at = time.time()
    promql = {
        (labels["version"], labels["feature"]): value
        for labels, value in Prometheus(prometheus.url).query(query, at)
        if labels["model"] == MODEL
    }
    built = rep.build(read(Prometheus(prometheus.url), MODEL, None, "1h", at))
    python = {(v.version, f.feature): f.psi for v in built.versions for f in v.features}
    assert len(python) == 8 and promql.keys() == python.keys(), (promql, python)
    assert all(abs(promql[k] - python[k]) < 1e-9 for k in python), (promql, python)
