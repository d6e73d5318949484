"""Runs a load test: checks the files, starts locust (alone, or a master and N workers on loopback),
waits for the bounded run, stops every process it started, and writes the report.

Exit codes: 0 every gate passed, 1 a gate failed, 2 a configuration error, 3 the run itself failed.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from urllib.parse import urlparse

from loadtests import report
from loadtests.auth import auth_headers, read_token
from loadtests.config import ConfigError
from loadtests.drift import BUNDLED_REPOSITORY, load_sampler
from loadtests.profiles import (
    BUNDLED_PROFILES,
    Profile,
    drift_models,
    load_profile,
    loaded_models,
    restrict,
)
from loadtests.shapes import total_duration
from loadtests.slo import BUNDLED_SLO, format_table, load_slo, require_loaded

LOCUSTFILE = Path(__file__).with_name("locustfile.py")
LOCUST_CONF = Path(__file__).with_name("locust.conf")
STARTUP_GRACE_S = 60.0
"""Beyond the profile's own length: starting, connecting workers, stopping users, writing files."""
EXIT_PASS, EXIT_GATE, EXIT_CONFIG, EXIT_RUN = 0, 1, 2, 3

Echo = Callable[[str], None]


@dataclass(frozen=True, kw_only=True)
class LoadTest:
    """One run's settings."""

    target: str
    """Base URL of the V2 REST endpoint."""
    grpc_target: str | None = None
    """host:port of the V2 gRPC endpoint; without it only REST users run."""
    profile: str = "smoke"
    profile_file: Path = BUNDLED_PROFILES
    slo_file: Path = BUNDLED_SLO
    out: Path = Path("reports/loadtest")
    workers: int = 0
    """0 runs locust as one process; N runs a master and N workers."""
    models: tuple[str, ...] = ()
    """Load only these of the profile's models (keeping their weights); empty loads all of them."""
    bearer_token_env: str | None = None
    """The environment variable holding a bearer token for every request; its value is never stored here,
    passed in argv or written to the report: the locust processes inherit it with the environment."""
    model_repository: Path = BUNDLED_REPOSITORY
    """Where a drift profile reads the served version's training profile (profile.json)."""


def check(test: LoadTest) -> tuple[Profile, str | None]:
    """The profile (restricted to `models`) and the bearer token, after every file and setting was
    checked; `ConfigError` names what is wrong."""
    url = urlparse(test.target)
    if url.scheme not in {"http", "https"} or not url.netloc:
        raise ConfigError(f"--target: expected http(s)://host:port, got {test.target!r}")
    if test.grpc_target is not None and ":" not in test.grpc_target:
        raise ConfigError(f"--grpc-target: expected host:port, got {test.grpc_target!r}")
    if test.workers < 0:
        raise ConfigError(f"--workers: expected 0 or more, got {test.workers}")
    profile = restrict(load_profile(test.profile, test.profile_file), test.models)
    require_loaded(load_slo(test.slo_file), loaded_models(profile), str(test.slo_file))
    for model in drift_models(profile):
        # Read once here so a missing profile or an unknown feature is a configuration error up front.
        assert profile.drift is not None, "drift_models names models only for a drift profile"
        sampler = load_sampler(test.model_repository, model, profile.drift.version)
        sampler.shift_amounts(profile.drift.features, profile.drift.shift_sd)
    token = read_token(test.bearer_token_env, os.environ) if test.bearer_token_env is not None else None
    return profile, token


def user_classes(profile: Profile, grpc_target: str | None) -> list[str]:
    """The locust user classes this run starts (gRPC only with a target and a weight)."""
    weights = profile.traffic.protocols
    classes = ["RestUser"] if weights.get("rest", 0) > 0 else []
    if grpc_target and weights.get("grpc", 0) > 0:
        classes.append("GrpcUser")
    if not classes:
        raise ConfigError(f"profile {profile.name}: traffic.protocols: no weight on a protocol it can use")
    return classes


def commands(test: LoadTest, profile: Profile, master_port: int) -> tuple[list[str], list[list[str]]]:
    """The locust command lines: the master (or the only process) and each worker."""
    base = [sys.executable, "-m", "locust", "--config", str(LOCUST_CONF), "-f", str(LOCUSTFILE)]
    shared = ["--host", test.target, "--load-profile", test.profile,
              "--load-profiles", str(test.profile_file), "--slo-file", str(test.slo_file)]  # fmt: skip
    if test.grpc_target:
        shared += ["--grpc-target", test.grpc_target]
    if test.models:
        shared += ["--load-models", ",".join(test.models)]
    if test.bearer_token_env is not None:
        shared += ["--bearer-token-env", test.bearer_token_env]  # the variable's name, never its value
    if profile.drift is not None:
        shared += ["--model-repository", str(test.model_repository.resolve())]
    classes = user_classes(profile, test.grpc_target)
    out = test.out.resolve()
    master = [*base, *shared, "--report-dir", str(out), "--csv", str(out / "locust"),
              "--html", str(out / "locust.html"), "--csv-full-history"]  # fmt: skip
    if not test.workers:
        return [*master, *classes], []
    master += ["--master", "--master-bind-host", "127.0.0.1", "--master-bind-port", str(master_port),
               "--expect-workers", str(test.workers), "--expect-workers-max-wait", "30"]  # fmt: skip
    worker = [*base, *shared, "--worker", "--master-host", "127.0.0.1", "--master-port", str(master_port),
              *classes]  # fmt: skip
    return [*master, *classes], [worker] * test.workers


