"""The drain under load, as a real process: keep-alive clients through SIGTERM see no resets and no 5xx.

The clients play a load balancer's connection pool: they keep sending on their connections
through SIGTERM, and only stop opening new ones once the route to this replica is gone,
which here happens a moment before the drain delay ends (as the delay is sized for).
"""

import http.client
import json
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import requests
import tritonclient.grpc as grpcclient

from tests.serving_image.conftest import (
    ServerProcess,
    doubler_graph,
    save_model,
    start_server,
    wait_until,
    write_config,
)
from tests.serving_image.test_metrics import sample

DRAIN_DELAY = 2.0
ROUTE_GONE_AFTER = 1.2  # the load balancer stops routing here before the drain delay ends
BODY = json.dumps({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]})
RESETS = (ConnectionResetError, BrokenPipeError, http.client.RemoteDisconnected, http.client.BadStatusLine)


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("drain-repository")
    save_model(doubler_graph(), root / "doubler" / "1" / "model.onnx")
    write_config(root / "doubler", "max_batch_size: 8\nmax_queue_delay_ms: 0\n")
    return root


def draining_server(repository: Path, logs: Path, workers: int, grace: float = 15.0) -> ServerProcess:
    env = {
        "SERVING_DRAIN_DELAY_SECONDS": str(DRAIN_DELAY),
        "SERVING_GRACE_PERIOD_SECONDS": str(grace),
    }
    return start_server(repository, logs, "--workers", str(workers), "--no-access-log", env=env)


@dataclass
class Tally:
    """What the keep-alive clients saw, before and after SIGTERM."""

    outcomes: Counter[str] = field(default_factory=Counter)
    unexpected: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, outcome: str, detail: str = "") -> None:
        with self.lock:
            self.outcomes[outcome] += 1
            if detail:
                self.unexpected.append(detail)


def reading_a_body(server: ServerProcess) -> bool:
    metrics = requests.get(server.base + "/metrics", timeout=5).text
    return sample(metrics, "serving_inflight_requests", protocol="rest") == 1


def keep_alive_client(port: int, routed: threading.Event, signalled: threading.Event, tally: Tally) -> None:
    """Send on one keep-alive connection; reconnect while routed; stop once no longer routed or refused."""
    connection: http.client.HTTPConnection | None = None
    while True:
        if connection is None:
            if not routed.is_set():
                return
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
        phase = "drain" if signalled.is_set() else "before"
        try:
            connection.request("POST", "/v2/models/doubler/infer", BODY, {"Content-Type": "application/json"})
            response = connection.getresponse()
            response.read()
        except ConnectionRefusedError:
            return  # the listener is closed: the server has stopped taking connections, cleanly
        except RESETS as error:
            tally.add("reset", f"{phase}: {type(error).__name__}: {error}")
            connection.close()
            connection = None
            continue
        if response.status >= 500:
            tally.add("5xx", f"{phase}: {response.status}")
        else:
            tally.add(f"{phase} {response.status}")
        closing = (response.getheader("connection") or "").lower() == "close"
        if signalled.is_set() and phase == "drain":
            tally.add("drain close header" if closing else "drain keep-alive")
        if closing:
            connection.close()
            connection = None


