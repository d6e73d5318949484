"""Property-based fuzzing of the gRPC port's HTTP/2 connection, in process (Hypothesis), with a fixed budget.

``GrpcConnection`` is driven byte by byte through a fake transport inside a real event loop, with
a small method table (an echo, a handler that fails, a slow one) and small limits, so no socket is
opened and every example is reproducible. Whatever a client sends, in whatever chunks, and whenever
the loop runs in between:

- nothing raises out of ``data_received`` or out of the loop (callbacks and the calls' tasks);
- the connection's memory stays bounded (its buffer, streams, bodies and header-block fragments);
- it ends, if it ends, with a GOAWAY whose code is an HTTP/2 error code;
- every write is whole frames, which our own reader and ``hyperframe`` both parse, with header
  blocks ``hpack`` decodes;
- it never sends DATA beyond the windows the client granted, never ends a stream twice or writes
  on it after ending or resetting it, and never writes on a stream the client did not open;
- its first frame is its SETTINGS, a GOAWAY never raises the last stream id, every SETTINGS and
  PING is acknowledged, no handler gets a message over the size limit, and every response that
  ended is whole (a gRPC OK carries one ModelInferResponse, an HTTP error a JSON body).

A frame may be as long as the largest SETTINGS_MAX_FRAME_SIZE the client announced (16384 unless
it announced more): the echo's large responses are what make the server split DATA and wait for
WINDOW_UPDATEs, and a client that allows longer frames may get them.

Each bug the properties found is reduced to a plain test at the end of this file; the timeouts
(header, body, idle, a response blocked by flow control) are left to test_grpc_transport.py, since
they fire on a tick of 50 ms or more.
"""

import asyncio
import bisect
import gzip
import itertools
import json
from collections import defaultdict
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field, replace
from typing import Any, cast

import hpack
import pytest
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)
from hyperframe.frame import Frame as HyperFrame
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from serving_image.grpc_connection import GrpcConnection
from serving_image.grpc_server import GrpcServer
from serving_image.grpc_wire import STATUS_CODES, Call, RpcError, unframe_message
from serving_image.http2_connection import ConnectionLimits
from serving_image.http2_frames import (
    DEFAULT_MAX_FRAME,
    DEFAULT_WINDOW,
    FRAME_HEADER_BYTES,
    MAX_FRAME_LIMIT,
    MAX_WINDOW,
    PREFACE,
    ErrorCode,
    Flag,
    FrameType,
    Setting,
    frame,
    settings_frame,
    u32,
)
from serving_image.proto import grpc_predict_v2_pb2 as pb

# Derandomized: the same examples on every run, so CI is reproducible and bounded.
BUDGET = settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
LIMITS = ConnectionLimits(
    max_message_bytes=256,
    max_header_bytes=512,
    max_header_count=10,
    max_streams=3,
    header_timeout=5.0,
    body_timeout=5.0,
    idle_timeout=5.0,
    max_connections=4,
)
SERVICE = b"/inference.GRPCInferenceService/"
ECHO, FAIL, SLOW = SERVICE + b"ModelInfer", SERVICE + b"ModelFail", SERVICE + b"ModelSlow"
# Response sizes by model name: "medium" is split over frames, "big" outgrows the default window.
ECHO_SIZES = {"medium": 20_000, "big": 70_000}
SLOW_SECONDS = 0.002
ERROR_CODES = frozenset(int(code) for code in ErrorCode)
GRPC_CODES = frozenset(STATUS_CODES.values())
# The flags each frame type the server sends may carry (RFC 9113 section 6).
SERVER_FLAGS = {
    FrameType.DATA: Flag.END_STREAM,
    FrameType.HEADERS: Flag.END_STREAM | Flag.END_HEADERS,
    FrameType.RST_STREAM: 0,
    FrameType.SETTINGS: Flag.ACK,
    FrameType.PING: Flag.ACK,
    FrameType.GOAWAY: 0,
    FrameType.WINDOW_UPDATE: 0,
    FrameType.CONTINUATION: Flag.END_HEADERS,
}
CONNECTION_FRAMES = {FrameType.SETTINGS, FrameType.PING, FrameType.GOAWAY}
STREAM_FRAMES = {FrameType.DATA, FrameType.HEADERS, FrameType.RST_STREAM, FrameType.CONTINUATION}
HYPERFRAME_TYPES: dict[int, type[HyperFrame]] = {
    FrameType.DATA: DataFrame,
    FrameType.HEADERS: HeadersFrame,
    FrameType.RST_STREAM: RstStreamFrame,
    FrameType.SETTINGS: SettingsFrame,
    FrameType.PING: PingFrame,
    FrameType.GOAWAY: GoAwayFrame,
    FrameType.WINDOW_UPDATE: WindowUpdateFrame,
    FrameType.CONTINUATION: ContinuationFrame,
}
HYPERFRAME_FLAGS = {"END_STREAM": 0x1, "ACK": 0x1, "END_HEADERS": 0x4, "PADDED": 0x8, "PRIORITY": 0x20}


# -- the server under test --------------------------------------------------------------------------------


async def echo(request: pb.ModelInferRequest, call: Call) -> pb.ModelInferResponse:
    """Answers at once, with a response as large as the model name asks and a trailer."""
    call.trailing.append((b"x-echo", b"1"))
    size = ECHO_SIZES.get(request.model_name, 0)
    return pb.ModelInferResponse(
        model_name=request.model_name, id=request.id, raw_output_contents=[bytes(size)]
    )


async def fail(request: pb.ModelInferRequest, _call: Call) -> pb.ModelInferResponse:
    """Always NOT_FOUND, with the client's text and a non-ASCII character in the message."""
    raise RpcError("NOT_FOUND", f"no model {request.model_name!r} here (ø, 100%)")


async def slow(request: pb.ModelInferRequest, call: Call) -> pb.ModelInferResponse:
    """Answers after a short sleep, so resets, deadlines and new frames arrive while it runs."""
    if call.cancelled:
        raise asyncio.CancelledError
    await asyncio.sleep(SLOW_SECONDS)
    return pb.ModelInferResponse(model_name="slow", id=request.id)


RECEIVED: list[int] = []  # the size of each message handed to a parser in the current conversation


def parse(message: bytes) -> pb.ModelInferRequest:
    """The request parser, noting each message's size (none may exceed the limit)."""
    RECEIVED.append(len(message))
    return pb.ModelInferRequest.FromString(message)


METHODS = {
    ECHO.decode(): (parse, echo),
    FAIL.decode(): (parse, fail),
    SLOW.decode(): (parse, slow),
}


@dataclass(frozen=True)
class Write:
    """One write by the server, and the client frames it may depend on: those read before the call to
    ``data_received`` that made it (``span[0]``) up to those read when it returned (``span[1]``)."""

    data: bytes
    span: tuple[int, int]


class FakeTransport(asyncio.Transport):
    """Records writes; ``close()`` ends the connection on the next loop iteration, as asyncio's does."""

    def __init__(self, protocol: asyncio.Protocol) -> None:
        super().__init__({"peername": ("192.0.2.1", 50_000), "sockname": ("192.0.2.2", 8001)})
        self.protocol = protocol
        self.writes: list[Write] = []
        self.span = (0, 0)
        self.closed = False
        self.reading = True
        self.writes_after_close = 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writes_after_close += self.closed
        self.writes.append(Write(bytes(data), self.span))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            asyncio.get_running_loop().call_soon(self.protocol.connection_lost, None)

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def is_reading(self) -> bool:
        return self.reading


