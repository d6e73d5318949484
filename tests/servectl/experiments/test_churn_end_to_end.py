"""End to end under pod churn (issue 14 point 10): two real server processes on one model repository, one
real Prometheus scraping both, bounded round-robin load, and the controller on its own schedule. In the
experiment's first interval one server is restarted (a new process on the same port: its counters start
again from 0) and the other is stopped for good. The controller, never the test, then rolls back a degraded
candidate or promotes and completes a healthy one, and every deciding analysis counts per version exactly
what was answered in its window, up to what the stopped processes answered after their last scrape.

How the bound is made exact: the load pauses for QUIET seconds around each of the controller's ticks (they
fall on a fixed grid), longer than a scrape interval, so every request before an analysis is scraped before
it and none falls between a window's start and its base sample. What a process answers after its last
successful scrape and before it stops is lost to Prometheus (the process never reports it); those answers
are read from the load's own record against the `up` samples of its instance, and are the only slack
allowed, counts in [answered - at risk, answered]. That slack is at most one scrape interval of traffic.
"""

import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from servectl.experiments import log
from servectl.experiments.checks import FEEDBACK_METRICS
from servectl.experiments.controller import Controller, Metrics, NoEmitter
from servectl.experiments.decision import Schedule, Thresholds
from servectl.experiments.local_prometheus import free_port, local_prometheus
from servectl.experiments.promql import Prometheus
from servectl.experiments.run import Experiment
from servectl.experiments.targets import ServerTarget
from tests.servectl.experiments.churn import Answer, Endpoints, round_robin, start
from tests.servectl.experiments.conftest import MODEL, make_repository

pytestmark = pytest.mark.slow

INTERVAL = 12.0
"""The controller's interval: one for the churn and the load after it, one per later step."""
QUIET = 1.5
"""Seconds without load either side of a tick: a 1 s scrape plus half a second of slack."""
CHURN_AT = QUIET + 1.0
"""Seconds after the experiment starts when one server restarts and the other stops."""
WARMUP = 3.0
"""Seconds of load before the experiment: servers in service have counted traffic before it starts, and a
restarted process's counter stays below its predecessor's last value over its first scrape, so the
restart shows as a step down (a counter that restarts and passes its old value between two scrapes hides
its restart: no counter-based reading can see it)."""
MAX_ANALYSES = 6
HARD_TIMEOUT = MAX_ANALYSES * INTERVAL + 30
CONFIG = """max_batch_size: 64
max_queue_delay_ms: 0
variants:
  weights:
    "1": 50  # baseline
    "2": 50  # candidate
{faults}"""
DEGRADED = '  faults:\n    "2": {delay_ms: 5, error_ratio: 0.2}\n'


@dataclass
class Churn:
    """What happened to the servers, and when (wall time of each stop signal)."""

    stopped: dict[str, tuple[int, float]] = field(default_factory=dict)
    """Process name to (its port, when it was told to stop)."""
    restarted: float = 0.0
    """When the restarted process was ready again."""
    errors: list[BaseException] = field(default_factory=list)


def _experiment(prometheus: str, log_path: Path) -> Experiment:
    schedule = Schedule(
        steps=(50, 100), min_samples=200, interval_seconds=int(INTERVAL), failed_checks=1, settle_seconds=1.0
    )
    thresholds = Thresholds(
        error_margin=0.02, latency_tolerance=0.1, optional_metrics=frozenset(FEEDBACK_METRICS)
    )
    return Experiment(
        prometheus=prometheus, model=MODEL, log_path=log_path, schedule=schedule, thresholds=thresholds
    )


def _churn(
    servers: dict[str, Any], repository: Path, tmp_path: Path, endpoints: Endpoints, churn: Churn
) -> None:
    """Restart `a` on its own port and stop `b` for good, at once, while the load runs."""
    try:
        a, b = servers["a"], servers["b"]
        churn.stopped["a"] = (a.http_port, time.time())
        a.stop()
        churn.stopped["b"] = (b.http_port, time.time())
        b.stop()
        endpoints.set(b.http_port, None)  # scaled away: the balancer drops it
        (tmp_path / "b.pid").unlink()  # and so does its supervisor
        endpoints.set(a.http_port, "a2")
        servers["a2"] = start(
            repository, tmp_path / "logs-a2", (a.http_port, a.grpc_port), tmp_path / "a.pid"
        )
        churn.restarted = time.time()
    except BaseException as error:  # reported by the test, never lost in a thread
        churn.errors.append(error)


