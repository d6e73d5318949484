"""Draining, as Envoy and Knative do it: what a serving process does between SIGTERM and exit.

1. Readiness turns false at once, so load balancers and the kubelet stop sending new work.
2. For the drain delay both listeners keep accepting and serving (routes take a few seconds
   to converge), and every HTTP response says ``Connection: close``, so keep-alive clients
   reconnect, and reach another replica once the routes have converged.
3. When the delay is over the gRPC server sends GOAWAY and both listeners close; requests in
   flight finish within the grace period.
4. A request still sending its body when the grace period is about to end is answered 503
   and logged, rather than cut off without an answer when the process exits.

``DrainGuard`` is the HTTP half, as ASGI middleware in front of the REST application.
"""

import asyncio
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

from serving_image.access_log import log_event

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

CONNECTION_CLOSE = (b"connection", b"close")
SHUTTING_DOWN = b'{"error":"server is shutting down; the request body did not arrive in time, retry"}'


@dataclass(slots=True, eq=False)
class _Exchange:
    """One HTTP request as the guard sees it."""

    method: str
    path: str
    send: Send
    started: float = field(default_factory=time.monotonic)
    body_bytes: int = 0
    responding: bool = False
    cut: bool = False


def slow_body_cutoff(grace_seconds: float) -> float:
    """Seconds after SIGTERM at which requests still sending their body are answered 503.

    Late enough to leave slow clients most of the grace period, early enough that the
    answer and the log line are out before the grace period ends.
    """
    return max(0.0, grace_seconds - min(1.0, grace_seconds / 4))


class DrainGuard:
    """ASGI middleware: ``Connection: close`` once draining, and the 503 for slow bodies at the cut-off."""

    def __init__(self, app: App) -> None:
        self._app = app
        self.draining = False
        self._reading: set[_Exchange] = set()

    def start_draining(self) -> None:
        """From now on every response asks the client to close its connection."""
        self.draining = True

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        exchange = _Exchange(scope["method"], scope["path"], send)
        self._reading.add(exchange)

        async def guarded_receive() -> Message:
            message = await receive()
            exchange.body_bytes += len(message.get("body", b""))
            if not message.get("more_body", False):
                self._reading.discard(exchange)
            return message

        async def guarded_send(message: Message) -> None:
            if exchange.cut:
                return  # the guard has answered this request already
            if message["type"] == "http.response.start":
                exchange.responding = True
                self._reading.discard(exchange)
                if self.draining:
                    message["headers"] = [*message.get("headers", ()), CONNECTION_CLOSE]
            await send(message)

        try:
            await self._app(scope, guarded_receive, guarded_send)
        finally:
            self._reading.discard(exchange)

    async def cut_slow_bodies(self) -> int:
        """Answer 503 to every request still sending its body; how many there were."""
        cut = [exchange for exchange in self._reading if not exchange.responding]
        self._reading.clear()
        for exchange in cut:
            exchange.cut = True
            log_event(
                "slow_request_cut",
                method=exchange.method,
                path=exchange.path,
                body_bytes=exchange.body_bytes,
                seconds=round(time.monotonic() - exchange.started, 3),
                status=503,
            )
        await asyncio.gather(*(_answer_503(exchange.send) for exchange in cut), return_exceptions=True)
        return len(cut)


async def _answer_503(send: Send) -> None:
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(SHUTTING_DOWN)).encode()),
        (b"retry-after", b"1"),
        CONNECTION_CLOSE,
    ]
    await send({"type": "http.response.start", "status": 503, "headers": headers})
    await send({"type": "http.response.body", "body": SHUTTING_DOWN})
