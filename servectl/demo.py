"""`servectl demo`: the whole platform on one machine, offline, from plans to load.

Phases: plan every stack under mocks; check the plans with the policy gate on a real OPA server;
serve the bundled models (v1/v2 at 90/10, sticky users) and send real requests; run the smoke load
test with its SLO gates; analyse the v1/v2 experiment on a real Prometheus; run the drift loop (shift,
alert, retrain, canary, experiment: `servectl.drift.loop`); the SMB profile (plan an `smb-*` stack and its
cost, gate it, serve its variants in SageMaker mode: `servectl.demo_smb`); write one report folder.
Each phase prints its progress and duration,
everything started is stopped again (also on error), and the exit code is 1 if any gate failed.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from loadtests.run import terminate_as_interrupt
from loadtests.slo import BUNDLED_SLO

REPO_ROOT = Path(__file__).resolve().parents[1]
BUNDLED_MODELS = REPO_ROOT / "serving_image" / "models"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Phase:
    """A phase's outcome, for the closing summary."""

    title: str
    seconds: float = 0.0
    result: str = "ok"
    """`ok`, `PASS`, `FAIL` or `error`."""


@contextmanager
def phase(title: str, phases: list[Phase] | None = None) -> Iterator[Phase]:
    """Print a phase's start and how long it took; the caller may set its result."""
    click.secho(f"==> {title}", bold=True)
    record = Phase(title)
    if phases is not None:
        phases.append(record)
    started = time.monotonic()
    try:
        yield record
    except BaseException:
        record.result = "error"
        raise
    finally:
        record.seconds = time.monotonic() - started
        click.echo(f"    {record.result} in {record.seconds:.1f} s")


@dataclass(frozen=True)
class ServedProcess:
    """The serving image running as a process on loopback."""

    http: str
    """host:port of the REST endpoint."""
    grpc: str
    """host:port of the gRPC endpoint."""
    pid: int
    """The server's process id (SIGHUP reloads its model repository)."""


@contextmanager
def server_process(
    repository: Path, log_dir: Path, env: Mapping[str, str] | None = None
) -> Iterator[ServedProcess]:
    """The serving image as a process on loopback, with `env` added to the environment; always stopped with
    SIGTERM, which must exit 0."""
    http_port, grpc_port = _free_port(), _free_port()
    log_dir.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "serving_image", "--model-repository", str(repository),
               "--http-port", str(http_port), "--grpc-port", str(grpc_port)]  # fmt: skip
    environment = {**os.environ, **(env or {})}
    with (log_dir / "access.log").open("wb") as out, (log_dir / "server.log").open("wb") as err:
        process = subprocess.Popen(command, stdout=out, stderr=err, env=environment)
        try:
            _wait_ready(f"http://127.0.0.1:{http_port}", process)
            yield ServedProcess(f"127.0.0.1:{http_port}", f"127.0.0.1:{grpc_port}", process.pid)
        finally:
            process.send_signal(signal.SIGTERM)
            code = process.wait(timeout=60)
            click.echo(f"    server stopped with exit code {code}")
            if code != 0:
                raise click.ClickException(f"server did not drain cleanly (exit {code}); see {log_dir}")


@contextmanager
def running_server(repository: Path, log_dir: Path) -> Iterator[tuple[str, str]]:
    """The serving image as a process on loopback: (REST host:port, gRPC host:port)."""
    with server_process(repository, log_dir) as served:
        yield served.http, served.grpc


def _wait_ready(base: str, process: subprocess.Popen[bytes]) -> None:
    import requests

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise click.ClickException(f"server exited with {process.returncode} before it was ready")
        try:
            if requests.get(base + "/v2/health/ready", timeout=1).ok:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.1)
    raise click.ClickException("server did not become ready within 60 s")


def _sample_rows(count: int) -> list[list[float]]:
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer().data[::97][:count]  # spread over the set, so both classes show
    return [[float(value) for value in row] for row in data]