def connect(server: GrpcServer) -> tuple[GrpcConnection, FakeTransport]:
    """A new connection to ``server`` (in a running loop), as its listener would make it."""
    connection = GrpcConnection(server)
    transport = FakeTransport(connection)
    connection.connection_made(transport)
    return connection, transport


# -- what the client granted ------------------------------------------------------------------------------


@dataclass
class ClientModel:
    """The client's byte stream read as the server reads it: where each frame ends, and after each
    frame ``k`` (index 0 is before the first) the windows and ids the client has given the server."""

    frame_ends: list[int] = field(default_factory=list)
    initial_window: list[int] = field(default_factory=lambda: [DEFAULT_WINDOW])
    window_peak: list[int] = field(default_factory=lambda: [DEFAULT_WINDOW])
    connection_credit: list[int] = field(default_factory=lambda: [0])
    stream_credit: list[tuple[int, int, int]] = field(default_factory=list)  # (frame, stream, increment)
    opened: set[int] = field(default_factory=set)  # HEADERS were sent on these
    referenced: set[int] = field(default_factory=set)  # any frame was sent on these
    max_frame: int = DEFAULT_MAX_FRAME
    acks_due: list[bytes] = field(default_factory=list)  # a PING's payload, or b"" for a SETTINGS

    def frames_read(self, delivered: int) -> int:
        """How many whole frames are in the first ``delivered`` bytes."""
        return bisect.bisect_right(self.frame_ends, delivered)

    def stream_allowance(self, stream_id: int, span: tuple[int, int]) -> int:
        """The most DATA a stream may have carried by a write of ``span``: a stream's window is the
        current SETTINGS_INITIAL_WINDOW_SIZE plus its WINDOW_UPDATEs, less what was sent, and the
        write's DATA was sized at some moment within the span."""
        first, last = span
        initial = max([self.initial_window[first], *self.window_peak[first + 1 : last + 1]])
        credit = sum(inc for k, sid, inc in self.stream_credit if sid == stream_id and k <= last)
        return initial + credit

    def connection_allowance(self, span: tuple[int, int]) -> int:
        """The most DATA the connection may have carried by a write of ``span``."""
        return DEFAULT_WINDOW + self.connection_credit[span[1]]


def model_client(client: bytes) -> ClientModel:
    """Read the client's frames (after the preface) as far as the server could."""
    assert client.startswith(PREFACE), "every conversation starts with the preface"
    model, position = ClientModel(), len(PREFACE)
    while len(client) - position >= FRAME_HEADER_BYTES:
        length = int.from_bytes(client[position : position + 3], "big")
        if length > DEFAULT_MAX_FRAME or len(client) - position - FRAME_HEADER_BYTES < length:
            break  # the server closes the connection here, or waits for the rest
        kind, flags = client[position + 3], client[position + 4]
        stream_id = u32(client, position + 5) & 0x7FFFFFFF
        payload = client[position + FRAME_HEADER_BYTES : position + FRAME_HEADER_BYTES + length]
        position += FRAME_HEADER_BYTES + length
        model.frame_ends.append(position)
        _apply(model, kind, flags, stream_id, payload)
    return model


def _apply(model: ClientModel, kind: int, flags: int, stream_id: int, payload: bytes) -> None:
    window, peak, credit = model.initial_window[-1], model.initial_window[-1], model.connection_credit[-1]
    model.referenced.add(stream_id)
    if kind in (FrameType.PING, FrameType.SETTINGS) and not flags & Flag.ACK:
        model.acks_due.append(payload if kind == FrameType.PING else b"")
    if kind == FrameType.HEADERS:
        model.opened.add(stream_id)
    elif kind == FrameType.SETTINGS and not flags & Flag.ACK and len(payload) % 6 == 0:
        for offset in range(0, len(payload), 6):
            key, value = int.from_bytes(payload[offset : offset + 2], "big"), u32(payload, offset + 2)
            if key == Setting.INITIAL_WINDOW_SIZE and value <= MAX_WINDOW:
                window, peak = value, max(peak, value)
            elif key == Setting.MAX_FRAME_SIZE and DEFAULT_MAX_FRAME <= value <= MAX_FRAME_LIMIT:
                model.max_frame = max(model.max_frame, value)
    elif kind == FrameType.WINDOW_UPDATE and len(payload) == 4:
        increment = u32(payload) & 0x7FFFFFFF
        if stream_id:
            model.stream_credit.append((len(model.frame_ends), stream_id, increment))
        else:
            credit += increment
    model.initial_window.append(window)
    model.window_peak.append(peak)
    model.connection_credit.append(credit)


# -- running one conversation -----------------------------------------------------------------------------


@dataclass
class Run:
    """What one conversation left behind."""

    writes: list[Write]
    closed_by_server: bool
    loop_errors: list[dict[str, Any]]
    task_errors: list[BaseException]
    tasks_left: int
    connections_left: int
    writes_after_close: int
    received: list[int]
    finished: bool  # every byte was delivered and the calls had time to finish


@dataclass
class Recorder:
    """The loop's unhandled errors and every task created while the connection lived."""

    loop_errors: list[dict[str, Any]] = field(default_factory=list)
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)

    def on_error(self, _loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        self.loop_errors.append(context)

    def task_factory(
        self, loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Any], **kwargs: Any
    ) -> asyncio.Task[Any]:
        task = asyncio.Task(coro, loop=loop, **kwargs)
        self.tasks.append(task)
        return task


Action = str  # what happens after a chunk is delivered: see ``_act``
# "disconnect" (the client goes away while calls may be running) once in fifteen, so most examples run on.
ACTIONS = (
    *("none", "yield", "sleep", "full", "drained", "server-drain", "server-close"),
    *("none", "yield", "sleep", "full", "drained", "server-cut", "yield", "disconnect"),
)
SETTLE = (0.0, 0.0, 0.0, SLOW_SECONDS * 2.5, 0.0, 0.0, 0.0)  # the slow handler and acks finish in this


Segment = tuple[bytes, Action]  # client bytes, and what happens once they are delivered


def chunked(segments: list[Segment], cuts: list[tuple[int, Action]]) -> Iterator[Segment]:
    """The client's bytes in chunks, cut at each segment's end and at the drawn sizes; each chunk with
    what happens after it (a segment's own action where both fall on one byte)."""
    client, position = b"".join(data for data, _ in segments), 0
    after: dict[int, Action] = {}
    for size, action in cuts:
        position += size
        after[position] = action
    position = 0
    for data, action in segments:
        position += len(data)
        after[position] = action
    start = 0
    for end in [*sorted(end for end in after if 0 < end < len(client)), len(client)]:
        yield client[start:end], after.get(end, "none")
        start = end


