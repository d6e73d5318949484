"""Idle, slowloris and slow-body clients: a legitimate client is still served, descriptors stay bounded.

Every attacking socket here is on 127.0.0.1, their number is fixed, and each test closes them
all by itself within seconds.
"""

import contextlib
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from tests.serving_image.conftest import ServerProcess, start_server, wait_until

CAP = 128
TIMEOUT = 2


@pytest.fixture(scope="module")
def guarded(test_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = start_server(
        test_repository, tmp_path_factory.mktemp("slow-client-logs"),
        "--max-connections", str(CAP), "--header-timeout-seconds", str(TIMEOUT),
        "--body-timeout-seconds", str(TIMEOUT), "--idle-timeout-seconds", str(TIMEOUT),
    )  # fmt: skip
    yield server
    assert server.stop() == 0, server.stderr()


def descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def accept_queue(port: int) -> int:
    """Connections the kernel has completed for the listener on ``port`` that the server has not accepted."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, state, queues = fields[1], fields[3], fields[4]
        if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
            return int(queues.split(":")[1], 16)  # a listener's rx_queue is its accept queue
    raise AssertionError(f"nothing listens on port {port}")


@contextlib.contextmanager
def sockets(port: int, count: int, first_bytes: bytes = b"") -> Iterator[list[socket.socket]]:
    """``count`` loopback connections that send ``first_bytes`` and then nothing; all closed on exit."""
    opened: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            if first_bytes:
                with contextlib.suppress(OSError):
                    sock.sendall(first_bytes)
            opened.append(sock)
        yield opened
    finally:
        for sock in opened:
            sock.close()


def trickle(opened: list[socket.socket], stop: threading.Event) -> None:
    """Slowloris: one more header byte per socket every 0.3 s, until told to stop."""
    while not stop.wait(0.3):
        for sock in opened:
            with contextlib.suppress(OSError):
                sock.send(b"x")


def legitimate_requests(server: ServerProcess, seconds: float) -> list[float]:
    """Requests on fresh connections for ``seconds``; their latencies (each must succeed)."""
    latencies = []
    body: dict[str, Any] = {
        "inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]
    }
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        started = time.monotonic()
        response = requests.post(f"{server.base}/v2/models/doubler/infer", json=body, timeout=5)
        assert response.status_code == 200, response.text
        latencies.append(time.monotonic() - started)
        time.sleep(0.05)
    return latencies


def test_idle_and_slowloris_sockets_cannot_lock_out_a_client(guarded: ServerProcess) -> None:
    baseline = descriptors(guarded.process.pid)
    stop = threading.Event()
    with (
        sockets(guarded.http_port, 300) as idle,
        sockets(guarded.http_port, 300, b"POST /v2/models/doubler/infer HTTP/1.1\r\nX-A: ") as slow,
    ):
        loris = threading.Thread(target=trickle, args=(slow, stop), daemon=True)
        loris.start()
        try:
            peak = 0
            latencies = []
            for _ in range(6):
                latencies += legitimate_requests(guarded, 0.5)
                peak = max(peak, descriptors(guarded.process.pid))
        finally:
            stop.set()
            loris.join(5)
        assert len(idle) + len(slow) == 600
    assert max(latencies) < 1.0, f"a legitimate request waited {max(latencies):.2f} s"
    assert peak <= baseline + CAP + 8, f"{peak} descriptors open, cap {CAP} over a baseline of {baseline}"


def test_slowloris_gets_a_json_408_after_the_header_timeout(guarded: ServerProcess) -> None:
    with sockets(guarded.http_port, 5, b"GET /v2 HTTP/1.1\r\nX-A: ") as slow:
        stop = threading.Event()
        loris = threading.Thread(target=trickle, args=(slow, stop), daemon=True)
        loris.start()
        answers = []
        try:
            for sock in slow:  # each answer is awaited while the trickle goes on
                sock.settimeout(TIMEOUT + 3)
                with contextlib.suppress(OSError):
                    answers.append(sock.recv(4096))
        finally:
            stop.set()
            loris.join(5)
    assert answers and all(
        b" 408 " in a and b'{"error":"request headers not received' in a for a in answers
    ), answers


def test_a_slow_body_gets_408_and_frees_its_connection(guarded: ServerProcess) -> None:
    with sockets(
        guarded.http_port, 20, b"POST /v2/models/doubler/infer HTTP/1.1\r\nContent-Length: 1000\r\n\r\n{"
    ) as slow:
        for sock in slow:
            sock.settimeout(TIMEOUT + 3)  # the answer is awaited: it comes once the body timeout fires
            answer = sock.recv(4096)
            assert b" 408 " in answer and b"request body not received" in answer, answer
    legitimate_requests(guarded, 0.2)


def test_two_thousand_idle_connections_are_not_held(guarded: ServerProcess) -> None:
    """The report: 2,000 idle connections were held until descriptors ran out and clients were reset."""
    baseline = descriptors(guarded.process.pid)
    with sockets(guarded.http_port, 2000) as idle, sockets(guarded.grpc_port, 500) as idle_grpc:
        wait_until(
            lambda: accept_queue(guarded.http_port) == accept_queue(guarded.grpc_port) == 0,
            10,
            "the server did not take every connection off its listeners",
        )
        held = descriptors(guarded.process.pid)
        assert held <= baseline + 2 * CAP + 8, f"{held} descriptors for {len(idle) + len(idle_grpc)} sockets"
        legitimate_requests(guarded, 0.5)  # REST evicts the longest-idle connection for a new one
        # So does gRPC: the new client is served at once, not after the idle ones time out.
        assert grpc_served_within(guarded, 2.0), "gRPC did not serve a new client within 2 s"
        # What was not evicted is closed by the header and handshake timeouts.
        wait_until(
            lambda: descriptors(guarded.process.pid) <= baseline + 8,
            TIMEOUT + 5,
            lambda: f"{descriptors(guarded.process.pid)} descriptors open, over a baseline of {baseline}",
        )


def grpc_served_within(server: ServerProcess, seconds: float) -> bool:
    infer_input = grpcclient.InferInput("x", [1, 4], "FP32")
    infer_input.set_data_from_numpy(np.ones((1, 4), np.float32))
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        client = grpcclient.InferenceServerClient(server.grpc_url)
        try:
            result = client.infer("doubler", [infer_input], client_timeout=2)
            answer: list[list[float]] = result.as_numpy("y").tolist()
            return answer == [[2.0] * 4]
        except InferenceServerException:
            time.sleep(0.2)
        finally:
            client.close()
    return False
