"""The drift loop end to end (issue 15 point 7), with real components only, for the test and `make demo`.

A synthetic model is served at v1 (the serving image as a process, drift sampling at rate 1). A real
Prometheus scrapes it with the shipped drift rules, every window and `for` divided by `factor`
(`servectl.drift.scaled_rules`), and sends alerts to a real Alertmanager configured as the monitoring stack
configures it (its waits scaled by the same factor), which routes `ModelInputDriftCritical` to
`servectl retrain-receiver` running as a process; the receiver runs `servectl retrain` on labelled shifted
data the harness wrote from the ground truth, which publishes v2, writes its canary weights and signals
the server (SIGHUP), so the running server serves v2 at the first rollout step. Traffic comes from the drift
sampler (the served version's profile.json), normal and then shifted; the experiment code then analyses
v1 against v2 on the same Prometheus.

`run_loop` returns what happened and when; it raises `LoopError` naming the step that did not happen in
time. Every wait polls a condition with a deadline; everything started is stopped on the way out.
"""

import json
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from loadtests.drift import load_sampler
from servectl.demo import server_process
from servectl.drift import processes
from servectl.drift.scaled_rules import write_drift_rules
from servectl.drift.synthetic import MODEL, build_repository, synthetic, write_csv
from servectl.drift.traffic import DriftTraffic
from servectl.experiments import run as experiment_run
from servectl.experiments.decision import Schedule, Thresholds
from servectl.experiments.local_prometheus import RunningPrometheus, local_prometheus
from servectl.experiments.promql import Prometheus
from servectl.retrain_receiver.local_alertmanager import local_alertmanager

Echo = Callable[[str], None]
WARNING, CRITICAL = 0.1, 0.25
"""The shipped alerts' PSI thresholds (stacks/monitoring/rules/serving-rules.yaml)."""
DRIFT_ALERTS = 'ALERTS{alertname=~"ModelInputDrift.*"}'
FIRING = 'ALERTS{alertname="ModelInputDriftCritical", alertstate="firing"}'


class LoopError(RuntimeError):
    """A step of the loop did not happen in time; the message names it."""


@dataclass(frozen=True, kw_only=True)
class LoopSettings:
    """How the loop runs."""

    factor: float = 120.0
    """Every rule window and `for` is divided by this: 1h becomes 30 s, 15m becomes 7.5 s."""
    features: tuple[str, ...] = ("mean_radius", "mean_texture", "mean_perimeter")
    """The features shifted."""
    shift_sd: float = 2.0
    """How far, in standard deviations estimated from the profile."""
    rate: float = 150.0
    """Requests per second (one row each)."""
    normal_seconds: float = 20.0
    """Unshifted traffic before the check that nothing alerts."""
    experiment_seconds: float = 25.0
    """Traffic with feedback after the canary serves, before the analysis."""
    min_samples: int = 50
    """The schedule's candidate requests per step before promotion (the demo's scale)."""
    step_timeout: float = 90.0
    """The longest any one step may take."""
    max_seconds: float = 170.0
    """The longest the whole loop may take, from building v1 to the decision (the demo keeps to about 2
    minutes; this bounds a slow machine)."""
    labelled_rows: int = 3000
    """Labelled shifted rows written for the retrain."""


@dataclass(kw_only=True)
class LoopResult:
    """What the loop saw, for the test's assertions and the demo's report."""

    features: list[str] = field(default_factory=list)
    """The features shifted."""
    timings: dict[str, float] = field(default_factory=dict)
    """Seconds: shift_to_alert, alert_to_receiver, retrain (the command's own run), alert_to_canary."""
    normal_psi: dict[str, float] = field(default_factory=dict)
    shifted_psi: dict[str, float] = field(default_factory=dict)
    alerts_during_normal: list[dict[str, str]] = field(default_factory=list)
    alert_features: list[str] = field(default_factory=list)
    retrain: dict[str, Any] = field(default_factory=dict)
    """The receiver's `retrain_finished` line."""
    weights: dict[str, int] = field(default_factory=dict)
    experiment: dict[str, Any] = field(default_factory=dict)
    traffic: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """Everything, JSON-ready."""
        return asdict(self)