def send_requests(http_url: str, grpc_url: str) -> dict[str, object]:
    """A few real V2 requests over REST and gRPC with the official clients; what they show."""
    import numpy as np
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException

    rows = np.asarray(_sample_rows(5), dtype=np.float32)
    rest = httpclient.InferenceServerClient(http_url)
    metadata = rest.get_model_metadata("tabular-classifier")
    click.echo(f"    model metadata: inputs {metadata['inputs']}, versions {metadata['versions']}")
    tensor = httpclient.InferInput("features", list(rows.shape), "FP32")
    tensor.set_data_from_numpy(rows)
    result = rest.infer("tabular-classifier", [tensor], model_version="2")
    click.echo(f"    REST  v2 labels for 5 rows: {result.as_numpy('label').tolist()}")

    grpc = grpcclient.InferenceServerClient(grpc_url)
    gtensor = grpcclient.InferInput("features", list(rows.shape), "FP32")
    gtensor.set_data_from_numpy(rows)
    gresult = grpc.infer("tabular-classifier-int8", [gtensor])
    click.echo(f"    gRPC  int8 labels for 5 rows: {gresult.as_numpy('label').tolist()}")

    split: Counter[str] = Counter()
    one = httpclient.InferInput("features", [1, rows.shape[1]], "FP32")
    one.set_data_from_numpy(rows[:1])
    for user in range(200):
        response = rest.infer("tabular-classifier", [one], headers={"x-user-id": f"user-{user}"})
        split[response.get_response()["model_version"]] += 1
    click.echo(f"    variant split for 200 sticky users (configured 90/10): {dict(sorted(split.items()))}")

    bad = httpclient.InferInput("features", [1, 3], "FP32")
    bad.set_data_from_numpy(rows[:1, :3])
    try:
        rest.infer("tabular-classifier", [bad])
        error = "none (unexpected)"
    except InferenceServerException as raised:
        error = str(raised.message())
    click.echo(f"    a bad request is refused with: {error}")
    return {"metadata": metadata, "variant_split": dict(split), "bad_request_error": error}


def plan_stacks(out: Path) -> str:
    """Each stack's layers' offline plans as `plans/<stack>.<layer>.json`; the summary in `summary.txt`."""
    from servectl.plan import summary
    from stacks.preview.run import layers_of, plan_stack, stack_names

    out.mkdir(parents=True, exist_ok=True)
    plans = []
    for name in stack_names():
        for layer in layers_of(name):
            started = time.monotonic()
            plan = plan_stack(name, layer=layer)
            path = out / f"{name}.{layer}.json"
            path.write_text(json.dumps(plan.document, indent=2) + "\n", encoding="utf-8")
            steps = len(plan.document["steps"])
            click.echo(f"    {name} {layer}: {steps} steps in {time.monotonic() - started:.1f} s")
            plans.append(plan)
    text = summary(plans)
    (out / "summary.txt").write_text(text + "\n", encoding="utf-8")
    return text


def check_policies(plans: list[Path], out: Path) -> tuple[int, dict[str, Any]]:
    """`servectl policy check` on the plans (it starts and stops its own OPA server); exit code, findings."""
    out.mkdir(parents=True, exist_ok=True)
    findings = out / "findings.json"
    findings.unlink(missing_ok=True)
    command = [sys.executable, "-m", "servectl", "policy", "check", *(str(p.resolve()) for p in plans),
               "--format", "json", "--out", str(findings.resolve())]  # fmt: skip
    # From the repository root, where the gate finds the stack files and the pinned OPA (.tools/bin).
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False, cwd=REPO_ROOT)
    (out / "policy.log").write_text(done.stdout + done.stderr, encoding="utf-8")
    if not findings.exists():
        click.echo(
            f"    the policy gate did not report (exit {done.returncode}): {done.stderr.strip()[-300:]}"
        )
        return (done.returncode or 2), {}
    document: dict[str, Any] = json.loads(findings.read_text(encoding="utf-8"))
    (out / "findings.md").write_text(policy_markdown(document), encoding="utf-8")
    for plan in document["summary"]["plans"]:
        click.echo(f"    {Path(plan['plan']).stem}: {plan.get('resources', '?')} resources checked")
    summary = document["summary"]
    click.echo(f"    {summary['findings']} findings, {summary['denied']} denied, {summary['waived']} waived")
    return done.returncode, document


