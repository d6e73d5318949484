"""SIGHUP loads the version directories that appeared since start, then re-reads config.yaml.

Real server processes: a new version serves once warm, and the old one serves throughout, answering
requests while the new one loads; a broken new version is not ready, its reason is logged, and a config
that routes to it is refused; with --workers every worker loads it.
"""

import os
import shutil
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import requests
from onnx import TensorProto, helper, numpy_helper

from tests.serving_image.conftest import (
    ServerProcess,
    logged_events,
    save_model,
    slow_graph,
    start_server,
    wait_until,
    write_config,
)

MODEL = "scaler"
PINNED = 'max_batch_size: 16\nvariants:\n  weights: {"1": 100}\n'
CANARY = """\
max_batch_size: 16
variants:
  weights: {"1": 0, "2": 100}
  routes:
    - {header: x-segment, value: legacy, version: "1"}
"""
HEADER_ROUTE = """\
max_batch_size: 16
variants:
  weights: {"1": 100, "2": 0}
  routes:
    - {header: x-canary, value: "yes", version: "2"}
"""
NOTHING_TO_2 = 'max_batch_size: 16\nvariants:\n  weights: {"1": 100, "2": 0}\n'
ROW = [1.0, 2.0, 3.0, 4.0]
LOOP_LIMIT = 20_000
"""The request loop's bound: it stops when told, or after this many requests."""


def scaled_graph(factor: float, width: int = 4) -> onnx.GraphProto:
    """y = factor * x: versions that answer differently, so the one that served is visible in the output."""
    scale = numpy_helper.from_array(np.array(factor, dtype=np.float32), "scale")
    return helper.make_graph(
        [helper.make_node("Mul", ["x", "scale"], ["y"])],
        "scaler",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", width])],
        [scale],
    )


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    """Version 1 of a model that doubles its input, with all traffic pinned to it."""
    root = tmp_path / "repository"
    save_model(scaled_graph(2.0), root / MODEL / "1" / "model.onnx")
    write_config(root / MODEL, PINNED)
    return root


def publish(root: Path, version: str, write: Callable[[Path], object]) -> Path:
    """Write a version beside the model and rename it into place whole, as servectl's publish_local does."""
    staging = root / ".staging" / version
    staging.mkdir(parents=True)
    write(staging / "model.onnx")
    target = root / MODEL / version
    os.rename(staging, target)
    return target


def body(row: list[float]) -> dict[str, Any]:
    return {"inputs": [{"name": "x", "shape": [1, len(row)], "datatype": "FP32", "data": row}]}


def infer(
    base: str, path: str = "", row: list[float] = ROW, headers: dict[str, str] | None = None
) -> requests.Response:
    return requests.post(f"{base}/v2/models/{MODEL}{path}/infer", json=body(row), headers=headers, timeout=10)


def reloads(server: ServerProcess, event: str) -> list[dict[str, Any]]:
    return logged_events(server.stderr(), event)


def hang_up(server: ServerProcess, count: int = 1) -> dict[str, Any]:
    """SIGHUP, then the reload's outcome once it is logged (``count``: the reloads logged by then)."""
    server.process.send_signal(signal.SIGHUP)
    done = ("config_reloaded", "config_reload_failed")
    wait_until(lambda: sum(len(reloads(server, e)) for e in done) >= count, 60, server.stderr)
    return max((line for e in done for line in reloads(server, e)), key=lambda line: str(line["time"]))