def check_bounds(connection: GrpcConnection) -> None:
    """What a connection holds while it is open is bounded by its limits, whatever it was sent."""
    if connection._closing:
        return
    assert len(connection._buffer) <= DEFAULT_MAX_FRAME + FRAME_HEADER_BYTES, (
        f"{len(connection._buffer)} bytes buffered: more than one incomplete frame"
    )
    assert len(connection.streams) <= LIMITS.max_streams, f"{len(connection.streams)} streams"
    bodies = [len(stream.body) for stream in connection.streams.values()]
    assert max(bodies, default=0) <= LIMITS.max_message_bytes + 5, f"a body of {max(bodies)} bytes held"
    assert sum(bodies) <= LIMITS.max_streams * (LIMITS.max_message_bytes + 5), f"{sum(bodies)} bytes held"
    if connection._header_block is not None:
        fragments = len(connection._header_block[2])
        assert fragments <= 4 * LIMITS.max_header_bytes, f"a header block of {fragments} bytes held"


async def _act(action: Action, connection: GrpcConnection, server: GrpcServer) -> None:
    if action == "yield":
        await asyncio.sleep(0)
    elif action == "sleep":
        await asyncio.sleep(SLOW_SECONDS / 2)
    elif action == "full":  # the client stops reading: the transport's write buffer fills
        connection.pause_writing()
    elif action == "drained":
        connection.resume_writing()
    elif action == "server-drain":
        server.start_draining()
    elif action == "server-close":
        server.close()
    elif action == "server-cut":  # the drain's grace period is over: calls still sending their message end
        server.cut_slow_bodies()


async def converse(segments: list[Segment], cuts: list[tuple[int, Action]], model: ClientModel) -> Run:
    """Feed the client's bytes to a new connection in chunks, let its calls finish, then disconnect."""
    loop = asyncio.get_running_loop()
    recorder = Recorder()
    loop.set_exception_handler(recorder.on_error)
    loop.set_task_factory(cast(Any, recorder.task_factory))
    server = GrpcServer(METHODS, LIMITS)
    RECEIVED.clear()
    connection, transport = connect(server)
    finished = await _feed(chunked(segments, cuts), server, connection, transport, model)
    if finished:
        for pause in SETTLE:
            await asyncio.sleep(pause)
    check_bounds(connection)
    closed_by_server = transport.closed
    if not closed_by_server:  # the client disconnects
        transport.closed = True
        connection.connection_lost(None)
    for _ in range(3):  # what was cancelled ends
        await asyncio.sleep(0)
    loop.set_task_factory(None)
    errors = [task.exception() for task in recorder.tasks if task.done() and not task.cancelled()]
    return Run(
        writes=transport.writes,
        closed_by_server=closed_by_server,
        loop_errors=recorder.loop_errors,
        task_errors=[error for error in errors if error is not None],
        tasks_left=sum(not task.done() for task in recorder.tasks),
        connections_left=len(server.connections),
        writes_after_close=transport.writes_after_close,
        received=list(RECEIVED),
        finished=finished,
    )


async def _feed(
    chunks: Iterator[Segment],
    server: GrpcServer,
    connection: GrpcConnection,
    transport: FakeTransport,
    model: ClientModel,
) -> bool:
    """Deliver the chunks, acting after each; False if the client disconnected before the end."""
    delivered, held = 0, b""
    for chunk, action in chunks:
        held += chunk
        if transport.reading:  # a paused transport delivers nothing until it resumes
            delivered, held = _deliver(connection, transport, model, delivered, held), b""
        if action == "disconnect":
            return False
        if action.startswith("server-") and delivered < len(PREFACE):
            continue  # a known bug, kept out of the property: see test_no_goaway_before_the_server_preface
        await _act(action, connection, server)
    connection.resume_writing()
    _deliver(connection, transport, model, delivered, held)
    return True


def _deliver(
    connection: GrpcConnection, transport: FakeTransport, model: ClientModel, delivered: int, data: bytes
) -> int:
    """Hand ``data`` to the connection, noting which client frames its writes may depend on; how many
    bytes have been delivered in all."""
    if data:
        before, after = model.frames_read(delivered), model.frames_read(delivered + len(data))
        transport.span = (before, after)
        connection.data_received(data)  # raising here fails the example
        transport.span = (after, after)
        check_bounds(connection)
    return delivered + len(data)


# -- reading what the server wrote ------------------------------------------------------------------------


@dataclass(frozen=True)
class ServerFrame:
    kind: int
    flags: int
    stream_id: int
    payload: bytes
    span: tuple[int, int]


def read_frames(write: Write, max_frame: int) -> list[ServerFrame]:
    """A write's frames; it must hold whole frames only, each within the size the client allows."""
    frames, data, position = [], write.data, 0
    while position < len(data):
        assert len(data) - position >= FRAME_HEADER_BYTES, f"a write ends inside a frame header: {data!r}"
        length = int.from_bytes(data[position : position + 3], "big")
        assert length <= max_frame, f"a frame of {length} bytes; the client allows {max_frame}"
        assert data[position + 5] & 0x80 == 0, f"the reserved bit is set: {data[position : position + 9]!r}"
        end = position + FRAME_HEADER_BYTES + length
        assert end <= len(data), f"a write ends inside a frame: {length} bytes announced, {data!r}"
        kind, flags, stream_id = data[position + 3], data[position + 4], u32(data, position + 5)
        frames.append(
            ServerFrame(kind, flags, stream_id, data[position + FRAME_HEADER_BYTES : end], write.span)
        )
        position = end
    return frames


def check_frame(item: ServerFrame) -> None:
    """What any single frame the server sends must be: a known type, on the right kind of stream, with
    flags that type defines and a payload of the right shape."""
    assert item.kind in SERVER_FLAGS, f"the server sent a frame of type {item.kind}"
    assert item.flags & ~SERVER_FLAGS[FrameType(item.kind)] == 0, f"undefined flags on {item}"
    if item.kind in CONNECTION_FRAMES:
        assert item.stream_id == 0, f"{FrameType(item.kind).name} on stream {item.stream_id}"
    if item.kind in STREAM_FRAMES:
        assert item.stream_id != 0, f"{FrameType(item.kind).name} on stream 0"
    if item.kind in (FrameType.RST_STREAM, FrameType.GOAWAY):
        code = u32(item.payload, 4 if item.kind == FrameType.GOAWAY else 0)
        assert code in ERROR_CODES, f"{FrameType(item.kind).name} with error code {code}"
    if item.kind == FrameType.PING:
        assert len(item.payload) == 8, f"a PING of {len(item.payload)} bytes"
    if item.kind == FrameType.WINDOW_UPDATE:
        assert len(item.payload) == 4, f"a WINDOW_UPDATE of {len(item.payload)} bytes"
        assert 0 < u32(item.payload) <= MAX_WINDOW, f"a WINDOW_UPDATE of {u32(item.payload)}"


@dataclass
class StreamView:
    """One stream's response as the client sees it."""

    blocks: list[dict[str, str]] = field(default_factory=list)
    body: bytearray = field(default_factory=bytearray)
    ended: bool = False
    ended_by_headers: bool = False
    reset: bool = False


