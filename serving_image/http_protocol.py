"""HTTP/1.1 connections with limits: uvicorn's httptools protocol, bounded, answering in JSON.

uvicorn parses with httptools (llhttp) but bounds neither the size nor the count of request
headers, puts no time limit on reading a request's headers or body (a connection that never
sends a byte is kept for ever), and answers what the parser rejects in plain text. This
protocol checks those limits as the bytes arrive, before the request reaches the
application, answers every rejection with the V2 error body ``{"error": ...}``, and caps the
open connections by closing the longest-idle one when a new one arrives at the cap.

It builds on uvicorn's ``HttpToolsProtocol`` (the version pinned in constraints.txt), whose
per-connection attributes it reads; tests/serving_image/test_hostile.py covers each hook.
"""

import asyncio
from dataclasses import dataclass
from typing import Any, ClassVar

import httptools
import orjson
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from serving_image.settings import Settings

# Set in a request's ASGI scope when its body did not arrive in time, so the application
# logs the request as the 408 the client was sent rather than as a disconnect.
BODY_TIMED_OUT = "serving.body_timed_out"
# How long a rejected connection keeps reading (and discarding) before it closes, so the
# client reads the error instead of a reset caused by its own unread bytes.
LINGER_SECONDS = 2.0


@dataclass(frozen=True, slots=True)
class HttpLimits:
    """What one connection may send, and how slowly."""

    max_header_bytes: int
    max_header_count: int
    max_url_bytes: int
    header_timeout: float
    body_timeout: float
    idle_timeout: float
    max_connections: int

    @classmethod
    def from_settings(cls, settings: Settings) -> "HttpLimits":
        """The limits configured for the server."""
        return cls(
            max_header_bytes=settings.max_header_bytes,
            max_header_count=settings.max_header_count,
            max_url_bytes=settings.max_url_bytes,
            header_timeout=settings.header_timeout_seconds,
            body_timeout=settings.body_timeout_seconds,
            idle_timeout=settings.idle_timeout_seconds,
            max_connections=settings.max_connections,
        )

    @property
    def max_head_bytes(self) -> int:
        """Raw bytes of a request line and header block within the limits, separators included."""
        return self.max_url_bytes + self.max_header_bytes + 4 * self.max_header_count + 64


class _Refused(Exception):
    """Raised from a parser callback to stop parsing; the status and reason are on the protocol."""


