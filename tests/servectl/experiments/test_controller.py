"""The controller loop on real processes: the server, bounded load, a real Prometheus scraping both the
server and the controller's own /metrics with the experiment alert rules loaded.

The controller runs on its schedule in a thread while the test only sends load: a degraded candidate is
rolled back and a healthy one completes without anyone calling `step`. Then the log, the metrics and (for
the rollback) the `ExperimentRolledBack` alert are checked. Intervals are short and everything is bounded.
"""

import itertools
import json
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from servectl.experiments import log
from servectl.experiments.checks import FEEDBACK_METRICS
from servectl.experiments.controller import IDLE, Controller, Emitter, Metrics, NoEmitter, serve_metrics
from servectl.experiments.decision import Schedule, Thresholds
from servectl.experiments.kube import ApiServer, EventEmitter
from servectl.experiments.load import send_load
from servectl.experiments.local_prometheus import free_port, local_prometheus
from servectl.experiments.run import Experiment
from servectl.experiments.targets import ServerTarget
from stacks.manifests.monitoring import RULES_FILE
from tests.servectl.experiments.conftest import MODEL, make_repository, running_server

pytestmark = pytest.mark.slow

EXPERIMENT_RULES = RULES_FILE.with_name("experiment-rules.yaml")
INTERVAL = 4.0
MAX_ANALYSES = 12
"""Bounds the loop: a rollout that has not ended after this many intervals fails the test."""
HARD_TIMEOUT = MAX_ANALYSES * INTERVAL + 30
CONFIG = """max_batch_size: 64
max_queue_delay_ms: 0
variants:
  weights:
    "1": 50  # baseline
    "2": 50  # candidate
{faults}"""
DEGRADED = '  faults:\n    "2": {delay_ms: 20, error_ratio: 0.2}\n'


@dataclass
class Run:
    """What a controller run did."""

    outcomes: list[str]
    entries: list[dict[str, object]]
    metrics: str
    alerts: list[dict[str, object]]
    served: dict[str, int]


def _experiment(prometheus: str, log_path: Path) -> Experiment:
    return Experiment(
        prometheus=prometheus,
        model=MODEL,
        log_path=log_path,
        schedule=Schedule(
            steps=(50, 100),
            min_samples=200,
            interval_seconds=int(INTERVAL),
            failed_checks=1,
            settle_seconds=2.0,
        ),
        # The load sends no feedback: the feedback metrics are marked optional, as a stack would for them.
        thresholds=Thresholds(
            error_margin=0.02, latency_tolerance=0.1, optional_metrics=frozenset(FEEDBACK_METRICS)
        ),
    )


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as answer:
        return str(answer.read().decode())


def _alerts(prometheus: str, name: str, timeout: float = 15.0) -> list[dict[str, object]]:
    """The firing alerts named `name`, waiting up to `timeout` for the rule to evaluate."""
    query = urllib.parse.urlencode({"query": f'ALERTS{{alertname="{name}",alertstate="firing"}}'})
    deadline = time.monotonic() + timeout
    while True:
        result: list[dict[str, object]] = json.loads(_get(f"{prometheus}/api/v1/query?{query}"))["data"][
            "result"
        ]
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.5)


@contextmanager
def _metrics_server(metrics: Metrics, port: int) -> Iterator[None]:
    server = serve_metrics(metrics.registry, "127.0.0.1", port)
    try:
        yield
    finally:
        server.shutdown()


