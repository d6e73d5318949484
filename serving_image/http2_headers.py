"""A request's HTTP/2 header list, checked as RFC 9113 section 8 requires, and the fields a gRPC call
reads from it. Pure functions; a malformed request is a stream error (PROTOCOL_ERROR)."""

import re
from dataclasses import dataclass

from serving_image.http2_frames import ErrorCode, ProtocolViolation

_PSEUDO = frozenset({b":method", b":scheme", b":path", b":authority"})
_CONNECTION_SPECIFIC = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade"}
)
_BAD_NAME = re.compile(rb"[^a-z0-9!#$%&'*+\-.^_`|~]")
_BAD_VALUE = re.compile(rb"[\x00\r\n]|^[ \t]|[ \t]$")
_TRANSPORT_FIELDS = frozenset({b"content-type", b"grpc-encoding", b"grpc-timeout", b"content-length"})
# Fields already found valid, so a client's repeated fields (user-agent, te, content-type) are checked
# once, not with every call; bounded, and emptied when full.
_SEEN_VALID: dict[tuple[bytes, bytes], None] = {}
_SEEN_VALID_MAX = 4096


@dataclass(frozen=True, slots=True)
class RequestHead:
    """What the transport needs of a request's headers; ``metadata`` is what the handler sees."""

    method: bytes
    path: bytes
    content_type: bytes
    encoding: bytes | None
    timeout: bytes | None
    content_length: int | None
    metadata: dict[str, str]
    too_many: bool = False

    @property
    def route(self) -> str:
        """``:path`` as text, the key of a method table (latin-1: every byte maps, none is refused)."""
        return self.path.decode("latin-1")


def check_request_headers(headers: list[tuple[bytes, bytes]], max_count: int, stream_id: int) -> RequestHead:
    """The request's head; raises ``ProtocolViolation`` (a stream error) for a malformed header list.

    Binary metadata (names ending ``-bin``) is left out of ``metadata``: nothing here reads it.
    """
    pseudo: dict[bytes, bytes] = {}
    regular: dict[str, str] = {}
    fields: dict[bytes, bytes] = {}
    seen_regular = False  # -bin fields are in neither dict above, but count as regular fields
    for name, value in headers:
        if name[:1] == b":":
            if seen_regular:
                raise _malformed(f"pseudo-header {name[:40]!r} after a regular header", stream_id)
            if name not in _PSEUDO or name in pseudo:
                raise _malformed(f"pseudo-header {name[:40]!r} is unknown or repeated", stream_id)
            if _BAD_VALUE.search(value):
                raise _malformed(f"pseudo-header {name[:40]!r} has a forbidden character", stream_id)
            pseudo[name] = value
            continue
        seen_regular = True
        if (name, value) not in _SEEN_VALID:
            _check_field(name, value, stream_id)
        if name in _TRANSPORT_FIELDS:
            fields[name] = value
        if not name.endswith(b"-bin"):
            regular[name.decode("ascii")] = value.decode("latin-1")
    path = pseudo.get(b":path", b"")
    if b":method" not in pseudo or b":scheme" not in pseudo or not path:
        raise _malformed("a request needs :method, :scheme and a non-empty :path", stream_id)
    return RequestHead(
        method=pseudo[b":method"],
        path=path,
        content_type=fields.get(b"content-type", b""),
        encoding=fields.get(b"grpc-encoding"),
        timeout=fields.get(b"grpc-timeout"),
        content_length=_content_length(fields.get(b"content-length"), stream_id),
        metadata=regular,
        too_many=len(headers) > max_count,
    )


def _check_field(name: bytes, value: bytes, stream_id: int) -> None:
    if _BAD_VALUE.search(value):
        raise _malformed(f"header {name[:40]!r} has a forbidden character or surrounding space", stream_id)
    if not name or _BAD_NAME.search(name):
        raise _malformed(f"header name {name[:40]!r} is not a lower-case token", stream_id)
    if name in _CONNECTION_SPECIFIC or (name == b"te" and value != b"trailers"):
        raise _malformed(f"connection-specific header {name[:40]!r}", stream_id)
    if len(_SEEN_VALID) >= _SEEN_VALID_MAX:
        _SEEN_VALID.clear()
    _SEEN_VALID[name, value] = None


def _content_length(value: bytes | None, stream_id: int) -> int | None:
    if value is None:
        return None
    if not value.isdigit() or len(value) > 19:
        raise _malformed(f"content-length {value[:40]!r}", stream_id)
    return int(value)


def _malformed(reason: str, stream_id: int) -> ProtocolViolation:
    return ProtocolViolation(ErrorCode.PROTOCOL_ERROR, f"malformed request: {reason}", stream_id)