def policy_markdown(document: dict[str, Any]) -> str:
    """The policy gate's findings as a short Markdown section."""
    summary = document["summary"]
    verdict = "PASS" if summary["allow"] else "FAIL"
    lines = [f"Policy gate: **{verdict}**: {summary['findings']} findings, {summary['denied']} denied, "
             f"{summary['waived']} waived, over {len(summary['plans'])} plans.", ""]  # fmt: skip
    for f in document["findings"]:
        mark = " (waived)" if f["waived"] else ""
        lines.append(f"- `{f['id']}` {f['severity']}{mark} in {Path(f['plan']).stem}: {f['message']}")
    return "\n".join(lines) + "\n"


def load_test(http_url: str, grpc_url: str, out: Path, slo: Path, profile: str) -> int:
    """The load test against the running server, with its SLO gates; the exit code of `servectl loadtest`."""
    from loadtests.run import LoadTest, run

    test = LoadTest(target=f"http://{http_url}", grpc_target=grpc_url, profile=profile, slo_file=slo, out=out)
    return run(test, click.echo)


def report_markdown(
    phases: list[Phase], plans: str, policy: str, load_dir: Path, serving: dict[str, Any]
) -> str:
    """The demo's front page: phases, plans, policy findings, load results and the variant split."""
    lines = ["# model-serving demo", "", "| phase | result | seconds |", "| --- | --- | ---: |"]
    lines += [f"| {p.title} | {p.result} | {p.seconds:.1f} |" for p in phases]
    totals = [line for line in plans.splitlines() if not line.startswith(" ")]
    lines += ["", "## Plans (offline, every stack)", "", "```", *totals, "```", ""]
    lines += ["By type and region: `plans/summary.txt`; the plans: `plans/<stack>.<layer>.json`.", ""]
    lines += ["## Policy gate", "", policy]
    split = serving.get("variant_split", {})
    lines += ["## Serving", "", f"Variant split for 200 sticky users (configured 90/10): {split}", ""]
    lines += ["In the load test, v2 also serves the enterprise segment (a header route, 5% of the end users",
              "in the smoke profile), so its share there is about 5% + 10% of the rest.", ""]  # fmt: skip
    lines += drift_loop_markdown(serving.get("drift_loop"))
    experiment = serving.get("experiment")
    if experiment:
        lines += [
            "## Experiment (files in `experiment/`)",
            "",
            "```",
            str(experiment["report"]).rstrip(),
            "```",
            "",
        ]
    lines += smb_markdown(serving.get("smb"))
    lines += cluster_markdown(serving.get("cluster"))
    summary = load_dir / "summary.md"
    if summary.exists():
        # Its sections become subsections here, and its links point into loadtest/.
        body = summary.read_text(encoding="utf-8").split("\n", 1)[1]
        body = body.replace("](", "](loadtest/").replace("\n## ", "\n### ")
        lines += ["## Load test (files in `loadtest/`, details in `loadtest/summary.md`)", body]
    return "\n".join(lines) + "\n"


def serve_and_load(
    repository: Path, out: Path, slo: Path, profile: str, phases: list[Phase]
) -> tuple[dict[str, object], int]:
    """Serve the models, send real requests, run the load test, stop the server (also on error)."""
    with ExitStack() as stack:
        with phase("serve the bundled models (v1/v2 at 90/10, sticky users), send real requests", phases):
            http_url, grpc_url = stack.enter_context(running_server(repository, out / "server"))
            serving = send_requests(http_url, grpc_url)
        with phase(f"load test `{profile}` with SLO gates", phases) as load:
            code = load_test(http_url, grpc_url, out / "loadtest", slo, profile)
            load.result = {0: "PASS", 1: "FAIL"}.get(code, "error")
        with phase("experiment: A/B analysis of v1/v2 on a real Prometheus", phases) as analysis:
            experiment = analyze_experiment(http_url, repository, out / "experiment")
            serving["experiment"] = experiment
            analysis.result = str(experiment["decision"]).upper()
        with phase("stop the server (SIGTERM, drain)", phases):
            stack.close()
    return serving, code