class Reader:
    """Reads the server's frames in order, as a client would, checking each against what came before
    and what the client sent."""

    def __init__(self, model: ClientModel) -> None:
        self.model = model
        self.decoder = hpack.Decoder()
        self.streams: defaultdict[int, StreamView] = defaultdict(StreamView)
        self.block: tuple[int, bytearray] | None = None  # a header block awaiting its CONTINUATION
        self.sent: defaultdict[int, int] = defaultdict(int)  # DATA bytes by stream, 0 for the connection
        self.goaway_last = MAX_WINDOW
        self.acks: list[bytes] = []  # the payloads of PING and SETTINGS acknowledgements

    def read(self, item: ServerFrame) -> None:
        check_frame(item)
        view = self.streams[item.stream_id]
        if item.kind in (FrameType.DATA, FrameType.HEADERS):
            assert item.stream_id in self.model.opened, f"{item} on a stream the client never opened"
            assert not view.ended and not view.reset, f"{item} after the stream ended or was reset"
            assert item.stream_id <= self.goaway_last, f"{item} above the GOAWAY's {self.goaway_last}"
        if item.kind == FrameType.RST_STREAM:
            assert item.stream_id in self.model.referenced, f"RST_STREAM on {item.stream_id}, never used"
            assert u32(item.payload) != ErrorCode.NO_ERROR or view.ended, f"{item} before the response ended"
            view.reset = True
        if item.kind == FrameType.DATA:
            self._check_window(item)
            view.body += item.payload
        if item.kind == FrameType.GOAWAY:
            last = u32(item.payload) & 0x7FFFFFFF
            assert last <= self.goaway_last, f"a GOAWAY raised the last stream id from {self.goaway_last}"
            self.goaway_last = last
        if item.kind in (FrameType.PING, FrameType.SETTINGS) and item.flags & Flag.ACK:
            self.acks.append(item.payload)
        self._read_block(item)
        if item.kind in (FrameType.DATA, FrameType.HEADERS) and item.flags & Flag.END_STREAM:
            view.ended, view.ended_by_headers = True, item.kind == FrameType.HEADERS

    def _read_block(self, item: ServerFrame) -> None:
        if self.block is not None:
            assert item.kind == FrameType.CONTINUATION and item.stream_id == self.block[0], (
                f"{item} in a block"
            )
            self.block[1].extend(item.payload)
        elif item.kind == FrameType.HEADERS:
            self.block = (item.stream_id, bytearray(item.payload))
        if self.block is not None and item.flags & Flag.END_HEADERS:
            self.streams[self.block[0]].blocks.append(_decode(self.decoder, bytes(self.block[1])))
            self.block = None

    def _check_window(self, item: ServerFrame) -> None:
        self.sent[item.stream_id] += len(item.payload)
        self.sent[0] += len(item.payload)
        sent, allowed = self.sent[item.stream_id], self.model.stream_allowance(item.stream_id, item.span)
        assert sent <= allowed, (
            f"{sent} bytes of DATA on stream {item.stream_id}; the client granted {allowed}"
        )
        allowed = self.model.connection_allowance(item.span)
        assert self.sent[0] <= allowed, f"{self.sent[0]} bytes of DATA in all; the client granted {allowed}"


def _decode(decoder: hpack.Decoder, block: bytes) -> dict[str, str]:
    try:
        fields = decoder.decode(block)
    except hpack.HPACKError as error:
        raise AssertionError(f"hpack cannot decode the server's block {block!r}: {error}") from error
    return {str(name): str(value) for name, value in fields}


def check_response(stream_id: int, view: StreamView) -> None:
    """A response: headers with a :status first, trailers at most after them. A gRPC response that ended
    has a known status, never INTERNAL (these handlers raise only RpcError); with OK, its body is one
    ModelInferResponse. An HTTP error's body is JSON with an "error"."""
    if not view.blocks:
        assert not view.body, f"DATA on stream {stream_id} before any HEADERS"
        return
    assert ":status" in view.blocks[0], f"stream {stream_id}'s first header block has no :status"
    assert len(view.blocks) <= 2, f"stream {stream_id} got {len(view.blocks)} header blocks"
    content_type = view.blocks[0].get("content-type")
    if view.ended_by_headers and content_type == "application/grpc":
        status = int(view.blocks[-1].get("grpc-status", "-1"))
        assert status in GRPC_CODES, f"stream {stream_id} ended with grpc-status {status}"
        assert status != STATUS_CODES["INTERNAL"], f"stream {stream_id}: INTERNAL, a handler crashed"
        if status == STATUS_CODES["OK"]:
            message = unframe_message(view.body, None, 2**20)
            assert pb.ModelInferResponse.FromString(message).ByteSize() == len(message), "not one response"
    if view.ended and content_type == "application/json":
        assert "error" in json.loads(view.body), f"stream {stream_id}'s error body: {bytes(view.body)!r}"


def check_conversation(run: Run, model: ClientModel) -> list[ServerFrame]:
    """Every property of the server's side of one conversation; its frames."""
    assert not run.loop_errors, f"unhandled errors in the loop: {run.loop_errors}"
    assert not run.task_errors, f"a call's task raised: {run.task_errors!r}"
    assert run.tasks_left == 0, f"{run.tasks_left} tasks outlived the connection"
    assert run.connections_left == 0, "the server still counts a connection that has ended"
    assert run.writes_after_close == 0, f"{run.writes_after_close} writes after the transport closed"
    assert max(run.received, default=0) <= LIMITS.max_message_bytes, f"a handler got {run.received} bytes"
    frames = [item for write in run.writes for item in read_frames(write, model.max_frame)]
    if frames:
        assert frames[0].kind == FrameType.SETTINGS and not frames[0].flags, (
            f"the server began with {frames[0]}"
        )
    reader = Reader(model)
    for item in frames:
        reader.read(item)
    assert reader.block is None, "a header block was left without its END_HEADERS"
    for stream_id, view in reader.streams.items():
        check_response(stream_id, view)
    if run.finished and not run.closed_by_server:  # every frame was read, and every PING and SETTINGS acked
        assert sorted(reader.acks) == sorted(model.acks_due), f"acks {reader.acks}, due {model.acks_due}"
    return frames


def check_closed(run: Run) -> None:
    """A connection the server ended was ended with a GOAWAY: in its last write, unless the GOAWAY was a
    graceful one (NO_ERROR) and the calls still running were answered after it."""
    if not run.closed_by_server:
        return
    goaways = [
        (index, u32(item.payload, 4))
        for index, write in enumerate(run.writes)
        for item in read_frames(write, MAX_FRAME_LIMIT)
        if item.kind == FrameType.GOAWAY
    ]
    assert goaways, "the server closed the connection without a GOAWAY"
    last_index, last_code = goaways[-1]
    assert last_code in ERROR_CODES, f"the closing GOAWAY's code is {last_code}"
    if last_index != len(run.writes) - 1:
        assert last_code == ErrorCode.NO_ERROR, f"writes followed a GOAWAY with {ErrorCode(last_code).name}"


def run_conversation(segments: list[Segment], cuts: list[tuple[int, Action]]) -> tuple[Run, ClientModel]:
    model = model_client(b"".join(data for data, _ in segments))
    return asyncio.run(converse(segments, cuts, model)), model


# -- what a client sends ----------------------------------------------------------------------------------

