"""The HTTP endpoint in-process on loopback, with the fake command: status codes and JSON bodies."""

import http.client
import json
import socket
import struct
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from servectl.retrain_receiver.config import ReceiverConfig
from servectl.retrain_receiver.runner import Runner
from servectl.retrain_receiver.server import MAX_BODY_BYTES, ReceiverServer
from tests.servectl.retrain_receiver.conftest import WAIT, FakeCommand, Log

FIRING = {
    "version": "4",
    "alerts": [
        {"status": "firing", "startsAt": "2026-11-30T10:00:00Z",
         "labels": {"alertname": "ModelQualityDrop", "model": "tabular-classifier", "version": "1"}},
        {"status": "firing", "startsAt": "2026-11-30T10:00:00Z",
         "labels": {"alertname": "ModelInputDriftWarning", "model": "tabular-classifier", "version": "1"}},
    ],
}  # fmt: skip


@pytest.fixture
def server(config: ReceiverConfig, command: FakeCommand, log: Log) -> Iterator[ReceiverServer]:
    running = ReceiverServer(("127.0.0.1", 0), Runner(config, log, command), log, frozenset(config.models))
    thread = threading.Thread(target=running.serve_forever, daemon=True)
    thread.start()
    yield running
    command.release(100)
    running.shutdown()
    running.server_close()
    thread.join(WAIT)


def request(
    server: ReceiverServer,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, Any]]:
    conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=WAIT)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        assert response.getheader("Content-Type") == "application/json", response.getheaders()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def test_a_firing_alert_starts_a_retrain_and_the_rest_are_ignored(
    server: ReceiverServer, command: FakeCommand, log: Log
) -> None:
    status, body = request(server, "POST", "/alerts", json.dumps(FIRING).encode())
    assert status == 200, body
    key = "ModelQualityDrop:tabular-classifier:1:2026-11-30T10:00:00Z"
    assert body == {"accepted": [{"trigger": key, "decision": "started"}], "ignored": 1}, body
    command.wait_calls(1)
    assert command.calls[0][-1] == key, command.calls
    [ignored] = log.events("alert_ignored")
    assert ignored["alertname"] == "ModelInputDriftWarning", ignored


def test_healthz_shows_what_runs(server: ReceiverServer, command: FakeCommand) -> None:
    request(server, "POST", "/alerts", json.dumps(FIRING).encode())
    command.wait_calls(1)
    status, body = request(server, "GET", "/healthz")
    assert status == 200 and body["status"] == "ok", body
    assert body["models"]["tabular-classifier"]["running"].startswith("ModelQualityDrop:"), body


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"{not json", "body is not JSON"),
        (b"\xff\xfe", "body is not JSON"),
        (b'{"version": "4", "alerts": [{"status": "firing"}]}', "payload.alerts[0].labels"),
        (b"[]", "expected a JSON object"),
        (b"[" * 100_000 + b"]" * 100_000, "body is not JSON"),
        (b'{"version": ' + b"9" * 5000 + b"}", "body is not JSON"),
    ],
    ids=["broken", "not-utf8", "no-labels", "array", "deeply-nested", "huge-integer"],
)
def test_a_malformed_payload_gets_400_json(server: ReceiverServer, log: Log, body: bytes, error: str) -> None:
    status, answer = request(server, "POST", "/alerts", body, {"Content-Type": "application/json"})
    assert status == 400 and error in answer["error"], (status, answer)
    assert log.events("payload_rejected"), "the rejection was not logged"


def test_an_oversized_body_gets_413_without_being_read(server: ReceiverServer) -> None:
    headers = {"Content-Length": str(MAX_BODY_BYTES + 1)}
    conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=WAIT)
    conn.putrequest("POST", "/alerts")
    for name, value in headers.items():
        conn.putheader(name, value)
    conn.endheaders()
    response = conn.getresponse()
    assert response.status == 413 and "body over" in json.loads(response.read())["error"], response.status
    conn.close()


@pytest.mark.parametrize(("method", "path"), [("GET", "/alerts"), ("POST", "/healthz"), ("GET", "/")])
def test_unknown_paths_get_404_json(server: ReceiverServer, method: str, path: str) -> None:
    status, body = request(server, method, path, b"{}" if method == "POST" else None)
    assert status == 404 and "error" in body, (status, body)


def test_a_client_resetting_its_connection_is_a_json_log_line_not_a_traceback(
    server: ReceiverServer, log: Log
) -> None:
    with socket.create_connection(("127.0.0.1", server.server_address[1]), timeout=WAIT) as sock:
        sock.sendall(b"POST /alerts HTTP/1.1\r\nHost: x\r\n")
        # Linger 0: close sends a reset, as a client dropping a kept-alive connection may.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    deadline = time.monotonic() + WAIT
    while not log.events("connection_dropped"):
        assert time.monotonic() < deadline, log.events()
        time.sleep(0.01)
    [event] = log.events("connection_dropped")
    assert "ConnectionResetError" in event["error"], event
