"""The server as a real process: drain on SIGTERM, load failures, the bounded queue, workers."""

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from tests.serving_image.conftest import (
    doubler_graph,
    save_model,
    slow_graph,
    start_server,
    wait_until,
    write_config,
)

SLOW_WIDTH = 1024


@pytest.fixture(scope="module")
def slow_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("slow-repository")
    save_model(slow_graph(SLOW_WIDTH), root / "slow" / "1" / "model.onnx")
    write_config(root / "slow", "max_batch_size: 1024\nmax_queue_delay_ms: 0\n")
    save_model(slow_graph(SLOW_WIDTH), root / "single" / "1" / "model.onnx")
    write_config(root / "single", "max_batch_size: 1024\nmax_queue_delay_ms: 0\nmax_queue_size: 1\n")
    return root


def slow_body(rows: int) -> bytes:
    data = [0.001] * (rows * SLOW_WIDTH)
    return json.dumps(
        {"inputs": [{"name": "x", "shape": [rows, SLOW_WIDTH], "datatype": "FP32", "data": data}]}
    ).encode()


def test_sigterm_drains_in_flight_requests_and_exits_zero(slow_repository: Path, tmp_path: Path) -> None:
    server = start_server(
        slow_repository, tmp_path, "--grace-period-seconds", "60", env={"SERVING_DRAIN_DELAY_SECONDS": "5"}
    )
    body = slow_body(768)
    results: dict[str, requests.Response] = {}

    def in_flight() -> None:
        results["slow"] = requests.post(f"{server.base}/v2/models/slow/infer", data=body, timeout=120)

    caller = threading.Thread(target=in_flight)
    caller.start()
    wait_until(
        lambda: (
            'serving_inflight_requests{protocol="rest"} 1.0'
            in requests.get(server.base + "/metrics", timeout=5).text
        ),
        30,
        "the slow request never showed as in flight",
    )
    server.process.send_signal(15)
    server.stopped = True
    wait_until(
        lambda: requests.get(server.base + "/v2/health/ready", timeout=5).status_code != 200,
        10,
        "readiness did not turn false after SIGTERM",
    )
    # During the drain delay a request that still reaches this replica is served, and told to close.
    late = requests.post(f"{server.base}/v2/models/slow/infer", data=slow_body(1), timeout=60)
    assert late.status_code == 200, late.text
    assert late.headers.get("connection") == "close", late.headers
    caller.join(120)
    assert results["slow"].status_code == 200, "the in-flight request must finish during the drain"
    assert results["slow"].json()["outputs"][0]["shape"] == [768, 1]
    assert server.process.wait(60) == 0, server.stderr()
    assert '"event":"server_stopped"' in server.stderr()


def test_full_queue_is_refused_with_429_and_resource_exhausted(slow_repository: Path, tmp_path: Path) -> None:
    server = start_server(slow_repository, tmp_path)
    body = slow_body(192)
    try:
        with ThreadPoolExecutor(8) as pool:
            statuses = list(
                pool.map(
                    lambda _: requests.post(f"{server.base}/v2/models/single/infer", data=body, timeout=60),
                    range(8),
                )
            )
        codes = sorted(r.status_code for r in statuses)
        assert set(codes) == {200, 429}, f"expected some served and some refused, got {codes}"
        refused = next(r for r in statuses if r.status_code == 429)
        assert "queue is full" in refused.json()["error"]

        client = grpcclient.InferenceServerClient(server.grpc_url)
        data = np.full((192, SLOW_WIDTH), 0.001, np.float32)

        def grpc_call(_: int) -> str:
            infer_input = grpcclient.InferInput("x", list(data.shape), "FP32")
            infer_input.set_data_from_numpy(data)
            try:
                client.infer("single", [infer_input])
            except InferenceServerException as error:
                return str(error.status())
            return "OK"

        with ThreadPoolExecutor(8) as pool:
            grpc_codes = set(pool.map(grpc_call, range(8)))
        assert "StatusCode.RESOURCE_EXHAUSTED" in grpc_codes, grpc_codes
    finally:
        assert server.stop() == 0


def test_failed_model_is_reported_and_the_others_serve(tmp_path: Path) -> None:
    repository = tmp_path / "repository"
    save_model(doubler_graph(), repository / "doubler" / "1" / "model.onnx")
    (repository / "broken" / "1").mkdir(parents=True)
    (repository / "broken" / "1" / "model.onnx").write_bytes(b"\x00garbage")
    server = start_server(repository, tmp_path / "logs", wait_ready=False)
    try:
        ready = requests.get(server.base + "/v2/health/ready", timeout=5)
        assert ready.status_code == 400, "a failed model makes the server not ready"
        reasons = ready.json()["not_ready"]
        assert reasons[0]["model"] == "broken" and reasons[0]["path"].endswith("broken/1/model.onnx"), reasons
        assert requests.get(server.base + "/v2/models/broken/ready", timeout=5).status_code == 400
        served = requests.post(
            f"{server.base}/v2/models/doubler/infer",
            json={"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 1, 1, 1]}]},
            timeout=5,
        )
        assert served.status_code == 200, "the other models still serve"
        broken = requests.post(
            f"{server.base}/v2/models/broken/infer",
            json={"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 1, 1, 1]}]},
            timeout=5,
        )
        assert broken.status_code == 400 and "not ready" in broken.json()["error"], broken.text
        assert '"event":"model_load_failed"' in server.stderr() and "broken/1/model.onnx" in server.stderr()
    finally:
        assert server.stop() == 0


def test_two_workers_share_the_ports_and_merge_metrics(tmp_path: Path) -> None:
    repository = tmp_path / "repository"
    save_model(doubler_graph(), repository / "doubler" / "1" / "model.onnx")
    server = start_server(repository, tmp_path / "logs", "--workers", "2")
    try:
        # The first worker up makes the server ready; wait for the second before counting.
        wait_until(
            lambda: server.stderr().count('"event":"server_started"') >= 2,
            60,
            lambda: f"two worker processes must start: {server.stderr()}",
        )
        body: dict[str, Any] = {
            "inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]
        }
        with requests.Session() as session:
            for _ in range(40):
                assert session.post(f"{server.base}/v2/models/doubler/infer", json=body, timeout=5).ok
        for _ in range(40):
            assert requests.post(f"{server.base}/v2/models/doubler/infer", json=body, timeout=5).ok
        pids = {
            json.loads(line)["pid"] for line in server.stderr().splitlines() if '"server_started"' in line
        }
        assert len(pids) == 2, f"two worker processes must have started: {server.stderr()}"
        metrics = requests.get(server.base + "/metrics", timeout=5).text
        line = next(
            (
                m
                for m in metrics.splitlines()
                if m.startswith("serving_requests_total{") and 'model="doubler"' in m
            ),
            "",
        )
        assert line.endswith(" 80.0"), f"merged count of both workers must be 80: {line!r}"
    finally:
        assert server.stop() == 0, server.stderr()