def wait_for(
    what: str,
    check: Callable[[], bool],
    timeout: float,
    traffic: DriftTraffic | None = None,
    poll: float = 0.2,
) -> None:
    """Poll `check` until it holds; `LoopError` naming `what` after `timeout` s, or at once when the
    traffic has stopped."""
    deadline = time.monotonic() + timeout
    while not check():
        if traffic is not None and traffic.failure:
            raise LoopError(f"{traffic.failure} (while waiting for {what})")
        if time.monotonic() > deadline:
            raise LoopError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(poll)


def psi_by_feature(prom: Prometheus, version: str = "1") -> dict[str, float]:
    """The recorded 1h (scaled) PSI of each feature of the model's `version`."""
    found = prom.query(f'model:drift_psi:1h{{model="{MODEL}", version="{version}"}}')
    return {labels["feature"]: round(value, 4) for labels, value in found}


def _labelled_data(out: Path, shift_by_index: dict[int, float], rows: int) -> Path:
    x, y = synthetic(rows, seed=4, shift=shift_by_index)
    return write_csv(out / "labelled-shifted.csv", x, y)


@dataclass
class _Parts:
    out: Path
    repository: Path
    prom: RunningPrometheus
    traffic: DriftTraffic
    receiver_log: Path
    deadline: float
    """When the whole loop must be done (monotonic)."""

    def budget(self, step_timeout: float) -> float:
        """Seconds the next step may take: its own limit, or what is left of the loop's."""
        return max(0.0, min(step_timeout, self.deadline - time.monotonic()))


@dataclass
class _Clock:
    shift: float = 0.0
    alert: float = 0.0
    received: float = 0.0
    canary: float = 0.0


def run_loop(out: Path, settings: LoopSettings | None = None, echo: Echo = print) -> LoopResult:
    """Run the whole loop in `out` (the repository, logs, the result as `loop.json`); see the module."""
    settings = settings or LoopSettings()
    out.mkdir(parents=True, exist_ok=True)
    result = LoopResult(features=list(settings.features))
    with _start(out, settings, echo) as parts:
        clock = _Clock()
        _normal(parts, settings, result, echo)
        _shift(parts, settings, result, clock, echo)
        _retrain(parts, settings, result, clock, echo)
        _experiment(parts, settings, result, clock, echo)
        result.traffic = _traffic_summary(parts.traffic)
    (out / "loop.json").write_text(json.dumps(result.to_json(), indent=2) + "\n", encoding="utf-8")
    return result


@contextmanager
def _start(out: Path, settings: LoopSettings, echo: Echo) -> Iterator[_Parts]:
    deadline = time.monotonic() + settings.max_seconds
    repository = build_repository(out / "models")
    sampler = load_sampler(repository, MODEL, "1")
    shift = sampler.shift_amounts(settings.features, settings.shift_sd)
    index = {f.name: f.index for f in sampler.features}
    data = _labelled_data(out, {index[n]: a for n, a in shift.items()}, settings.labelled_rows)
    moved = ", ".join(f"{n} +{a:.2f}" for n, a in shift.items())
    echo(
        f"    v1 trained on synthetic rows; planned shift: {moved} ({settings.shift_sd:g} sd of the profile)"
    )
    env = {"SERVING_DRIFT_SAMPLE_RATE": "1", "SERVING_DRAIN_DELAY_SECONDS": "0"}
    with ExitStack() as stack:
        served = stack.enter_context(server_process(repository, out / "server", env))
        receiver_port = processes.free_port()
        am = stack.enter_context(
            local_alertmanager(
                processes.alertmanager_config(f"http://127.0.0.1:{receiver_port}/alerts", settings.factor),
                out / "alertmanager.log",
            )
        )
        receiver_log = out / "receiver.log"
        receiver_config = _receiver_config(out, repository, data, served.pid, settings)
        stack.enter_context(processes.receiver(receiver_config, receiver_port, receiver_log))
        rules = write_drift_rules(out / "drift-rules.yaml", settings.factor)
        prom = stack.enter_context(
            local_prometheus(
                [served.http], rules=rules, log=out / "prometheus.log", alertmanager=urlsplit(am.url).netloc
            )
        )
        echo(f"    serving v1 at {served.http} (pid {served.pid}); Prometheus {prom.url}, AM {am.url}")
        traffic = stack.enter_context(
            DriftTraffic(
                f"http://{served.http}",
                MODEL,
                sampler,
                shift,
                rate=settings.rate,
                max_seconds=settings.max_seconds,
            )
        )
        yield _Parts(out, repository, prom, traffic, receiver_log, deadline)