@dataclass
class Outcome:
    """What one run did: the controller's outcomes, the log, the load's record, the churn."""

    outcomes: list[str]
    entries: list[dict[str, Any]]
    answers: list[Answer]
    sent: int
    churn: Churn
    at_risk: list[Answer]
    seconds: float


def _at_risk(prom: Prometheus, churn: Churn, answers: list[Answer]) -> list[Answer]:
    """Answers of a stopped process after its instance's last successful scrape before the stop."""
    risky = []
    for process, (port, stopped) in churn.stopped.items():
        samples = prom.samples(f'up{{instance="127.0.0.1:{port}"}}[60s]', stopped)
        scraped = [t for _, series in samples for t, v in series if v == 1]
        assert scraped, (
            f"{process} was never scraped before it stopped: {prom.samples('up[60s]', time.time())}"
        )
        last = max(scraped)
        risky += [a for a in answers if a.process == process and a.at > last]
    return risky


def _wait_for_scrapes(prom: Prometheus, targets: int, timeout: float = 30.0) -> None:
    """Until every target has been scraped successfully after now. (RunningPrometheus.wait_for_scrape
    takes the minimum over the targets scraped so far, so it can return before a target's first scrape:
    then that server's series start after the experiment and all it counted before is taken as new.)"""
    after, deadline = time.time(), time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(prom.query(f"timestamp(up == 1) > {after:.3f}")) == targets:
            return
        time.sleep(0.2)
    raise TimeoutError(f"Prometheus did not scrape all {targets} servers within {timeout} s")


def _controller(prometheus: str, tmp_path: Path, repository: Path) -> Controller:
    pids = (tmp_path / "a.pid", tmp_path / "b.pid")
    experiment = _experiment(prometheus, tmp_path / "experiment.jsonl")
    target = ServerTarget(repository, MODEL, None, pid_files=pids)
    return Controller(experiment, target, Metrics(CollectorRegistry()), NoEmitter(), echo=lambda line: None)


def _drive(
    controller: Controller, endpoints: Endpoints, churn: threading.Timer
) -> tuple[list[str], list[Answer], int]:
    """Run the controller on its schedule in a thread under round-robin load that pauses around its ticks,
    with the churn on its timer; until the experiment ends, bounded by HARD_TIMEOUT."""
    outcomes: list[str] = []
    answers: list[Answer] = []
    sent, stop, began = [0], threading.Event(), time.time()

    def quiet(now: float) -> bool:
        since = (now - began) % INTERVAL
        return since < QUIET or since > INTERVAL - QUIET

    def steps() -> None:
        outcomes.extend(controller.run(INTERVAL, max_analyses=MAX_ANALYSES, until_done=True))

    thread = threading.Thread(target=steps, daemon=True)
    load = threading.Thread(
        target=round_robin,
        args=(MODEL, endpoints, time.monotonic() + HARD_TIMEOUT, stop, quiet, answers, sent),
        daemon=True,
    )
    for started in (thread, churn, load):
        started.start()
    thread.join(timeout=HARD_TIMEOUT)
    stop.set()
    load.join(timeout=10)
    assert not thread.is_alive(), f"the controller did not end the experiment in {HARD_TIMEOUT} s"
    churn.join(timeout=90)
    return outcomes, answers, sent[0]


def _run(tmp_path: Path, faults: str) -> Outcome:
    """Two servers, Prometheus, warm-up traffic, then the controller under load and churn."""
    repository = make_repository(tmp_path, CONFIG.format(faults=faults))
    servers = {
        name: start(
            repository, tmp_path / f"logs-{name}", (free_port(), free_port()), tmp_path / f"{name}.pid"
        )
        for name in ("a", "b")
    }
    endpoints, churn = Endpoints({servers[n].http_port: n for n in ("a", "b")}), Churn()
    try:
        with local_prometheus([f"127.0.0.1:{s.http_port}" for s in servers.values()]) as running:
            prom = Prometheus(running.url)
            round_robin(
                MODEL, endpoints, time.monotonic() + WARMUP, threading.Event(), lambda _: False, [], [0]
            )
            _wait_for_scrapes(prom, len(servers))  # the experiment's base samples
            began = time.time()
            timer = threading.Timer(CHURN_AT, _churn, (servers, repository, tmp_path, endpoints, churn))
            outcomes, answers, sent = _drive(_controller(running.url, tmp_path, repository), endpoints, timer)
            assert not churn.errors, churn.errors
            seconds = time.time() - began
            at_risk = _at_risk(prom, churn, answers)
    finally:
        for server in servers.values():
            server.stop(timeout=60)
    entries = log.read(tmp_path / "experiment.jsonl")
    return Outcome(outcomes, entries, answers, sent, churn, at_risk, seconds)


