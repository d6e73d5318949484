"""A window you can replay (issue 14 point 2), end to end with real processes: an experiment starts, a
degraded candidate is rolled back, the step's window waits for the server to report the new weights and
to settle; then `analyze --start --end` recomputes both logged decisions from Prometheus alone, with the
same decision, counts and statistics, and appends nothing to the log."""

import json
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from servectl.cli import cli
from servectl.experiments import log
from servectl.experiments.load import send_load
from servectl.experiments.local_prometheus import local_prometheus
from servectl.experiments.run import STARTED
from tests.servectl.experiments.conftest import MODEL, make_repository, running_server
from tests.servectl.experiments.test_end_to_end import CONFIG, DEGRADED

pytestmark = pytest.mark.slow
SETTLE = 2.0


def _cli(*args: str) -> dict[str, Any]:
    result = CliRunner().invoke(cli, ["experiment", *args, "--json"])
    assert result.exit_code == 0, result.output
    entry: dict[str, Any] = json.loads(result.output.splitlines()[0])
    return entry


def _replay(options: list[str], entry: dict[str, Any]) -> dict[str, Any]:
    window = entry["window"]
    return _cli(
        "analyze", *options, "--start", repr(window["experiment_start"]), "--end", repr(entry["time"])
    )


def _same(replayed: dict[str, Any], logged: dict[str, Any]) -> None:
    assert replayed["event"] == "replay", replayed["event"]
    differing = sorted(
        k for k in logged.keys() | replayed.keys() if k != "event" and logged.get(k) != replayed.get(k)
    )
    assert not differing, {k: (logged.get(k), replayed.get(k)) for k in differing}


def test_logged_windows_replay_to_the_same_decision_and_counts(tmp_path: Path, logs: Path) -> None:
    repository = make_repository(tmp_path, CONFIG.format(faults=DEGRADED))
    log_path = tmp_path / "experiment.jsonl"
    options = ["--prometheus", "", "--model", MODEL, "--model-repository", str(repository), "--log",
               str(log_path), "--min-samples", "200", "--error-margin", "0.02", "--latency-tolerance", "0.1",
               "--settle-seconds", str(SETTLE)]  # fmt: skip
    with (
        running_server(repository, logs) as server,
        local_prometheus([server.url.removeprefix("http://")]) as prom,
    ):
        options[1] = prom.url
        started = _cli("analyze", *options)
        assert started["reasons"] == [STARTED] and started["statistics"] == {}, started
        assert set(started["snapshot"]) <= {"1", "2"}, "the counters as they stood, per version"
        load = send_load(server.url, MODEL, requests=600, max_seconds=60, threads=4, seed=11)
        prom.wait_for_scrape()
        rolled_back = _cli("step", *options, "--pid", str(server.process.pid))
        assert rolled_back["decision"] == "rollback", rolled_back["reasons"]
        server.wait_for_event("config_reloaded")
        waiting = _cli("analyze", *options)
        assert waiting["decision"] == "hold" and waiting["statistics"] == {}, waiting
        assert "settling" in waiting["reasons"][0] or "not yet reported" in waiting["reasons"][0], waiting
        prom.wait_for_scrape()
        time.sleep(SETTLE + 1)  # the boundary (a scrape already made, plus SETTLE) is behind us
        after = send_load(server.url, MODEL, requests=200, max_seconds=30, threads=2, seed=12)
        prom.wait_for_scrape()
        since = _cli("analyze", *options)
        logged = log_path.read_text()
        replays = [_replay(options, rolled_back), _replay(options, since)]
        assert log_path.read_text() == logged, "a replay appends nothing to the log"
    assert {v: rolled_back["counts"][v]["requests"] for v in load.versions} == load.versions, rolled_back
    assert since["counts"]["1"]["requests"] == after.versions["1"] == 200, since["counts"]
    window = since["window"]
    assert window["step_start"] == window["experiment_start"] > rolled_back["time"] + SETTLE, window
    _same(replays[0], rolled_back)
    _same(replays[1], since)
    assert [e["event"] for e in log.read(log_path)] == [
        "analysis",
        "analysis",
        "step",
        "analysis",
        "analysis",
    ]
