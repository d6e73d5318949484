"""serving_image.grpc_wire: grpc-timeout, the length-prefixed message, and the status header blocks.

The header blocks are read back with the ``hpack`` package's decoder, not ours, so an encoding
mistake cannot hide behind a matching decoding mistake.
"""

import gzip
import zlib
from urllib.parse import unquote

import pytest
from hpack import Decoder

from serving_image.grpc_wire import (
    RpcError,
    frame_message,
    parse_timeout,
    status_trailers,
    trailers_only,
    unframe_message,
)

MiB = 1 << 20
Headers = list[tuple[bytes, bytes]]

# google.rpc.Code, written out here rather than read from the module under test.
GRPC_CODES = [
    ("OK", 0), ("CANCELLED", 1), ("UNKNOWN", 2), ("INVALID_ARGUMENT", 3), ("DEADLINE_EXCEEDED", 4),
    ("NOT_FOUND", 5), ("ALREADY_EXISTS", 6), ("PERMISSION_DENIED", 7), ("RESOURCE_EXHAUSTED", 8),
    ("FAILED_PRECONDITION", 9), ("ABORTED", 10), ("OUT_OF_RANGE", 11), ("UNIMPLEMENTED", 12),
    ("INTERNAL", 13), ("UNAVAILABLE", 14), ("DATA_LOSS", 15), ("UNAUTHENTICATED", 16),
]  # fmt: skip


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (b"2H", 7200.0),
        (b"3M", 180.0),
        (b"5S", 5.0),
        (b"250m", 0.25),
        (b"1500u", 0.0015),
        (b"99999999n", 0.099999999),
        (b"0S", 0.0),
        (b"12345678S", 12345678.0),
        (b"00000001H", 3600.0),
    ],
    ids=[
        "hours",
        "minutes",
        "seconds",
        "milliseconds",
        "microseconds",
        "nanoseconds",
        "zero",
        "8-digits",
        "leading-zeros",
    ],
)
def test_parse_timeout_units(value: bytes, seconds: float) -> None:
    assert parse_timeout(value) == pytest.approx(seconds, rel=1e-12), f"grpc-timeout {value!r}"


@pytest.mark.parametrize(
    "value",
    [
        b"123456789S",
        b"100",
        b"S",
        b"5s",
        b"5h",
        b"5x",
        b"",
        b" 5S",
        b"5S ",
        b"5 S",
        b"-5S",
        b"+5S",
        b"1.5S",
        b"5SS",
        b"5S\n",
        "\u0665S".encode(),
    ],
    ids=[
        "9-digits",
        "no-unit",
        "no-digits",
        "unit-s",
        "unit-h",
        "unit-x",
        "empty",
        "leading-space",
        "trailing-space",
        "inner-space",
        "negative",
        "plus",
        "decimal",
        "two-units",
        "trailing-newline",
        "non-ascii-digit",
    ],
)
def test_parse_timeout_refuses_bad_values(value: bytes) -> None:
    with pytest.raises(RpcError) as caught:
        parse_timeout(value)
    assert caught.value.code == "INVALID_ARGUMENT", f"grpc-timeout {value!r}: {caught.value.code}"


def test_frame_message_layout() -> None:
    assert frame_message(b"hello") == b"\x00\x00\x00\x00\x05hello", "flag 0, 4-byte big-endian length"
    assert frame_message(b"x" * 70_000)[:5] == b"\x00\x00\x01\x11\x70", "70000 as a 4-byte big-endian length"


def gzipped(payload: bytes) -> bytes:
    """``payload`` compressed, framed with the compressed flag set."""
    compressed = gzip.compress(payload)
    return b"\x01" + len(compressed).to_bytes(4, "big") + compressed


def framed(flag: int, payload: bytes) -> bytes:
    return bytes((flag,)) + len(payload).to_bytes(4, "big") + payload


def test_unframe_exact_single_message() -> None:
    assert unframe_message(frame_message(b"hello"), None, MiB) == b"hello", "the message, without its prefix"
    assert unframe_message(bytearray(frame_message(b"hello")), b"identity", MiB) == b"hello", (
        "a bytearray body"
    )
    assert unframe_message(frame_message(b""), None, MiB) == b"", "an empty message is a message"


def test_unframe_gzip_round_trip() -> None:
    payload = bytes(range(256)) * 40
    assert unframe_message(gzipped(payload), b"gzip", MiB) == payload, "gzip inflates to the message"
    assert unframe_message(gzipped(payload), b"gzip", len(payload)) == payload, "exactly max_bytes is allowed"
    assert unframe_message(gzipped(b""), b"gzip", MiB) == b"", "an empty compressed message"


def corrupt_crc(payload: bytes) -> bytes:
    compressed = bytearray(gzip.compress(payload))
    compressed[-8] ^= 0xFF  # the CRC-32 in the gzip trailer
    return bytes(compressed)


