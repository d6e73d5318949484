"""SIGHUP reload safety: a missing or empty config.yaml keeps the old config; an early SIGHUP is queued."""

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.serving_image.conftest import (
    REPO_ROOT,
    doubler_graph,
    free_port,
    logged_events,
    save_model,
    slow_graph,
    start_server,
    wait_until,
    write_config,
)

PINNED = "variants:\n  weights: {1: 100, 2: 0}\n"


@pytest.fixture
def two_versions(tmp_path: Path) -> Path:
    root = tmp_path / "repository"
    for version in ("1", "2"):
        save_model(doubler_graph(), root / "doubler" / version / "model.onnx")
    write_config(root / "doubler", PINNED)
    return root


def served_versions(base: str, count: int = 20) -> set[str]:
    body: dict[str, Any] = {
        "inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]
    }
    return {
        requests.post(f"{base}/v2/models/doubler/infer", json=body, timeout=5).json()["model_version"]
        for _ in range(count)
    }


def sighup_masks(pid: int) -> set[str]:
    """Which of SigIgn and SigCgt hold SIGHUP (bit 0) for the process, from /proc/<pid>/status."""
    return {
        key
        for key, _, value in (
            line.partition(":\t") for line in Path(f"/proc/{pid}/status").read_text().splitlines()
        )
        if key in ("SigIgn", "SigCgt") and int(value, 16) & 1
    }


def wait_for(server_log: Callable[[], str], text: str, count: int, seconds: float = 10) -> None:
    wait_until(lambda: server_log().count(text) >= count, seconds, f"{text} did not appear {count} times")


def pids(server_log: str, event: str) -> set[int]:
    """The processes that logged ``event``."""
    return {line["pid"] for line in logged_events(server_log, event)}


@pytest.mark.parametrize(
    ("break_config", "reason"),
    [
        (lambda path: path.write_text("", encoding="utf-8"), "empty; keeping the current config"),
        (lambda path: path.write_text("# emptied by an editor\n\n", encoding="utf-8"), "empty"),
        (lambda path: path.unlink(), "missing; keeping the current config"),
    ],
    ids=["empty", "comments-only", "missing"],
)
def test_a_missing_or_empty_config_on_sighup_keeps_the_old_one(
    two_versions: Path, tmp_path: Path, break_config: Callable[[Path], object], reason: str
) -> None:
    server = start_server(two_versions, tmp_path / "logs")
    try:
        assert served_versions(server.base) == {"1"}, "the config pins all traffic to version 1"
        break_config(two_versions / "doubler" / "config.yaml")
        server.process.send_signal(signal.SIGHUP)
        wait_for(server.stderr, '"event":"config_reload_failed"', 1)
        assert reason in server.stderr(), server.stderr()
        assert served_versions(server.base) == {"1"}, "the defaults would send everything to version 2"
        assert server.process.poll() is None
    finally:
        assert server.stop() == 0, server.stderr()


def test_a_model_that_never_had_a_config_may_still_have_none(tmp_path: Path) -> None:
    root = tmp_path / "repository"
    save_model(doubler_graph(), root / "doubler" / "1" / "model.onnx")
    server = start_server(root, tmp_path / "logs")
    try:
        server.process.send_signal(signal.SIGHUP)
        wait_for(server.stderr, '"event":"config_reloaded"', 1)
        assert "config_reload_failed" not in server.stderr()
    finally:
        assert server.stop() == 0, server.stderr()


@pytest.mark.parametrize("workers", [1, 2])
def test_sighup_during_start_up_is_queued_not_fatal(two_versions: Path, tmp_path: Path, workers: int) -> None:
    # A start-up long enough (about 0.6 s of warm-up here) that SIGHUPs land while the server loads.
    save_model(slow_graph(layers=48), two_versions / "slow" / "1" / "model.onnx")
    http_port, grpc_port = free_port(), free_port()
    stderr_path = tmp_path / "stderr.log"
    command = [
        sys.executable, "-m", "serving_image", "--model-repository", str(two_versions), "--host", "127.0.0.1",
        "--http-port", str(http_port), "--grpc-port", str(grpc_port), "--workers", str(workers),
    ]  # fmt: skip
    with stderr_path.open("wb") as stderr:
        process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=stderr)
    base = f"http://127.0.0.1:{http_port}"
    try:
        # Before the interpreter runs any of the server's code no process can catch a signal; from the
        # moment it does (SIGHUP ignored or caught, before the heavy imports) until ready, SIGHUPs pour in.
        deadline = time.monotonic() + 10
        while not sighup_masks(process.pid):
            assert process.poll() is None and time.monotonic() < deadline, "SIGHUP never ignored or caught"
            time.sleep(0.001)
        deadline = time.monotonic() + 60
        ready, caught = False, 0
        while not ready:
            assert process.poll() is None, (
                f"SIGHUP during start-up killed the server: {stderr_path.read_text()}"
            )
            assert time.monotonic() < deadline, "the server never got ready"
            # With one worker, the server's own handler is in place once SigCgt holds SIGHUP: the
            # signals sent from then on until ready are the ones that must be queued, not dropped.
            caught += workers == 1 and "SigCgt" in sighup_masks(process.pid)
            os.kill(process.pid, signal.SIGHUP)  # from the first instant until it is ready
            time.sleep(0.02)
            with contextlib.suppress(requests.ConnectionError):
                ready = requests.get(f"{base}/v2/health/ready", timeout=1).status_code == 200
        log = stderr_path.read_text
        wait_for(log, '"event":"server_started"', workers)
        # SIGHUPs that came while a worker loaded its models were applied once it served, not dropped
        # (those that came while it still imported were ignored: it read config.yaml after them). Each
        # worker loaded its models under the stream of SIGHUPs, so each applies one, and lives on.
        started = pids(log(), "server_started")
        assert len(started) == workers, log()
        wait_until(
            lambda: pids(log(), "config_reloaded") >= started,
            10,
            lambda: f"{caught} SIGHUPs sent while the server caught them before ready; log:\n{log()}",
        )
        assert process.poll() is None, log()
        assert '"event":"worker_died"' not in log()
        assert served_versions(base) == {"1"}
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0, stderr_path.read_text()
