"""The gRPC transport end to end: hand-made HTTP/2 on a plain socket, and the real grpcio client.

What this proves that h2spec and the codec's unit tests cannot: the gRPC port's limits (rapid reset,
header-block floods and stalls, the preface, idle and body deadlines, the connection cap, a client that
never reads) hold in a real server process, each with the exact frame or status the server promises,
and a legitimate grpcio client is still served after each attack. Every socket, loop and wait
here is bounded; the limits are made small through ``SERVING_*`` variables so the timeouts fire in seconds.
"""

import contextlib
import gzip
import http.client
import json
import os
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import hpack
import numpy as np
import pytest
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc

from serving_image.http2_frames import (
    PREFACE,
    ErrorCode,
    Flag,
    FrameType,
    Setting,
    frame,
    rst_stream,
    settings_frame,
    u32,
    window_update,
)
from tests.serving_image.conftest import ServerProcess, start_server

HEADER_TIMEOUT = 1.0
BODY_TIMEOUT = 1.0
IDLE_TIMEOUT = 2.0
MAX_STREAMS = 4
MAX_HEADER_BYTES = 16_384
# The server checks a connection's timeouts on a tick of a quarter of the shortest, 50 ms to 1 s.
TICK = max(0.05, min(1.0, HEADER_TIMEOUT / 4, IDLE_TIMEOUT / 4))
# Scheduling noise on a loaded test machine, on top of the tick.
SLACK = 0.75
CAP = 4
TIGHT_CAP = 16

SERVICE = "/inference.GRPCInferenceService/"
INFER = SERVICE + "ModelInfer"
FOUR = np.ones(4, "<f4").tobytes()


def infer_message(rows: int = 1, value: float = 1.0) -> pb.ModelInferRequest:
    """A valid ModelInfer for the test repository's doubler (y = 2x, x of shape [rows, 4])."""
    message = pb.ModelInferRequest(model_name="doubler")
    message.inputs.add(name="x", datatype="FP32", shape=[rows, 4])
    message.raw_input_contents.append(np.full((rows, 4), value, "<f4").tobytes())
    return message


def length_prefixed(payload: bytes, compressed: bool = False) -> bytes:
    """gRPC's 5-byte message prefix (compressed flag, big-endian length) and the payload."""
    return bytes((int(compressed),)) + len(payload).to_bytes(4, "big") + payload


INFER_BODY = length_prefixed(infer_message().SerializeToString())


# -- a raw HTTP/2 client -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Frame:
    """A frame the server sent; ``headers`` is the decoded block of a HEADERS frame."""

    kind: int
    flags: int
    stream_id: int
    payload: bytes
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def code(self) -> int:
        """The error code of a RST_STREAM or GOAWAY."""
        return u32(self.payload, 4 if self.kind == FrameType.GOAWAY else 0)

    @property
    def last_stream_id(self) -> int:
        """A GOAWAY's last stream id."""
        return u32(self.payload) & 0x7FFFFFFF

    @property
    def debug(self) -> str:
        """A GOAWAY's debug text (the server says why)."""
        return self.payload[8:].decode("utf-8", "replace")


def is_goaway(item: Frame) -> bool:
    return item.kind == FrameType.GOAWAY


@dataclass
class Response:
    """What came back on one stream: the header blocks merged, the DATA, and a RST_STREAM's code."""

    headers: dict[str, str]
    data: bytes
    reset: int | None

    @property
    def grpc_status(self) -> int:
        return int(self.headers.get("grpc-status", "-1"))