GZIP_PAYLOAD = b"the quick brown fox " * 50
GZIP_DATA = gzip.compress(GZIP_PAYLOAD)


@pytest.mark.parametrize(
    ("body", "encoding", "code"),
    [
        pytest.param(b"", None, "INVALID_ARGUMENT", id="empty-body"),
        pytest.param(b"\x00\x00\x00\x00", None, "INVALID_ARGUMENT", id="short-prefix"),
        pytest.param(b"\x00", None, "INVALID_ARGUMENT", id="one-byte"),
        pytest.param(frame_message(b"a") + frame_message(b"b"), None, "INVALID_ARGUMENT", id="two-messages"),
        pytest.param(frame_message(b"hello") + b"!", None, "INVALID_ARGUMENT", id="one-byte-too-many"),
        pytest.param(frame_message(b"hello")[:-1], None, "INVALID_ARGUMENT", id="truncated"),
        pytest.param(frame_message(b"")[:4], None, "INVALID_ARGUMENT", id="truncated-prefix"),
        pytest.param(framed(2, b"hello"), b"gzip", "INVALID_ARGUMENT", id="compressed-flag-2"),
        pytest.param(framed(0x80, b"hello"), None, "INVALID_ARGUMENT", id="compressed-flag-128"),
        pytest.param(framed(1, GZIP_DATA), None, "INVALID_ARGUMENT", id="compressed-without-encoding"),
        pytest.param(framed(1, GZIP_DATA), b"identity", "INVALID_ARGUMENT", id="compressed-with-identity"),
        pytest.param(framed(1, GZIP_DATA + b"junk"), b"gzip", "INVALID_ARGUMENT", id="gzip-trailing-garbage"),
        pytest.param(framed(1, GZIP_DATA + GZIP_DATA), b"gzip", "INVALID_ARGUMENT", id="gzip-two-members"),
        pytest.param(framed(1, GZIP_DATA[:-4]), b"gzip", "INVALID_ARGUMENT", id="gzip-truncated-trailer"),
        pytest.param(framed(1, GZIP_DATA[:20]), b"gzip", "INVALID_ARGUMENT", id="gzip-truncated-data"),
        pytest.param(framed(1, b""), b"gzip", "INVALID_ARGUMENT", id="gzip-empty"),
        pytest.param(framed(1, b"not gzip at all"), b"gzip", "INVALID_ARGUMENT", id="gzip-corrupt-header"),
        pytest.param(framed(1, corrupt_crc(GZIP_PAYLOAD)), b"gzip", "INVALID_ARGUMENT", id="gzip-bad-crc"),
        pytest.param(framed(1, zlib.compress(GZIP_PAYLOAD)), b"gzip", "INVALID_ARGUMENT", id="zlib-not-gzip"),
    ],
)
def test_unframe_refuses(body: bytes, encoding: bytes | None, code: str) -> None:
    with pytest.raises(RpcError) as caught:
        unframe_message(body, encoding, MiB)
    assert caught.value.code == code, f"{body[:16].hex()}...: {caught.value.code} {caught.value.message}"


@pytest.mark.parametrize(
    ("body", "max_bytes"),
    [
        pytest.param(gzipped(GZIP_PAYLOAD), len(GZIP_PAYLOAD) - 1, id="one-byte-over"),
        pytest.param(gzipped(GZIP_PAYLOAD), 0, id="max-0"),
    ],
)
def test_unframe_refuses_more_than_max_bytes_inflated(body: bytes, max_bytes: int) -> None:
    with pytest.raises(RpcError) as caught:
        unframe_message(body, b"gzip", max_bytes)
    assert caught.value.code == "RESOURCE_EXHAUSTED", (
        f"{max_bytes}: {caught.value.code} {caught.value.message}"
    )


