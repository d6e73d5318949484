"""gRPC over HTTP/2 (the "PROTOCOL-HTTP2" document of grpc/grpc): status codes, the length-prefixed
message, ``grpc-timeout``, ``grpc-message`` and the response header blocks. Pure functions."""

import re
import zlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from serving_image.http2_frames import literal, status_block

# google.rpc.Code, by the names ServingError.grpc_code uses.
STATUS_CODES = {
    "OK": 0, "CANCELLED": 1, "UNKNOWN": 2, "INVALID_ARGUMENT": 3, "DEADLINE_EXCEEDED": 4, "NOT_FOUND": 5,
    "ALREADY_EXISTS": 6, "PERMISSION_DENIED": 7, "RESOURCE_EXHAUSTED": 8, "FAILED_PRECONDITION": 9,
    "ABORTED": 10, "OUT_OF_RANGE": 11, "UNIMPLEMENTED": 12, "INTERNAL": 13, "UNAVAILABLE": 14,
    "DATA_LOSS": 15, "UNAUTHENTICATED": 16,
}  # fmt: skip
SUPPORTED_ENCODINGS = b"identity,gzip"
PREFIX_BYTES = 5
# grpc-message is for people; a long one is cut, so a hostile input echoed in it cannot make it large.
MAX_MESSAGE_CHARS = 1024


@dataclass(slots=True)
class Call:
    """What a handler sees of its call: the method, the request metadata, and trailers to add."""

    method: str
    metadata: Mapping[str, str]
    trailing: list[tuple[bytes, bytes]] = field(default_factory=list)
    timed_out: bool = False
    """Set when the call's ``grpc-timeout`` passed: the handler is then cancelled, DEADLINE_EXCEEDED."""
    cancelled: bool = False
    """Set when the call was reset, or its deadline passed, before its handler started: the handler
    should record the call and raise ``asyncio.CancelledError`` rather than do its work."""


Handler = Callable[[Any, Call], Awaitable[Any]]
"""A method's handler: the parsed request and the call in, the response message out (or ``RpcError``)."""
Parser = Callable[[bytes], Any]
"""A method's request parser (a protobuf message class's ``FromString``)."""


class RpcError(Exception):
    """A call ends with this status; ``code`` is a key of ``STATUS_CODES``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


RESPONSE_HEADERS = status_block(200) + literal(b"content-type", b"application/grpc")
OK_TRAILERS = literal(b"grpc-status", b"0")
_TIMEOUT = re.compile(rb"([0-9]{1,8})([HMSmun])")
_TIMEOUT_UNIT_SECONDS = {b"H": 3600.0, b"M": 60.0, b"S": 1.0, b"m": 1e-3, b"u": 1e-6, b"n": 1e-9}
# Characters grpc-message leaves as they are: printable ASCII except '%' (the spec's percent-encoding).
_MESSAGE_SAFE = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) != "%")


def status_trailers(code: str, message: str = "", metadata: tuple[tuple[bytes, bytes], ...] = ()) -> bytes:
    """The trailer block: ``grpc-status``, an optional percent-encoded ``grpc-message``, and metadata."""
    block = OK_TRAILERS if code == "OK" else literal(b"grpc-status", str(STATUS_CODES[code]).encode())
    if message:
        encoded = quote(message[:MAX_MESSAGE_CHARS], safe=_MESSAGE_SAFE, encoding="utf-8")
        block += literal(b"grpc-message", encoded.encode("ascii"))
    return block + b"".join(literal(name, value) for name, value in metadata)


def trailers_only(code: str, message: str, extra: tuple[tuple[bytes, bytes], ...] = ()) -> bytes:
    """The single header block of a call that fails before any response message (Trailers-Only)."""
    return RESPONSE_HEADERS + status_trailers(code, message, extra)


def http_error_block(status: int) -> bytes:
    """A plain HTTP response's header block, for requests that are not gRPC calls at all."""
    return status_block(status) + literal(b"content-type", b"application/json")


def parse_timeout(value: bytes) -> float:
    """``grpc-timeout`` in seconds; raises ``RpcError`` for a value the spec does not allow."""
    match = _TIMEOUT.fullmatch(value)
    if match is None:
        raise RpcError("INVALID_ARGUMENT", f"grpc-timeout {value[:32]!r} is not 1 to 8 digits and a unit")
    return int(match.group(1)) * _TIMEOUT_UNIT_SECONDS[match.group(2)]


def frame_message(payload: bytes) -> bytes:
    """One uncompressed length-prefixed message."""
    return b"\x00" + len(payload).to_bytes(4, "big") + payload


def unframe_message(body: bytes | bytearray, encoding: bytes | None, max_bytes: int) -> bytes:
    """The single message of a unary call's body, decompressed; ``RpcError`` says what is wrong."""
    if len(body) < PREFIX_BYTES:
        raise RpcError(
            "INVALID_ARGUMENT", f"the request has {len(body)} bytes, not a length-prefixed message"
        )
    compressed, length = body[0], int.from_bytes(body[1:5], "big")
    if length != len(body) - PREFIX_BYTES:
        raise RpcError(
            "INVALID_ARGUMENT",
            f"a unary call carries exactly one message: the prefix says {length} bytes, "
            f"the stream carried {len(body) - PREFIX_BYTES}",
        )
    payload = bytes(body[PREFIX_BYTES:])
    if compressed == 0:
        return payload
    if compressed != 1:
        raise RpcError("INVALID_ARGUMENT", f"compressed flag {compressed}; it must be 0 or 1")
    if encoding in (None, b"identity"):
        raise RpcError("INVALID_ARGUMENT", "a compressed message without a grpc-encoding")
    return _gunzip(payload, max_bytes)


def _gunzip(payload: bytes, max_bytes: int) -> bytes:
    inflater = zlib.decompressobj(wbits=31)  # gzip framing only
    try:
        out = inflater.decompress(payload, max_bytes + 1)
    except zlib.error as error:
        raise RpcError("INVALID_ARGUMENT", f"the gzip message is corrupt: {error}") from None
    if len(out) > max_bytes:
        raise RpcError("RESOURCE_EXHAUSTED", f"the decompressed message exceeds {max_bytes} bytes")
    if not inflater.eof or inflater.unused_data or inflater.unconsumed_tail:
        raise RpcError("INVALID_ARGUMENT", "the gzip message is truncated or has trailing bytes")
    return out