def _run_controller(
    tmp_path: Path, logs: Path, faults: str, emitter: Emitter | None = None, guard: bool = False
) -> Run:
    """Start everything, let the controller run on its schedule under continuous load, collect what it did."""
    repository = make_repository(tmp_path, CONFIG.format(faults=faults))
    port, log_path = free_port(), tmp_path / "experiment.jsonl"
    metrics = Metrics(CollectorRegistry())
    outcomes: list[str] = []
    served: dict[str, int] = {}
    with (
        running_server(repository, logs) as server,
        _metrics_server(metrics, port),
        local_prometheus(
            [server.url.removeprefix("http://"), f"127.0.0.1:{port}"], rules=EXPERIMENT_RULES
        ) as prom,
    ):
        experiment = _experiment(prom.url, log_path)
        if guard:  # the last step holds v1 back at 40% for 6 s before v2 takes all traffic
            experiment = replace(experiment, schedule=replace(experiment.schedule, holdback_percent=40,
                                                              guard_seconds=6))  # fmt: skip
        controller = Controller(
            experiment, ServerTarget(repository, MODEL, server.process.pid), metrics,
            emitter or NoEmitter(), echo=lambda line: None,
        )  # fmt: skip
        thread = threading.Thread(
            target=lambda: outcomes.extend(
                controller.run(INTERVAL, max_analyses=MAX_ANALYSES, until_done=True)
            ),
            daemon=True,
        )
        thread.start()
        deadline, seed = time.monotonic() + HARD_TIMEOUT, 0
        while thread.is_alive() and time.monotonic() < deadline:
            seed += 1
            load = send_load(server.url, MODEL, requests=300, max_seconds=2, threads=2, seed=seed)
            for version, n in load.versions.items():
                served[version] = served.get(version, 0) + n
        thread.join(timeout=5)
        assert not thread.is_alive(), f"the controller did not stop within {HARD_TIMEOUT} s"
        prom.wait_for_scrape()
        alerts = _alerts(prom.url, "ExperimentRolledBack") if "rollback" in outcomes else []
        text = _get(f"http://127.0.0.1:{port}/metrics")
    return Run(outcomes, log.read(log_path), text, alerts, served)


def _sample(metrics: str, name: str, **labels: str) -> float:
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in metrics.splitlines():
        if line.startswith(f"{name}{{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no {name}{{{wanted}}} in:\n{metrics}")


def _spacing(entries: list[dict[str, object]]) -> list[float]:
    times = [float(e["time"]) for e in entries if e["event"] == "analysis"]  # type: ignore[arg-type]
    return [b - a for a, b in itertools.pairwise(times)]


def test_a_degraded_candidate_is_rolled_back_on_the_controllers_schedule(tmp_path: Path, logs: Path) -> None:
    """Its Events go to an API server that is down: each is counted as failed, and the rollout goes on."""
    dead = EventEmitter(ApiServer(f"http://127.0.0.1:{free_port()}", None, timeout=2), "payments", MODEL, "c")
    run = _run_controller(tmp_path, logs, DEGRADED, dead)
    assert run.outcomes[-1] == "rollback", f"outcomes: {run.outcomes}"
    steps = [e for e in run.entries if e["event"] == "step"]
    assert [s["decision"] for s in steps] == ["rollback"], steps
    assert steps[0]["weights"] == {"1": 100, "2": 0}, steps[0]
    assert all(gap >= INTERVAL * 0.9 for gap in _spacing(run.entries)), (
        f"analyses follow the interval, not a tight loop: {_spacing(run.entries)}"
    )
    analyses = [e for e in run.entries if e["event"] == "analysis"]
    assert len(analyses) == len(run.outcomes), "every interval's decision is in the log"
    assert _sample(run.metrics, "serving_experiment_decisions_total", decision="rollback", candidate="2") == 1
    assert _sample(run.metrics, "serving_experiment_candidate_weight", candidate="2") == 0
    assert _sample(run.metrics, "serving_experiment_active", model=MODEL) == 0
    failed = _sample(run.metrics, "serving_experiment_controller_errors_total", stage="event")
    assert failed == len(run.outcomes), f"every decision's Event failed and was counted: {failed}"
    assert [a["metric"]["candidate"] for a in run.alerts] == ["2"], (  # type: ignore[index]
        f"ExperimentRolledBack fires on the real Prometheus: {run.alerts}"
    )


def test_a_healthy_candidate_completes_on_the_controllers_schedule(tmp_path: Path, logs: Path) -> None:
    run = _run_controller(tmp_path, logs, "")
    assert run.outcomes[-1] == "complete", f"outcomes: {run.outcomes}"
    steps = [(e["decision"], e["weights"]) for e in run.entries if e["event"] == "step"]
    assert steps == [("promote", {"1": 0, "2": 100}), ("complete", {"1": 0, "2": 100})], steps
    assert _sample(run.metrics, "serving_experiment_decisions_total", decision="promote") == 1
    assert _sample(run.metrics, "serving_experiment_decisions_total", decision="complete") == 1
    assert _sample(run.metrics, "serving_experiment_candidate_weight", candidate="2") == 100
    assert "serving_experiment_rolled_back_timestamp_seconds{" not in run.metrics, "no rollback recorded"