@pytest.fixture(scope="module")
def gzip_bomb() -> bytes:
    """64 MiB of zeros, gzip-compressed a MiB at a time (about 64 KiB), framed as one message."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    chunk = bytes(MiB)
    compressed = b"".join(compressor.compress(chunk) for _ in range(64)) + compressor.flush()
    return framed(1, compressed)


def test_unframe_refuses_a_gzip_bomb(gzip_bomb: bytes) -> None:
    assert len(gzip_bomb) < MiB, f"the bomb is small on the wire: {len(gzip_bomb)} bytes"
    with pytest.raises(RpcError) as caught:
        unframe_message(gzip_bomb, b"gzip", MiB)
    assert caught.value.code == "RESOURCE_EXHAUSTED", f"{caught.value.code}: {caught.value.message}"


def decoded(block: bytes) -> Headers:
    return [(bytes(name), bytes(value)) for name, value in Decoder().decode(block, raw=True)]


@pytest.mark.parametrize(("code", "number"), GRPC_CODES)
def test_status_trailers_carry_the_numeric_status(code: str, number: int) -> None:
    assert decoded(status_trailers(code)) == [(b"grpc-status", str(number).encode())], code


@pytest.mark.parametrize(
    ("message", "encoded"),
    [
        ("model x not found", b"model x not found"),
        ("100% done", b"100%25 done"),
        ("%%", b"%25%25"),
        ("caf\u00e9", b"caf%C3%A9"),
        ("\u6f22\u5b57", b"%E6%BC%A2%E5%AD%97"),
        ("\U0001f600", b"%F0%9F%98%80"),
        ("line\nbreak\tand\r", b"line%0Abreak%09and%0D"),
        ("nul\x00del\x7f", b"nul%00del%7F"),
        (
            "shape [1, 4] != [2]: 'x' {a=b} ~ ^ | ` ? # & + / \\ \"",
            b"shape [1, 4] != [2]: 'x' {a=b} ~ ^ | ` ? # & + / \\ \"",
        ),
    ],
    ids=[
        "plain",
        "percent",
        "two-percents",
        "latin",
        "cjk",
        "emoji",
        "controls",
        "nul-and-del",
        "punctuation",
    ],
)
def test_grpc_message_is_percent_encoded(message: str, encoded: bytes) -> None:
    fields = decoded(status_trailers("INVALID_ARGUMENT", message))
    assert fields == [(b"grpc-status", b"3"), (b"grpc-message", encoded)], f"{message!r}: {fields}"
    assert unquote(encoded.decode("ascii"), errors="strict") == message, "it decodes back to the message"


def test_every_printable_ascii_but_percent_is_left_as_it_is() -> None:
    printable = "".join(chr(c) for c in range(0x20, 0x7F) if c != ord("%"))
    fields = dict(decoded(status_trailers("INTERNAL", printable)))
    assert fields[b"grpc-message"] == printable.encode(), f"spec: %x20-%x24 / %x26-%x7E unencoded: {fields}"


@pytest.mark.parametrize(
    ("message", "kept"),
    [
        ("a" * 1024, "a" * 1024),
        ("a" * 1025, "a" * 1024),
        ("b" * 5000, "b" * 1024),
        ("\u00e9" * 2000, "\u00e9" * 1024),
    ],
    ids=["exactly-1024", "1025", "5000", "2000-non-ascii"],
)
def test_grpc_message_is_cut_at_1024_characters_of_input(message: str, kept: str) -> None:
    fields = dict(decoded(status_trailers("INTERNAL", message)))
    assert unquote(fields[b"grpc-message"].decode("ascii"), errors="strict") == kept, (
        f"{len(message)} characters: {len(fields[b'grpc-message'])} bytes on the wire"
    )


def test_empty_message_sends_no_grpc_message() -> None:
    assert decoded(status_trailers("UNKNOWN", "")) == [(b"grpc-status", b"2")], "no empty grpc-message field"


def test_metadata_is_appended_after_status_and_message() -> None:
    metadata = ((b"x-request-id", b"abc"), (b"x-cost-bin", b"AAE="))
    assert decoded(status_trailers("OK", "", metadata)) == [(b"grpc-status", b"0"), *metadata], (
        "OK and metadata"
    )
    assert decoded(status_trailers("ABORTED", "try again", metadata)) == [
        (b"grpc-status", b"10"),
        (b"grpc-message", b"try again"),
        *metadata,
    ], "status, message, then metadata"


def test_trailers_only_is_the_response_headers_and_the_trailers_in_one_block() -> None:
    extra = ((b"grpc-accept-encoding", b"identity,gzip"),)
    assert decoded(trailers_only("UNIMPLEMENTED", "grpc-encoding br is not supported", extra)) == [
        (b":status", b"200"),
        (b"content-type", b"application/grpc"),
        (b"grpc-status", b"12"),
        (b"grpc-message", b"grpc-encoding br is not supported"),
        (b"grpc-accept-encoding", b"identity,gzip"),
    ], "Trailers-Only: :status, content-type, grpc-status, grpc-message, extra fields"
    assert decoded(trailers_only("UNAVAILABLE", "")) == [
        (b":status", b"200"),
        (b"content-type", b"application/grpc"),
        (b"grpc-status", b"14"),
    ], "without a message nor extra fields"


def test_blocks_leave_the_peer_table_empty() -> None:
    """Literals without indexing: the peer's decoder must hold no state from our blocks."""
    decoder = Decoder()
    decoder.decode(trailers_only("NOT_FOUND", "no model", ((b"x-a", b"1"),)))
    decoder.decode(status_trailers("OK", "", ((b"x-b", b"2"),)))
    assert len(decoder.header_table.dynamic_entries) == 0, f"{decoder.header_table.dynamic_entries}"