@pytest.mark.parametrize("workers", [1, 2])
def test_keep_alive_clients_see_no_resets_and_no_5xx_through_sigterm(
    repository: Path, tmp_path: Path, workers: int
) -> None:
    server = draining_server(repository, tmp_path, workers)
    routed, signalled, tally = threading.Event(), threading.Event(), Tally()
    routed.set()
    clients = [
        threading.Thread(target=keep_alive_client, args=(server.http_port, routed, signalled, tally))
        for _ in range(6)
    ]
    for client in clients:
        client.start()
    wait_until(lambda: tally.outcomes["before 200"] > 50, 30, "the clients did not load the server")
    server.process.send_signal(15)
    server.stopped = True
    signalled_at = time.monotonic()
    while server.stderr().count('"event":"draining"') < workers:  # from here on every answer says close
        assert time.monotonic() - signalled_at < ROUTE_GONE_AFTER, "the workers did not start draining"
        time.sleep(0.005)
    signalled.set()
    time.sleep(max(0.0, ROUTE_GONE_AFTER - (time.monotonic() - signalled_at)))
    routed.clear()
    for client in clients:
        client.join(30)
    assert server.process.wait(30) == 0, server.stderr()
    outcomes = tally.outcomes
    assert outcomes["reset"] == 0 and outcomes["5xx"] == 0, f"{dict(outcomes)}: {tally.unexpected[:5]}"
    assert outcomes["before 200"] > 50, f"the clients did not load the server: {dict(outcomes)}"
    assert outcomes["drain 200"] >= 6, f"requests during the drain delay must be served: {dict(outcomes)}"
    assert outcomes["drain keep-alive"] == 0, f"drain responses must say Connection: close: {dict(outcomes)}"
    assert server.stderr().count('"event":"listeners_closed"') == workers, server.stderr()


def test_readiness_turns_false_at_once_while_requests_are_still_served(
    repository: Path, tmp_path: Path
) -> None:
    server = draining_server(repository, tmp_path, 1)
    connection = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=10)
    server.process.send_signal(15)
    server.stopped = True
    deadline = time.monotonic() + DRAIN_DELAY / 2
    while True:
        connection.request("GET", "/v2/health/ready")
        ready = connection.getresponse()
        ready.read()
        if ready.status != 200:
            break
        assert time.monotonic() < deadline, "readiness did not turn false soon after SIGTERM"
        connection.close()
        connection = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=10)
    assert ready.getheader("connection") == "close", ready.getheaders()
    served = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=10)
    served.request("POST", "/v2/models/doubler/infer", BODY, {"Content-Type": "application/json"})
    answer = served.getresponse()
    assert answer.status == 200 and json.loads(answer.read())["outputs"][0]["data"] == [2, 4, 6, 8]
    assert answer.getheader("connection") == "close", "responses during the drain ask the client to close"
    channel = grpcclient.InferenceServerClient(server.grpc_url)
    infer_input = grpcclient.InferInput("x", [1, 4], "FP32")
    infer_input.set_data_from_numpy(np.array([[1, 2, 3, 4]], np.float32))
    result = channel.infer("doubler", [infer_input]).as_numpy("y")
    assert result is not None and result.tolist() == [[2, 4, 6, 8]], "gRPC is served during the delay too"
    assert server.process.wait(30) == 0, server.stderr()


def test_request_still_sending_its_body_gets_503_within_the_grace_period(
    repository: Path, tmp_path: Path
) -> None:
    grace = 4.0
    server = draining_server(repository, tmp_path, 1, grace=grace)
    with socket.create_connection(("127.0.0.1", server.http_port), timeout=grace + 5) as slow:
        slow.sendall(
            b"POST /v2/models/doubler/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(BODY)}\r\n\r\n".encode()
            + BODY[:10].encode()
        )
        # The server has read the headers and now waits for the rest of the body.
        wait_until(lambda: reading_a_body(server), 10, "the slow request never showed as in flight")
        signalled_at = time.monotonic()
        server.process.send_signal(15)
        server.stopped = True
        first = slow.recv(65536)
        waited = time.monotonic() - signalled_at
        # Headers and body may arrive in separate segments; the server closes after the 503.
        chunks = [first]
        while chunk := slow.recv(65536):
            chunks.append(chunk)
        answer = b"".join(chunks).decode()
    assert answer.startswith("HTTP/1.1 503"), answer
    assert "connection: close" in answer.lower() and "shutting down" in answer, answer
    assert waited < grace, f"the 503 came {waited:.1f} s after SIGTERM, past the {grace} s grace period"
    assert server.process.wait(30) == 0, server.stderr()
    assert '"event":"slow_request_cut"' in server.stderr(), server.stderr()
