"""``/metrics`` on a port of its own (``metrics_port``), so it can stay private while the API is public."""

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from serving_image.settings import Settings
from tests.serving_image.certs import Authority
from tests.serving_image.conftest import ServerProcess, free_port, start_server, wait_until
from tests.serving_image.test_metrics import sample

BODY: dict[str, Any] = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}


@pytest.fixture(scope="module")
def metrics_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def split_server(
    tmp_path_factory: pytest.TempPathFactory, test_repository: Path, metrics_port: int
) -> Iterator[ServerProcess]:
    server = start_server(
        test_repository, tmp_path_factory.mktemp("metrics-port-logs"), "--metrics-port", str(metrics_port)
    )
    yield server
    assert server.stop() == 0, server.stderr()


def test_metrics_are_not_on_the_api_port_when_they_have_their_own(split_server: ServerProcess) -> None:
    answer = requests.get(split_server.base + "/metrics", timeout=5)
    assert answer.status_code == 404, answer.text
    assert "error" in answer.json(), "a JSON error body, like every other unknown path"


def test_the_metrics_port_counts_what_the_api_port_served(
    split_server: ServerProcess, metrics_port: int
) -> None:
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    before = sample(
        requests.get(url, timeout=5).text, "serving_requests_total", model="doubler", outcome="success"
    )
    assert (
        requests.post(f"{split_server.base}/v2/models/doubler/infer", json=BODY, timeout=5).status_code == 200
    )
    answer = requests.get(url, timeout=5)
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/plain")
    after = sample(answer.text, "serving_requests_total", model="doubler", outcome="success")
    assert after == before + 1, f"one more success counted: {before} -> {after}"


@pytest.mark.parametrize(
    ("method", "path", "status"), [("GET", "/v2/health/ready", 404), ("POST", "/metrics", 405)]
)
def test_the_metrics_port_serves_nothing_else(metrics_port: int, method: str, path: str, status: int) -> None:
    answer = requests.request(method, f"http://127.0.0.1:{metrics_port}{path}", timeout=5)
    assert answer.status_code == status, answer.text
    assert json.loads(answer.text)["error"], "a JSON error body"


def test_the_server_logs_its_metrics_port(split_server: ServerProcess, metrics_port: int) -> None:
    # The port answers a moment before the line saying so is written: wait for the line, bounded.
    wait_until(lambda: '"server_started"' in split_server.stderr(), 10, "no server_started event")
    started = [line for line in split_server.stderr().splitlines() if '"server_started"' in line]
    assert started and json.loads(started[0])["metrics_port"] == metrics_port, started


def test_with_tls_the_metrics_port_stays_plain_http(tmp_path: Path, test_repository: Path) -> None:
    ca = Authority("metrics test CA")
    cert, key = ca.issue("localhost", server=True).write(tmp_path, "server")
    ca_file = ca.write(tmp_path / "ca.crt")
    port = free_port()

    def probe(server: ServerProcess, path: str) -> requests.Response:
        return requests.get(f"https://{server.http_url}{path}", verify=str(ca_file), timeout=2)

    server = start_server(test_repository, tmp_path / "logs", "--tls-cert", str(cert), "--tls-key", str(key),
                          "--metrics-port", str(port), probe=probe)  # fmt: skip
    try:
        assert requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).status_code == 200
        assert probe(server, "/metrics").status_code == 404, "not on the TLS API port"
    finally:
        assert server.stop() == 0, server.stderr()


def test_the_metrics_port_must_differ_from_the_api_ports() -> None:
    with pytest.raises(ValueError, match="metrics_port must differ"):
        Settings(http_port=9000, grpc_port=9001, metrics_port=9000)


def test_by_default_metrics_stay_on_the_api_port() -> None:
    assert Settings().metrics_port is None