class RawH2:
    """One HTTP/2 connection driven frame by frame: a test builds what it sends, this reads the answers.

    Frames received are kept in ``frames`` in order; HEADERS blocks are decoded as they arrive, since the
    server never splits them into CONTINUATION frames.
    """

    def __init__(self, port: int, timeout: float = 5.0, receive_buffer: int | None = None) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if receive_buffer is not None:  # before connect, so the window the server sees is small too
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        self.sock.settimeout(timeout)
        self.sock.connect(("127.0.0.1", port))
        self.encoder = hpack.Encoder()
        self.decoder = hpack.Decoder()
        self.frames: list[Frame] = []
        self.eof = False
        self._buffer = b""
        self._next_stream = 1

    def __enter__(self) -> "RawH2":
        return self

    def __exit__(self, *_: object) -> None:
        self.sock.close()

    def send(self, data: bytes) -> bool:
        """Send ``data``; False if the server has closed the connection."""
        try:
            self.sock.sendall(data)
        except OSError:
            return False
        return True

    def handshake(self) -> None:
        """Preface and SETTINGS with large windows; wait for the server's SETTINGS and acknowledge them."""
        window = 1 << 24
        self.send(PREFACE + settings_frame({Setting.INITIAL_WINDOW_SIZE: window}) + window_update(0, window))
        settings = self.read_until(lambda f: f.kind == FrameType.SETTINGS and not f.flags & Flag.ACK, 5)
        assert settings is not None, f"no SETTINGS from the server: {self.frames}"
        self.send(frame(FrameType.SETTINGS, Flag.ACK, 0))

    def stream(self) -> int:
        """The next client stream id."""
        stream_id, self._next_stream = self._next_stream, self._next_stream + 2
        return stream_id

    def header_frames(
        self, stream_id: int, fields: list[tuple[str, str]], end_stream: bool = False, max_frame: int = 16_384
    ) -> bytes:
        """A header block as HEADERS and, past ``max_frame`` bytes, CONTINUATION frames."""
        block = self.encoder.encode(fields)
        chunks = [block[start : start + max_frame] for start in range(0, len(block), max_frame)] or [b""]
        out = []
        for index, chunk in enumerate(chunks):
            flags = Flag.END_HEADERS if index == len(chunks) - 1 else 0
            if index == 0:
                flags |= Flag.END_STREAM if end_stream else 0
            out.append(
                frame(FrameType.HEADERS if index == 0 else FrameType.CONTINUATION, flags, stream_id, chunk)
            )
        return b"".join(out)

    def call(
        self,
        body: bytes = INFER_BODY,
        path: str = INFER,
        metadata: tuple[tuple[str, str], ...] = (),
        end_stream: bool = True,
    ) -> tuple[int, bytes]:
        """A gRPC call's frames (HEADERS, then the body as DATA); its stream id and the bytes to send."""
        stream_id = self.stream()
        out = [self.header_frames(stream_id, grpc_fields(path, metadata))]
        chunks = [body[start : start + 16_384] for start in range(0, len(body), 16_384)] or [b""]
        for index, chunk in enumerate(chunks):
            last = end_stream and index == len(chunks) - 1
            out.append(frame(FrameType.DATA, Flag.END_STREAM if last else 0, stream_id, chunk))
        return stream_id, b"".join(out)

    def read_until(self, condition: Callable[[Frame], bool], timeout: float) -> Frame | None:
        """The first frame received (now or within ``timeout`` s) that meets ``condition``; None if none
        came before the timeout or the end of the connection."""
        deadline = time.monotonic() + timeout
        checked = 0
        while True:
            for item in self.frames[checked:]:
                if condition(item):
                    return item
            checked = len(self.frames)
            remaining = deadline - time.monotonic()
            if self.eof or remaining <= 0:
                return None
            self._receive(remaining)

    def drain(self) -> None:
        """Read whatever has arrived, without waiting."""
        self._receive(0.0)

    def wait_closed(self, timeout: float) -> bool:
        """Read until the server closes the connection; whether it did within ``timeout`` s."""
        self.read_until(lambda _: False, timeout)
        return self.eof

    def response(self, stream_id: int, timeout: float = 5.0) -> Response:
        """Read until ``stream_id`` ends (END_STREAM or RST_STREAM) and gather what it carried."""

        def ended(item: Frame) -> bool:
            if item.stream_id != stream_id:
                return False
            return item.kind == FrameType.RST_STREAM or bool(
                item.kind in (FrameType.HEADERS, FrameType.DATA) and item.flags & Flag.END_STREAM
            )

        last = self.read_until(ended, timeout)
        assert last is not None, f"stream {stream_id} did not end within {timeout} s: {self.frames[-10:]}"
        headers: dict[str, str] = {}
        data = b""
        for item in self.frames:
            if item.stream_id == stream_id and item.kind == FrameType.HEADERS:
                headers.update(item.headers)
            elif item.stream_id == stream_id and item.kind == FrameType.DATA:
                data += item.payload
        # A RST_STREAM NO_ERROR may follow a complete response (the server stops a client still sending).
        reset = self.read_until(lambda f: f.stream_id == stream_id and f.kind == FrameType.RST_STREAM, 0.05)
        return Response(headers, data, None if reset is None else reset.code)

    def _receive(self, timeout: float) -> None:
        self.sock.settimeout(max(timeout, 0.0))
        try:
            chunk = self.sock.recv(1 << 16)
        except (TimeoutError, BlockingIOError):
            return
        except OSError:  # reset by the server
            self.eof = True
            return
        if not chunk:
            self.eof = True
            return
        self._buffer += chunk
        while len(self._buffer) >= 9:
            length = int.from_bytes(self._buffer[:3], "big")
            if len(self._buffer) < 9 + length:
                break
            kind, flags, stream_id = self._buffer[3], self._buffer[4], u32(self._buffer, 5) & 0x7FFFFFFF
            payload, self._buffer = self._buffer[9 : 9 + length], self._buffer[9 + length :]
            headers = {}
            if kind == FrameType.HEADERS:
                headers = {str(name): str(value) for name, value in self.decoder.decode(payload)}
            self.frames.append(Frame(kind, flags, stream_id, payload, headers))


