"""An HTTP/2 server connection (RFC 9113) for request-response protocols: the frames, flow control,
stream states, limits and the graceful close. What a request means is a subclass's to decide
(``serving_image.grpc_connection``).

It implements what a server of unary calls needs and checks everything a client may send: each
frame type's length, stream and state rules, padding, flow-control windows in both directions,
SETTINGS, PING, GOAWAY, header blocks split over CONTINUATION frames. h2spec's 145 conformance
cases pass (tests/serving_image/test_http2_conformance.py). Server push, priorities and
the Upgrade from HTTP/1.1 are left out: gRPC clients use none of them.

Limits: a deadline for the preface, for each header block, for each request's body and for idle
connections; at most ``max_streams`` requests per connection, counting those the client reset
whose work has not stopped (the defence against "rapid reset", CVE-2023-44487); a header block
longer than four times the header-list limit closes the connection (a CONTINUATION flood), a
longer header list is refused for its request alone; and reading stops while the client does
not read what it is sent.
"""

import asyncio
import enum
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

from serving_image.access_log import log_event
from serving_image.http2_frames import (
    DEFAULT_MAX_FRAME,
    DEFAULT_WINDOW,
    FRAME_HEADER_BYTES,
    MAX_WINDOW,
    PREFACE,
    ErrorCode,
    Flag,
    FrameType,
    ProtocolViolation,
    Setting,
    check_setting,
    frame,
    goaway,
    parse_settings,
    rst_stream,
    settings_frame,
    strip_padding,
    u32,
    window_update,
)  # fmt: skip
from serving_image.http2_hpack import HeaderListTooLarge, HpackDecoder
from serving_image.settings import Settings

# How many recently closed stream ids are remembered, to tell "closed" from "never opened".
_CLOSED_MEMORY = 1024
# After the first GOAWAY, how long to wait for the PING that proves the client read it.
_DRAIN_PING_SECONDS = 1.0
_DRAIN_PING = b"draining"
# An encoded header block may be this many times the header-list limit before the connection is closed.
_BLOCK_FACTOR = 4
# Control frames a connection may send per tick, and more for each request it opens: a gRPC client sends
# a PING and a WINDOW_UPDATE or two per call, so this leaves legitimate clients far from the limit.
_CONTROL_FRAMES_PER_TICK = 1000
_CONTROL_FRAMES_PER_REQUEST = 8
# How long a PING or SETTINGS acknowledgement may wait to share a write with a response.
_ACK_DELAY = 0.002


class Problem(enum.Enum):
    """Why a request is ended before it has arrived."""

    TOO_LARGE = "the request body exceeds the size limit"
    TOO_SLOW = "the request body did not arrive within the body timeout"
    SHUTTING_DOWN = "the server is shutting down"


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """What one connection may send, and how slowly."""

    max_message_bytes: int
    max_header_bytes: int
    max_header_count: int
    max_streams: int
    header_timeout: float
    body_timeout: float
    idle_timeout: float
    max_connections: int

    @classmethod
    def from_settings(cls, settings: Settings) -> "ConnectionLimits":
        """The limits configured for the server (the same settings as the REST port's)."""
        return cls(
            max_message_bytes=settings.max_request_bytes,
            max_header_bytes=settings.max_header_bytes,
            max_header_count=settings.max_header_count,
            max_streams=settings.max_streams_per_connection,
            header_timeout=settings.header_timeout_seconds,
            body_timeout=settings.body_timeout_seconds,
            idle_timeout=settings.idle_timeout_seconds,
            max_connections=settings.max_connections,
        )

    @property
    def receive_window(self) -> int:
        """Each call may send a little more than the largest message, so an oversized one is refused
        with RESOURCE_EXHAUSTED rather than stalled by flow control."""
        return min(MAX_WINDOW, self.max_message_bytes + 5 + DEFAULT_WINDOW)


@dataclass(slots=True, eq=False)
class Stream:
    """One request and its response, as the connection tracks them."""

    id: int
    started: float
    send_window: int
    receiving: bool = True  # the client has not ended its side
    body: bytearray = field(default_factory=bytearray)
    received: int = 0  # DATA bytes, padding aside
    content_length: int | None = None  # what the request's content-length said, if it had one
    discard_body: bool = False  # count the body, do not keep it
    reset: bool = False  # by the client, or by us: nothing more is sent on it
    task: "asyncio.Task[Any] | None" = None  # the work on the request, cancelled if the stream is reset
    running: bool = False  # the task has started (set by the task itself)
    cancel_requested: bool = False  # cancelled before it started: it cancels itself when it does
    responding: bool = False  # response headers sent; ``pending`` and ``trailers`` are what is left
    pending: bytes = b""
    trailers: bytes | None = None
    blocked_since: float = 0.0  # when the response began waiting for the client's window, if it is


