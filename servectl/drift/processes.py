"""The drift loop's helpers around processes: the receiver as a process, its JSON-lines log, and the
monitoring stack's Alertmanager config with its waits scaled like the rules."""

import http.client
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from servectl.drift.scaled_rules import scaled
from servectl.experiments.local_prometheus import free_port
from stacks.manifests import monitoring

__all__ = ["alertmanager_config", "free_port", "json_lines", "receiver", "server_pid_args"]

READY_TIMEOUT_S = 30.0
_WAITS = ("group_wait", "group_interval", "repeat_interval")


def alertmanager_config(webhook: str, factor: float) -> dict[str, Any]:
    """The monitoring stack's Alertmanager config with the retrain route to `webhook`, its people receiver a
    closed loopback port, and every route's waits divided by `factor` (the stack's own values, scaled)."""
    config = monitoring.alertmanager_config(
        monitoring.Receivers(webhook_urls=("http://127.0.0.1:9/",)), webhook
    )
    root = config["route"]
    # Only the values each route sets: a route without one inherits its parent's, already scaled.
    for route in (root, *root["routes"]):
        for key in _WAITS:
            if key in route:
                route[key] = scaled(str(route[key]), factor)
    return config


def json_lines(path: Path) -> list[dict[str, Any]]:
    """The complete JSON lines of a log another process appends to (a last partial line is left out)."""
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    return [json.loads(line) for line in text[: text.rfind("\n") + 1].splitlines() if line.startswith("{")]


def server_pid_args(pid: int) -> list[str]:
    """`--server-pid PID` for `servectl retrain`, so the new version's canary reaches the running server by
    SIGHUP."""
    return ["--server-pid", str(pid)]


@contextmanager
def receiver(config: Path, port: int, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`servectl retrain-receiver` as a process on loopback, once its /healthz answers; SIGTERM at the end."""
    command = [sys.executable, "-m", "servectl", "retrain-receiver", "--listen", f"127.0.0.1:{port}",
               "--config", str(config)]  # fmt: skip
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=os.environ.copy())
        try:
            deadline = time.monotonic() + READY_TIMEOUT_S
            while not _healthy(port, process):
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"the retrain receiver was not healthy within {READY_TIMEOUT_S} s; see {log}"
                    )
                time.sleep(0.1)
            yield process
        finally:
            process.terminate()
            try:
                process.wait(timeout=READY_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _healthy(port: int, process: subprocess.Popen[bytes]) -> bool:
    if process.poll() is not None:
        raise RuntimeError(f"the retrain receiver exited with {process.returncode}")
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        conn.request("GET", "/healthz")
        return conn.getresponse().status == 200
    except OSError:
        return False
