"""The rollout controller: `step` on the schedule's interval, so a rollout runs itself (issue 14 point 8).

Each interval it reads the weights from its target, analyses, applies the decision (promote, hold, roll back,
complete), and reports it three ways: the experiment log (the audit trail, written by `run`), a Prometheus
metric and, in a cluster, a Kubernetes Event. A failure to reach Prometheus or the API server is logged,
counted (`serving_experiment_controller_errors_total`) and retried at the next interval: the loop never
exits on one, so a Deployment does not crash-loop, and the counter and `ExperimentHalted` make a stall
visible instead of silent. Between experiments (the last step rolled back or completed and the weights are
still those it left, or no candidate takes traffic) it analyses nothing and waits for new weights.
"""

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from servectl.experiments import log
from servectl.experiments.decision import ROLLBACK
from servectl.experiments.mesh_weights import MeshWeights
from servectl.experiments.promql import PrometheusError
from servectl.experiments.run import Experiment, ExperimentError, analyze, apply
from servectl.experiments.targets import Target

IDLE = "idle"
"""Not a decision: no experiment is running (the last one ended and the weights are unchanged since)."""
RETRIED = (PrometheusError, ExperimentError, OSError, KeyError, ValueError, RuntimeError)
"""What a tick may fail with and the next interval may not: an unreachable Prometheus or API server, a
refused patch, weights that name no experiment yet. Anything else is a bug and stops the process."""


class Emitter(Protocol):
    """Reports one decision outside the log (a Kubernetes Event in a cluster)."""

    def emit(self, entry: dict[str, Any], applied: str) -> None:
        """Report `entry` (the analysis's log entry) and what applying it did."""
        ...


class NoEmitter:
    """Outside a cluster there is nowhere to send Events: the log and the metrics are the record."""

    def emit(self, entry: dict[str, Any], applied: str) -> None:
        """Nothing to do."""


class Metrics:
    """The controller's metrics, on an injected registry so two controllers in one test process coexist."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.decisions = Counter(
            "serving_experiment_decisions",
            "Decisions the rollout controller applied.",
            ["model", "candidate", "decision"],
            registry=registry,
        )
        self.weight = Gauge(
            "serving_experiment_candidate_weight",
            "The candidate's percent of the weighted traffic after the last decision.",
            ["model", "candidate"],
            registry=registry,
        )
        self.active = Gauge(
            "serving_experiment_active", "1 while an experiment runs, 0 between experiments.", ["model"],
            registry=registry,
        )  # fmt: skip
        self.last_analysis = Gauge(
            "serving_experiment_last_analysis_timestamp_seconds",
            "When the last analysis completed (Unix time).",
            ["model"],
            registry=registry,
        )
        self.interval = Gauge(
            "serving_experiment_interval_seconds", "Seconds between analyses.", ["model"], registry=registry
        )
        self.rolled_back = Gauge(
            "serving_experiment_rolled_back_timestamp_seconds",
            "When the candidate was last rolled back (Unix time); the alert ExperimentRolledBack reads it.",
            ["model", "candidate"],
            registry=registry,
        )
        self.halted = Gauge(
            "serving_experiment_halted",
            "1 while the rollout is halted for the reason (srm: a sample-ratio mismatch), until a restart.",
            ["model", "candidate", "reason"],
            registry=registry,
        )
        self.errors = Counter(
            "serving_experiment_controller_errors",
            "Intervals whose analysis or report failed, by stage; the next interval retries.",
            ["model", "stage"],
            registry=registry,
        )

    def record(self, entry: dict[str, Any]) -> None:
        """Count a decision and set the candidate's weight to what it now is."""
        model, candidate = entry["model"], entry["candidate"]
        self.decisions.labels(model, candidate, entry["decision"]).inc()
        self.weight.labels(model, candidate).set(entry["next_weights"][candidate])
        self.last_analysis.labels(model).set(entry["time"])
        self.active.labels(model).set(0 if entry["decision"] in log.ENDS_EXPERIMENT else 1)
        if entry["decision"] == ROLLBACK:
            self.rolled_back.labels(model, candidate).set(entry["time"])
        self.halted.labels(model, candidate, "srm").set(1 if entry.get("halted") == "srm" else 0)

    def started(self, model: str, interval: float) -> None:
        """Before the first analysis: presume an experiment runs, counted from now, so a controller that
        never completes one is reported halted rather than never reported at all."""
        self.interval.labels(model).set(interval)
        self.active.labels(model).set(1)
        self.last_analysis.labels(model).set(time.time())


def serve_metrics(registry: CollectorRegistry, host: str, port: int) -> WSGIServer:
    """Serve `/metrics` for Prometheus; the caller shuts the server down."""
    server, _ = start_http_server(port, addr=host, registry=registry)
    return server