def test_a_guarded_rollout_holds_the_baseline_back_for_the_guard_then_completes(
    tmp_path: Path, logs: Path
) -> None:
    run = _run_controller(tmp_path, logs, "", guard=True)
    assert run.outcomes[-1] == "complete", f"outcomes: {run.outcomes}"
    steps = [(e["decision"], e["weights"]) for e in run.entries if e["event"] == "step"]
    assert steps == [("promote", {"1": 40, "2": 60}), ("complete", {"1": 0, "2": 100})], steps
    guarded: list[dict[str, Any]] = [e for e in run.entries if e["event"] == "analysis" and e["step"] == 60]
    held = [e for e in guarded if any(r.startswith("post-promotion guard:") for r in e["reasons"])]
    assert held, f"at least one interval held for the guard: {[e['reasons'] for e in guarded]}"
    window = guarded[-1]["window"]
    assert window["end"] - window["step_start"] >= 6, f"completed only after the 6 s guard: {window}"


def test_an_unreachable_prometheus_is_retried_every_interval_never_a_crash(tmp_path: Path) -> None:
    repository = make_repository(tmp_path, CONFIG.format(faults=""))
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    metrics, slept = Metrics(CollectorRegistry()), list[float]()
    controller = Controller(
        _experiment(dead, tmp_path / "experiment.jsonl"), ServerTarget(repository, MODEL, None), metrics,
        NoEmitter(), echo=lambda line: None,
    )  # fmt: skip
    outcomes = controller.run(INTERVAL, max_analyses=3, sleep=slept.append)
    assert len(outcomes) == 3 and all(o.startswith("error: ") for o in outcomes), outcomes
    assert len(slept) == 3 and all(0 < s <= INTERVAL for s in slept), f"waits for the next interval: {slept}"
    errors = metrics.registry.get_sample_value(
        "serving_experiment_controller_errors_total", {"model": MODEL, "stage": "analysis"}
    )
    assert errors == 3, f"each failed interval is counted: {errors}"
    assert not (tmp_path / "experiment.jsonl").exists(), "no decision was made, so none is logged"
    assert metrics.registry.get_sample_value("serving_experiment_active", {"model": MODEL}) == 1, (
        "still presumed running, so ExperimentHalted can fire"
    )


def test_after_the_experiment_ended_the_controller_waits_for_new_weights(tmp_path: Path) -> None:
    config = CONFIG.format(faults="").replace('"1": 50', '"1": 100').replace('"2": 50', '"2": 0')
    repository = make_repository(tmp_path, config)
    log_path = tmp_path / "experiment.jsonl"
    log.append(log_path, {"time": 1.0, "event": "step", "model": MODEL, "baseline": "1", "candidate": "2",
                          "decision": "rollback", "weights": {"1": 100, "2": 0}, "applied": "x"})  # fmt: skip
    dead = f"http://127.0.0.1:{free_port()}"  # an analysis would fail: there must be none
    metrics = Metrics(CollectorRegistry())
    controller = Controller(
        _experiment(dead, log_path), ServerTarget(repository, MODEL, None), metrics, NoEmitter(),
        echo=lambda line: None,
    )  # fmt: skip
    assert controller.run(INTERVAL, max_analyses=2, sleep=lambda s: None) == [IDLE, IDLE]
    rolled_back = metrics.registry.get_sample_value(
        "serving_experiment_rolled_back_timestamp_seconds", {"model": MODEL, "candidate": "2"}
    )
    assert rolled_back == 1.0, (
        f"a restarted controller restores the rollback's time from the log: {rolled_back}"
    )
    log_path.unlink()  # a fresh log: the candidate at 0% is still no experiment
    assert controller.run(INTERVAL, max_analyses=1, sleep=lambda s: None) == [IDLE]
    (repository / MODEL / "config.yaml").write_text(CONFIG.format(faults=""))  # a new 50/50 split
    assert controller.run(INTERVAL, max_analyses=1, sleep=lambda s: None)[0].startswith("error: "), (
        "new weights start a new experiment, which analyses (and here fails to reach Prometheus)"
    )