def _receiver_config(
    out: Path, repository: Path, data: Path, server_pid: int, settings: LoopSettings
) -> Path:
    """The receiver's config: `servectl retrain` on the labelled data, then SIGHUP to the server."""
    config = {
        "command": [sys.executable, "-m", "servectl", "retrain"],
        "args": [
            "--repository",
            str(repository),
            "--state",
            str(out / "retrain-state"),
            *processes.server_pid_args(server_pid),
        ],
        "timeout_seconds": settings.step_timeout,
        "models": {MODEL: {"data": str(data)}},
    }
    path = out / "receiver.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def _normal(parts: _Parts, settings: LoopSettings, result: LoopResult, echo: Echo) -> None:
    prom = Prometheus(parts.prom.url)
    started = time.monotonic()
    rows = f'sum(increase(serving_drift_rows_total{{model="{MODEL}", version="1"}}[{_window(settings)}]))'

    def enough() -> bool:
        found = prom.query(rows)
        return time.monotonic() - started >= settings.normal_seconds and bool(found) and found[0][1] >= 500

    wait_for(
        "500 sampled rows of normal traffic in the window",
        enough,
        parts.budget(settings.step_timeout),
        parts.traffic,
    )
    result.normal_psi = psi_by_feature(prom)
    result.alerts_during_normal = [labels for labels, _ in prom.query(DRIFT_ALERTS)]
    top = max(result.normal_psi.values(), default=float("nan"))
    echo(f"    normal traffic: highest PSI {top:.3f} over {len(result.normal_psi)} features; "
         f"drift alerts: {len(result.alerts_during_normal)}")  # fmt: skip


def _window(settings: LoopSettings) -> str:
    return f"{round(3_600_000 / settings.factor)}ms"


def _shift(parts: _Parts, settings: LoopSettings, result: LoopResult, clock: _Clock, echo: Echo) -> None:
    prom = Prometheus(parts.prom.url)
    clock.shift = parts.traffic.shift()
    firing = lambda: bool(prom.query(FIRING))  # noqa: E731
    wait_for("ModelInputDriftCritical to fire", firing, parts.budget(settings.step_timeout), parts.traffic)
    clock.alert = time.time()
    result.timings["shift_to_alert"] = round(clock.alert - clock.shift, 2)
    result.alert_features = sorted({labels["feature"] for labels, _ in prom.query(FIRING)})

    def all_shifted_critical() -> bool:
        scores = psi_by_feature(prom)
        return all(scores.get(f, 0.0) > CRITICAL for f in settings.features)

    wait_for(
        "every shifted feature past the critical PSI",
        all_shifted_critical,
        parts.budget(settings.step_timeout),
        parts.traffic,
    )
    result.shifted_psi = psi_by_feature(prom)
    echo(f"    shifted at {_hms(clock.shift)}; ModelInputDriftCritical firing after "
         f"{result.timings['shift_to_alert']:.1f} s on {', '.join(result.alert_features)}")  # fmt: skip


