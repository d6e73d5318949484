"""/metrics on a real server: request outcomes, latency and batch histograms, queue, readiness."""

import json
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
import tritonclient.http as httpclient

from tests.serving_image.conftest import ServerProcess, doubler_graph, save_model, start_server, write_config


def sample(metrics: str, name: str, **labels: str) -> float:
    """The value of one series, 0 when it is absent."""
    for line in metrics.splitlines():
        if not line.startswith(name + "{"):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0]))
        if all(found.get(key) == value for key, value in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_outcomes_are_counted_by_model_version_protocol(server: ServerProcess) -> None:
    before = requests.get(server.base + "/metrics", timeout=5).text
    body: dict[str, Any] = {
        "inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]
    }
    assert requests.post(f"{server.base}/v2/models/doubler/infer", json=body, timeout=5).status_code == 200
    assert requests.post(f"{server.base}/v2/models/doubler/infer", data=b"{", timeout=5).status_code == 400
    assert (
        requests.post(f"{server.base}/v2/models/ghost-{id(body)}/infer", json=body, timeout=5).status_code
        == 404
    )
    after = requests.get(server.base + "/metrics", timeout=5).text

    def delta(**labels: str) -> float:
        return sample(after, "serving_requests_total", **labels) - sample(
            before, "serving_requests_total", **labels
        )

    assert delta(model="doubler", version="1", protocol="rest", outcome="success") == 1
    assert delta(model="doubler", version="1", protocol="rest", outcome="client_error") == 1
    assert delta(model="_unknown", protocol="rest", outcome="not_found") == 1, (
        "unknown names must not become labels"
    )
    assert "ghost" not in after, "label cardinality stays bounded"
    for histogram in ("serving_request_duration_seconds", "serving_queue_duration_seconds",
                      "serving_compute_duration_seconds", "serving_batch_size"):  # fmt: skip
        assert sample(after, f"{histogram}_count", model="doubler", version="1") >= 1, histogram
    assert sample(after, "serving_model_ready", model="tabular-classifier", version="2") == 1
    assert "serving_queue_depth{" in after and "serving_inflight_requests{" in after


@pytest.fixture(scope="module")
def batching_server(tmp_path_factory: pytest.TempPathFactory) -> ServerProcess:
    root = tmp_path_factory.mktemp("batching")
    save_model(doubler_graph(), root / "doubler" / "1" / "model.onnx")
    write_config(root / "doubler", "max_batch_size: 8\nmax_queue_delay_ms: 300\n")
    return start_server(root, tmp_path_factory.mktemp("batching-logs"))


def test_concurrent_requests_are_coalesced_into_one_run(batching_server: ServerProcess) -> None:
    client = httpclient.InferenceServerClient(batching_server.http_url, concurrency=4)
    inputs = []
    for n in range(4):
        tensor = httpclient.InferInput("x", [2, 4], "FP32")
        tensor.set_data_from_numpy(np.full((2, 4), n, np.float32))
        inputs.append(tensor)
    pending = [client.async_infer("doubler", [tensor]) for tensor in inputs]
    results = [p.get_result() for p in pending]
    for n, result in enumerate(results):
        np.testing.assert_array_equal(result.as_numpy("y"), np.full((2, 4), 2 * n, np.float32))
    metrics = requests.get(batching_server.base + "/metrics", timeout=5).text
    assert sample(metrics, "serving_batch_size_count", model="doubler") == 1, "four requests, one run"
    assert sample(metrics, "serving_batch_size_sum", model="doubler") == 8, "the run had all 8 rows"
    assert batching_server.stop() == 0


def test_access_log_has_one_json_line_per_request_and_no_payload(tmp_path: Path) -> None:
    root = tmp_path / "repository"
    save_model(doubler_graph(), root / "doubler" / "1" / "model.onnx")
    # The caller header is believed only because the server is told a trusted proxy sets it.
    server = start_server(root, tmp_path / "logs", env={"SERVING_TRUSTED_PROXY_HEADER": "x-jwt-sub"})
    marker = 424242.5
    body: dict[str, Any] = {
        "inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [marker, 0, 0, 0]}]
    }
    headers = {"x-request-id": "req-1", "x-jwt-sub": "alice@example.com"}
    assert requests.post(f"{server.base}/v2/models/doubler/infer", json=body, headers=headers, timeout=5).ok
    bad: dict[str, Any] = {
        "inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": ["secret-value", 0, 0, 0]}]
    }
    assert requests.post(f"{server.base}/v2/models/doubler/infer", json=bad, timeout=5).status_code == 400
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda _: requests.post(f"{server.base}/v2/models/doubler/infer", json=body, timeout=5),
                      range(8)))  # fmt: skip
    assert server.stop() == 0
    lines = [json.loads(line) for line in server.stdout().splitlines()]
    assert len(lines) == 10, "one line per inference request"
    first = lines[0]
    assert first["request_id"] == "req-1" and first["caller"] == "alice@example.com"
    assert {"time", "request_id", "model", "version", "status", "latency_ms", "caller", "outcome"} <= set(
        first
    )
    assert (first["model"], first["version"], first["status"]) == ("doubler", "1", 200)
    assert lines[1]["status"] == 400 and lines[1]["error"] == "InvalidInput"
    assert "424242" not in server.stdout() and "secret-value" not in server.stdout(), (
        "payload must never be logged"
    )