Headers = list[tuple[bytes, bytes]]
STREAM_IDS = st.sampled_from([1, 3, 5, 2, 0, 7, 9, 4, 11, 2**31 - 1])
BASE_HEADERS: Headers = [
    (b":method", b"POST"),
    (b":scheme", b"http"),
    (b":path", ECHO),
    (b":authority", b"fuzz"),
    (b"content-type", b"application/grpc"),
    (b"te", b"trailers"),
]
GOOD_FIELDS = st.sampled_from(
    [
        (b"grpc-timeout", b"100S"),
        (b"grpc-timeout", b"1m"),  # passes while the slow handler sleeps: DEADLINE_EXCEEDED
        (b"grpc-encoding", b"identity"),
        (b"x-meta", b"v"),
        (b"x-meta-bin", b"\x00\xff"),
        (b"user-agent", b"fuzz/1"),
    ]
)
BAD_FIELDS = st.one_of(
    st.sampled_from(
        [
            (b"grpc-timeout", b"1n"),
            (b"grpc-timeout", b"soon"),
            (b"grpc-encoding", b"br"),
            (b"grpc-encoding", b"gzip"),
            (b"content-length", b"0"),
            (b"content-length", b"12"),
            (b"content-length", b"twelve"),
            (b"x-big", b"v" * 600),  # over max_header_bytes: RESOURCE_EXHAUSTED for this call alone
            (b"X-Upper", b"v"),
            (b"connection", b"close"),
            (b"te", b"gzip"),
            (b"x-bad", b"a\r\nb"),
            (b"x-space", b" v"),
            (b":path", b"/again"),
        ]
    ),
    st.tuples(st.binary(max_size=8), st.binary(max_size=8)),
)


def _replace(name: bytes, value: bytes) -> Callable[[Headers], Headers]:
    return lambda headers: [(n, value if n == name else v) for n, v in headers]


MUTATIONS: list[Callable[[Headers], Headers]] = [
    _replace(b":method", b"GET"),
    _replace(b"content-type", b"text/plain"),
    _replace(b"content-type", b"application/grpc+proto"),
    _replace(b":path", SERVICE + b"Unknown"),
    _replace(b":path", b""),
    lambda headers: headers[1:],  # no :method
    lambda headers: headers[:2] + headers[3:],  # no :path
    lambda headers: [*headers[4:], *headers[:4]],  # pseudo-headers after regular ones
    lambda headers: [],
]


@st.composite
def request_headers(draw: st.DrawFn, well_formed: bool) -> Headers:
    """A call's headers to one of the three methods; unless ``well_formed``, with bad fields and broken
    in ways RFC 9113 section 8 or gRPC forbids."""
    path = draw(st.sampled_from([ECHO, SLOW, FAIL]))
    headers = [(name, path if name == b":path" else value) for name, value in BASE_HEADERS]
    if well_formed:
        return headers + draw(st.lists(GOOD_FIELDS, max_size=3))
    headers += draw(st.lists(st.one_of(GOOD_FIELDS, BAD_FIELDS), max_size=6))
    for mutation in draw(st.lists(st.sampled_from(MUTATIONS), max_size=2)):
        headers = mutation(headers)
    return headers


TRAILERS = st.sampled_from([[(b"x-trailer", b"1")], [], [(b":path", b"/x")], [(b"te", b"trailers")]])
PAYLOADS = st.builds(
    lambda name, request_id: pb.ModelInferRequest(model_name=name, id=request_id).SerializeToString(),
    st.sampled_from(["small", "medium", "big", "naïve"]),
    st.text(max_size=6),
)


def prefixed(payload: bytes, compressed: bool = False) -> bytes:
    return bytes((int(compressed),)) + len(payload).to_bytes(4, "big") + payload


GOOD_BODIES = st.one_of(
    PAYLOADS.map(prefixed), PAYLOADS.map(lambda payload: prefixed(gzip.compress(payload), compressed=True))
)
BODIES = st.one_of(
    GOOD_BODIES,
    PAYLOADS.map(lambda payload: prefixed(payload)[:-1]),
    st.binary(max_size=40),
    # Valid requests over the size limit, as they are and compressed.
    st.just(prefixed(pb.ModelInferRequest(id="x" * LIMITS.max_message_bytes).SerializeToString())),
    st.just(prefixed(gzip.compress(pb.ModelInferRequest(id="x" * 4096).SerializeToString()), True)),
)


def splits(draw: st.DrawFn, data: bytes, most: int) -> list[bytes]:
    """``data`` cut in up to ``most`` pieces at drawn places (one empty piece if it is empty)."""
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=most - 1)))
    return [data[start:end] for start, end in itertools.pairwise([0, *cuts, len(data)])]


def padded(draw: st.DrawFn, payload: bytes, flags: int) -> bytes:
    """The payload with the padding its PADDED flag announces."""
    if not flags & Flag.PADDED:
        return payload
    padding = draw(st.integers(0, 8))
    return bytes((padding,)) + payload + bytes(padding)


def header_frames(
    draw: st.DrawFn, stream_id: int, block: bytes, end_stream: bool, well_formed: bool
) -> bytes:
    """HEADERS and its CONTINUATIONs for one block, with optional padding and priority (a stream may
    depend on itself only when not ``well_formed``)."""
    fragments = splits(draw, block, 3)
    flags = draw(st.sampled_from([0, Flag.PADDED, Flag.PRIORITY, Flag.PADDED | Flag.PRIORITY]))
    flags |= (Flag.END_STREAM if end_stream else 0) | (Flag.END_HEADERS if len(fragments) == 1 else 0)
    first = fragments[0]
    if flags & Flag.PRIORITY:
        dependency = draw(st.sampled_from([0, stream_id + 2] if well_formed else [stream_id, 0]))
        first = u32_bytes(dependency) + b"\x10" + first
    out = frame(FrameType.HEADERS, flags, stream_id, padded(draw, first, flags))
    for index, fragment in enumerate(fragments[1:], start=2):
        last = Flag.END_HEADERS if index == len(fragments) else 0
        out += frame(FrameType.CONTINUATION, last, stream_id, fragment)
    return out


DEFECTS = ("headers", "message", "framing")


@st.composite
def calls(draw: st.DrawFn, encoder: hpack.Encoder, stream_id: int, defect: str | None) -> bytes:
    """One call: its headers, its message (compressed or not) in DATA frames, maybe trailers. ``defect``
    says what is wrong with it, if anything: its headers, its message (absent, truncated, random, too
    large), or its framing (a stream that depends on itself, no end, a reset, bad trailers)."""
    headers = draw(request_headers(well_formed=defect != "headers"))
    payload, compressed = draw(PAYLOADS), draw(st.booleans())
    body = prefixed(gzip.compress(payload), True) if compressed else prefixed(payload)
    headers += [(b"grpc-encoding", b"gzip")] if compressed else []
    message = draw(st.one_of(st.none(), BODIES)) if defect == "message" else body
    framing = defect == "framing"
    block = encoder.encode(headers, huffman=draw(st.booleans()))
    out = header_frames(draw, stream_id, block, message is None, well_formed=not framing)
    if message is None:
        return out
    ending = draw(st.sampled_from(["data", "trailers", "open", "reset"] if framing else ["data", "trailers"]))
    pieces = splits(draw, message, 3)
    for index, piece in enumerate(pieces, start=1):
        flags = draw(st.sampled_from([0, Flag.PADDED]))
        if index == len(pieces) and ending == "data":
            flags |= Flag.END_STREAM
        out += frame(FrameType.DATA, flags, stream_id, padded(draw, piece, flags))
    if ending == "trailers":
        trailers = encoder.encode(draw(TRAILERS if framing else st.just([(b"x-trailer", b"1")])))
        out += header_frames(draw, stream_id, trailers, True, well_formed=not framing)
    elif ending == "reset":
        out += frame(FrameType.RST_STREAM, 0, stream_id, u32_bytes(ErrorCode.CANCEL))
    return out