def _answered(answers: list[Answer], start: float, end: float) -> Counter[str]:
    return Counter(a.version for a in answers if start < a.at <= end)


def _check_counts(run: Outcome, entry: dict[str, Any]) -> dict[str, tuple[float, int, int]]:
    """Each version's counted requests against those answered in the entry's window; returns version to
    (counted, answered, at risk) for the report."""
    start, end = entry["window"]["experiment_start"], entry["time"]
    answered, risky = _answered(run.answers, start, end), _answered(run.at_risk, start, end)
    figures = {}
    for version in ("1", "2"):
        counted = entry["counts"][version]["requests"]
        assert answered[version] - risky[version] <= counted <= answered[version], (
            f"v{version} at {entry['decision']}: counted {counted}, answered {answered[version]}, "
            f"at most {risky[version]} answered after the stopped processes' last scrape"
        )
        figures[version] = (counted, answered[version], risky[version])
    assert not entry["unreconciled"], f"a restart and a scale-down reconcile: {entry['unreconciled']}"
    return figures


def _deciding(run: Outcome) -> list[dict[str, Any]]:
    return [e for e in run.entries if e["event"] == "analysis" and e["decision"] != "hold"]


def _churned_in_window(run: Outcome, entry: dict[str, Any]) -> None:
    start, end = entry["window"]["experiment_start"], entry["time"]
    for process, (_, stopped) in run.churn.stopped.items():
        assert start < stopped < end, f"{process} stopped at {stopped}, outside the window {start}..{end}"
    assert {a.process for a in run.answers if start < a.at <= end} == {"a", "b", "a2"}, (
        f"a, b and a2 all answered in the window {start}..{end}: {run.churn}"
    )
    assert any('instance="127.0.0.1:' in s for s in entry["counter_resets"]), (
        f"the restart is seen as a counter reset: {entry['counter_resets']} "
        f"{Counter((a.process, a.version) for a in run.answers if start < a.at <= end)} {run.churn} {entry}"
    )


def test_under_churn_a_degraded_candidate_is_rolled_back_by_the_controller(tmp_path: Path) -> None:
    run = _run(tmp_path, DEGRADED)
    assert run.outcomes[-1] == "rollback", f"outcomes: {run.outcomes}"
    steps = [(e["decision"], e["weights"]) for e in run.entries if e["event"] == "step"]
    assert steps == [("rollback", {"1": 100, "2": 0})], steps
    (rollback,) = _deciding(run)
    _churned_in_window(run, rollback)
    figures = _check_counts(run, rollback)
    print(
        f"degraded: outcomes {run.outcomes}, sent {run.sent}, {run.seconds:.1f} s, churn {run.churn}, "
        f"(counted, answered, at risk) by version {figures}"
    )


def test_under_churn_a_healthy_candidate_is_promoted_and_completed_by_the_controller(tmp_path: Path) -> None:
    run = _run(tmp_path, "")
    reasons = [e["reasons"] for e in run.entries if e["event"] == "analysis"]
    assert run.outcomes[-1] == "complete", f"outcomes: {run.outcomes}: {reasons}"
    steps = [(e["decision"], e["weights"]) for e in run.entries if e["event"] == "step"]
    assert steps == [("promote", {"1": 0, "2": 100}), ("complete", {"1": 0, "2": 100})], steps
    promote, *_, complete = _deciding(run)
    _churned_in_window(run, promote)
    figures = [_check_counts(run, entry) for entry in _deciding(run)]
    assert complete["window"]["step_start"] > promote["time"], (
        "the last step's window began after it was applied"
    )
    print(
        f"healthy: outcomes {run.outcomes}, sent {run.sent}, {run.seconds:.1f} s, churn {run.churn}, "
        f"(counted, answered, at risk) by version per decision {figures}"
    )
