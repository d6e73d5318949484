"""Helpers for the end-to-end test under pod churn: servers that can be restarted on their own port, and
bounded round-robin load that records every answer (which server process, which version, when), so the
test can count exactly what was answered inside any window and what was at risk when a process stopped.
"""

import http.client
import json
import os
import random
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import requests

from tests.serving_image.conftest import REPO_ROOT, ServerProcess


@dataclass(frozen=True)
class Answer:
    """One answered inference request."""

    process: str
    """Which server process answered it (`a`, `a2` after the restart, `b`)."""
    version: str
    status: int
    at: float
    """Wall time the answer was read."""


def start(repository: Path, log_dir: Path, ports: tuple[int, int], pid_file: Path) -> ServerProcess:
    """`python -m serving_image` on the given loopback ports (a restart keeps its port, as a pod keeps its
    address behind a Service), ready; its pid written to `pid_file`, as a supervisor would."""
    log_dir.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "serving_image", "--model-repository", str(repository),
               "--host", "127.0.0.1", "--http-port", str(ports[0]), "--grpc-port", str(ports[1])]  # fmt: skip
    process = subprocess.Popen(
        command, cwd=REPO_ROOT, stdout=(log_dir / "stdout.log").open("wb"),
        stderr=(log_dir / "stderr.log").open("wb"), env={**os.environ, "SERVING_DRAIN_DELAY_SECONDS": "0"},
    )  # fmt: skip
    server = ServerProcess(process, ports[0], ports[1], log_dir)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"server exited with {process.returncode}: {server.stderr()[-2000:]}")
        try:
            if requests.get(f"{server.base}/v2/health/ready", timeout=1).status_code == 200:
                pid_file.write_text(f"{process.pid}\n")
                return server
        except requests.ConnectionError:
            pass
        time.sleep(0.1)
    process.kill()
    raise AssertionError(f"server did not get ready in 60 s: {server.stderr()[-2000:]}")


@dataclass
class Endpoints:
    """What the load balancer knows: each endpoint's port and the name of the process behind it now.
    The churn edits it while the load runs (a removed endpoint leaves the rotation)."""

    live: dict[int, str]
    lock: threading.Lock = field(default_factory=threading.Lock)

    def rotation(self) -> list[tuple[int, str]]:
        with self.lock:
            return sorted(self.live.items())

    def set(self, port: int, process: str | None) -> None:
        with self.lock:
            if process is None:
                self.live.pop(port, None)
            else:
                self.live[port] = process


def round_robin(model: str, endpoints: Endpoints, until: float, stop: threading.Event,
                quiet: Callable[[float], bool], answers: list[Answer], sent: list[int]) -> None:  # fmt: skip
    """Send requests to each endpoint in turn until `stop` is set or the monotonic time `until` (a hard
    bound), none while `quiet(wall time)` holds. A refused connection (a process restarting) is counted
    as sent, not answered."""
    connections: dict[int, http.client.HTTPConnection] = {}
    rng = random.Random(7)
    data = [round(rng.uniform(-1.0, 1.0), 4) for _ in range(30)]
    body = json.dumps({"inputs": [{"name": "features", "shape": [1, 30], "datatype": "FP32", "data": data}]})
    headers = {"content-type": "application/json"}
    while time.monotonic() < until and not stop.is_set():
        if quiet(time.time()):
            time.sleep(0.05)
            continue
        for port, process in endpoints.rotation():
            conn = connections.setdefault(port, http.client.HTTPConnection("127.0.0.1", port, timeout=5))
            sent[0] += 1
            try:
                conn.request("POST", f"/v2/models/{model}/infer", body, headers)
                response = conn.getresponse()
                response.read()
            except (OSError, http.client.HTTPException):
                conn.close()
                connections.pop(port)
                time.sleep(0.02)  # the process behind it is restarting
                continue
            version = response.getheader("x-model-version") or "?"
            answers.append(Answer(process, version, response.status, time.time()))
    for conn in connections.values():
        conn.close()