class ConnectionOwner(Protocol):
    """What a connection needs of its server."""

    limits: ConnectionLimits
    closing: bool
    draining: bool

    def admit(self, connection: "Http2Connection") -> bool:
        """Count a new connection; False refuses it."""

    def forget(self, connection: "Http2Connection") -> None:
        """A connection has ended."""


class Http2Connection(asyncio.Protocol):
    """One HTTP/2 connection: frames in, frames out; a subclass answers the requests."""

    def __init__(self, owner: ConnectionOwner) -> None:
        self.owner = owner
        self.limits = owner.limits
        self.streams: dict[int, Stream] = {}
        self.last_active = time.monotonic()
        self._transport: asyncio.Transport | None = None
        self._buffer = b""
        self._preface = False
        self._settings_seen = False
        self._decoder = HpackDecoder(self.limits.max_header_bytes)
        self._header_block: tuple[int, int, bytearray, float] | None = None  # id, flags, fragments, since
        self._last_stream_id = 0
        self._closed_ids: OrderedDict[int, bool] = OrderedDict()  # id -> we ended it early
        self._peer_max_frame = DEFAULT_MAX_FRAME
        self._peer_window = DEFAULT_WINDOW
        self._send_window = DEFAULT_WINDOW
        self._received = 0  # connection-level bytes not yet credited back
        self._blocked: dict[int, Stream] = {}
        self._goaway_last: int | None = None
        self._announced = False
        self._drain_acked = False
        self._closing = False
        self._reading_paused = False
        self._timer: asyncio.TimerHandle | None = None
        self._deferred: list[bytes] = []
        self._settings_sent = False
        self._control_frames, self._control_budget = 0, _CONTROL_FRAMES_PER_TICK
        self._deferred_timer: asyncio.TimerHandle | None = None
        self._handlers: dict[int, Callable[[int, int, bytes, list[bytes]], None]] = {
            FrameType.DATA: self._on_data, FrameType.HEADERS: self._on_headers,
            FrameType.CONTINUATION: self._on_continuation, FrameType.SETTINGS: self._on_settings,
            FrameType.WINDOW_UPDATE: self._on_window_update, FrameType.PING: self._on_ping,
            FrameType.RST_STREAM: self._on_rst_stream, FrameType.PRIORITY: self._on_priority,
            FrameType.GOAWAY: self._on_goaway, FrameType.PUSH_PROMISE: self._on_push_promise,
        }  # fmt: skip
        self._tick = max(0.05, min(1.0, self.limits.header_timeout / 4, self.limits.idle_timeout / 4))

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's does not subclass it
        if not self.owner.admit(self):
            self.close_with(ErrorCode.REFUSED_STREAM, "the server is at its connection limit; retry later")
            return
        self._timer = asyncio.get_running_loop().call_later(self._tick, self._on_tick)

    def _server_preface(self) -> bytes:
        """Our SETTINGS, and the connection's receive window opened to the size of a stream's."""
        window = self.limits.receive_window
        return settings_frame({
            Setting.MAX_CONCURRENT_STREAMS: self.limits.max_streams,
            Setting.INITIAL_WINDOW_SIZE: window,
            Setting.MAX_HEADER_LIST_SIZE: self.limits.max_header_bytes,
        }) + window_update(0, window - DEFAULT_WINDOW)  # fmt: skip

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        if self._timer is not None:
            self._timer.cancel()
        for stream in self.streams.values():
            stream.reset = True
            self.cancel_work(stream)  # nothing is sent any more; the work is still recorded
        self.streams.clear()
        self.owner.forget(self)

    def pause_writing(self) -> None:
        # A client that does not read gets nothing more read from it either.
        if self._transport is not None and not self._reading_paused:
            self._reading_paused = True
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        if self._transport is not None and self._reading_paused:
            self._reading_paused = False
            self._transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        buffer = self._buffer + data if self._buffer else data
        out: list[bytes] = []
        try:
            if not self._preface:
                buffer = self._read_preface(buffer)
            if self._preface:  # else the preface has arrived in part, and waits for the rest
                buffer = self._read_frames(buffer, out)
        except ProtocolViolation as violation:
            self._buffer = b""
            self._write(out)
            self.close_with(violation.code, violation.reason)
            return
        self._buffer = buffer
        if self._received >= self.limits.receive_window // 2:
            out.append(window_update(0, self._received))
            self._received = 0
        self._write(out)

    # What a protocol on HTTP/2 decides: subclasses answer these.

    http1_refusal = b'{"error": "this port speaks HTTP/2 only"}'
    """The JSON body of the 400 an HTTP/1.1 request gets."""

    def new_stream(self, stream_id: int, started: float, send_window: int, receiving: bool) -> Stream:
        """A stream's state object (a subclass may keep more per stream)."""
        return Stream(stream_id, started, send_window, receiving=receiving)

    def on_request_head(
        self, stream: Stream, headers: list[tuple[bytes, bytes]] | None, out: list[bytes]
    ) -> None:
        """A new request's headers (None when they exceed the header-list limit): answer or wait for the body;
        if the request has no body (``stream.receiving`` is False), call ``_request_ended``."""
        raise NotImplementedError

    def on_request_complete(self, stream: Stream, out: list[bytes]) -> None:
        """The whole request has arrived: ``stream.body`` holds its DATA, padding removed."""
        raise NotImplementedError

    def on_problem(self, stream: Stream, problem: Problem, out: list[bytes]) -> None:
        """End a request that broke a limit while arriving."""
        raise NotImplementedError

    def _read_preface(self, buffer: bytes) -> bytes:
        if len(buffer) < len(PREFACE):
            if not PREFACE.startswith(buffer):
                self._refuse_non_http2(buffer)
            return buffer
        if not buffer.startswith(PREFACE):
            self._refuse_non_http2(buffer)
        self._preface = True
        self._write([], flush=True)  # our SETTINGS (see ``_write``)
        return buffer[len(PREFACE) :]

    def _refuse_non_http2(self, buffer: bytes) -> None:
        if buffer[:8].split(b" ", 1)[0] in (
            b"GET",
            b"POST",
            b"PUT",
            b"HEAD",
            b"DELETE",
            b"OPTIONS",
            b"PATCH",
        ):
            head = b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\nconnection: close\r\n"
            self._closing = True
            if self._transport is not None:  # plain HTTP/1.1: not through ``_write``, which adds SETTINGS
                self._transport.write(
                    head + b"content-length: %d\r\n\r\n" % len(self.http1_refusal) + self.http1_refusal
                )
                self._transport.close()
        raise ProtocolViolation(
            ErrorCode.PROTOCOL_ERROR, "the connection did not start with the HTTP/2 preface"
        )

    def _read_frames(self, buffer: bytes, out: list[bytes]) -> bytes:
        position, end = 0, len(buffer)
        max_frame = DEFAULT_MAX_FRAME
        while end - position >= FRAME_HEADER_BYTES:
            length = int.from_bytes(buffer[position : position + 3], "big")
            if length > max_frame:
                raise ProtocolViolation(ErrorCode.FRAME_SIZE_ERROR, f"a frame of {length} bytes")
            if end - position - FRAME_HEADER_BYTES < length:
                break
            kind, flags = buffer[position + 3], buffer[position + 4]
            stream_id = u32(buffer, position + 5) & 0x7FFFFFFF
            start = position + FRAME_HEADER_BYTES
            payload = buffer[start : start + length]
            position = start + length
            try:
                self._on_frame(kind, flags, stream_id, payload, out)
            except ProtocolViolation as violation:
                if not violation.stream_id:
                    raise
                self._reset(violation.stream_id, violation.code, out)
            if self._closing:
                return b""
        return buffer[position:]

    def _on_frame(self, kind: int, flags: int, stream_id: int, payload: bytes, out: list[bytes]) -> None:
        if not self._settings_seen and kind != FrameType.SETTINGS:
            raise ProtocolViolation(ErrorCode.PROTOCOL_ERROR, "the first frame must be SETTINGS")
        if self._header_block is not None and (
            kind != FrameType.CONTINUATION or stream_id != self._header_block[0]
        ):
            raise ProtocolViolation(ErrorCode.PROTOCOL_ERROR, "a header block was interrupted")
        if kind > FrameType.HEADERS or not (payload or flags & Flag.END_STREAM):
            self._count_control_frame()
        handler = self._handlers.get(kind)
        if handler is not None:  # frames of unknown types are ignored (RFC 9113 section 4.1)
            handler(flags, stream_id, payload, out)

    def _count_control_frame(self) -> None:
        """Frames that open or carry no request (PING, SETTINGS, RST_STREAM, WINDOW_UPDATE, PRIORITY,
        empty DATA, unknown types, CONTINUATION) cost work but bring none: past a budget per tick,
        renewed by the requests the connection brings, the connection is closed (the HTTP/2 floods of
        CVE-2019-9512 to -9518)."""
        self._control_frames += 1
        if self._control_frames > self._control_budget:
            raise ProtocolViolation(
                ErrorCode.ENHANCE_YOUR_CALM, f"over {self._control_budget} control frames in {self._tick} s"
            )

    def _on_priority(self, _flags: int, stream_id: int, payload: bytes, _out: list[bytes]) -> None:
        _check_priority(stream_id, payload)  # priorities are otherwise ignored (RFC 9113 deprecates them)

    def _on_goaway(self, _flags: int, stream_id: int, _payload: bytes, _out: list[bytes]) -> None:
        if stream_id:
            raise ProtocolViolation(ErrorCode.PROTOCOL_ERROR, "GOAWAY on a stream")
        self.finish()

    def _on_push_promise(self, _flags: int, _stream_id: int, _payload: bytes, _out: list[bytes]) -> None:
        raise ProtocolViolation(ErrorCode.PROTOCOL_ERROR, "a client cannot push")

    def _on_settings(self, flags: int, stream_id: int, payload: bytes, out: list[bytes]) -> None:
        if stream_id:
            raise ProtocolViolation(ErrorCode.PROTOCOL_ERROR, "SETTINGS on a stream")
        if flags & Flag.ACK:
            if payload:
                raise ProtocolViolation(
                    ErrorCode.FRAME_SIZE_ERROR, "a SETTINGS acknowledgement with a payload"
                )
            return
        if len(payload) % 6:
            raise ProtocolViolation(ErrorCode.FRAME_SIZE_ERROR, "a SETTINGS payload not a multiple of 6")
        self._settings_seen = True
        for key, value in parse_settings(payload):
            check_setting(key, value)
            if key == Setting.INITIAL_WINDOW_SIZE:
                self._resize_send_windows(value - self._peer_window)
                self._peer_window = value
            elif key == Setting.MAX_FRAME_SIZE:
                self._peer_max_frame = value
        out.append(frame(FrameType.SETTINGS, Flag.ACK, 0))
        self._flush_blocked(out)

    def _resize_send_windows(self, delta: int) -> None:
        for stream in self.streams.values():
            stream.send_window += delta
            if stream.send_window > MAX_WINDOW:
                raise ProtocolViolation(ErrorCode.FLOW_CONTROL_ERROR, "a stream's window above 2^31-1")

    def _on_ping(self, flags: int, stream_id: int, payload: bytes, out: list[bytes]) -> None:
        if stream_id:
            raise ProtocolViolation(ErrorCode.PROTOCOL_ERROR, "PING on a stream")
        if len(payload) != 8:
            raise ProtocolViolation(ErrorCode.FRAME_SIZE_ERROR, f"a PING of {len(payload)} bytes")
        if not flags & Flag.ACK:
            self._defer(frame(FrameType.PING, Flag.ACK, 0, payload))
        elif payload == _DRAIN_PING and self._announced and not self._drain_acked:
            self._drain_acked = True
            if self.owner.closing:
                self.finish()

    def _on_window_update(self, _flags: int, stream_id: int, payload: bytes, out: list[bytes]) -> None:
        if len(payload) != 4:
            raise ProtocolViolation(ErrorCode.FRAME_SIZE_ERROR, f"a WINDOW_UPDATE of {len(payload)} bytes")
        increment = u32(payload) & 0x7FFFFFFF
        if stream_id == 0:
            if increment == 0:
                raise ProtocolViolation(ErrorCode.PROTOCOL_ERROR, "a WINDOW_UPDATE of 0")
            self._send_window += increment
            if self._send_window > MAX_WINDOW:
                raise ProtocolViolation(ErrorCode.FLOW_CONTROL_ERROR, "the connection's window above 2^31-1")
            self._flush_blocked(out)
            return
        self._check_not_idle(stream_id, "WINDOW_UPDATE")
        stream = self.streams.get(stream_id)
        if increment == 0:
            raise ProtocolViolation(ErrorCode.PROTOCOL_ERROR, "a WINDOW_UPDATE of 0", stream_id)
        if stream is None or stream.reset:
            return
        stream.send_window += increment
        if stream.send_window > MAX_WINDOW:
            raise ProtocolViolation(ErrorCode.FLOW_CONTROL_ERROR, "a stream's window above 2^31-1", stream_id)
        if stream.responding:
            self._send_pending(stream, out)

    def _on_rst_stream(self, _flags: int, stream_id: int, payload: bytes, _out: list[bytes]) -> None:
        if len(payload) != 4:
            raise ProtocolViolation(ErrorCode.FRAME_SIZE_ERROR, f"a RST_STREAM of {len(payload)} bytes")
        if stream_id == 0:
            raise ProtocolViolation(ErrorCode.PROTOCOL_ERROR, "RST_STREAM on stream 0")
        self._check_not_idle(stream_id, "RST_STREAM")
        stream = self.streams.get(stream_id)
        if stream_id in self._closed_ids:
            self._closed_ids[stream_id] = False  # the client has closed it too: later frames are errors
        if stream is None or stream.reset:
            return
        stream.reset = True
        stream.receiving = False
        self._blocked.pop(stream_id, None)
        if not self.cancel_work(stream):  # else the stream is forgotten when its work has stopped
            self._forget(stream, early=False)

    def _check_not_idle(self, stream_id: int, kind: str) -> None:
        if stream_id > self._last_stream_id:
            raise ProtocolViolation(ErrorCode.PROTOCOL_ERROR, f"{kind} on idle stream {stream_id}")

    def _on_headers(self, flags: int, stream_id: int, payload: bytes, out: list[bytes]) -> None:
        if stream_id == 0 or stream_id % 2 == 0:
            raise ProtocolViolation(ErrorCode.PROTOCOL_ERROR, f"HEADERS on stream {stream_id}")
        fragment = strip_padding(payload, flags)
        if flags & Flag.PRIORITY:
            if len(fragment) < 5:
                raise ProtocolViolation(ErrorCode.FRAME_SIZE_ERROR, "HEADERS too short for its priority")
            if u32(fragment) & 0x7FFFFFFF == stream_id:
                raise ProtocolViolation(ErrorCode.PROTOCOL_ERROR, "a stream depends on itself", stream_id)
            fragment = fragment[5:]
        if flags & Flag.END_HEADERS:
            self._on_header_block(flags, stream_id, fragment, out)
        else:
            self._header_block = (stream_id, flags, bytearray(fragment), time.monotonic())
            self._check_header_block_size(len(fragment))

    def _on_continuation(self, flags: int, stream_id: int, payload: bytes, out: list[bytes]) -> None:
        if self._header_block is None:
            raise ProtocolViolation(ErrorCode.PROTOCOL_ERROR, f"CONTINUATION without HEADERS on {stream_id}")
        block_id, block_flags, fragments, _since = self._header_block
        fragments += payload
        self._check_header_block_size(len(fragments))
        if flags & Flag.END_HEADERS:
            self._header_block = None
            self._on_header_block(block_flags, block_id, bytes(fragments), out)

    def _check_header_block_size(self, size: int) -> None:
        # Huffman coding shrinks text to no less than 5/8 of its length: a block this long is a flood, not
        # a call with too much metadata (which is decoded and refused with RESOURCE_EXHAUSTED).
        if size > _BLOCK_FACTOR * self.limits.max_header_bytes:
            raise ProtocolViolation(
                ErrorCode.ENHANCE_YOUR_CALM,
                f"a header block of over {_BLOCK_FACTOR * self.limits.max_header_bytes} bytes",
            )

    def _on_header_block(self, flags: int, stream_id: int, block: bytes, out: list[bytes]) -> None:
        try:
            headers, oversized = self._decoder.decode(block), False
        except HeaderListTooLarge:
            headers, oversized = [], True
        stream = self.streams.get(stream_id)
        if stream is not None or stream_id <= self._last_stream_id:
            self._on_trailers(stream, stream_id, flags, headers)
            return
        self._last_stream_id = stream_id
        if (self._goaway_last is not None and stream_id > self._goaway_last) or self.owner.closing:
            out.append(rst_stream(stream_id, ErrorCode.REFUSED_STREAM))  # the client may retry it elsewhere
            self._remember_closed(stream_id, early=True)  # its DATA, already on the way, is ignored
            return
        if len(self.streams) >= self.limits.max_streams:
            self._count_control_frame()  # a refused call brings no work either
            out.append(rst_stream(stream_id, ErrorCode.REFUSED_STREAM))
            self._remember_closed(stream_id, early=True)
            return
        ended = bool(flags & Flag.END_STREAM)
        stream = self.new_stream(stream_id, time.monotonic(), self._peer_window, receiving=not ended)
        self.streams[stream_id] = stream
        self.last_active = stream.started
        self._control_budget += _CONTROL_FRAMES_PER_REQUEST
        self.on_request_head(stream, None if oversized else headers, out)

    def _on_trailers(
        self, stream: Stream | None, stream_id: int, flags: int, headers: list[tuple[bytes, bytes]]
    ) -> None:
        if stream is None or stream.reset or not stream.receiving:
            if stream is not None or stream_id in self._closed_ids:
                raise ProtocolViolation(ErrorCode.STREAM_CLOSED, f"HEADERS on closed stream {stream_id}")
            raise ProtocolViolation(
                ErrorCode.PROTOCOL_ERROR, f"HEADERS on stream {stream_id}, below a newer one"
            )
        if not flags & Flag.END_STREAM:
            raise ProtocolViolation(ErrorCode.PROTOCOL_ERROR, "trailers without END_STREAM", stream_id)
        if any(name.startswith(b":") for name, _ in headers):
            raise ProtocolViolation(ErrorCode.PROTOCOL_ERROR, "a pseudo-header in trailers", stream_id)
        out: list[bytes] = []
        self._request_ended(stream, out)
        self._write(out)

    def _on_data(self, flags: int, stream_id: int, payload: bytes, out: list[bytes]) -> None:
        if stream_id == 0:
            raise ProtocolViolation(ErrorCode.PROTOCOL_ERROR, "DATA on stream 0")
        self._check_not_idle(stream_id, "DATA")
        self._received += len(payload)  # padding included, as flow control counts it
        stream = self.streams.get(stream_id)
        if stream is None or not stream.receiving:
            if self._closed_ids.get(stream_id):
                return  # we ended it while the client was still sending: RFC 9113 5.4.2 says ignore
            raise ProtocolViolation(ErrorCode.STREAM_CLOSED, f"DATA on closed stream {stream_id}", stream_id)
        data = strip_padding(payload, flags)
        stream.received += len(data)
        if stream.received > self.limits.max_message_bytes + 5:
            self.on_problem(stream, Problem.TOO_LARGE, out)
            return
        if not stream.discard_body:
            stream.body += data
        if flags & Flag.END_STREAM:
            self._request_ended(stream, out)

    def _request_ended(self, stream: Stream, out: list[bytes]) -> None:
        """The client has sent the whole request."""
        stream.receiving = False
        if stream.content_length is not None and stream.content_length != stream.received:
            raise ProtocolViolation(
                ErrorCode.PROTOCOL_ERROR, "content-length does not match the data", stream.id
            )
        self.on_request_complete(stream, out)

    def _respond_block(self, stream: Stream, block: bytes, out: list[bytes]) -> None:
        """A whole response in one header block (Trailers-Only, or a plain HTTP error)."""
        out.append(frame(FrameType.HEADERS, Flag.END_HEADERS | Flag.END_STREAM, stream.id, block))
        self._end(stream, out)

    def _send_pending(self, stream: Stream, out: list[bytes]) -> None:
        """Send what flow control allows of the response; then its trailers, or END_STREAM on its last DATA
        when it has none."""
        data = stream.pending
        while data:
            size = min(len(data), self._send_window, stream.send_window, self._peer_max_frame)
            if size <= 0:
                self._blocked[stream.id] = stream
                stream.pending = data
                stream.blocked_since = stream.blocked_since or time.monotonic()
                return
            stream.blocked_since = 0.0
            chunk, data = data[:size], data[size:]
            last = not data and stream.trailers is None
            out.append(frame(FrameType.DATA, Flag.END_STREAM if last else 0, stream.id, chunk))
            self._send_window -= size
            stream.send_window -= size
        stream.pending = b""
        self._blocked.pop(stream.id, None)
        if stream.trailers is not None:
            out.append(
                frame(FrameType.HEADERS, Flag.END_HEADERS | Flag.END_STREAM, stream.id, stream.trailers)
            )
            stream.trailers = None
        self._end(stream, out)

    def _flush_blocked(self, out: list[bytes]) -> None:
        for stream in list(self._blocked.values()):
            if self._send_window <= 0:
                return
            self._send_pending(stream, out)

    def _end(self, stream: Stream, out: list[bytes]) -> None:
        """We have sent END_STREAM; if the client is still sending, tell it to stop (NO_ERROR)."""
        early = stream.receiving
        if early:
            out.append(rst_stream(stream.id, ErrorCode.NO_ERROR))
        stream.reset = True
        stream.receiving = False
        if not self.cancel_work(stream):
            self._forget(stream, early)

    def _reset(self, stream_id: int, code: ErrorCode, out: list[bytes]) -> None:
        out.append(rst_stream(stream_id, code))
        stream = self.streams.get(stream_id)
        if stream is None:
            # Reset before it was opened (a bad PRIORITY, say): it is closed, and a HEADERS for it later
            # must not open it; ids below it are closed too, as a newer stream closes them (RFC 9113 5.1.1).
            self._last_stream_id = max(self._last_stream_id, stream_id)
            self._remember_closed(stream_id, early=True)
            return
        stream.reset = True
        stream.receiving = False
        if not self.cancel_work(stream):
            self._forget(stream, early=True)

    def cancel_work(self, stream: Stream) -> bool:
        """Cancel the stream's work if it is still going; whether it was. The stream stays counted
        against the stream limit until the work has stopped. Work whose task has not started yet is
        asked to cancel itself when it starts (``cancel_requested``), so it still runs far enough to
        be recorded: a task cancelled before its first step would leave no trace at all."""
        task = stream.task
        if task is None or task.done():
            return False
        if stream.running:
            task.cancel()
        else:
            stream.cancel_requested = True
        return True

    def _forget(self, stream: Stream, early: bool) -> None:
        if self.streams.pop(stream.id, None) is None:
            return
        self._blocked.pop(stream.id, None)
        self._remember_closed(stream.id, early)
        self.last_active = time.monotonic()
        if not self.streams and self._goaway_last is not None:
            self._close_when_done()

    def _remember_closed(self, stream_id: int, early: bool) -> None:
        self._closed_ids[stream_id] = early
        if len(self._closed_ids) > _CLOSED_MEMORY:
            self._closed_ids.popitem(last=False)

    # Drain and close

    def announce_drain(self, out: list[bytes] | None = None) -> None:
        """The first GOAWAY (no new calls here, please) and a PING to learn that the client has read it."""
        if self._announced or self._closing:
            return
        self._announced = True
        frames = [
            goaway(MAX_WINDOW, ErrorCode.NO_ERROR, "draining"),
            frame(FrameType.PING, 0, 0, _DRAIN_PING),
        ]
        if out is None:
            self._write(frames)
        else:
            out.extend(frames)
        asyncio.get_running_loop().call_later(_DRAIN_PING_SECONDS, self._drain_ping_timeout)

    def _drain_ping_timeout(self) -> None:
        if not self._drain_acked:
            self._drain_acked = True
            if self.owner.closing:
                self.finish()

    def finish(self) -> None:
        """The final GOAWAY once the client has seen the first; the connection ends with its last call."""
        if self._closing or self._goaway_last is not None:
            return
        if not self._announced:
            self.announce_drain()
        if not self._drain_acked:
            return  # finish() runs again on the PING's acknowledgement or its timeout
        self._goaway_last = self._last_stream_id
        self._write([goaway(self._goaway_last, ErrorCode.NO_ERROR, "the server is shutting down")])
        if not self.streams:
            self._close_when_done()

    def _close_when_done(self) -> None:
        if self._transport is not None and not self._closing:
            self._closing = True
            self._transport.close()

    def close_with(self, code: ErrorCode, reason: str) -> None:
        """Send GOAWAY with ``code`` and close."""
        if self._closing:
            return
        if code not in (ErrorCode.NO_ERROR, ErrorCode.REFUSED_STREAM):
            log_event("http2_connection_error", code=code.name, reason=reason)
        # Streams refused after a final GOAWAY raise _last_stream_id, but a GOAWAY may never raise its own.
        last = self._last_stream_id if self._goaway_last is None else self._goaway_last
        self._write([goaway(last, code, reason)])
        self._closing = True
        if self._transport is not None:
            self._transport.close()

    def cut_receiving(self) -> int:
        """End each request still arriving (the drain's slow-body cut-off); how many there were."""
        cut = [stream for stream in self.streams.values() if stream.receiving and not stream.reset]
        out: list[bytes] = []
        for stream in cut:
            log_event("slow_request_cut", transport="grpc", stream=stream.id, body_bytes=stream.received,
                      seconds=round(time.monotonic() - stream.started, 3))  # fmt: skip
            self.on_problem(stream, Problem.SHUTTING_DOWN, out)
        self._write(out)
        return len(cut)

    def _on_tick(self) -> None:
        if self._closing:
            return
        self._control_frames, self._control_budget = 0, _CONTROL_FRAMES_PER_TICK
        now = time.monotonic()
        limits = self.limits
        if not self._settings_seen and now - self.last_active > limits.header_timeout:
            self.close_with(ErrorCode.SETTINGS_TIMEOUT, f"no HTTP/2 preface within {limits.header_timeout} s")
            return
        if self._header_block is not None and now - self._header_block[3] > limits.header_timeout:
            self.close_with(
                ErrorCode.ENHANCE_YOUR_CALM, f"a header block took over {limits.header_timeout} s"
            )
            return
        if not self.streams and now - self.last_active > limits.idle_timeout:
            self.close_with(ErrorCode.NO_ERROR, f"idle for {limits.idle_timeout} s")
            return
        # A client that opens no window for its responses holds a connection as surely as an idle one.
        if any(now - stream.blocked_since > limits.body_timeout for stream in self._blocked.values()):
            reason = f"a response waited over {limits.body_timeout} s for flow control"
            self.close_with(ErrorCode.ENHANCE_YOUR_CALM, reason)
            return
        out: list[bytes] = []
        for stream in list(self.streams.values()):
            if stream.receiving and not stream.reset and now - stream.started > limits.body_timeout:
                self.on_problem(stream, Problem.TOO_SLOW, out)
        self._write(out)
        self._timer = asyncio.get_running_loop().call_later(self._tick, self._on_tick)

    def _defer(self, control: bytes) -> None:
        """Send ``control`` with the next write, or within ``_ACK_DELAY`` s: a gRPC client pings on every
        response it reads (to size its window), and answering each in a write of its own cost a system
        call per call."""
        self._deferred.append(control)
        if self._deferred_timer is None:
            self._deferred_timer = asyncio.get_running_loop().call_later(_ACK_DELAY, self._flush_deferred)

    def _flush_deferred(self) -> None:
        self._deferred_timer = None
        self._write([], flush=True)

    def _write(self, out: list[bytes], flush: bool = False) -> None:
        """Write ``out`` and any deferred acknowledgements (those alone only with ``flush``). Our SETTINGS
        go first of all, whatever is written first: they wait for the client's preface, so that an
        HTTP/1.1 client on this port reads its 400 from the first byte, but must precede any GOAWAY."""
        if not out and not flush:
            return
        if not self._settings_sent:
            self._settings_sent = True
            out.insert(0, self._server_preface())
        if self._deferred:
            out[:0] = self._deferred
            self._deferred = []
            if self._deferred_timer is not None:
                self._deferred_timer.cancel()
                self._deferred_timer = None
        if out and self._transport is not None and not self._transport.is_closing():
            self._transport.write(b"".join(out))
            out.clear()


def _check_priority(stream_id: int, payload: bytes) -> None:
    if stream_id == 0:
        raise ProtocolViolation(ErrorCode.PROTOCOL_ERROR, "PRIORITY on stream 0")
    if len(payload) != 5:
        raise ProtocolViolation(ErrorCode.FRAME_SIZE_ERROR, f"a PRIORITY of {len(payload)} bytes", stream_id)
    if u32(payload) & 0x7FFFFFFF == stream_id:
        raise ProtocolViolation(ErrorCode.PROTOCOL_ERROR, "a stream depends on itself", stream_id)
