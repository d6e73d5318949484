"""`servectl experiment`: analyse an A/B experiment from Prometheus (or, for a SageMaker endpoint, from
CloudWatch), and step a progressive rollout.

The statistics, PromQL, decisions and rollout live in `servectl.experiments`; this module only parses
options and prints.
"""

import json
import os
import socket
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import click

from servectl.experiments import log as experiment_log
from servectl.experiments.checks import FEEDBACK_METRICS
from servectl.experiments.cloudwatch import DEFAULT_DELAY, CloudWatchSource
from servectl.experiments.decision import Schedule, Thresholds
from servectl.experiments.run import Experiment, ExperimentError, analyze, apply, replay, report
from servectl.experiments.sagemaker_target import SageMakerTarget
from servectl.experiments.source import CountsSource
from servectl.experiments.targets import ServerTarget, StackTarget, Target
from servectl.experiments.window import WindowError, replay_window
from stacks.settings_smb import endpoint_name

DEFAULT_LOG = "reports/experiments/{model}.jsonl"


def _target(
    stack: str | None,
    repository: Path | None,
    model: str,
    pid: int | None,
    options: dict[str, Any] | None = None,
) -> Target:
    if (stack is None) == (repository is None):
        raise click.UsageError(
            "give exactly one of --stack (a Pulumi stack) or --model-repository (a server)"
        )
    given = options or {}
    endpoint = given.get("endpoint") or _smb_endpoint(stack, model, given.get("cloudwatch_endpoint"))
    if endpoint is not None:
        return _sagemaker_target(stack, model, endpoint, options or {})
    if stack is not None:
        return StackTarget(stack, model)
    assert repository is not None
    return ServerTarget(repository, model, pid)


def _smb_endpoint(stack: str | None, model: str, watched: str | None) -> str | None:
    """An smb stack's model is served by its SageMaker endpoint: the one --cloudwatch-endpoint watches, else
    the one the stack names for the model; None for a cluster stack (weights change through `pulumi up`)."""
    if stack is None or not stack.startswith("smb-"):
        return None
    return watched or endpoint_name(stack, model)


def _sagemaker_target(stack: str | None, model: str, endpoint: str, options: dict[str, Any]) -> Target:
    """An smb stack's model served by a SageMaker endpoint: the file and the endpoint's variants."""
    if stack is None or not stack.startswith("smb-"):
        raise click.UsageError("--endpoint goes with --stack smb-...: the SageMaker endpoint of an smb stack")
    watched = options.get("cloudwatch_endpoint")
    if watched is not None and watched != endpoint:
        raise click.UsageError(f"--cloudwatch-endpoint {watched} is not --endpoint {endpoint}: one endpoint")
    target = StackTarget(stack, model)
    return SageMakerTarget(target, endpoint, _client("sagemaker", _region(options, target)))


def _region(options: dict[str, Any], target: Target | None) -> str:
    """--region, else the stack file's `aws:region`."""
    if options.get("region"):
        return str(options["region"])
    stack = target.stack if isinstance(target, SageMakerTarget) else target
    if isinstance(stack, StackTarget) and stack.path.exists():
        import yaml

        region = (yaml.safe_load(stack.path.read_text()).get("config") or {}).get("aws:region")
        if region:
            return str(region)
    raise click.UsageError("give --region: the endpoint's AWS region (no stack file names one)")


def _client(service: str, region: str) -> Any:
    """A boto3 client; credentials and endpoint from the standard AWS environment."""
    import boto3

    return boto3.client(service, region_name=region)  # type: ignore[call-overload]


def _source(options: dict[str, Any], target: Target) -> CountsSource | None:
    """CloudWatch for --cloudwatch-endpoint, else None (Prometheus at --prometheus)."""
    endpoint, prometheus = options.get("cloudwatch_endpoint"), options.get("prometheus")
    if endpoint is None and prometheus is None and isinstance(target, SageMakerTarget):
        endpoint = target.endpoint  # an smb stack's counts are its endpoint's, in CloudWatch
    if (endpoint is None) == (prometheus is None):
        raise click.UsageError("give exactly one of --prometheus URL or --cloudwatch-endpoint NAME")
    if endpoint is None:
        return None
    region = _region(options, target)
    return CloudWatchSource(
        endpoint, tuple(target.weights()), _client("cloudwatch", region), _client("sagemaker", region),
        delay_seconds=options.get("cloudwatch_delay") or DEFAULT_DELAY,
    )  # fmt: skip


