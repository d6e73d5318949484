"""The HTTP endpoint: POST /alerts takes Alertmanager's webhook payloads, GET /healthz answers liveness.

Standard library only (`http.server`): one small JSON endpoint needs no framework, and the image's ASGI
stack belongs to the serving image. Every answer is JSON; a malformed request gets a 4xx naming what is
wrong, never a 500.
"""

import json
import sys
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from servectl.retrain_receiver.alerts import Ignored, PayloadError, parse
from servectl.retrain_receiver.runner import JsonLog, Runner

MAX_BODY_BYTES = 1 << 20
"""Alertmanager truncates a notification to its `max_alerts`; a megabyte holds hundreds of alerts."""


class ReceiverServer(ThreadingHTTPServer):
    """The server, holding the runner and log its handlers use."""

    daemon_threads = True

    def __init__(
        self, address: tuple[str, int], runner: Runner, log: JsonLog, models: frozenset[str]
    ) -> None:
        super().__init__(address, _Handler)
        self.runner = runner
        self.log = log
        self.models = models

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A JSON line instead of socketserver's traceback on stderr: a client closing its kept-alive
        connection (Alertmanager does) is routine, anything else is logged with the exception."""
        error = sys.exc_info()[1]
        event = "connection_dropped" if isinstance(error, ConnectionError) else "request_failed"
        self.log(event, client=f"{client_address[0]}:{client_address[1]}", error=repr(error))


class _Handler(BaseHTTPRequestHandler):
    server: ReceiverServer
    protocol_version = "HTTP/1.1"
    timeout = 30
    """Seconds a client may take to send its request; a stalled one does not hold a thread for ever."""

    def log_message(self, format: str, *args: Any) -> None:
        """Requests are not logged one by one; alerts and runs are, as JSON lines."""

    def _answer(self, status: HTTPStatus, body: dict[str, Any], close: bool = False) -> None:
        data = json.dumps(body, sort_keys=True).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(data)

    def _reject(self, status: HTTPStatus, message: str, close: bool = False) -> None:
        self.server.log("payload_rejected", status=int(status), error=message)
        self._answer(status, {"error": message}, close=close)

    def do_GET(self) -> None:
        if self.path != "/healthz":
            self._answer(
                HTTPStatus.NOT_FOUND, {"error": f"no such path {self.path}; try /healthz or POST /alerts"}
            )
            return
        self._answer(HTTPStatus.OK, {"status": "ok", "models": self.server.runner.status()})

    def do_POST(self) -> None:
        if self.path != "/alerts":
            self._answer(
                HTTPStatus.NOT_FOUND, {"error": f"no such path {self.path}; POST to /alerts"}, close=True
            )
            return
        body = self._body()
        if body is None:
            return
        try:
            document = json.loads(body)
        except (ValueError, RecursionError) as error:
            # ValueError covers bad UTF-8, bad JSON and integers over Python's digit limit.
            self._reject(HTTPStatus.BAD_REQUEST, f"body is not JSON: {error}")
            return
        try:
            results = parse(document, self.server.models)
        except PayloadError as error:
            self._reject(HTTPStatus.BAD_REQUEST, f"not an Alertmanager v4 webhook payload: {error}")
            return
        accepted, ignored = [], 0
        for result in results:
            if isinstance(result, Ignored):
                ignored += 1
                self.server.log("alert_ignored", alertname=result.alertname, status=result.status,
                                labels=dict(result.labels), reason=result.reason)  # fmt: skip
                continue
            accepted.append({"trigger": result.key, "decision": self.server.runner.submit(result)})
        self._answer(HTTPStatus.OK, {"accepted": accepted, "ignored": ignored})

    def _body(self) -> bytes | None:
        """The request body, or None after answering 411/413/400."""
        if self.headers.get("Transfer-Encoding"):
            self._reject(HTTPStatus.LENGTH_REQUIRED, "send the body with a Content-Length", close=True)
            return None
        length = self.headers.get("Content-Length")
        if length is None:
            self._reject(HTTPStatus.LENGTH_REQUIRED, "Content-Length required", close=True)
            return None
        if not length.isdigit():
            self._reject(HTTPStatus.BAD_REQUEST, f"bad Content-Length {length!r}", close=True)
            return None
        if int(length) > MAX_BODY_BYTES:
            self._reject(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"body over {MAX_BODY_BYTES} bytes", close=True)
            return None
        return self.rfile.read(int(length))
