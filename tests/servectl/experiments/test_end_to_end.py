"""End to end with real processes: the server, bounded load, a real Prometheus, `analyze` and `step`.

A candidate degraded on purpose (fault injection: 20% errors, 20 ms delay) is rolled back, after which
every request goes to version 1; a candidate whose answers the clients' labels find wrong more often is
rolled back on accuracy; a healthy candidate is promoted to the next step.
"""

import json
import random
from pathlib import Path

import pytest
from click.testing import CliRunner

from servectl.cli import cli
from servectl.experiments import demo_phase, log
from servectl.experiments.load import send_load
from servectl.experiments.local_prometheus import local_prometheus
from servectl.experiments.run import STARTED
from tests.servectl.experiments.conftest import MODEL, make_repository, running_server

pytestmark = pytest.mark.slow

CONFIG = """# The experiment under test: version 2 is the candidate.
max_batch_size: 64
max_queue_delay_ms: 0
variants:
  weights:
    "1": 50  # baseline
    "2": 50  # candidate
{faults}"""
DEGRADED = '  faults:\n    "2": {delay_ms: 20, error_ratio: 0.2}\n'


def _cli(*args: str) -> dict[str, object]:
    result = CliRunner().invoke(cli, ["experiment", *args, "--json"])
    assert result.exit_code == 0, result.output
    entry: dict[str, object] = json.loads(result.output.splitlines()[0])
    return entry


def _options(prometheus: str, repository: Path, log_path: Path) -> list[str]:
    return ["--prometheus", prometheus, "--model", MODEL, "--model-repository", str(repository),
            "--log", str(log_path), "--min-samples", "200", "--error-margin", "0.02",
            "--latency-tolerance", "0.1", "--settle-seconds", "0", "--optional-metric", "conversion",
            "--optional-metric", "value", "--optional-metric", "accuracy"]  # fmt: skip


def test_degraded_candidate_is_rolled_back_and_traffic_returns_to_v1(tmp_path: Path, logs: Path) -> None:
    repository = make_repository(tmp_path, CONFIG.format(faults=DEGRADED))
    with (
        running_server(repository, logs) as server,
        local_prometheus([server.url.removeprefix("http://")]) as prom,
    ):
        options = _options(prom.url, repository, tmp_path / "experiment.jsonl")
        started = _cli("analyze", *options)
        assert (started["decision"], started["reasons"]) == ("hold", [STARTED]), (
            "the first analysis only starts"
        )
        load = send_load(server.url, MODEL, requests=1000, max_seconds=60, threads=4, seed=1,
                         convert=lambda version, rng: rng.random() < 0.3)  # fmt: skip
        assert load.statuses[500] > 0 and set(load.versions) == {"1", "2"}, f"load: {load}"
        prom.wait_for_scrape()
        analysis = _cli("analyze", *options)
        assert analysis["decision"] == "rollback", analysis["reasons"]
        assert any("error rate" in r for r in analysis["reasons"]), analysis["reasons"]  # type: ignore[attr-defined]
        counts = analysis["counts"]
        assert isinstance(counts, dict)
        for version, served in load.versions.items():
            assert counts[version]["requests"] == served, (
                f"PromQL counts v{version} exactly: {counts[version]}"
            )
        assert counts["1"]["converted"] + counts["2"]["converted"] > 0, "feedback reaches the counts"
        step = _cli("step", *options, "--pid", str(server.process.pid))
        assert step["decision"] == "rollback" and step["next_weights"] == {"1": 100, "2": 0}, step
        server.wait_for_event("config_reloaded")
        prom.wait_for_scrape()  # the new weights are confirmed before the load that follows
        text = server.config.read_text()
        assert '"1": 100  # baseline' in text and '"2": 0  # candidate' in text, f"comments kept:\n{text}"
        after = send_load(server.url, MODEL, requests=200, max_seconds=30, threads=2, seed=2)
        assert after.versions == {"1": 200}, f"after the rollback every request goes to v1: {after.versions}"
        prom.wait_for_scrape()
        since = _cli("analyze", *options)
    counts = since["counts"]
    assert isinstance(counts, dict) and counts["1"]["requests"] == 200, (
        f"only what followed the step: {counts}"
    )
    assert counts.get("2", {"requests": 0})["requests"] == 0, counts
    assert since["decision"] == "hold", since["reasons"]
    events = [e["event"] for e in log.read(tmp_path / "experiment.jsonl")]
    assert events == ["analysis", "analysis", "analysis", "step", "analysis"], (
        f"each analysis, the step: {events}"
    )