def _gate(path: Path | None) -> bool | None:
    """The load-test result: `servectl loadtest`'s gates.json (`exit_code`, `gates`) or `{"passed": bool}`."""
    if path is None:
        return None
    data = json.loads(path.read_text())
    if isinstance(data, dict) and isinstance(data.get("passed"), bool):
        return bool(data["passed"])
    if isinstance(data, dict) and isinstance(data.get("gates"), list) and data["gates"]:
        return data.get("exit_code") == 0 and all(g.get("result") == "PASS" for g in data["gates"])
    raise click.BadParameter(
        f'{path} is neither a load test\'s gates.json nor {{"passed": true|false}}', param_hint="--gate"
    )


def _steps(value: str | None) -> tuple[int, ...] | None:
    if value is None:
        return None
    try:
        steps = tuple(int(s) for s in value.split(","))
    except ValueError as error:
        raise click.BadParameter(f"{value!r} is not a comma-separated list of percents") from error
    if list(steps) != sorted(set(steps)) or steps[-1] != 100 or steps[0] <= 0:
        raise click.BadParameter(f"steps must increase from above 0 to 100, got {value}")
    return steps


def _experiment(options: dict[str, Any], target: Target) -> Experiment:
    schedule = target.schedule() or Schedule()
    overrides = {
        "steps": _steps(options["steps"]),
        "min_samples": options["min_samples"],
        "failed_checks": options["failed_checks"],
        "settle_seconds": options["settle_seconds"],
        "holdback_percent": options["holdback_percent"],
        "guard_seconds": options["guard_seconds"],
    }
    schedule = replace(schedule, **{k: v for k, v in overrides.items() if v is not None})
    optional = frozenset(options["optional_metric"])
    if isinstance(target, StackTarget | SageMakerTarget):
        optional |= target.optional_metrics()
    return Experiment(
        prometheus=options["prometheus"] or "",
        source=_source(options, target),
        model=options["model"],
        log_path=options["log"] or Path(DEFAULT_LOG.format(model=options["model"])),
        baseline=options["baseline"],
        candidate=options["candidate"],
        schedule=schedule,
        thresholds=Thresholds(
            alpha=options["alpha"],
            latency_tolerance=options["latency_tolerance"],
            error_margin=options["error_margin"],
            error_ratio_margin=options["error_ratio_margin"],
            optional_metrics=optional,
            segments=schedule.segments,
        ),
        gate_passed=_gate(options["gate"]),
    )


_OPTIONS = [
    click.option("--prometheus", help="Prometheus base URL, e.g. http://127.0.0.1:9090."),
    click.option(
        "--cloudwatch-endpoint",
        metavar="NAME",
        help="Or: read the counts of this SageMaker endpoint's variants from CloudWatch (whole minutes).",
    ),
    click.option("--region", help="The endpoint's AWS region (default: the stack file's aws:region)."),
    click.option(
        "--cloudwatch-delay",
        type=click.FloatRange(0, 3600),
        help=f"Seconds CloudWatch is given to publish a minute before it is read [{DEFAULT_DELAY:g}].",
    ),
    click.option(
        "--endpoint",
        metavar="NAME",
        help="With --stack smb-...: the model's SageMaker endpoint [<stack>-<model>, as the stack names it]; "
        "a step also updates its variant weights, and without --prometheus the counts come from CloudWatch.",
    ),
    click.option("--model", required=True, help="Model name."),
    click.option("--baseline", help="Baseline version (default: the lowest version in the weights)."),
    click.option("--candidate", help="Candidate version (default: the highest version in the weights)."),
    click.option("--stack", help="Read (and for `step`, write) the weights of this Pulumi stack's file."),
    click.option(
        "--model-repository",
        type=click.Path(exists=True, file_okay=False, path_type=Path),
        help="Or: a standalone server's model repository (the model's config.yaml holds the weights).",
    ),
    click.option(
        "--log", type=click.Path(dir_okay=False, path_type=Path), help=f"Experiment log [{DEFAULT_LOG}]."
    ),
    click.option(
        "--gate",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        help='A load test\'s gates.json (or {"passed": bool}); passing it is a precondition for promotion.',
    ),
    click.option("--steps", help="Rollout steps, e.g. 5,25,50,100 (default: the stack's rollout block)."),
    click.option(
        "--min-samples", type=click.IntRange(1), help="Candidate requests per step before promotion."
    ),
    click.option(
        "--failed-checks", type=click.IntRange(1), help="Consecutive failed checks before rollback."
    ),
    click.option(
        "--holdback-percent",
        type=click.IntRange(0, 50),
        help="Post-promotion guard: the baseline's share kept during the last step (0: no guard).",
    ),
    click.option(
        "--guard-seconds", type=click.IntRange(60), help="How long the post-promotion guard lasts [3600]."
    ),
    click.option(
        "--settle-seconds",
        type=click.FloatRange(0, 3600),
        help="Seconds after every server reports a step's weights before the step's window begins [30].",
    ),
    click.option(
        "--alpha",
        type=click.FloatRange(0.0001, 0.5),
        default=0.05,
        show_default=True,
        help="False-positive rate of each sequential test, however often you look.",
    ),
    click.option(
        "--latency-tolerance",
        type=click.FloatRange(0.0, 0.5),
        default=0.05,
        show_default=True,
        help="Allowed P(candidate slower) - 0.5 before latency counts as a regression.",
    ),
    click.option(
        "--error-ratio-margin",
        type=click.FloatRange(1.0, 10.0, min_open=True),
        default=1.5,
        show_default=True,
        help="Promotion needs the candidate's error rate shown at most this many times the baseline's.",
    ),
    click.option(
        "--error-margin",
        type=click.FloatRange(0.0, 1.0),
        default=0.0005,
        show_default=True,
        help="Or shown at most this much above it (absolute; 0.0005: 0.05 points), for errors too rare "
        "for a ratio.",
    ),
    click.option(
        "--optional-metric",
        type=click.Choice((*FEEDBACK_METRICS, "cost")),
        multiple=True,
        help="A feedback metric the model gets none of, or cost for servers without compute counters: "
        "not measured, it does not hold promotion (repeatable). Unmarked, an unmeasured metric holds.",
    ),
    click.option("--json", "as_json", is_flag=True, help="Print the log entry as JSON."),
]