def analyze_experiment(http_url: str, repository: Path, out: Path) -> dict[str, Any]:
    """Fresh traffic with feedback, scraped by a local Prometheus, judged as `servectl experiment` judges."""
    import yaml

    from servectl.experiments import demo_phase

    config = yaml.safe_load((repository / "tabular-classifier" / "config.yaml").read_text(encoding="utf-8"))
    weights = {str(version): int(weight) for version, weight in config["variants"]["weights"].items()}
    result = demo_phase(f"http://{http_url}", weights, out_dir=out)
    click.echo(str(result["report"]))
    return result


def drift_loop_markdown(loop: dict[str, Any] | None) -> list[str]:
    """The drift loop's section of the report: its timings and decision (nothing when it did not run)."""
    if not loop:
        return []
    if "error" in loop:
        return ["## Drift loop (files in `drift/`)", "", f"Did not complete: {loop['error']}", ""]
    timings = loop["timings"]
    return [
        "## Drift loop (files in `drift/`)",
        "",
        f"Shifted {', '.join(loop['features'])}; `ModelInputDriftCritical` fired on "
        f"{', '.join(loop['alert_features'])}.",
        "",
        "| from | to | seconds |",
        "| --- | --- | ---: |",
        f"| shift | alert firing in Prometheus | {timings['shift_to_alert']:.1f} |",
        f"| alert firing | receiver starts the retrain | {timings['alert_to_receiver']:.1f} |",
        f"| retrain start | retrain end (its own run) | {timings['retrain']:.1f} |",
        f"| alert firing | v2 serving its canary share | {timings['alert_to_canary']:.1f} |",
        "",
        f"Accuracy on the shifted traffic after the canary: {loop['traffic']['accuracy_on_shifted_traffic']} "
        f"(per version). Canary weights {loop['weights']}; the experiment decided:",
        "",
        "```",
        str(loop["experiment"]["report"]).rstrip(),
        "```",
        "",
    ]


def drift_loop_phase(out: Path, phases: list[Phase]) -> dict[str, Any]:
    """The drift loop as a demo phase; its summary (timings, decision) or the error that stopped it."""
    from servectl.drift.loop import LoopError, run_loop

    title = (
        "drift loop: shift, alert, retrain, canary by SIGHUP, experiment (real Prometheus and Alertmanager)"
    )
    with phase(title, phases) as record:
        try:
            result = run_loop(out, echo=click.echo)
        except LoopError as error:
            click.echo(f"    {error}")
            record.result = "FAIL"
            return {"error": str(error)}
        record.result = str(result.experiment["decision"]).upper()
        click.echo("    timings (s): " + ", ".join(f"{k} {v:.1f}" for k, v in result.timings.items()))
        return result.to_json()


def smb_phase(repository: Path, out: Path, phases: list[Phase]) -> dict[str, Any]:
    """The SMB profile's phases (servectl.demo_smb): plan and cost, gate, SageMaker-mode serving."""
    from servectl.demo_smb import smb_phases

    return smb_phases(repository, out, phases)


def cluster_phase(out: Path, phases: list[Phase]) -> dict[str, Any]:
    """The real-engine phase (servectl.demo_cluster): control plane, deploy, routes, destroy, stop."""
    from servectl.demo_cluster import cluster_phase as run

    return run(out, phases)


def cluster_markdown(deployed: dict[str, Any] | None) -> list[str]:
    """The real-engine section of the report (nothing when the phase did not run)."""
    if not deployed:
        return []
    lines = [f"## The platform layer with the real engine: {deployed['stack']} (files in `cluster/`)", ""]
    if "error" in deployed or deployed.get("deploy_code") != 0:
        return [*lines, f"Did not deploy: {deployed.get('error', 'see cluster/deploy.log')}", ""]
    left = ", ".join(deployed.get("left") or []) or "none"
    took, removed = deployed["deploy_seconds"], deployed.get("destroy_seconds")
    lines.append(f"Deployed in {took} s, destroyed in {removed} s; namespaces left: {left}.")
    lines += ["", "| route | weights |", "| --- | --- |"]
    lines += [
        f"| {name} | {', '.join(f'{s} {w}%' for s, w in w8.items())} |"
        for name, w8 in deployed["routes"].items()
    ]
    lines += ["", "Objects: " + ", ".join(f"{n} {kind}" for kind, n in deployed["objects"].items()), ""]
    return lines