def test_a_candidate_less_accurate_on_labelled_feedback_is_rolled_back(tmp_path: Path, logs: Path) -> None:
    """Clients report each answer's true class; version 2's answers are wrong twice as often."""
    repository = make_repository(tmp_path, CONFIG.format(faults=""))

    def truth(version: str, predicted: int, rng: random.Random) -> int:
        wrong = rng.random() < (0.4 if version == "2" else 0.05)
        return 1 - predicted if wrong else predicted

    with (
        running_server(repository, logs) as server,
        local_prometheus([server.url.removeprefix("http://")]) as prom,
    ):
        options = _options(prom.url, repository, tmp_path / "experiment.jsonl")
        _cli("analyze", *options)  # the experiment starts
        load = send_load(server.url, MODEL, requests=1200, max_seconds=60, threads=4, seed=5, label=truth)
        assert load.feedback == {200: 1200}, f"every label accepted: {load.feedback}"
        prom.wait_for_scrape()
        analysis = _cli("analyze", *options)
    counts = analysis["counts"]
    assert isinstance(counts, dict)
    labelled = {v: counts[v]["correct"] + counts[v]["incorrect"] for v in ("1", "2")}
    assert labelled == {v: float(n) for v, n in load.versions.items()}, "one label per answered request"
    assert analysis["decision"] == "rollback", analysis["reasons"]
    reasons = analysis["reasons"]
    assert isinstance(reasons, list) and reasons[0].startswith("accuracy: v2 "), reasons


def test_healthy_candidate_is_promoted_to_the_next_step(tmp_path: Path, logs: Path) -> None:
    repository = make_repository(tmp_path, CONFIG.format(faults=""))
    with (
        running_server(repository, logs) as server,
        local_prometheus([server.url.removeprefix("http://")]) as prom,
    ):
        options = _options(prom.url, repository, tmp_path / "experiment.jsonl")
        _cli("analyze", *options)  # the experiment starts
        load = send_load(server.url, MODEL, requests=2000, max_seconds=60, threads=4, seed=3)
        assert load.statuses == {200: sum(load.statuses.values())}, f"load: {load.statuses}"
        prom.wait_for_scrape()
        step = _cli("step", *options, "--pid", str(server.process.pid))
        assert step["decision"] == "promote", step["reasons"]
        assert step["next_weights"] == {"1": 0, "2": 100}, step["next_weights"]
        server.wait_for_event("config_reloaded")
        after = send_load(server.url, MODEL, requests=100, max_seconds=30, threads=2, seed=4)
    assert after.versions == {"2": 100}, f"after promotion to 100% every request goes to v2: {after.versions}"


def test_demo_phase_reports_a_decision_with_feedback(tmp_path: Path, logs: Path) -> None:
    config = CONFIG.format(faults="").replace('"1": 50', '"1": 90').replace('"2": 50', '"2": 10')
    repository = make_repository(tmp_path, config)
    with running_server(repository, logs) as server:
        summary = demo_phase(server.url, {"1": 90, "2": 10}, out_dir=tmp_path / "demo", requests=1200)
    assert summary["decision"] in {"promote", "hold"}, summary["reasons"]
    served = summary["load"]["requests_by_version"]
    assert {v: summary["counts"][v]["requests"] for v in served} == served, "Prometheus counts every request"
    assert summary["statistics"]["conversion"].get("tested"), summary["statistics"]["conversion"]
    assert (tmp_path / "demo" / "experiment.jsonl").exists(), "the analysis is logged"