def ended(experiment: Experiment, weights: dict[str, int]) -> bool:
    """Whether the model's last step ended an experiment and left exactly these weights: then nothing runs
    until someone sets new weights (a new candidate, or a fresh split)."""
    entries = log.read(experiment.log_path)
    steps = [e for e in entries if e.get("model") == experiment.model and e["event"] == "step"]
    if not steps:
        return False
    last = steps[-1]
    return last["decision"] in log.ENDS_EXPERIMENT and _taking_traffic(last["weights"]) == _taking_traffic(
        weights
    )


def _taking_traffic(weights: dict[str, Any]) -> dict[str, int]:
    return {str(v): int(w) for v, w in weights.items() if int(w) > 0}


def has_candidate(experiment: Experiment, weights: dict[str, int]) -> bool:
    """Whether a candidate takes traffic: with one version, or the candidate at 0% (never a step of a
    schedule, whose steps start above 0), there is nothing to analyse."""
    if len(weights) < 2:
        return False
    candidate = experiment.candidate or max(weights, key=int)
    return weights.get(candidate, 0) > 0


@dataclass
class Controller:
    """One model's controller: its experiment, where its weights live, and where it reports."""

    experiment: Experiment
    target: Target
    metrics: Metrics
    emitter: Emitter
    echo: Callable[[str], None] = lambda line: print(line, file=sys.stderr, flush=True)
    mesh: MeshWeights | None = None
    """In the mesh: confirms each patch from Istio's status and exports the confirmed weights."""
    patched_at: float = 0.0
    """When this controller last changed the weights (the mesh's confirmation counts from then)."""

    def tick(self) -> str:
        """One interval: the decision applied, or `IDLE` between experiments."""
        self._confirm_mesh()
        weights = self.target.weights()
        if ended(self.experiment, weights) or not has_candidate(self.experiment, weights):
            self.metrics.active.labels(self.experiment.model).set(0)
            return IDLE
        entry = analyze(self.experiment, weights)
        try:
            applied = apply(self.experiment, entry, self.target)
        except RETRIED as error:  # logged as an analysis without a step: the next interval decides again
            self._failed("apply", error)
            return f"error: {entry['decision']} not applied: {error}"
        self.metrics.record(entry)
        if entry["next_weights"] != entry["weights"]:
            self.patched_at = time.time()
            self._confirm_mesh()  # Istio may have reconciled already: the window need not wait an interval
        self.echo(f"{self.experiment.model}: {applied}; " + "; ".join(entry["reasons"]))
        try:
            self.emitter.emit(entry, applied)
        except RETRIED as error:  # the decision stands and is logged; only its Event is missing
            self._failed("event", error)
        return str(entry["decision"])

    def _confirm_mesh(self) -> None:
        """Export the mesh's weights once Istio confirms them; say why not otherwise. A failure to read
        the VirtualService is counted (stage `mesh`) and the analysis goes on: it holds, unconfirmed."""
        if self.mesh is None:
            return
        try:
            confirmation = self.mesh.refresh(self.patched_at)
        except RETRIED as error:
            self._failed("mesh", error)
            return
        if confirmation.reason is not None:
            self.echo(f"{self.experiment.model}: mesh not confirmed: {confirmation.reason}")

    def _restore(self) -> None:
        """Rollbacks from the log (on its volume) back into the gauge, so a restarted pod keeps
        `ExperimentRolledBack` firing for its hour."""
        model = self.experiment.model
        for entry in log.read(self.experiment.log_path):
            if entry.get("model") == model and entry["event"] == "step" and entry["decision"] == ROLLBACK:
                self.metrics.rolled_back.labels(model, entry["candidate"]).set(entry["time"])

    def _failed(self, stage: str, error: BaseException) -> None:
        self.metrics.errors.labels(self.experiment.model, stage).inc()
        self.echo(f"{self.experiment.model}: {stage} failed, retrying at the next interval: {error}")

    def run(
        self,
        interval: float,
        *,
        max_analyses: int | None = None,
        until_done: bool = False,
        sleep: Callable[[float], None] = time.sleep,
    ) -> list[str]:
        """Tick every `interval` seconds, on a fixed grid so a slow analysis does not push later ones back;
        stop after `max_analyses` ticks, or (with `until_done`) once the experiment has ended. Returns what
        each tick did: a decision, `IDLE`, or `error: ...`."""
        self.metrics.started(self.experiment.model, interval)
        self._restore()
        outcomes: list[str] = []
        start = time.monotonic()
        while max_analyses is None or len(outcomes) < max_analyses:
            try:
                outcome = self.tick()
            except RETRIED as error:
                self._failed("analysis", error)
                outcome = f"error: {error}"
            outcomes.append(outcome)
            if until_done and outcome in {*log.ENDS_EXPERIMENT, IDLE}:
                break
            ahead = interval - (time.monotonic() - start) % interval
            sleep(ahead)
        return outcomes