def _retrain(parts: _Parts, settings: LoopSettings, result: LoopResult, clock: _Clock, echo: Echo) -> None:
    def event(name: str) -> dict[str, Any] | None:
        return next((e for e in processes.json_lines(parts.receiver_log) if e["event"] == name), None)

    wait_for(
        "the receiver to start a retrain",
        lambda: event("retrain_started") is not None,
        parts.budget(settings.step_timeout),
    )
    clock.received = float((event("retrain_started") or {})["time"])
    result.timings["alert_to_receiver"] = round(clock.received - clock.alert, 2)
    wait_for(
        "the retrain to finish",
        lambda: event("retrain_finished") is not None,
        parts.budget(settings.step_timeout),
    )
    result.retrain = event("retrain_finished") or {}
    result.timings["retrain"] = float(result.retrain.get("seconds") or 0.0)
    run = result.retrain
    echo(f"    the receiver started the retrain {result.timings['alert_to_receiver']:.1f} s after the alert")
    echo(f"    retrain {run.get('outcome')} in {result.timings['retrain']:.1f} s: {run.get('reason')}")
    if result.retrain.get("outcome") != "published":
        raise LoopError(f"the retrain did not publish: {result.retrain}")
    serves = lambda: "2" in parts.traffic.counts.first_seen  # noqa: E731
    wait_for("the server to serve v2", serves, parts.budget(settings.step_timeout), parts.traffic)
    clock.canary = parts.traffic.counts.first_seen["2"]
    parts.traffic.feedback_on.set()
    result.timings["alert_to_canary"] = round(clock.canary - clock.alert, 2)
    config = yaml.safe_load((parts.repository / MODEL / "config.yaml").read_text(encoding="utf-8"))
    result.weights = {str(v): int(w) for v, w in config["variants"]["weights"].items()}
    echo(f"    v2 serves {result.timings['alert_to_canary']:.1f} s after the alert; weights {result.weights}")


def _experiment(parts: _Parts, settings: LoopSettings, result: LoopResult, clock: _Clock, echo: Echo) -> None:
    started = time.monotonic()
    counts = parts.traffic.counts
    experiment = experiment_run.Experiment(
        prometheus=parts.prom.url,
        model=MODEL,
        log_path=parts.out / "experiment.jsonl",
        schedule=Schedule(min_samples=settings.min_samples),
        thresholds=Thresholds(
            error_margin=0.02, latency_tolerance=0.1, optional_metrics=frozenset({"conversion", "value"})
        ),
        start=clock.canary,
    )
    # The experiment's first analysis only records its start (the canary's first answer) and holds.
    experiment_run.analyze(experiment, result.weights)

    def enough() -> bool:
        return (
            time.monotonic() - started >= settings.experiment_seconds
            and counts.judged["2"] >= settings.min_samples
        )

    wait_for(
        f"{settings.min_samples} judged v2 answers",
        enough,
        parts.budget(settings.step_timeout),
        parts.traffic,
    )
    parts.prom.wait_for_scrape()
    entry = experiment_run.analyze(experiment, result.weights)
    result.experiment = {
        key: entry[key] for key in ("decision", "reasons", "counts", "weights", "next_weights")
    }
    result.experiment["report"] = experiment_run.report(entry)
    echo("    " + result.experiment["report"].replace("\n", "\n    "))


def _traffic_summary(traffic: DriftTraffic) -> dict[str, Any]:
    counts = traffic.counts
    accuracy = {v: round(counts.correct[v] / counts.judged[v], 3) for v in counts.judged if counts.judged[v]}
    return {
        "requests_by_version": dict(counts.versions),
        "statuses": {str(k): v for k, v in counts.statuses.items()},
        "feedback_statuses": {str(k): v for k, v in counts.feedback.items()},
        "accuracy_on_shifted_traffic": accuracy,
    }


def _hms(wall: float) -> str:
    return time.strftime("%H:%M:%S", time.gmtime(wall))