def grpc_fields(
    path: str,
    metadata: tuple[tuple[str, str], ...] = (),
    method: str = "POST",
    content_type: str = "application/grpc",
) -> list[tuple[str, str]]:
    """A request's header list, as a gRPC client sends it."""
    fields = [(":method", method), (":scheme", "http"), (":path", path), (":authority", "test")]
    if content_type:
        fields.append(("content-type", content_type))
    return [*fields, ("te", "trailers"), *metadata]


def goaway_of(client: RawH2, timeout: float) -> Frame:
    item = client.read_until(is_goaway, timeout)
    assert item is not None, f"no GOAWAY within {timeout} s; got {client.frames}, closed={client.eof}"
    return item


# -- servers and a legitimate client -------------------------------------------------------------------


def descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


@pytest.fixture(scope="module")
def tight(test_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """Short timeouts and few streams per connection, so each limit fires within a second or two."""
    server = start_server(
        test_repository,
        tmp_path_factory.mktemp("grpc-transport-tight"),
        env={
            "SERVING_HEADER_TIMEOUT_SECONDS": str(HEADER_TIMEOUT),
            "SERVING_BODY_TIMEOUT_SECONDS": str(BODY_TIMEOUT),
            "SERVING_IDLE_TIMEOUT_SECONDS": str(IDLE_TIMEOUT),
            "SERVING_MAX_STREAMS_PER_CONNECTION": str(MAX_STREAMS),
            "SERVING_MAX_HEADER_BYTES": str(MAX_HEADER_BYTES),
            "SERVING_MAX_CONNECTIONS": str(TIGHT_CAP),
        },
    )
    yield server
    assert server.stop() == 0, server.stderr()


@dataclass
class Capped:
    server: ServerProcess
    baseline_descriptors: int


@pytest.fixture(scope="module")
def capped(test_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Capped]:
    """A cap of four connections and long timeouts, so only the cap closes connections."""
    server = start_server(
        test_repository,
        tmp_path_factory.mktemp("grpc-transport-capped"),
        env={
            "SERVING_MAX_CONNECTIONS": str(CAP),
            "SERVING_MAX_STREAMS_PER_CONNECTION": str(MAX_STREAMS),
            "SERVING_IDLE_TIMEOUT_SECONDS": "60",
            "SERVING_HEADER_TIMEOUT_SECONDS": "30",
            "SERVING_BODY_TIMEOUT_SECONDS": "30",
        },
    )
    yield Capped(server, descriptors(server.process.pid))
    assert server.stop() == 0, server.stderr()


def wait_for_descriptors(pid: int, at_most: int, timeout: float = 3.0) -> int:
    """The server's open descriptors once they are ``at_most`` (or what they are after ``timeout`` s)."""
    deadline = time.monotonic() + timeout
    count = descriptors(pid)
    while count > at_most and time.monotonic() < deadline:
        time.sleep(0.05)
        count = descriptors(pid)
    return count


def legit_infer(
    server: ServerProcess, stub: service_pb2_grpc.GRPCInferenceServiceStub | None = None, timeout: float = 5
) -> float:
    """A grpcio ModelInfer that must succeed with the right answer; its latency in seconds."""
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        if stub is None:
            channel = stack.enter_context(grpc.insecure_channel(server.grpc_url))
            stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        answer = stub.ModelInfer(infer_message(value=3.0), timeout=timeout)
    assert np.frombuffer(answer.raw_output_contents[0], "<f4").tolist() == [6.0] * 4, answer
    return time.monotonic() - started


def access_log(server: ServerProcess) -> list[dict[str, Any]]:
    """The request lines of the server's access log (JSON on stdout)."""
    lines = []
    for line in server.stdout().splitlines():
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if record.get("event") == "request":
                lines.append(record)
    return lines


# -- 1. rapid reset (CVE-2023-44487) -------------------------------------------------------------------


def test_reset_calls_still_count_against_the_stream_limit(tight: ServerProcess) -> None:
    """MAX_STREAMS calls reset at once, and one more in the same write: that one is refused, because
    calls the client reset count until their handlers have finished."""
    with RawH2(tight.grpc_port) as client:
        client.handshake()
        burst, ids = b"", []
        for _ in range(MAX_STREAMS + 1):
            stream_id, frames = client.call()
            burst += frames + rst_stream(stream_id, ErrorCode.CANCEL)
            ids.append(stream_id)
        client.send(burst)
        refused = client.read_until(lambda f: f.kind == FrameType.RST_STREAM, 3)
        assert refused is not None, f"the call over the limit was not refused: {client.frames}"
        assert (refused.stream_id, refused.code) == (ids[-1], ErrorCode.REFUSED_STREAM), refused
        # Once the reset handlers have finished, the connection takes calls again.
        time.sleep(0.2)
        stream_id, frames = client.call()
        client.send(frames)
        answer = client.response(stream_id)
        assert answer.grpc_status == 0, answer


RAPID_RESETS = 2000
BATCH = 50


def test_rapid_reset_is_cut_off_recorded_and_leaves_the_server_serving(tight: ServerProcess) -> None:
    """CVE-2023-44487: calls opened and reset at once. Reset calls count against the stream limit until
    their work stops, the resets against the control-frame budget: the flood ends in GOAWAY
    ENHANCE_YOUR_CALM long before it is all sent, every call the server took is in the access log, and
    other clients are served throughout."""
    request_ids: dict[int, str] = {}
    with RawH2(tight.grpc_port) as client:
        client.handshake()
        sent_batches = 0
        for batch in range(RAPID_RESETS // BATCH):
            burst = b""
            for index in range(BATCH):
                request_id = f"rapid-reset-{batch * BATCH + index}"
                stream_id, frames = client.call(metadata=(("x-request-id", request_id),))
                request_ids[stream_id] = request_id
                burst += frames + rst_stream(stream_id, ErrorCode.CANCEL)
            if not client.send(burst):
                break
            sent_batches += 1
            client.drain()
            if client.eof:
                break
        goaway = client.read_until(is_goaway, 5)
        assert goaway is not None, f"{sent_batches * BATCH} reset calls and no GOAWAY"
        assert goaway.code == ErrorCode.ENHANCE_YOUR_CALM and "control frames" in goaway.debug, goaway
        assert client.wait_closed(5), "the server did not close the connection after its GOAWAY"
        refused = {
            item.stream_id
            for item in client.frames
            if item.kind == FrameType.RST_STREAM and item.code == ErrorCode.REFUSED_STREAM
        }
    assert legit_infer(tight) < 1.0, "a legitimate client waited after the flood"
    accepted = {stream_id for stream_id in request_ids if stream_id <= goaway.last_stream_id} - refused
    assert accepted, "the server took none of the calls, so nothing shows they are recorded"
    assert len(accepted) < RAPID_RESETS // 2, f"{len(accepted)} of {RAPID_RESETS} reset calls were taken"
    # Every call the server took is recorded: CANCELLED, or OK if it was answered before its reset.
    wanted = {request_ids[stream_id] for stream_id in accepted}
    logged = logged_calls(tight, "rapid-reset-", wanted)
    missing = sorted(wanted - set(logged), key=lambda r: int(r.rsplit("-", 1)[1]))
    assert not missing, f"{len(missing)} of {len(wanted)} taken calls are not logged: {missing[:5]}"
    assert set(logged) == wanted, f"refused calls were logged as run: {sorted(set(logged) - wanted)[:5]}"
    outcomes = {(r["status"], r["outcome"]) for r in logged.values()}
    assert outcomes <= {("CANCELLED", "client_error"), ("OK", "success")}, outcomes


def test_a_ping_flood_is_cut_off_while_other_clients_are_served(tight: ServerProcess) -> None:
    """CVE-2019-9512: PINGs read and answered as fast as they come; the connection is closed once they pass
    the control-frame budget, and a client on another connection is served meanwhile."""
    with RawH2(tight.grpc_port) as client:
        client.handshake()
        chunk = frame(FrameType.PING, 0, 0, b"flood!!!") * 500
        for _ in range(40):  # 20,000 PINGs at most, read as the server answers them
            if not client.send(chunk):
                break
            client.drain()
            if client.eof:
                break
        goaway = client.read_until(is_goaway, 5)
        assert goaway is not None and goaway.code == ErrorCode.ENHANCE_YOUR_CALM, goaway
        acks = sum(1 for item in client.frames if item.kind == FrameType.PING and item.flags & Flag.ACK)
        assert acks <= 1001, f"{acks} PINGs answered before the flood was cut off"
    assert legit_infer(tight) < 1.0, "a legitimate client waited during the flood"


def logged_calls(server: ServerProcess, prefix: str, wanted: set[str], timeout: float = 3) -> dict[str, Any]:
    """The access-log lines of request ids starting with ``prefix``, once ``wanted`` are all there (or
    after ``timeout`` s)."""
    deadline = time.monotonic() + timeout
    while True:
        logged = {r["request_id"]: r for r in access_log(server) if r["request_id"].startswith(prefix)}
        if set(logged) >= wanted or time.monotonic() > deadline:
            return logged
        time.sleep(0.1)


# -- 2.-5. header blocks, the preface and idle connections ---------------------------------------------


def test_a_continuation_flood_gets_enhance_your_calm(tight: ServerProcess) -> None:
    with RawH2(tight.grpc_port) as client:
        client.handshake()
        fragment = b"\x00" * 1000
        flood = frame(FrameType.HEADERS, 0, 1, fragment)
        flood += b"".join(
            frame(FrameType.CONTINUATION, 0, 1, fragment) for _ in range(4 * MAX_HEADER_BYTES // 1000 + 10)
        )
        client.send(flood)
        goaway = goaway_of(client, 3)
        assert goaway.code == ErrorCode.ENHANCE_YOUR_CALM, goaway
        assert f"header block of over {4 * MAX_HEADER_BYTES} bytes" in goaway.debug, goaway.debug
        assert goaway.last_stream_id == 0, goaway
        assert client.wait_closed(2), "the connection stayed open after its GOAWAY"
    legit_infer(tight)


def test_an_unfinished_header_block_gets_goaway_after_the_header_timeout(tight: ServerProcess) -> None:
    with RawH2(tight.grpc_port) as client:
        client.handshake()
        block = client.encoder.encode(grpc_fields(INFER))
        client.send(frame(FrameType.HEADERS, 0, 1, block[:10]))
        sent = time.monotonic()
        goaway = goaway_of(client, HEADER_TIMEOUT + TICK + SLACK)
        elapsed = time.monotonic() - sent
        assert goaway.code == ErrorCode.ENHANCE_YOUR_CALM, goaway
        assert f"a header block took over {HEADER_TIMEOUT} s" in goaway.debug, goaway.debug
        assert elapsed >= HEADER_TIMEOUT - 0.05, f"closed after {elapsed:.2f} s, before the header timeout"
        assert client.wait_closed(2), "the connection stayed open after its GOAWAY"


@pytest.mark.parametrize(
    "first_bytes",
    [b"", PREFACE[:10], PREFACE],
    ids=["nothing", "part-of-the-preface", "preface-without-settings"],
)
def test_a_connection_without_preface_and_settings_is_closed(
    tight: ServerProcess, first_bytes: bytes
) -> None:
    with RawH2(tight.grpc_port) as client:
        started = time.monotonic()
        client.send(first_bytes)
        goaway = goaway_of(client, HEADER_TIMEOUT + TICK + SLACK)
        elapsed = time.monotonic() - started
        assert goaway.code == ErrorCode.SETTINGS_TIMEOUT, goaway
        assert elapsed >= HEADER_TIMEOUT - 0.05, f"closed after {elapsed:.2f} s, before the header timeout"
        assert client.wait_closed(1), "the connection stayed open after its GOAWAY"


def test_a_preface_split_across_writes_is_accepted(tight: ServerProcess) -> None:
    """A client may write the preface in pieces; TCP may deliver it in pieces anyway."""
    with RawH2(tight.grpc_port) as client:
        client.send(PREFACE[:12])
        time.sleep(0.1)  # two reads on the server's side
        client.send(PREFACE[12:])
        goaway = client.read_until(is_goaway, 0.1)
        assert goaway is None, f"the server refused a preface that came in two reads: {goaway}"
        client.send(settings_frame({}))
        stream_id, frames = client.call()
        client.send(frames)
        answer = client.response(stream_id)
    assert answer.grpc_status == 0, answer


def test_an_idle_connection_gets_goaway_no_error(tight: ServerProcess) -> None:
    with RawH2(tight.grpc_port) as client:
        started = time.monotonic()
        client.handshake()
        goaway = goaway_of(client, IDLE_TIMEOUT + TICK + SLACK)
        elapsed = time.monotonic() - started
        assert (goaway.code, goaway.last_stream_id) == (ErrorCode.NO_ERROR, 0), goaway
        assert f"idle for {IDLE_TIMEOUT} s" in goaway.debug, goaway.debug
        assert elapsed >= IDLE_TIMEOUT - 0.05, f"closed after {elapsed:.2f} s, before the idle timeout"
        assert client.wait_closed(1), "the connection stayed open after its GOAWAY"


# -- 6. the connection cap -----------------------------------------------------------------------------


def open_idle(port: int, count: int) -> list[RawH2]:
    clients = []
    for _ in range(count):
        client = RawH2(port)
        client.handshake()
        clients.append(client)
        time.sleep(0.01)  # distinct idle times: the oldest is evicted first
    return clients


def closed_by_cap(client: RawH2, timeout: float) -> bool:
    """Whether the connection got the cap's GOAWAY and was closed within ``timeout`` s."""
    goaway = client.read_until(is_goaway, timeout)
    if goaway is None:
        return False
    assert (goaway.code, goaway.debug) == (ErrorCode.NO_ERROR, "connection limit reached"), goaway
    return client.wait_closed(1)


def test_the_cap_evicts_the_longest_idle_connection(capped: Capped) -> None:
    server, baseline = capped.server, capped.baseline_descriptors
    pid = server.process.pid
    assert wait_for_descriptors(pid, baseline) <= baseline, "connections of earlier tests are still open"
    clients = open_idle(server.grpc_port, CAP)
    try:
        with grpc.insecure_channel(server.grpc_url) as channel:
            stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
            assert legit_infer(server, stub) < 1.0, "the client waited for a connection slot"
            assert closed_by_cap(clients[0], 2), "the longest-idle connection was not evicted"
            assert not any(closed_by_cap(c, 0.1) for c in clients[1:]), "a newer connection was evicted"
            later = open_idle(server.grpc_port, 2)
            clients += later
            closed = [closed_by_cap(c, 0.3) for c in clients]
            assert closed == [True, True, True, False, False, False], f"evicted: {closed}"
            legit_infer(server, stub)  # newer than the evicted ones, the grpcio connection was kept
            held = wait_for_descriptors(pid, baseline + CAP)
            assert held <= baseline + CAP, f"{held} descriptors for a cap of {CAP} (baseline {baseline})"
    finally:
        for client in clients:
            client.sock.close()


def test_at_the_cap_with_every_connection_busy_a_new_one_is_refused(capped: Capped) -> None:
    server, baseline = capped.server, capped.baseline_descriptors
    assert wait_for_descriptors(server.process.pid, baseline) <= baseline, "earlier connections still open"
    clients = open_idle(server.grpc_port, CAP)
    try:
        for client in clients:  # a call whose message has not all arrived: the connection is busy
            stream_id = client.stream()
            client.send(client.header_frames(stream_id, grpc_fields(INFER)))
            client.send(frame(FrameType.DATA, 0, stream_id, INFER_BODY[:3]))
        time.sleep(0.1)
        with RawH2(server.grpc_port) as extra:
            goaway = goaway_of(extra, 2)
            assert goaway.code == ErrorCode.REFUSED_STREAM, goaway
            assert "connection limit" in goaway.debug, goaway.debug
            assert extra.wait_closed(1), "the refused connection was left open"
        assert not any(c.read_until(is_goaway, 0.05) for c in clients), "a busy connection was evicted"
    finally:
        for client in clients:
            client.sock.close()


def test_clients_that_grant_no_window_cannot_hold_every_connection(tight: ServerProcess) -> None:
    """Connections whose answers wait on a flow-control window the client never opens are not idle, so
    the cap cannot evict them; if nothing ends them, a connection cap's worth of them locks out
    every other client."""
    holders: list[RawH2] = []
    try:
        for _ in range(TIGHT_CAP):
            holder = RawH2(tight.grpc_port)
            holder.send(PREFACE + settings_frame({Setting.INITIAL_WINDOW_SIZE: 0}))
            _, frames = holder.call()
            holder.send(frames)
            holders.append(holder)
        answered = [h.read_until(lambda f: f.kind == FrameType.HEADERS, 2) for h in holders]
        assert all(answered), "the calls were not taken, so the slots were never held"
        limit = IDLE_TIMEOUT + BODY_TIMEOUT + TICK + SLACK + 1
        started = time.monotonic()
        served, last_error = False, ""
        while not served and time.monotonic() - started < limit:
            try:
                legit_infer(tight, timeout=1)
                served = True
            except grpc.RpcError as error:
                last_error = str(error.code())
        assert served, (
            f"{TIGHT_CAP} zero-window connections locked a client out for {limit:.1f} s: {last_error}"
        )
    finally:
        for holder in holders:
            holder.sock.close()


# -- 7. a client that never reads ----------------------------------------------------------------------

# Enough PINGs that their acknowledgements, were they all buffered, would be over the RSS bound: the
# server must stop reading long before (the kernel's socket buffers hold some tens of MB of them).
PINGS = 5_000_000
PINGS_PER_WRITE = 4000
RSS_BOUND_MIB = 50


def test_a_client_that_never_reads_cannot_grow_the_server(capped: Capped) -> None:
    server = capped.server
    pid = server.process.pid
    before = rss_kib(pid)
    with RawH2(server.grpc_port, receive_buffer=4096) as client:
        client.handshake()
        chunk = frame(FrameType.PING, 0, 0, b"no-read!") * PINGS_PER_WRITE
        assert len(chunk) * PINGS // PINGS_PER_WRITE > 1.3 * RSS_BOUND_MIB * 2**20, "too few PINGs to tell"
        client.sock.settimeout(1.0)
        sent, stalled = 0, False
        deadline = time.monotonic() + 10
        while sent < PINGS and time.monotonic() < deadline:
            try:
                client.sock.sendall(chunk)
            except TimeoutError:
                stalled = True  # the server stopped reading
                break
            except OSError:
                stalled = True  # or closed the connection: the control-frame budget
                break
            sent += PINGS_PER_WRITE
        latency = legit_infer(server)  # served while the flood sits unread
        grown_mib = (rss_kib(pid) - before) / 1024
    assert stalled, (
        f"the server read all {sent} PINGs although the client read none of their acknowledgements"
    )
    assert sent * 9 < 64 * 2**20, f"the server took {sent} PINGs before it stopped reading or closed"
    assert grown_mib < RSS_BOUND_MIB, f"RSS grew by {grown_mib:.0f} MiB for {sent} unread PINGs"
    assert latency < 1.0, f"a legitimate client waited {latency:.2f} s"


# -- 8.-10. requests that are not gRPC calls, or calls this server cannot take ----------------------------


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_http1_on_the_grpc_port_gets_a_json_400(tight: ServerProcess, method: str) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", tight.grpc_port, timeout=5)
    try:
        connection.request(method, "/v2/health/ready", body=b"{}" if method == "POST" else None)
        response = connection.getresponse()
        body = response.read()
    finally:
        connection.close()
    assert response.status == 400, (response.status, body)
    assert response.getheader("content-type") == "application/json", response.getheaders()
    error = json.loads(body)["error"]
    assert "this port serves gRPC" in error and "REST port" in error, error


@pytest.mark.parametrize(
    ("method", "content_type", "status", "error"),
    [
        ("GET", "", 405, "the gRPC port takes only POST"),
        ("POST", "text/plain", 415, "the gRPC port takes only content-type application/grpc"),
        ("POST", "application/json", 415, "the gRPC port takes only content-type application/grpc"),
    ],
)
def test_http2_requests_that_are_not_grpc_get_a_json_error(
    tight: ServerProcess, method: str, content_type: str, status: int, error: str
) -> None:
    with RawH2(tight.grpc_port) as client:
        client.handshake()
        stream_id = client.stream()
        fields = grpc_fields("/v2/health/ready", method=method, content_type=content_type)
        if method == "GET":
            client.send(client.header_frames(stream_id, fields, end_stream=True))
        else:
            client.send(
                client.header_frames(stream_id, fields)
                + frame(FrameType.DATA, Flag.END_STREAM, stream_id, b"hi")
            )
        answer = client.response(stream_id)
    assert answer.headers[":status"] == str(status), answer
    assert answer.headers["content-type"] == "application/json", answer
    assert json.loads(answer.data) == {"error": error}, answer.data


@pytest.mark.parametrize(
    ("path", "metadata", "status", "words", "accept_encoding"),
    [
        (SERVICE + "Nope", (), 12, "unknown method /inference.GRPCInferenceService/Nope", None),
        ("/other.Service/ModelInfer", (), 12, "unknown method /other.Service/ModelInfer", None),
        (INFER, (("grpc-encoding", "br"),), 12, "grpc-encoding b'br' is not supported", "identity,gzip"),
        (INFER, (("grpc-encoding", "deflate"),), 12, "grpc-encoding b'deflate' is not", "identity,gzip"),
        (INFER, (("grpc-timeout", "soon"),), 3, "grpc-timeout b'soon' is not 1 to 8 digits and a unit", None),
        (INFER, (("grpc-timeout", "1n"),), 4, "the call's deadline passed", None),
        (INFER, (("grpc-timeout", "99999999S"),), 0, "", None),
        (INFER, (("grpc-encoding", "gzip"),), 0, "", None),
    ],
    ids=["unknown-method", "unknown-service", "brotli", "deflate", "bad-timeout", "deadline-1ns",
         "long-deadline", "gzip-declared-message-plain"],
)  # fmt: skip
def test_raw_calls_get_the_exact_grpc_status(
    tight: ServerProcess,
    path: str,
    metadata: tuple[tuple[str, str], ...],
    status: int,
    words: str,
    accept_encoding: str | None,
) -> None:
    with RawH2(tight.grpc_port) as client:
        client.handshake()
        stream_id, frames = client.call(path=path, metadata=metadata)
        client.send(frames)
        answer = client.response(stream_id)
    assert answer.headers.get(":status") == "200", answer
    assert answer.grpc_status == status, answer
    assert words in answer.headers.get("grpc-message", ""), answer
    assert answer.headers.get("grpc-accept-encoding") == accept_encoding, answer


def test_grpcio_gets_unimplemented_for_an_unknown_method(tight: ServerProcess) -> None:
    with grpc.insecure_channel(tight.grpc_url) as channel:
        method = channel.unary_unary(SERVICE + "Nope")
        with pytest.raises(grpc.RpcError) as raised:
            method(b"", timeout=5)
    error: Any = raised.value
    assert error.code() == grpc.StatusCode.UNIMPLEMENTED, error
    assert "unknown method" in error.details(), error.details()


# -- 11. compression -----------------------------------------------------------------------------------


def test_grpcio_with_gzip_compression_is_served(tight: ServerProcess) -> None:
    # Zeros compress well: grpcio sends a message uncompressed when gzip would not make it smaller.
    message = infer_message(rows=8, value=0.0)
    with grpc.insecure_channel(tight.grpc_url, compression=grpc.Compression.Gzip) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        answer = stub.ModelInfer(message, timeout=5, compression=grpc.Compression.Gzip)
    assert list(answer.outputs[0].shape) == [8, 4], answer
    assert np.frombuffer(answer.raw_output_contents[0], "<f4").tolist() == [0.0] * 32


@pytest.mark.parametrize(
    ("encoding", "body", "status", "words"),
    [
        ("gzip", length_prefixed(gzip.compress(infer_message().SerializeToString()), compressed=True), 0, ""),
        ("identity", length_prefixed(gzip.compress(b"x"), compressed=True), 3, "compressed message without"),
        ("gzip", length_prefixed(b"not gzip", compressed=True), 3, "the gzip message is corrupt"),
        ("gzip", length_prefixed(gzip.compress(bytes(17 * 1024 * 1024)), compressed=True), 8, "decompressed"),
    ],
    ids=["gzip", "compressed-without-encoding", "corrupt", "bomb"],
)
def test_raw_compressed_messages(
    tight: ServerProcess, encoding: str, body: bytes, status: int, words: str
) -> None:
    with RawH2(tight.grpc_port) as client:
        client.handshake()
        stream_id, frames = client.call(body=body, metadata=(("grpc-encoding", encoding),))
        client.send(frames)
        answer = client.response(stream_id)
    assert answer.grpc_status == status, answer
    assert words in answer.headers.get("grpc-message", ""), answer


# -- 12. oversized metadata ----------------------------------------------------------------------------


def test_oversized_metadata_is_refused_and_the_connection_goes_on(tight: ServerProcess) -> None:
    with RawH2(tight.grpc_port) as client:
        client.handshake()
        stream_id, frames = client.call(metadata=(("x-big", "v" * 20_000),))
        client.send(frames)
        answer = client.response(stream_id)
        assert answer.grpc_status == 8, answer
        assert f"metadata exceeds {MAX_HEADER_BYTES} bytes" in answer.headers["grpc-message"], answer
        stream_id, frames = client.call()
        client.send(frames)
        assert client.response(stream_id).grpc_status == 0, "the same connection did not serve the next call"


def test_grpcio_oversized_metadata_then_a_normal_call_on_the_same_channel(tight: ServerProcess) -> None:
    with grpc.insecure_channel(tight.grpc_url) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        legit_infer(tight, stub)
        with pytest.raises(grpc.RpcError) as raised:
            stub.ModelInfer(infer_message(), metadata=(("x-big", "v" * 20_000),), timeout=5)
        error: Any = raised.value
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, (error.code(), error.details())
        # The server's refusal, not grpcio's own check of the limit the server's SETTINGS announce.
        assert f"metadata exceeds {MAX_HEADER_BYTES} bytes" in error.details(), error.details()
        legit_infer(tight, stub)


# -- 13. deadlines -------------------------------------------------------------------------------------


def test_a_tiny_grpcio_deadline_is_deadline_exceeded(tight: ServerProcess) -> None:
    with grpc.insecure_channel(tight.grpc_url) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as raised:
            stub.ModelInfer(infer_message(), timeout=0.000001)
        error: Any = raised.value
        assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED, (error.code(), error.details())
        legit_infer(tight, stub)


# -- 14. a message trickled slower than the body timeout -------------------------------------------------


def test_a_trickled_message_gets_deadline_exceeded_after_the_body_timeout(tight: ServerProcess) -> None:
    with RawH2(tight.grpc_port) as client:
        client.handshake()
        stream_id = client.stream()
        client.send(client.header_frames(stream_id, grpc_fields(INFER)))
        started = time.monotonic()
        trailers = None
        for byte in INFER_BODY[: int((BODY_TIMEOUT + TICK + SLACK) / 0.3) + 1]:
            client.send(frame(FrameType.DATA, 0, stream_id, bytes((byte,))))
            trailers = client.read_until(
                lambda f: f.stream_id == stream_id and f.kind == FrameType.HEADERS, 0.3
            )
            if trailers is not None:
                break
        elapsed = time.monotonic() - started
        assert trailers is not None, f"no answer within {elapsed:.2f} s: {client.frames}"
        assert trailers.flags & Flag.END_STREAM, trailers
        assert trailers.headers["grpc-status"] == "4", trailers
        assert f"did not arrive within {BODY_TIMEOUT} s" in trailers.headers["grpc-message"], trailers
        assert BODY_TIMEOUT - 0.05 <= elapsed <= BODY_TIMEOUT + TICK + SLACK, (
            f"answered after {elapsed:.2f} s"
        )
        reset = client.read_until(lambda f: f.stream_id == stream_id and f.kind == FrameType.RST_STREAM, 1)
        assert reset is not None and reset.code == ErrorCode.NO_ERROR, reset
        # More of the message is ignored, and the connection serves the next call.
        client.send(frame(FrameType.DATA, Flag.END_STREAM, stream_id, b"x"))
        next_id, frames = client.call()
        client.send(frames)
        assert client.response(next_id).grpc_status == 0
        assert client.read_until(is_goaway, 0) is None, client.frames