def unreachable(target: str, models: list[str], headers: dict[str, str]) -> str | None:
    """None if every model answers its readiness endpoint with 200, else why not.

    Per model rather than the server's `/v2/health/ready`: a stack's gateway routes only the models' paths.
    """
    for model in models:
        url = f"{target.rstrip('/')}/v2/models/{model}/ready"
        request = urllib.request.Request(url, headers=headers)  # noqa: S310 - http(s) checked by check()
        try:
            with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - as above
                if response.status != 200:
                    return f"{url} answered {response.status}"
        except urllib.error.HTTPError as error:
            refused = error.code in (401, 403)
            return f"{url} answered {error.code} ({'refused: check the token' if refused else 'not ready'})"
        except (urllib.error.URLError, OSError) as error:
            return f"{url} failed ({getattr(error, 'reason', error)})"
    return None


def free_port() -> int:
    """A TCP port free on loopback now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM (a CI job cancelled) unwinds like Ctrl-C, so the processes started are stopped too."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_locust(test: LoadTest, profile: Profile, echo: Echo) -> int:
    """Start the processes, show progress, and return the master's exit code; everything is stopped."""
    with terminate_as_interrupt():
        return _run_locust(test, profile, echo)


def _run_locust(test: LoadTest, profile: Profile, echo: Echo) -> int:
    master_cmd, worker_cmds = commands(test, profile, free_port())
    test.out.mkdir(parents=True, exist_ok=True)
    planned = total_duration(profile.stages)
    deadline = time.monotonic() + planned + STARTUP_GRACE_S
    processes: list[subprocess.Popen[bytes]] = []
    try:
        with (test.out / "locust.log").open("wb") as log:
            processes.append(subprocess.Popen(master_cmd, stdout=log, stderr=subprocess.STDOUT))
            for i, cmd in enumerate(worker_cmds):
                with (test.out / f"worker-{i + 1}.log").open("wb") as worker_log:
                    processes.append(subprocess.Popen(cmd, stdout=worker_log, stderr=subprocess.STDOUT))
            started, shown = time.monotonic(), 0.0
            while processes[0].poll() is None:
                if any(p.poll() not in (None, 0) for p in processes[1:]):
                    echo(f"a locust worker failed; see {test.out}/worker-*.log")
                    return EXIT_RUN
                if time.monotonic() > deadline:
                    echo(f"load test over its time limit ({time.monotonic() - started:.0f} s); stopping it")
                    return EXIT_RUN
                elapsed = time.monotonic() - started
                if elapsed - shown >= 5:
                    shown = elapsed
                    echo(f"    load test {profile.name}: {elapsed:.0f} s of about {planned:.0f} s")
                time.sleep(0.2)
            return processes[0].returncode
    finally:
        for process in reversed(processes):
            _stop(process)


def run(test: LoadTest, echo: Echo) -> int:
    """Check, run, gate and report; the exit code (see the module docstring). Prints the gate table."""
    try:
        profile, token = check(test)
    except ConfigError as error:
        echo(f"configuration error: {error}")
        return EXIT_CONFIG
    problem = unreachable(test.target, loaded_models(profile), auth_headers(token))
    if problem:
        echo(f"cannot reach {test.target}: {problem}; start the server or pass --target")
        return EXIT_RUN
    stale = test.out / "gates.json"
    stale.unlink(missing_ok=True)
    code = run_locust(test, profile, echo)
    if code == EXIT_CONFIG or not stale.exists():
        echo(f"the load test did not finish (locust exit {code}); see {test.out / 'locust.log'}")
        return code if code == EXIT_CONFIG else EXIT_RUN
    info = report.RunInfo(
        profile=profile.name,
        description=profile.description,
        target=test.target,
        grpc_target=test.grpc_target,
        workers=test.workers,
        exit_code=code,
        models=tuple(loaded_models(profile)),
        bearer_token_env=test.bearer_token_env,
    )
    summary = report.write(test.out, info)
    echo(gate_table(stale))
    echo(f"    load test report: {summary}")
    return code


def gate_table(gates_file: Path) -> str:
    """The gate table from a run's `gates.json`, as the master printed it."""
    document = json.loads(gates_file.read_text(encoding="utf-8"))
    rows = [(g["gate"], g["measured"], g["threshold"], g["result"]) for g in document["gates"]]
    return format_table(rows, indent="    ")