def smb_markdown(smb: dict[str, Any] | None) -> list[str]:
    """The SMB section of the report (nothing when the phase did not run)."""
    if not smb:
        return []
    lines = [f"## SMB profile: {smb['stack']} (files in `smb/`)", "", "```", smb["cost"].rstrip(), "```", ""]
    gate = smb["policy"]
    verdict = "PASS" if gate.get("allow") else "FAIL"
    lines += [f"Policy gate on the plan: **{verdict}**: {gate.get('findings', '?')} findings, "
              f"{gate.get('denied', '?')} denied, {gate.get('waived', '?')} waived.", ""]  # fmt: skip
    for name, answer in smb["answers"].items():
        lines.append(f"- variant {name}: /ping {answer['ping']}, /invocations {answer['status']} "
                     f"from version {answer['served_version']}")  # fmt: skip
    return [*lines, ""]


def write_report(out: Path, phases: list[Phase], plans: str, serving: dict[str, Any]) -> Path:
    """The report folder's front page, `README.md`."""
    findings = out / "policy" / "findings.md"
    policy = findings.read_text(encoding="utf-8") if findings.exists() else "The gate did not report.\n"
    readme = out / "README.md"
    readme.write_text(report_markdown(phases, plans, policy, out / "loadtest", serving), encoding="utf-8")
    return readme


def run_phases(repository: Path, out: Path, slo: Path, profile: str) -> int:
    """Every phase, the report, the closing summary; 0 if every gate passed, else 1."""
    phases: list[Phase] = []
    with phase("plan every stack offline (Pulumi under mocks)", phases):
        plans = plan_stacks(out / "plans")
    with phase("policy gate on the plans (real OPA server)", phases) as gate:
        policy_code, findings = check_policies(sorted((out / "plans").glob("*.json")), out / "policy")
        gate.result = {0: "PASS", 1: "FAIL"}.get(policy_code, "error")
    serving, load_code = serve_and_load(repository, out, slo, profile, phases)
    drift_loop = drift_loop_phase(out / "drift", phases)
    serving["drift_loop"] = drift_loop
    drift_failed = "error" in drift_loop
    serving["smb"] = smb = smb_phase(repository, out / "smb", phases)
    smb_failed = not smb.get("passed", True)
    serving["cluster"] = deployed = cluster_phase(out / "cluster", phases)
    failed = drift_failed or smb_failed or not deployed.get("passed")
    exit_code = 0 if policy_code == 0 and load_code == 0 and not failed else 1
    summary = {
        "exit_code": exit_code,
        "phases": [vars(p) for p in phases],
        "policy": findings.get("summary", {"error": f"exit {policy_code}"}),
        "serving": serving,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n", encoding="utf-8")
    readme = write_report(out, phases, plans, serving)
    click.echo("")
    for p in phases:
        click.echo(f"  {p.result:5s} {p.seconds:6.1f} s  {p.title}")
    click.secho(f"demo report: {readme.resolve()}", fg="green" if exit_code == 0 else "red")
    return exit_code


@click.command()
@click.option("--models", "repository", type=click.Path(path_type=Path), default=BUNDLED_MODELS,
              show_default=True, help="model repository to serve")  # fmt: skip
@click.option("--out", type=click.Path(path_type=Path), default=Path("reports/demo"), show_default=True,
              help="folder for the demo's report and server logs")  # fmt: skip
@click.option("--slo", type=click.Path(dir_okay=False, path_type=Path), default=BUNDLED_SLO,
              show_default=True, help="SLO gates of the load test")  # fmt: skip
@click.option("--profile", default="smoke", show_default=True, help="load profile (loadtests/profiles.yaml)")
def demo(repository: Path, out: Path, slo: Path, profile: str) -> None:
    """Run the platform offline: plan, policy gate, serve, load-test with SLO gates, one report.

    Exits 1 if the policy gate or an SLO gate fails, the drift loop does not complete, the SMB phase fails,
    or the platform layer does not deploy and destroy cleanly with the real engine.
    """
    if not (repository / "tabular-classifier").is_dir():
        raise click.ClickException(f"no models in {repository}: run `make models` first")
    out.mkdir(parents=True, exist_ok=True)
    with terminate_as_interrupt():
        exit_code = run_phases(repository, out, slo, profile)
    sys.exit(exit_code)