def test_a_new_version_serves_after_sighup_with_the_weights_that_name_it(
    repository: Path, tmp_path: Path
) -> None:
    server = start_server(repository, tmp_path / "logs")
    try:
        assert infer(server.base, "/versions/2").status_code == 404, "no version 2 before it is published"
        publish(repository, "2", lambda path: save_model(scaled_graph(3.0), path))
        write_config(repository / MODEL, CANARY)
        outcome = hang_up(server)
        assert outcome["event"] == "config_reloaded", server.stderr()
        loaded = [e for e in reloads(server, "model_warmed_up") if e.get("loaded") == "on SIGHUP"]
        assert [(e["model"], e["version"]) for e in loaded] == [(MODEL, "2")], loaded
        metadata = requests.get(f"{server.base}/v2/models/{MODEL}", timeout=5).json()
        assert metadata["versions"] == ["1", "2"], metadata
        assert requests.get(f"{server.base}/v2/models/{MODEL}/versions/2/ready", timeout=5).status_code == 200
        answers = [infer(server.base).json() for _ in range(10)]
        assert {a["model_version"] for a in answers} == {"2"}, "the weights send everything to version 2"
        assert answers[0]["outputs"][0]["data"] == [3.0, 6.0, 9.0, 12.0], answers[0]
        assert infer(server.base, "/versions/2").json()["outputs"][0]["data"] == [3.0, 6.0, 9.0, 12.0]
        legacy = infer(server.base, headers={"x-segment": "legacy"}).json()
        assert (legacy["model_version"], legacy["outputs"][0]["data"]) == ("1", [2.0, 4.0, 6.0, 8.0]), legacy
        metrics = requests.get(f"{server.base}/metrics", timeout=5).text
        assert f'serving_model_ready{{model="{MODEL}",version="2"}} 1.0' in metrics, metrics
        # Version 2 is loaded: a second SIGHUP loads nothing again.
        assert hang_up(server, count=2)["event"] == "config_reloaded", server.stderr()
        assert len(reloads(server, "versions_loading")) == 1, server.stderr()
    finally:
        assert server.stop() == 0, server.stderr()


@dataclass
class _Request:
    started: float
    finished: float
    status: int
    version: str


def _loop(base: str, stop: threading.Event, done: list[_Request]) -> None:
    """Default-routed requests, one after another, until ``stop`` or the bound."""
    with requests.Session() as session:
        for _ in range(LOOP_LIMIT):
            if stop.is_set():
                return
            started = time.time()
            answer = session.post(f"{base}/v2/models/{MODEL}/infer", json=body(ROW), timeout=10)
            version = answer.json().get("model_version", "") if answer.status_code == 200 else answer.text
            done.append(_Request(started, time.time(), answer.status_code, version))


def _epoch(line: dict[str, Any]) -> float:
    return datetime.fromisoformat(str(line["time"])).timestamp()


def test_the_old_version_serves_throughout_a_slow_load(repository: Path, tmp_path: Path) -> None:
    server = start_server(repository, tmp_path / "logs")
    done: list[_Request] = []
    stop = threading.Event()
    loop = threading.Thread(target=_loop, args=(server.base, stop, done))
    try:
        # A version whose warm-up runs a chain of large matrix products at every batch size up to 16.
        publish(repository, "2", lambda path: save_model(slow_graph(), path))
        write_config(repository / MODEL, HEADER_ROUTE)
        loop.start()
        wait_until(lambda: len(done) >= 20, 30, "the request loop did not get going")
        outcome = hang_up(server)
        reloaded = _epoch(outcome)
        wait_until(lambda: done[-1].started > reloaded, 30, "no request was sent after the reload")
        stop.set()
        loop.join(30)
        assert outcome["event"] == "config_reloaded", server.stderr()
        failed = [r for r in done if r.status != 200 or r.version != "1"]
        assert not failed, f"{len(failed)} of {len(done)} requests failed or left version 1: {failed[:3]}"
        began = _epoch(reloads(server, "versions_loading")[0])
        warm = _epoch(next(e for e in reloads(server, "model_warmed_up") if e.get("loaded") == "on SIGHUP"))
        during = [r for r in done if r.started > began + 0.001 and r.finished < warm]
        # Were the load on the event loop, no request sent after it began could be answered before it ended.
        assert len(during) >= 3, (
            f"{len(during)} requests answered during the {warm - began:.3f} s load; {len(done)} in all"
        )
        routed = infer(server.base, row=[0.0] * 1024, headers={"x-canary": "yes"})
        assert routed.status_code == 200 and routed.json()["model_version"] == "2", routed.text
    finally:
        stop.set()
        if loop.is_alive():
            loop.join(30)
        assert server.stop() == 0, server.stderr()