def _with_options(func: Any) -> Any:
    for option in reversed(_OPTIONS):
        func = option(func)
    return func


@click.group()
def experiment() -> None:
    """Judge A/B experiments on Prometheus or CloudWatch data and step progressive rollouts."""


def _run(
    options: dict[str, Any], pid: int | None, do_apply: bool, window: tuple[str, str | None] | None = None
) -> None:
    try:
        target = _target(options["stack"], options["model_repository"], options["model"], pid, options)
        exp = _experiment(options, target)
        if window is not None:
            entry = replay(exp, *_window(window), target.weights())
        else:
            entry = analyze(exp, target.weights())
        done = apply(exp, entry, target) if do_apply else None
    except (ExperimentError, FileNotFoundError, KeyError, ValueError, RuntimeError) as error:
        raise click.ClickException(str(error).strip("'\"")) from error
    click.echo(json.dumps(entry, sort_keys=True) if options["as_json"] else report(entry))
    if done is not None and not options["as_json"]:
        click.echo(done)


def _window(window: tuple[str, str | None]) -> tuple[float, float]:
    try:
        return replay_window(*window, now=time.time())
    except WindowError as error:
        raise click.BadParameter(str(error), param_hint="--start/--end") from error


@experiment.command("analyze")
@_with_options
@click.option(
    "--start",
    help="Replay: recompute the decision for the window from this time (RFC 3339 or unix seconds) "
    "from Prometheus, with the log's state before --end; nothing is appended to the log.",
)
@click.option("--end", help="Replay: the window's end (RFC 3339 or unix seconds) [now]. Needs --start.")
def analyze_command(start: str | None, end: str | None, **options: Any) -> None:
    """Read per-version counts (Prometheus or CloudWatch); report SRM, errors, latency and a decision."""
    if end is not None and start is None:
        raise click.UsageError("--end needs --start: a replayed window has both ends")
    _run(options, None, do_apply=False, window=None if start is None else (start, end))


@experiment.command("step")
@_with_options
@click.option("--pid", type=int, help="With --model-repository: the server process to send SIGHUP.")
def step_command(pid: int | None, **options: Any) -> None:
    """Analyse, then apply the decision: write the new weights and make them take effect."""
    _run(options, pid, do_apply=True)


