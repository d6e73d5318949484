"""serving_image.http2_frames: the frame layout, SETTINGS, padding, and the header blocks we send.

Frames are read back with ``hyperframe`` and header blocks with ``hpack`` (the python-hyper
project's parsers), besides the byte-exact checks, so our encoding is checked by someone else's
decoding.
"""

import pytest
from hpack import Decoder
from hyperframe.frame import Frame, SettingsFrame

from serving_image.http2_frames import (
    ErrorCode,
    Flag,
    FrameType,
    ProtocolViolation,
    Setting,
    check_setting,
    frame,
    literal,
    parse_settings,
    settings_frame,
    status_block,
    strip_padding,
)


def test_frame_layout_byte_for_byte() -> None:
    data = frame(FrameType.HEADERS, Flag.END_HEADERS | Flag.END_STREAM, 5, b"abc")
    assert data == b"\x00\x00\x03" + b"\x01" + b"\x05" + b"\x00\x00\x00\x05" + b"abc", data.hex()


@pytest.mark.parametrize(
    ("kind", "flags", "stream_id", "length"),
    [
        (FrameType.DATA, Flag.END_STREAM, 1, 0),
        (FrameType.DATA, Flag.PADDED, 3, 16_384),
        (FrameType.HEADERS, Flag.END_HEADERS | Flag.PRIORITY, 2**31 - 1, 70_000),
        (FrameType.SETTINGS, Flag.ACK, 0, 0),
        (FrameType.CONTINUATION, 0, 257, 2**24 - 1),
        (0xFA, 0xFF, 0x7F00_0001, 1),
    ],
    ids=[
        "empty-data",
        "data-16k",
        "headers-max-stream",
        "settings-ack",
        "continuation-max-length",
        "unknown-type",
    ],
)
def test_frame_header_fields(kind: int, flags: int, stream_id: int, length: int) -> None:
    payload = bytes(length)
    data = frame(kind, flags, stream_id, payload)
    assert len(data) == 9 + length, f"9-byte header and the payload: {len(data)}"
    assert int.from_bytes(data[:3], "big") == length, f"24-bit length: {data[:3].hex()}"
    assert (data[3], data[4]) == (kind, flags), f"type and flags: {data[3:5].hex()}"
    assert data[5] & 0x80 == 0, f"the reserved bit is clear: {data[5:9].hex()}"
    assert int.from_bytes(data[5:9], "big") == stream_id, f"31-bit stream id: {data[5:9].hex()}"
    assert data[9:] == payload, "the payload follows the header unchanged"
    parsed, parsed_length = Frame.parse_frame_header(memoryview(data[:9]))
    assert (parsed_length, parsed.stream_id) == (length, stream_id), f"hyperframe reads {parsed}"


def test_settings_frame_round_trip() -> None:
    values = {
        Setting.HEADER_TABLE_SIZE: 4096,
        Setting.ENABLE_PUSH: 0,
        Setting.MAX_CONCURRENT_STREAMS: 100,
        Setting.INITIAL_WINDOW_SIZE: 2**31 - 1,
        Setting.MAX_FRAME_SIZE: 2**24 - 1,
        Setting.MAX_HEADER_LIST_SIZE: 2**32 - 1,
    }
    data = settings_frame(values)
    assert data[:9] == b"\x00\x00\x24\x04\x00\x00\x00\x00\x00", (
        f"36 bytes, SETTINGS, no flags, stream 0: {data[:9]!r}"
    )
    assert parse_settings(data[9:]) == list(values.items()), "the same pairs, in order"
    parsed, length = Frame.parse_frame_header(memoryview(data[:9]))
    assert isinstance(parsed, SettingsFrame), f"hyperframe reads {parsed}"
    parsed.parse_body(memoryview(data[9 : 9 + length]))
    assert parsed.settings == {int(key): value for key, value in values.items()}, f"hyperframe reads {parsed}"


def test_empty_settings_frame() -> None:
    data = settings_frame({})
    assert data == b"\x00\x00\x00\x04\x00\x00\x00\x00\x00", data.hex()
    assert parse_settings(data[9:]) == [], "no pairs"


def test_parse_settings_keeps_unknown_and_repeated_parameters() -> None:
    payload = b"\x00\x99\x00\x00\x00\x07" + b"\x00\x04\x00\x00\x00\x01" + b"\x00\x04\x00\x00\x00\x02"
    assert parse_settings(payload) == [(0x99, 7), (4, 1), (4, 2)], "every pair, as the peer sent it"


@pytest.mark.parametrize(
    ("key", "value", "code"),
    [
        (Setting.ENABLE_PUSH, 2, ErrorCode.PROTOCOL_ERROR),
        (Setting.ENABLE_PUSH, 2**32 - 1, ErrorCode.PROTOCOL_ERROR),
        (Setting.INITIAL_WINDOW_SIZE, 2**31, ErrorCode.FLOW_CONTROL_ERROR),
        (Setting.INITIAL_WINDOW_SIZE, 2**32 - 1, ErrorCode.FLOW_CONTROL_ERROR),
        (Setting.MAX_FRAME_SIZE, 16_383, ErrorCode.PROTOCOL_ERROR),
        (Setting.MAX_FRAME_SIZE, 0, ErrorCode.PROTOCOL_ERROR),
        (Setting.MAX_FRAME_SIZE, 2**24, ErrorCode.PROTOCOL_ERROR),
    ],
    ids=["push-2", "push-max", "window-2^31", "window-max", "frame-16383", "frame-0", "frame-2^24"],
)
def test_check_setting_refuses_what_rfc_9113_forbids(key: Setting, value: int, code: ErrorCode) -> None:
    with pytest.raises(ProtocolViolation) as caught:
        check_setting(key, value)
    assert caught.value.code == code, f"{key.name} {value}: {caught.value.code!r}"
    assert caught.value.stream_id == 0, f"{key.name} {value}: a SETTINGS error ends the connection"


