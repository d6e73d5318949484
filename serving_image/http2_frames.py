"""HTTP/2 (RFC 9113) wire format: the frame layout, error codes, settings, and the few header blocks
the gRPC transport sends. Pure functions, no I/O; ``serving_image.grpc_server`` runs the connection.

Header blocks the server sends use only HPACK's static table and literals "without indexing"
(RFC 7541 6.2.2), so the server keeps no encoder state and never depends on the size the peer
gives the dynamic table; what it receives is decoded by ``hpack`` (the python-hyper project's
decoder, which enforces the header-list size while it decodes).
"""

import enum
import struct

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
FRAME_HEADER_BYTES = 9
DEFAULT_MAX_FRAME = 16_384
DEFAULT_WINDOW = 65_535
MAX_WINDOW = 2**31 - 1
MAX_FRAME_LIMIT = 2**24 - 1


class FrameType(enum.IntEnum):
    """The frame types of RFC 9113 section 6; others are ignored, as the RFC requires."""

    DATA = 0
    HEADERS = 1
    PRIORITY = 2
    RST_STREAM = 3
    SETTINGS = 4
    PUSH_PROMISE = 5
    PING = 6
    GOAWAY = 7
    WINDOW_UPDATE = 8
    CONTINUATION = 9


class Flag:
    """Frame flags (their meaning depends on the frame type); plain integers, since an ``IntFlag``'s
    ``&`` runs Python code and flags are tested several times for every frame."""

    END_STREAM = 0x1
    ACK = 0x1
    END_HEADERS = 0x4
    PADDED = 0x8
    PRIORITY = 0x20


class ErrorCode(enum.IntEnum):
    """RST_STREAM and GOAWAY error codes (RFC 9113 section 7)."""

    NO_ERROR = 0x0
    PROTOCOL_ERROR = 0x1
    INTERNAL_ERROR = 0x2
    FLOW_CONTROL_ERROR = 0x3
    SETTINGS_TIMEOUT = 0x4
    STREAM_CLOSED = 0x5
    FRAME_SIZE_ERROR = 0x6
    REFUSED_STREAM = 0x7
    CANCEL = 0x8
    COMPRESSION_ERROR = 0x9
    CONNECT_ERROR = 0xA
    ENHANCE_YOUR_CALM = 0xB
    INADEQUATE_SECURITY = 0xC
    HTTP_1_1_REQUIRED = 0xD


class Setting(enum.IntEnum):
    """SETTINGS parameters (RFC 9113 section 6.5.2)."""

    HEADER_TABLE_SIZE = 0x1
    ENABLE_PUSH = 0x2
    MAX_CONCURRENT_STREAMS = 0x3
    INITIAL_WINDOW_SIZE = 0x4
    MAX_FRAME_SIZE = 0x5
    MAX_HEADER_LIST_SIZE = 0x6


class ProtocolViolation(Exception):
    """The peer broke the protocol; ``stream_id`` 0 means the whole connection must end."""

    def __init__(self, code: ErrorCode, reason: str, stream_id: int = 0) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.stream_id = stream_id


_U32 = struct.Struct(">I")
_SETTING = struct.Struct(">HI")
_GOAWAY = struct.Struct(">II")


def frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    """One frame: 24-bit length, type, flags, 31-bit stream id, payload."""
    return len(payload).to_bytes(3, "big") + bytes((kind, flags)) + _U32.pack(stream_id) + payload


def settings_frame(values: dict[Setting, int]) -> bytes:
    """A SETTINGS frame announcing ``values``."""
    return frame(
        FrameType.SETTINGS, 0, 0, b"".join(_SETTING.pack(key, value) for key, value in values.items())
    )


def window_update(stream_id: int, increment: int) -> bytes:
    """A WINDOW_UPDATE frame granting ``increment`` more bytes."""
    return frame(FrameType.WINDOW_UPDATE, 0, stream_id, _U32.pack(increment))


def rst_stream(stream_id: int, code: ErrorCode) -> bytes:
    """A RST_STREAM frame."""
    return frame(FrameType.RST_STREAM, 0, stream_id, _U32.pack(code))


def goaway(last_stream_id: int, code: ErrorCode, debug: str = "") -> bytes:
    """A GOAWAY frame; ``debug`` tells the peer's operator why (clients log it)."""
    return frame(FrameType.GOAWAY, 0, 0, _GOAWAY.pack(last_stream_id, code) + debug.encode()[:256])


def parse_settings(payload: bytes) -> list[tuple[int, int]]:
    """The (parameter, value) pairs of a SETTINGS payload whose length was checked to be a multiple of 6."""
    return [_SETTING.unpack_from(payload, offset) for offset in range(0, len(payload), 6)]


def check_setting(key: int, value: int) -> None:
    """Raise ``ProtocolViolation`` for a value RFC 9113 section 6.5.2 forbids."""
    if key == Setting.ENABLE_PUSH and value > 1:
        raise ProtocolViolation(ErrorCode.PROTOCOL_ERROR, f"SETTINGS_ENABLE_PUSH {value}")
    if key == Setting.INITIAL_WINDOW_SIZE and value > MAX_WINDOW:
        raise ProtocolViolation(ErrorCode.FLOW_CONTROL_ERROR, f"SETTINGS_INITIAL_WINDOW_SIZE {value}")
    if key == Setting.MAX_FRAME_SIZE and not DEFAULT_MAX_FRAME <= value <= MAX_FRAME_LIMIT:
        raise ProtocolViolation(ErrorCode.PROTOCOL_ERROR, f"SETTINGS_MAX_FRAME_SIZE {value}")


def u32(payload: bytes, offset: int = 0) -> int:
    """The big-endian unsigned 32-bit integer at ``offset``."""
    return int(_U32.unpack_from(payload, offset)[0])


def strip_padding(payload: bytes, flags: int) -> bytes:
    """A DATA or HEADERS payload without its padding (RFC 9113 section 6.1: padding as long as the
    payload is a connection error)."""
    if not flags & Flag.PADDED:
        return payload
    if not payload or payload[0] >= len(payload):
        raise ProtocolViolation(ErrorCode.PROTOCOL_ERROR, "padding longer than the frame")
    return payload[1 : len(payload) - payload[0]]


# HPACK encoding (RFC 7541): static-table references and literals without indexing.


def _integer(value: int, prefix_bits: int, first: int) -> bytes:
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes((first | value,))
    out = bytearray((first | limit,))
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def literal(name: bytes, value: bytes) -> bytes:
    """A header field as a literal without indexing, with a literal name (no Huffman coding)."""
    return b"\x00" + _integer(len(name), 7, 0) + name + _integer(len(value), 7, 0) + value


def status_block(status: int) -> bytes:
    """``:status`` as HPACK: a static-table reference when there is one (200, 204, ...), else a literal."""
    indexed = {200: 8, 204: 9, 206: 10, 304: 11, 400: 12, 404: 13, 500: 14}.get(status)
    if indexed is not None:
        return bytes((0x80 | indexed,))
    # Literal without indexing, the name from static entry 8 (":status").
    return _integer(8, 4, 0) + _integer(3, 7, 0) + str(status).encode()