class LimitedHttpProtocol(HttpToolsProtocol):
    """One HTTP/1.1 connection; ``limits`` is set on the subclass ``protocol_class`` makes."""

    limits: ClassVar[HttpLimits]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.timeout_keep_alive = self.limits.idle_timeout  # type: ignore[assignment]  # uvicorn's is whole seconds
        self._reading_head = True  # the next bytes belong to a request line or headers
        self._head_bytes = 0
        self._header_count = 0
        self._header_bytes = 0
        self._refusal: tuple[int, str] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._lingering = False
        self._since = self.loop.time()  # when the connection last went idle or began a request

    # Connection events

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections and not self._evict_one():
            self._refuse(
                503, f"the server is at its limit of {self.limits.max_connections} connections; retry later",
                linger=False,
            )  # fmt: skip
            return
        # A connection that sends nothing is closed after the header timeout, not kept for ever.
        self._timer = self.loop.call_later(self.limits.header_timeout, self._head_timed_out)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._lingering:
            return
        self._unset_keepalive_if_required()
        if self._reading_head:
            self._head_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            return  # like uvicorn: no upgrades here, the request is answered over HTTP/1.1
        except httptools.HttpParserError as error:
            status, reason = self._refusal or (400, f"malformed HTTP request: {error}")
            self._refuse(status, reason)
            return
        if self._reading_head:
            if self._head_bytes > self.limits.max_head_bytes:
                self._refuse(431, f"request headers exceed {self.limits.max_head_bytes} bytes")
            elif self._head_bytes and self._timer is None:
                self._timer = self.loop.call_later(self.limits.header_timeout, self._head_timed_out)
        elif self._timer is None and self._body_pending():
            self._timer = self.loop.call_later(self.limits.body_timeout, self._body_timed_out)

    def on_response_complete(self) -> None:
        self._since = self.loop.time()
        super().on_response_complete()

    # Parser callbacks

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._header_count = self._header_bytes = 0
        self._since = self.loop.time()

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        if len(self.url) > self.limits.max_url_bytes:
            self._stop(414, f"request target exceeds {self.limits.max_url_bytes} bytes")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        self._header_bytes += len(name) + len(value)
        if self._header_count > self.limits.max_header_count:
            self._stop(431, f"more than {self.limits.max_header_count} request header fields")
        if self._header_bytes > self.limits.max_header_bytes:
            self._stop(431, f"request headers exceed {self.limits.max_header_bytes} bytes")
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._reading_head = False
        self._head_bytes = 0
        self._cancel_timer()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._reading_head = True
        self._cancel_timer()
        super().on_message_complete()

    # Limits

    def _stop(self, status: int, reason: str) -> None:
        self._refusal = (status, reason)
        raise _Refused(reason)

    def _body_pending(self) -> bool:
        cycle = self.cycle
        return cycle is not None and cycle.more_body and not cycle.response_complete

    def _head_timed_out(self) -> None:
        self._timer = None
        if not self._reading_head or self._busy():
            return
        if not self._head_bytes:  # nothing sent since connecting: there is no request to answer
            self.transport.close()
            return
        self._refuse(408, f"request headers not received within {self.limits.header_timeout:g} s")

    def _body_timed_out(self) -> None:
        self._timer = None
        if not self._body_pending():
            return
        self.cycle.scope[BODY_TIMED_OUT] = True  # type: ignore[literal-required]
        self._refuse(408, f"request body not received within {self.limits.body_timeout:g} s")

    def _busy(self) -> bool:
        """A request of this connection is being answered (or queued behind one that is)."""
        return bool(self.pipeline) or (self.cycle is not None and not self.cycle.response_complete)

    def _evict_one(self) -> bool:
        """Close the connection idle (or sending its headers) for longest, to make room; False if none is."""
        candidates = [
            other
            for other in self.connections
            if isinstance(other, LimitedHttpProtocol)
            and other is not self
            and not other.transport.is_closing()
            and (other._lingering or not other._busy())
        ]
        if not candidates:
            return False
        # Rejected connections still lingering go first, then the longest idle or slowest to send headers.
        oldest = min(candidates, key=lambda other: (not other._lingering, other._since))
        if oldest._head_bytes and not oldest._lingering:
            reason = "connection closed to make room: the server is at its connection limit"
            oldest._refuse(503, reason, linger=False)
        else:
            oldest.transport.close()
        return True

    def _refuse(self, status: int, reason: str, *, linger: bool = True) -> None:
        """Answer ``status`` with a JSON error and close, unless a response is already under way."""
        self._cancel_timer()
        if self.transport.is_closing():
            return
        if self._busy() and not self._body_pending():
            # The application is answering an earlier request: let it finish, then close.
            self.cycle.keep_alive = False
            self.flow.pause_reading()
            return
        if self._body_pending():
            if self.cycle.response_started:  # half an answer is out: all that is left is to close
                self.transport.close()
                return
            self.cycle.disconnected = True  # the application's own answer would follow ours
            self.cycle.message_event.set()
        body = orjson.dumps({"error": reason})
        self.transport.write(
            b"".join([
                STATUS_LINE[status],
                b"content-type: application/json\r\ncontent-length: ", str(len(body)).encode(),
                b"\r\nconnection: close\r\n\r\n", body,
            ])
        )  # fmt: skip
        if not linger or not self.transport.can_write_eof():
            self.transport.close()
            return
        self._lingering = True
        self.transport.write_eof()
        self.flow.resume_reading()
        self.loop.call_later(LINGER_SECONDS, self.transport.close)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


def protocol_class(limits: HttpLimits) -> type[LimitedHttpProtocol]:
    """A protocol class bound to ``limits``, for ``uvicorn.Config(http=...)``."""
    return type("BoundHttpProtocol", (LimitedHttpProtocol,), {"limits": limits})