@pytest.mark.parametrize(
    ("key", "value"),
    [
        (Setting.ENABLE_PUSH, 0),
        (Setting.ENABLE_PUSH, 1),
        (Setting.INITIAL_WINDOW_SIZE, 0),
        (Setting.INITIAL_WINDOW_SIZE, 2**31 - 1),
        (Setting.MAX_FRAME_SIZE, 16_384),
        (Setting.MAX_FRAME_SIZE, 2**24 - 1),
        (Setting.HEADER_TABLE_SIZE, 2**32 - 1),
        (Setting.MAX_CONCURRENT_STREAMS, 0),
        (Setting.MAX_HEADER_LIST_SIZE, 2**32 - 1),
        (0x99, 2**32 - 1),
    ],
    ids=[
        "push-0",
        "push-1",
        "window-0",
        "window-max",
        "frame-min",
        "frame-max",
        "table-max",
        "streams-0",
        "header-list-max",
        "unknown-setting",
    ],
)
def test_check_setting_accepts_the_boundaries(key: int, value: int) -> None:
    check_setting(key, value)  # raises if refused


@pytest.mark.parametrize(
    ("payload", "flags", "expected"),
    [
        (b"\x03abc", 0, b"\x03abc"),
        (b"", 0, b""),
        (b"\x03abc\x00\x00\x00", Flag.PADDED, b"abc"),
        (b"\x00abc", Flag.PADDED, b"abc"),
        (b"\x00", Flag.PADDED, b""),
        (b"\x03abc", Flag.PADDED, b""),
        (b"\x02abc\x00\x00", Flag.PADDED | Flag.END_STREAM | Flag.END_HEADERS, b"abc"),
        (b"\xff" + b"x" * 10 + bytes(255), Flag.PADDED, b"x" * 10),
    ],
    ids=[
        "no-flag",
        "no-flag-empty",
        "three-bytes",
        "zero-padding",
        "only-pad-length",
        "all-padding",
        "other-flags",
        "255-bytes",
    ],
)
def test_strip_padding(payload: bytes, flags: int, expected: bytes) -> None:
    assert strip_padding(payload, flags) == expected, f"{payload[:16].hex()} flags {flags:#x}"


@pytest.mark.parametrize(
    "payload",
    [b"\x04abc", b"\x05abc", b"\x01", b"\xff", b""],
    ids=["padding-equals-length", "padding-over-length", "padding-1-of-1", "padding-255-of-1", "empty"],
)
def test_strip_padding_refuses_padding_as_long_as_the_frame(payload: bytes) -> None:
    with pytest.raises(ProtocolViolation) as caught:
        strip_padding(payload, Flag.PADDED)
    assert caught.value.code == ErrorCode.PROTOCOL_ERROR, f"{payload.hex()}: {caught.value.code!r}"
    assert caught.value.stream_id == 0, f"{payload.hex()}: a connection error (RFC 9113 6.1)"


def decoded(block: bytes) -> list[tuple[bytes, bytes]]:
    decoder = Decoder()
    fields = [(bytes(name), bytes(value)) for name, value in decoder.decode(block, raw=True)]
    assert len(decoder.header_table.dynamic_entries) == 0, "our blocks never add to the peer's table"
    return fields


@pytest.mark.parametrize(
    ("name", "value"),
    [
        (b"content-type", b"application/grpc"),
        (b"grpc-message", b""),
        (b"x-long", b"v" * 126),
        (b"x-long", b"v" * 127),
        (b"x-long", b"v" * 128),
        (b"x-long", b"v" * 200),
        (b"x-" + b"n" * 125, b"v" * 300),
        (b"x-huge", bytes(range(256)) * 64),
    ],
    ids=[
        "grpc-content-type",
        "empty-value",
        "value-126",
        "value-127",
        "value-128",
        "value-200",
        "name-127-value-300",
        "value-16k-all-bytes",
    ],
)
def test_literal_decodes_to_the_field(name: bytes, value: bytes) -> None:
    block = literal(name, value)
    assert block[0] == 0x00, f"a literal without indexing with a literal name: {block[:1].hex()}"
    assert decoded(block) == [(name, value)], f"{name[:20]!r}: {len(value)} bytes"


def test_literal_value_of_200_bytes_has_a_two_byte_length() -> None:
    block = literal(b"x", b"v" * 200)
    # 200 = 127 + 73: the 7-bit prefix is full, then 73 in one byte.
    assert block[:5] == b"\x00\x01x\x7f\x49", f"the HPACK integer 200: {block[:5].hex()}"


@pytest.mark.parametrize("status", [200, 204, 206, 304, 400, 404, 405, 415, 500, 503])
def test_status_block_decodes_to_the_status(status: int) -> None:
    assert decoded(status_block(status)) == [(b":status", str(status).encode())], f"status {status}"


@pytest.mark.parametrize(
    ("status", "index"), [(200, 8), (204, 9), (206, 10), (304, 11), (400, 12), (404, 13), (500, 14)]
)
def test_status_block_uses_the_static_table_when_it_can(status: int, index: int) -> None:
    assert status_block(status) == bytes((0x80 | index,)), f"status {status} is static entry {index}"