@experiment.command("restart")
@click.option("--model", required=True, help="Model name.")
@click.option("--candidate", required=True, help="The candidate version whose experiment begins again.")
@click.option("--reason", required=True, help="Why (e.g. the cause of the sample-ratio mismatch, fixed).")
@click.option(
    "--log", type=click.Path(dir_okay=False, path_type=Path), help=f"Experiment log [{DEFAULT_LOG}]."
)
def restart_command(model: str, candidate: str, reason: str, log: Path | None) -> None:
    """Begin the experiment again from now: a halted rollout (sample-ratio mismatch) resumes only so.

    Every running statistic starts afresh, since what was counted before cannot be trusted."""
    path = log or Path(DEFAULT_LOG.format(model=model))
    if not reason.strip():
        raise click.ClickException("--reason must say why the experiment may begin again")
    entry = {"time": time.time(), "event": experiment_log.RESTART, "model": model, "candidate": candidate,
             "reason": reason.strip()}  # fmt: skip
    experiment_log.append(path, entry)
    click.echo(f"restarted: the experiment of {model} v{candidate} begins again now ({path})")


def _controller_target(
    options: dict[str, Any], pid: int | None, virtual_service: str | None, pid_files: tuple[Path, ...] = ()
) -> Target:
    if virtual_service is None:
        target = _target(options["stack"], options["model_repository"], options["model"], pid, options)
        if pid_files and not isinstance(target, ServerTarget):
            raise click.UsageError("--pid-file goes with --model-repository: it names a server's pid")
        return replace(target, pid_files=pid_files) if isinstance(target, ServerTarget) else target
    from servectl.experiments.kube import ApiServer, VirtualServiceTarget

    namespace, _, name = virtual_service.partition("/")
    if not namespace or not name:
        raise click.BadParameter(f"{virtual_service!r} is not NAMESPACE/NAME", param_hint="--virtual-service")
    return VirtualServiceTarget(ApiServer.in_cluster(), namespace, name, options["model"])


@experiment.command("controller")
@_with_options
@click.option("--pid", type=int, help="With --model-repository: the server process to send SIGHUP.")
@click.option(
    "--pid-file",
    "pid_files",
    multiple=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="With --model-repository: a file holding a server's pid, read at every step (repeat for each "
    "server on the repository; a server that is gone is skipped).",
)
@click.option(
    "--virtual-service",
    metavar="NAMESPACE/NAME",
    help="In a cluster: patch this VirtualService's weights and emit an Event per decision.",
)
@click.option(
    "--interval",
    type=click.FloatRange(0.1),
    help="Seconds between analyses (default: the schedule's intervalSeconds).",
)
@click.option("--metrics-port", type=click.IntRange(0, 65535), default=9102, show_default=True)
@click.option("--metrics-host", default="127.0.0.1", show_default=True, help="Address /metrics listens on.")
@click.option("--max-analyses", type=click.IntRange(1), help="Stop after this many intervals.")
@click.option("--until-done", is_flag=True, help="Stop once the experiment rolls back or completes.")
def controller_command(
    pid: int | None,
    pid_files: tuple[Path, ...],
    virtual_service: str | None,
    interval: float | None,
    metrics_port: int,
    metrics_host: str,
    max_analyses: int | None,
    until_done: bool,
    **options: Any,
) -> None:
    """Run `step` on the schedule's interval until stopped: the rollout runs itself."""
    from prometheus_client import CollectorRegistry

    from servectl.experiments.controller import Controller, Emitter, Metrics, NoEmitter, serve_metrics

    try:
        target = _controller_target(options, pid, virtual_service, pid_files)
        exp = _experiment(options, target)
    except (ExperimentError, FileNotFoundError, KeyError, ValueError, RuntimeError) as error:
        raise click.ClickException(str(error).strip("'\"")) from error
    emitter: Emitter = NoEmitter()
    metrics, mesh = Metrics(CollectorRegistry()), None
    if virtual_service is not None:
        from servectl.experiments.kube import EventEmitter, VirtualServiceTarget
        from servectl.experiments.mesh_weights import MeshWeights

        assert isinstance(target, VirtualServiceTarget)
        pod = os.environ.get("POD_NAME") or socket.gethostname()
        emitter = EventEmitter(target.api, target.namespace, target.name, pod)
        # The pods' gauge says nothing of the mesh's split: Istio's own confirmation starts a step's window.
        exp, mesh = replace(exp, confirm_source="mesh"), MeshWeights(metrics.registry, target)
    server = serve_metrics(metrics.registry, metrics_host, metrics_port)
    every = interval or float(exp.schedule.interval_seconds)
    click.echo(
        f"controller: {exp.model} every {every:g}s, metrics on {metrics_host}:{metrics_port}", err=True
    )
    try:
        outcomes = Controller(exp, target, metrics, emitter, mesh=mesh).run(
            every, max_analyses=max_analyses, until_done=until_done
        )
    finally:
        server.shutdown()
    click.echo(json.dumps({"model": exp.model, "outcomes": outcomes}) if options["as_json"] else outcomes[-1])