SETTING_KEYS = st.sampled_from([*map(int, Setting), 0, 7, 0xFFFF])
SETTING_VALUES = st.one_of(
    st.sampled_from(
        [0, 1, 100, 16_383, 16_384, 20_000, 65_535, 2**24 - 1, 2**24, 2**31 - 1, 2**31, 2**32 - 1]
    ),
    st.integers(0, 2**32 - 1),
)
INITIAL_SETTINGS = st.fixed_dictionaries(
    {},
    optional={
        Setting.INITIAL_WINDOW_SIZE: st.sampled_from([DEFAULT_WINDOW, 0, 1, 100, 20_000, MAX_WINDOW]),
        Setting.MAX_FRAME_SIZE: st.sampled_from([DEFAULT_MAX_FRAME, 20_000, MAX_FRAME_LIMIT]),
        Setting.ENABLE_PUSH: st.sampled_from([0, 1]),
        Setting.HEADER_TABLE_SIZE: st.sampled_from([0, 4096]),
    },
)
GOOD_SETTINGS = st.fixed_dictionaries(
    {},
    optional={
        Setting.INITIAL_WINDOW_SIZE: st.sampled_from([0, 100, 20_000, DEFAULT_WINDOW, 2**20]),
        Setting.MAX_FRAME_SIZE: st.sampled_from([DEFAULT_MAX_FRAME, 20_000]),
        Setting.HEADER_TABLE_SIZE: st.just(4096),
    },
)
INCREMENTS = st.sampled_from([1, 100, 20_000, 65_535, 2**20])


def u32_bytes(value: int) -> bytes:
    return value.to_bytes(4, "big")


PAYLOAD_SHAPES: dict[int, st.SearchStrategy[bytes]] = {
    FrameType.DATA: BODIES,
    FrameType.PRIORITY: st.builds(
        lambda stream_id, exclusive: u32_bytes(stream_id | exclusive) + b"\x10",
        STREAM_IDS,
        st.sampled_from([0, 2**31]),
    ),
    FrameType.RST_STREAM: st.one_of(st.integers(0, 14), st.just(2**32 - 1)).map(u32_bytes),
    FrameType.SETTINGS: st.lists(st.tuples(SETTING_KEYS, SETTING_VALUES), max_size=3).map(
        lambda pairs: b"".join(key.to_bytes(2, "big") + u32_bytes(value) for key, value in pairs)
    ),
    FrameType.PING: st.sampled_from([b"draining", bytes(8), b"fuzzping"]),
    FrameType.GOAWAY: st.builds(
        lambda last, code, debug: u32_bytes(last) + u32_bytes(code) + debug,
        STREAM_IDS,
        st.integers(0, 14),
        st.binary(max_size=8),
    ),
    FrameType.WINDOW_UPDATE: st.one_of(INCREMENTS, st.sampled_from([2**31 - 1, 0, 2**31, 2**32 - 1])).map(
        u32_bytes
    ),
}


def frame_payloads(kind: int, encoder: hpack.Encoder) -> st.SearchStrategy[bytes]:
    """Payloads of the right shape for ``kind`` (their values still drawn); random bytes for unknown types.
    Header blocks are encoded as they are drawn, so ``encoder``'s table follows the frames' order."""
    blocks = st.one_of(request_headers(well_formed=False), TRAILERS).map(encoder.encode)
    if kind == FrameType.PUSH_PROMISE:
        return blocks.map(lambda block: u32_bytes(2) + block)
    if kind in (FrameType.HEADERS, FrameType.CONTINUATION):
        return blocks
    return PAYLOAD_SHAPES.get(kind, st.binary(max_size=16))


@st.composite
def any_frames(draw: st.DrawFn, encoder: hpack.Encoder, opened: list[int]) -> bytes:
    """Any frame: one of the ten types or an unknown one, any flags, on a stream the client opened or
    on a small id of either parity or 0, with a payload of the right shape or random bytes."""
    kind = draw(st.integers(0, 10))
    kind = draw(st.integers(10, 255)) if kind == 10 else kind
    flags = draw(st.one_of(st.sampled_from([0, 0x1, 0x4, 0x5, 0x8, 0x20, 0x2D]), st.integers(0, 255)))
    stream_id = draw(st.one_of(st.sampled_from(opened or [0]), STREAM_IDS))
    payload = draw(st.one_of(frame_payloads(kind, encoder), st.binary(max_size=24)))
    if kind in (FrameType.DATA, FrameType.HEADERS) and draw(st.booleans()):
        payload = padded(draw, payload, flags)
    return frame(kind, flags, stream_id, payload)


@st.composite
def control_frames(draw: st.DrawFn, opened: list[int]) -> bytes:
    """A valid frame a client sends besides its calls: windows for responses (on the connection or a
    stream the client opened), PINGs (the drain's acknowledged), SETTINGS, PRIORITY, RST_STREAM and an
    extension frame."""
    stream_id = draw(st.sampled_from(opened or [0]))
    kind = draw(st.integers(0, 6))
    if kind <= 1:  # a stream's window, or the connection's, or both (a response needs both)
        updates = [
            frame(FrameType.WINDOW_UPDATE, 0, sid, u32_bytes(draw(INCREMENTS))) for sid in {0, stream_id}
        ]
        return b"".join(updates[: draw(st.integers(1, 2))])
    if kind == 2:
        ping = draw(st.sampled_from([(0, bytes(8)), (Flag.ACK, b"draining")]))
        return frame(FrameType.PING, ping[0], 0, ping[1])
    if kind == 3:
        return settings_frame(draw(GOOD_SETTINGS))
    if kind == 4:
        return frame(FrameType.PRIORITY, 0, stream_id + 2, u32_bytes(stream_id) + b"\x10")
    if kind == 5 and stream_id:
        return frame(FrameType.RST_STREAM, 0, stream_id, u32_bytes(ErrorCode.CANCEL))
    return frame(0xBE, draw(st.integers(0, 255)), draw(STREAM_IDS), draw(st.binary(max_size=8)))


@st.composite
def floods(draw: st.DrawFn, encoder: hpack.Encoder, stream_id: int) -> tuple[bytes, list[int]]:
    """Many frames at once: PINGs or SETTINGS (over the control-frame budget), or calls opened and
    reset at once (rapid reset: the slow handler is still running when its reset arrives); the
    frames, and the streams they open."""
    count = draw(st.integers(2, 1100))
    kind = draw(st.sampled_from(["reset", "ping", "settings"]))
    if kind == "ping":
        return frame(FrameType.PING, 0, 0, bytes(8)) * count, []
    if kind == "settings":
        return settings_frame({}) * count, []
    out, ids = b"", list(range(stream_id, stream_id + 2 * min(count, 40), 2))
    headers = [(name, SLOW if name == b":path" else value) for name, value in BASE_HEADERS]
    for sid in ids:
        out += frame(FrameType.HEADERS, Flag.END_HEADERS, sid, encoder.encode(headers))
        out += frame(FrameType.DATA, Flag.END_STREAM, sid, prefixed(b""))
        out += frame(FrameType.RST_STREAM, 0, sid, u32_bytes(ErrorCode.CANCEL))
    return out, ids


PAUSES = st.sampled_from(("none", "yield", "sleep", "none"))