def test_a_broken_new_version_is_not_ready_and_a_config_routing_to_it_is_refused(
    repository: Path, tmp_path: Path
) -> None:
    server = start_server(repository, tmp_path / "logs")
    try:
        publish(repository, "2", lambda path: path.write_bytes(b"not an ONNX model"))
        write_config(repository / MODEL, CANARY)
        outcome = hang_up(server)
        assert outcome["event"] == "config_reload_failed", server.stderr()
        assert "routes to versions that did not load" in outcome["problems"][0], outcome
        failed = [e for e in reloads(server, "model_load_failed") if e["version"] == "2"]
        assert len(failed) == 1 and failed[0]["reason"], server.stderr()
        assert str(repository / MODEL / "2" / "model.onnx") in failed[0]["reason"], failed
        version_ready = requests.get(f"{server.base}/v2/models/{MODEL}/versions/2/ready", timeout=5)
        assert version_ready.status_code == 400 and not version_ready.json()["ready"], version_ready.text
        health = requests.get(f"{server.base}/v2/health/ready", timeout=5)
        assert health.status_code == 200, "the old config stands, so every routed version is ready"
        assert [entry["version"] for entry in health.json()["not_ready"]] == ["2"], health.text
        assert {infer(server.base).json()["model_version"] for _ in range(10)} == {"1"}, "old config kept"
        asked = infer(server.base, "/versions/2")
        assert asked.status_code == 400 and "is not ready" in asked.json()["error"], asked.text
        # A config that sends it nothing is applied; the broken version is tried again and still fails.
        write_config(repository / MODEL, NOTHING_TO_2)
        assert hang_up(server, count=2)["event"] == "config_reloaded", server.stderr()
        assert len([e for e in reloads(server, "model_load_failed") if e["version"] == "2"]) == 2
        assert infer(server.base).json()["model_version"] == "1"
    finally:
        assert server.stop() == 0, server.stderr()


def test_every_worker_loads_the_new_version(repository: Path, tmp_path: Path) -> None:
    server = start_server(repository, tmp_path / "logs", "--workers", "2")
    try:
        wait_until(lambda: len({e["pid"] for e in reloads(server, "server_started")}) == 2, 30, server.stderr)
        started = {e["pid"] for e in reloads(server, "server_started")}
        publish(repository, "2", lambda path: save_model(scaled_graph(3.0), path))
        write_config(repository / MODEL, CANARY)
        server.process.send_signal(signal.SIGHUP)
        wait_until(
            lambda: {e["pid"] for e in reloads(server, "config_reloaded")} == started, 60, server.stderr
        )
        warmed = {e["pid"] for e in reloads(server, "model_warmed_up") if e.get("loaded") == "on SIGHUP"}
        assert warmed == started, server.stderr()
        # A new connection per request: the kernel spreads them over both workers' listeners.
        answers = [infer(server.base).json() for _ in range(40)]
        assert {a["model_version"] for a in answers} == {"2"}, answers[:3]
    finally:
        assert server.stop() == 0, server.stderr()


def test_a_removed_version_directory_is_logged_and_still_served(repository: Path, tmp_path: Path) -> None:
    server = start_server(repository, tmp_path / "logs")
    try:
        shutil.rmtree(repository / MODEL / "1")
        assert hang_up(server)["event"] == "config_reloaded", server.stderr()
        removed = reloads(server, "version_directory_removed")
        assert [(e["model"], e["version"]) for e in removed] == [(MODEL, "1")], server.stderr()
        answer = infer(server.base, "/versions/1")
        assert answer.status_code == 200 and answer.json()["outputs"][0]["data"] == [2.0, 4.0, 6.0, 8.0]
    finally:
        assert server.stop() == 0, server.stderr()