@st.composite
def conversations(draw: st.DrawFn) -> list[Segment]:
    """The preface, a SETTINGS, then calls, other frames and floods, encoded with one HPACK context, and
    after each the loop may run (so responses meet later frames); two events in three are well-formed."""
    encoder = hpack.Encoder()
    if draw(st.booleans()):
        encoder.header_table_size = 0  # no dynamic table: blocks stay decodable after a skipped one
    segments = [(PREFACE + settings_frame(draw(INITIAL_SETTINGS)), "none")]
    opened: list[int] = []  # odd ids the client sent HEADERS on
    for _ in range(draw(st.integers(1, 10))):
        event, well_formed = draw(st.integers(0, 19)), draw(st.integers(0, 2)) < 2
        stream_id = max(opened, default=-1) + 2
        if event < 10:
            stream_id = stream_id if well_formed or draw(st.booleans()) else draw(STREAM_IDS)
            defect = None if well_formed else draw(st.sampled_from(DEFECTS))
            data = draw(calls(encoder, stream_id, defect))
            opened += [stream_id] if stream_id % 2 else []
            if well_formed and draw(st.booleans()):  # the client reads the response and opens its windows
                segments.append((data, "sleep"))
                data = b"".join(
                    frame(FrameType.WINDOW_UPDATE, 0, sid, u32_bytes(draw(INCREMENTS)))
                    for sid in (stream_id, 0)
                )
        elif event < 19:
            data = draw(control_frames(opened) if well_formed else any_frames(encoder, opened))
        else:
            data, ids = draw(floods(encoder, stream_id))
            opened += ids
        segments.append((data, draw(PAUSES)))
    if draw(st.integers(0, 3)) == 0:  # the client goes away at once, while its calls may still run
        segments.append((b"", "disconnect"))
    return segments


CUTS = st.lists(
    st.tuples(
        st.one_of(st.integers(1, 16), st.integers(1, 512), st.integers(1, 20_000)), st.sampled_from(ACTIONS)
    ),
    max_size=20,
)
NOISE = st.lists(
    st.one_of(
        st.binary(max_size=32),
        st.builds(frame, st.integers(0, 12), st.integers(0, 255), STREAM_IDS, st.binary(max_size=40)),
        # A frame header announcing the longest allowed length or more, and up to 20 kB of it.
        st.builds(
            lambda length, kind, size: length.to_bytes(3, "big") + bytes((kind, 0, 0, 0, 0, 1)) + bytes(size),
            st.sampled_from([DEFAULT_MAX_FRAME, DEFAULT_MAX_FRAME + 1, MAX_FRAME_LIMIT]),
            st.integers(0, 12),
            st.integers(0, 20_000),
        ),
    ),
    max_size=12,
).map(b"".join)


# -- the properties ---------------------------------------------------------------------------------------


@BUDGET
@given(noise=NOISE, cuts=CUTS)
def test_arbitrary_bytes_after_the_preface_never_break_the_connection(
    noise: bytes, cuts: list[tuple[int, Action]]
) -> None:
    run, model = run_conversation([(PREFACE + settings_frame({}) + noise, "none")], cuts)
    check_closed(run)
    check_conversation(run, model)


@BUDGET
@given(segments=conversations(), cuts=CUTS)
def test_frame_sequences_get_well_formed_answers_within_the_windows(
    segments: list[Segment], cuts: list[tuple[int, Action]]
) -> None:
    run, model = run_conversation(segments, cuts)
    check_closed(run)
    check_conversation(run, model)


@BUDGET
@given(segments=conversations(), cuts=CUTS)
def test_hyperframe_reads_every_frame_the_server_writes(
    segments: list[Segment], cuts: list[tuple[int, Action]]
) -> None:
    run, model = run_conversation(segments, cuts)
    for item in check_conversation(run, model):
        parsed, length = HyperFrame.parse_frame_header(memoryview(_header(item)), strict=True)
        parsed.parse_body(memoryview(item.payload))
        assert isinstance(parsed, HYPERFRAME_TYPES[item.kind]), f"hyperframe reads {parsed} for {item}"
        assert (length, parsed.stream_id) == (len(item.payload), item.stream_id), f"hyperframe reads {parsed}"
        flags = sum(HYPERFRAME_FLAGS[name] for name in parsed.flags)
        assert flags == item.flags, f"hyperframe reads flags {parsed.flags} for {item.flags:#x}"
        assert _hyperframe_fields(parsed) == _our_fields(item), f"hyperframe reads {parsed} for {item}"


def _header(item: ServerFrame) -> bytes:
    return frame(item.kind, item.flags, item.stream_id, item.payload)[:FRAME_HEADER_BYTES]


def _hyperframe_fields(parsed: HyperFrame) -> tuple[Any, ...]:
    if isinstance(parsed, DataFrame | HeadersFrame | ContinuationFrame):
        return (bytes(parsed.data),)
    if isinstance(parsed, RstStreamFrame):
        return (parsed.error_code,)
    if isinstance(parsed, SettingsFrame):
        return (parsed.settings,)
    if isinstance(parsed, PingFrame):
        return (bytes(parsed.opaque_data),)
    if isinstance(parsed, GoAwayFrame):
        return (parsed.last_stream_id, parsed.error_code, bytes(parsed.additional_data))
    if isinstance(parsed, WindowUpdateFrame):
        return (parsed.window_increment,)
    raise AssertionError(f"the server sent {parsed}")


def _our_fields(item: ServerFrame) -> tuple[Any, ...]:
    payload = item.payload
    if item.kind in (FrameType.DATA, FrameType.HEADERS, FrameType.CONTINUATION, FrameType.PING):
        return (payload,)
    if item.kind in (FrameType.RST_STREAM, FrameType.WINDOW_UPDATE):
        return (u32(payload),)
    if item.kind == FrameType.SETTINGS:
        pairs = [
            (int.from_bytes(payload[i : i + 2], "big"), u32(payload, i + 2))
            for i in range(0, len(payload), 6)
        ]
        return (dict(pairs),)
    return (u32(payload) & 0x7FFFFFFF, u32(payload, 4), payload[8:])


# -- the checks can fail ----------------------------------------------------------------------------------

CALL_ON_1 = frame(FrameType.HEADERS, Flag.END_HEADERS, 1, b"")  # the checks need only the stream opened
PREFACE_OUT = settings_frame({}) + frame(FrameType.SETTINGS, Flag.ACK, 0)
RESPONSE_START = frame(FrameType.HEADERS, Flag.END_HEADERS, 1, b"\x88")  # :status 200, no END_STREAM


def written_run(written: bytes, finished: bool) -> Run:
    """A conversation in which the server wrote its preface, then ``written``, and nothing went wrong."""
    writes = [Write(PREFACE_OUT, (0, 1)), Write(written, (2, 2))]
    return Run(
        writes=writes,
        closed_by_server=False,
        loop_errors=[],
        task_errors=[],
        tasks_left=0,
        connections_left=0,
        writes_after_close=0,
        received=[],
        finished=finished,
    )


@pytest.mark.parametrize(
    ("settings_sent", "written", "complaint"),
    [
        (
            {Setting.INITIAL_WINDOW_SIZE: 4},
            RESPONSE_START + frame(FrameType.DATA, 0, 1, bytes(5)),
            "granted 4",
        ),
        ({}, frame(FrameType.HEADERS, 5, 1, b"\x88") * 2, "after the stream ended"),
        ({}, frame(FrameType.HEADERS, 5, 3, b"\x88"), "never opened"),
        ({}, frame(FrameType.GOAWAY, 0, 0, u32_bytes(0) + u32_bytes(99)), "error code 99"),
        ({}, frame(FrameType.HEADERS, 5, 1, b"\xbe"), "hpack cannot decode"),
        ({}, frame(0xBE, 0, 0, b""), "type 190"),
        ({}, RESPONSE_START[:-1], "ends inside a frame"),
        ({}, frame(FrameType.DATA, 0, 1, bytes(DEFAULT_MAX_FRAME + 1)), "the client allows 16384"),
        ({}, frame(FrameType.RST_STREAM, 0, 1, u32_bytes(ErrorCode.NO_ERROR)), "before the response ended"),
    ],
    ids=["window", "two-ends", "unopened", "goaway-code", "hpack", "unknown-type", "partial", "long", "rst"],
)
def test_the_checks_catch_a_misbehaving_server(
    settings_sent: dict[Setting, int], written: bytes, complaint: str
) -> None:
    model = model_client(PREFACE + settings_frame(settings_sent) + CALL_ON_1)
    with pytest.raises(AssertionError, match=complaint):
        check_conversation(written_run(written, finished=False), model)


def test_the_checks_accept_a_well_behaved_server() -> None:
    model = model_client(PREFACE + settings_frame({Setting.INITIAL_WINDOW_SIZE: 4}) + CALL_ON_1)
    written = RESPONSE_START + frame(FrameType.DATA, 0, 1, bytes(4)) + frame(FrameType.HEADERS, 5, 1, b"\x88")
    assert len(check_conversation(written_run(written, finished=True), model)) == 5, "five frames accepted"


# -- bugs the fuzzing found, each reduced to a plain test -------------------------------------------------


def slow_call(encoder: hpack.Encoder, stream_id: int) -> bytes:
    """A whole call to the slow method: HEADERS, and its message with END_STREAM."""
    headers = [(name, SLOW if name == b":path" else value) for name, value in BASE_HEADERS]
    return frame(FrameType.HEADERS, Flag.END_HEADERS, stream_id, encoder.encode(headers)) + frame(
        FrameType.DATA, Flag.END_STREAM, stream_id, prefixed(b"")
    )


def frames_written(writes: list[Write]) -> list[ServerFrame]:
    return [item for write in writes for item in read_frames(write, MAX_FRAME_LIMIT)]


@pytest.mark.parametrize("trigger", ["drain", "evict"])
def test_no_goaway_before_the_server_preface(trigger: str) -> None:
    """RFC 9113 section 3.4: the server's SETTINGS must be the first frame it sends. The server sends it
    only once the client's preface has arrived; a GOAWAY sent before that (the drain's, or the one that
    evicts the longest-idle connection to make room for a new one) comes first."""

    async def first_frames() -> list[ServerFrame]:
        server = GrpcServer(METHODS, replace(LIMITS, max_connections=1))
        connection, transport = connect(server)
        connection.data_received(PREFACE[:10])  # the rest of the preface is on its way
        if trigger == "drain":
            server.start_draining()
        else:
            connect(server)  # a second connection, at the cap of one: the idle first one makes room
        connection.data_received(PREFACE[10:] + settings_frame({}))
        return frames_written(transport.writes)

    kinds = [FrameType(item.kind).name for item in asyncio.run(first_frames())]
    assert kinds[0] == "SETTINGS", f"the server's frames began {kinds[:3]}, not with its SETTINGS"


@pytest.mark.parametrize("ending", ["protocol-error", "shutdown-timeout"])
def test_goaway_never_raises_the_last_stream_id(ending: str) -> None:
    """RFC 9113 section 6.8: a GOAWAY's last stream id must never increase. The final GOAWAY says 1 (the
    running call); a call the client opened before reading it (3) is refused, but raises the id the
    connection remembers, and the GOAWAY that ends the connection (on a protocol error, or when the
    shutdown's grace period ends) says 3."""

    async def goaway_ids() -> list[int]:
        server = GrpcServer(METHODS, LIMITS)
        connection, transport = connect(server)
        encoder = hpack.Encoder()
        connection.data_received(PREFACE + settings_frame({}) + slow_call(encoder, 1))
        server.close()  # GOAWAY(2^31-1) and a PING
        connection.data_received(frame(FrameType.PING, Flag.ACK, 0, b"draining"))  # the final GOAWAY(1)
        connection.data_received(slow_call(encoder, 3))  # refused: REFUSED_STREAM
        if ending == "protocol-error":
            connection.data_received(frame(FrameType.PING, 0, 1, bytes(8)))
        else:
            await server.wait_closed(0)
        frames = frames_written(transport.writes)
        return [u32(item.payload) for item in frames if item.kind == FrameType.GOAWAY]

    ids = asyncio.run(goaway_ids())
    assert ids == sorted(ids, reverse=True), f"GOAWAY last stream ids, in the order sent: {ids}"


@pytest.mark.parametrize(
    "priority", [b"", u32_bytes(1) + b"\x10"], ids=["priority-of-0-bytes", "priority-on-itself"]
)
def test_nothing_is_sent_on_a_stream_after_resetting_it(priority: bytes) -> None:
    """RFC 9113 section 5.1: once it has sent RST_STREAM, an endpoint sends nothing more on the stream. A
    malformed PRIORITY on an idle stream is a stream error, answered with RST_STREAM, but the stream
    stays idle for the server: a call the client then opens on it is taken and answered."""
    call = slow_call(hpack.Encoder(), 1)
    segments = [(PREFACE + settings_frame({}) + frame(FrameType.PRIORITY, 0, 1, priority) + call, "none")]
    run, _ = run_conversation(segments, [])
    kinds = [FrameType(item.kind).name for item in frames_written(run.writes) if item.stream_id == 1]
    assert kinds[0] == "RST_STREAM", f"the PRIORITY is answered first: {kinds}"
    assert set(kinds) == {"RST_STREAM"}, f"stream 1 after its RST_STREAM: {kinds}"


@pytest.mark.parametrize("refusal", ["at-the-stream-limit", "while-closing"])
def test_frames_on_a_refused_stream_are_ignored(refusal: str) -> None:
    """RFC 9113 section 5.1: an endpoint MUST ignore frames it receives on a stream after it has sent
    RST_STREAM on it. A call refused with REFUSED_STREAM (over the stream limit, or once the server is
    closing) never becomes a stream the server remembers, so its message, which every client sends
    right behind its HEADERS, is answered with a second RST_STREAM (STREAM_CLOSED)."""

    async def frames_on_7() -> list[tuple[str, str]]:
        server = GrpcServer(METHODS, LIMITS)
        connection, transport = connect(server)
        encoder = hpack.Encoder()
        connection.data_received(PREFACE + settings_frame({}))
        if refusal == "at-the-stream-limit":  # three slow calls running: the limit
            connection.data_received(b"".join(slow_call(encoder, sid) for sid in (1, 3, 5)))
        else:
            server.close()
        connection.data_received(slow_call(encoder, 7))
        frames = frames_written(transport.writes)
        return [
            (FrameType(item.kind).name, ErrorCode(u32(item.payload)).name)
            for item in frames
            if item.stream_id == 7
        ]

    sent = asyncio.run(frames_on_7())
    assert sent == [("RST_STREAM", "REFUSED_STREAM")], f"the server sent on stream 7: {sent}"
