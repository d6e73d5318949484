"""serving_image.http2_hpack: our HPACK decoder against the ``hpack`` package's, block for block.

The differential tests feed both decoders what one long-lived ``hpack.Encoder`` produces (Huffman
on and off, table size updates included), so the dynamic tables of the two must agree across
blocks. The hand-written blocks cover what an encoder never produces: each must end the
connection with COMPRESSION_ERROR.
"""

import pytest
from hpack import Decoder, Encoder
from hpack.hpack import encode_integer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from serving_image.http2_frames import ErrorCode, ProtocolViolation
from serving_image.http2_hpack import HeaderListTooLarge, HpackDecoder

BUDGET = settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
UNLIMITED = 1 << 30
ENTRY_OVERHEAD = 32  # RFC 7541 section 4.1
STATIC_ENTRIES = 61  # RFC 7541 appendix A: the first dynamic entry is index 62

Header = tuple[bytes, bytes]
# One block to encode: the fields with their "sensitive" flag (never indexed), Huffman or not,
# and the table sizes the encoder is given before encoding it.
BlockSpec = tuple[list[tuple[bytes, bytes, bool]], bool, list[int]]

# Names and values a gRPC client sends, so full and name-only static-table matches happen.
COMMON_NAMES = [b":method", b":scheme", b":path", b":authority", b"content-type", b"te", b"user-agent"]
COMMON_VALUES = [b"POST", b"GET", b"http", b"/", b"application/grpc", b"trailers", b""]
TABLE_SIZES = [0, 33, 64, 100, 256, 1000, 4096]

token_names = st.one_of(
    st.sampled_from(COMMON_NAMES),
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_.", min_size=1, max_size=24).map(str.encode),
)
# Field values a well-behaved client sends: any byte but NUL, CR and LF; some long enough that an
# entry outgrows a small table.
plain_values = st.one_of(
    st.sampled_from(COMMON_VALUES),
    st.binary(max_size=40).map(lambda value: value.translate(None, b"\x00\r\n")),
    st.binary(min_size=60, max_size=300).map(lambda value: value.translate(None, b"\x00\r\n")),
)
any_bytes = st.one_of(st.binary(max_size=40), st.binary(min_size=100, max_size=300))


def block_specs(
    names: st.SearchStrategy[bytes], values: st.SearchStrategy[bytes]
) -> st.SearchStrategy[BlockSpec]:
    indexable = st.lists(st.tuples(names, values, st.just(False)), max_size=8)
    some_sensitive = st.lists(st.tuples(names, values, st.booleans()), max_size=8)
    return st.tuples(
        st.one_of(indexable, some_sensitive),
        st.booleans(),
        st.lists(st.sampled_from(TABLE_SIZES), max_size=2),
    )


def assert_same_decoding(blocks: list[BlockSpec]) -> None:
    """Encode ``blocks`` in order with one encoder; both decoders must return the same lists."""
    encoder = Encoder()
    reference = Decoder(max_header_list_size=UNLIMITED)
    ours = HpackDecoder(max_header_list_bytes=UNLIMITED)
    for number, (fields, huffman, sizes) in enumerate(blocks):
        for size in sizes:
            # hpack.Encoder forgets a pending change when given its current size again.
            if size != encoder.header_table_size:
                encoder.header_table_size = size
        block = encoder.encode(fields, huffman=huffman)
        expected = [(bytes(name), bytes(value)) for name, value in reference.decode(block, raw=True)]
        got = ours.decode(block)
        assert got == expected, f"block {number} ({block.hex()}): ours {got!r}, hpack {expected!r}"


@BUDGET
@given(blocks=st.lists(block_specs(token_names, plain_values), min_size=1, max_size=8))
def test_decodes_token_headers_as_hpack_does(blocks: list[BlockSpec]) -> None:
    assert_same_decoding(blocks)


@BUDGET
@given(blocks=st.lists(block_specs(any_bytes, any_bytes), min_size=1, max_size=8))
def test_decodes_arbitrary_bytes_as_hpack_does(blocks: list[BlockSpec]) -> None:
    assert_same_decoding(blocks)


def test_decodes_dynamic_indices_above_126_as_hpack_does() -> None:
    """Indices from 127 up need a multi-byte integer; 100 small entries put the oldest at 161."""
    fields = [(f"x-{number}".encode(), b"v", False) for number in range(100)]
    encoder = Encoder()
    encoder.encode(fields)
    second = encoder.encode(fields)
    assert second[:2] == indexed(161), f"x-0 is referenced as index 161, got {second[:2].hex()}"
    assert_same_decoding([(fields, False, []), (fields, False, []), (fields[::-1], True, [])])


def indexed(index: int) -> bytes:
    """An indexed field (RFC 7541 6.1)."""
    encoded = encode_integer(index, 7)
    encoded[0] |= 0x80
    return bytes(encoded)


def size_update(size: int) -> bytes:
    """A dynamic table size update (RFC 7541 6.3)."""
    encoded = encode_integer(size, 5)
    encoded[0] |= 0x20
    return bytes(encoded)


def incremental(name: bytes, value: bytes) -> bytes:
    """A literal with incremental indexing and a literal name, no Huffman (RFC 7541 6.2.1)."""
    return b"\x40" + bytes(encode_integer(len(name), 7)) + name + bytes(encode_integer(len(value), 7)) + value


# The fields of these blocks are what an encoder never produces.
MALFORMED_BLOCKS = [
    pytest.param(b"\x80", id="index-0"),
    pytest.param(indexed(62), id="index-62-empty-dynamic-table"),
    pytest.param(incremental(b"a", b"1") + indexed(63), id="index-past-one-entry"),
    pytest.param(indexed(STATIC_ENTRIES + 200), id="multi-byte-index-past-table"),
    pytest.param(b"\x0f", id="truncated-name-index"),
    pytest.param(b"\x40\x00", id="literal-empty-name-then-nothing"),
    pytest.param(b"\xff", id="truncated-integer-no-continuation"),
    pytest.param(b"\xff\x80", id="truncated-integer-mid-continuation"),
    pytest.param(b"\x3f\xff\xff", id="truncated-size-update-integer"),
    pytest.param(b"\x00\x05ab", id="truncated-name-string"),
    pytest.param(b"\x00\x01a", id="block-ends-before-value"),
    pytest.param(b"\x00\x01a\x05abc", id="truncated-value-string"),
    pytest.param(b"\x00\x01a\x7f", id="truncated-value-length"),
    # 31 with five zero continuation bytes: a valid value, but six continuation bytes.
    pytest.param(b"\x3f\x80\x80\x80\x80\x80\x00", id="integer-6-continuation-bytes"),
    pytest.param(b"\xff" + b"\xff" * 5 + b"\x01", id="index-6-continuation-bytes"),
    pytest.param(size_update(4097), id="size-update-4097"),
    pytest.param(size_update(2**20), id="size-update-1MiB"),
    pytest.param(indexed(2) + size_update(0), id="size-update-after-field"),
    pytest.param(indexed(2) + size_update(4096), id="size-update-4096-after-field"),
    # "a" is 00011 in Huffman code; the padding must be the EOS prefix, 1s, shorter than a byte.
    pytest.param(b"\x00\x01a\x81\x18", id="huffman-padding-of-zeros"),
    pytest.param(b"\x00\x01a\x82\x1f\xff", id="huffman-padding-longer-than-7-bits"),
    pytest.param(b"\x00\x01a\x84\xff\xff\xff\xfc", id="huffman-eos-symbol"),
    pytest.param(b"\x00\x81\x18\x01v", id="huffman-name-bad-padding"),
]


@pytest.mark.parametrize("block", MALFORMED_BLOCKS)
def test_malformed_block_is_a_compression_error(block: bytes) -> None:
    decoder = HpackDecoder(max_header_list_bytes=UNLIMITED)
    with pytest.raises(ProtocolViolation) as caught:
        decoder.decode(block)
    assert caught.value.code == ErrorCode.COMPRESSION_ERROR, f"{block.hex()}: {caught.value.code!r}"
    assert caught.value.stream_id == 0, f"{block.hex()}: a compression error ends the connection"


def test_size_update_after_a_field_dropped_for_the_limit_is_still_a_compression_error() -> None:
    """The field is over the header-list limit, so it is not kept; the update still follows a field."""
    decoder = HpackDecoder(max_header_list_bytes=40)
    block = incremental(b"a", b"v" * 20) + size_update(0)
    with pytest.raises(ProtocolViolation) as caught:
        decoder.decode(block)
    assert caught.value.code == ErrorCode.COMPRESSION_ERROR, f"{block.hex()}: {caught.value.code!r}"


def test_well_formed_edge_blocks_decode() -> None:
    """The valid neighbours of the malformed blocks, so the cases above fail for the reason named."""
    decoder = HpackDecoder(max_header_list_bytes=UNLIMITED)
    assert decoder.decode(b"") == [], "an empty block is an empty list"
    assert decoder.decode(indexed(STATIC_ENTRIES)) == [(b"www-authenticate", b"")], "index 61 is static"
    assert decoder.decode(b"\x3f\x80\x80\x80\x80\x00") == [], "a size update of 31 in 5 continuation bytes"
    assert decoder.decode(size_update(4096) + size_update(0) + size_update(4096) + indexed(2)) == [
        (b":method", b"GET")
    ], "several size updates before the first field"
    assert decoder.decode(b"\x00\x01a\x81\x1f") == [(b"a", b"a")], "'a' Huffman-coded with 3 bits of EOS"
    assert decoder.decode(b"\x10\x01a\x00") == [(b"a", b"")], "a never-indexed literal with an empty value"


def test_oversized_list_raises_and_keeps_the_table_in_sync() -> None:
    encoder = Encoder()
    decoder = HpackDecoder(max_header_list_bytes=200)
    oversized = [(b"x-first", b"1"), (b"x-big", b"v" * 200), (b"x-last", b"2")]
    first = encoder.encode(oversized, huffman=False)
    with pytest.raises(HeaderListTooLarge):
        decoder.decode(first)
    second = encoder.encode([(b"x-last", b"2"), (b"x-first", b"1")], huffman=False)
    assert second == indexed(62) + indexed(64), (
        f"the next block references the oversized one's entries: {second!r}"
    )
    expected = [(b"x-last", b"2"), (b"x-first", b"1")]
    assert decoder.decode(second) == expected, "entries the oversized block inserted are in the table"
    # The big entry is still there, so referencing it alone is over the limit again.
    with pytest.raises(HeaderListTooLarge):
        decoder.decode(indexed(63))


@pytest.mark.parametrize(
    ("limit", "too_large"),
    [(3 * (1 + 1 + ENTRY_OVERHEAD), False), (3 * (1 + 1 + ENTRY_OVERHEAD) - 1, True)],
    ids=["exactly-the-limit", "one-byte-over"],
)
def test_header_list_limit_counts_32_bytes_per_field(limit: int, too_large: bool) -> None:
    decoder = HpackDecoder(max_header_list_bytes=limit)
    block = b"\x00\x01a\x011" + b"\x00\x01b\x012" + b"\x00\x01c\x013"
    if too_large:
        with pytest.raises(HeaderListTooLarge):
            decoder.decode(block)
    else:
        assert decoder.decode(block) == [(b"a", b"1"), (b"b", b"2"), (b"c", b"3")], f"limit {limit}"


def table_contents(decoder: HpackDecoder) -> list[Header]:
    """The dynamic table, newest first, read through indexed references until one is out of range."""
    entries: list[Header] = []
    for index in range(STATIC_ENTRIES + 1, STATIC_ENTRIES + 200):
        try:
            entries += decoder.decode(indexed(index))
        except ProtocolViolation:
            return entries
    return entries


def test_entry_larger_than_the_table_empties_it() -> None:
    """RFC 7541 4.4: adding an entry larger than the table empties it, and the entry is not added."""
    decoder = HpackDecoder(max_header_list_bytes=UNLIMITED)
    decoder.decode(incremental(b"a", b"1") + incremental(b"b", b"2"))
    assert table_contents(decoder) == [(b"b", b"2"), (b"a", b"1")], "two entries before the big one"
    big_value = b"v" * (4097 - ENTRY_OVERHEAD - 1)  # with its 1-byte name and the overhead: 4097
    assert decoder.decode(incremental(b"x", big_value)) == [(b"x", big_value)], "the field itself is decoded"
    assert table_contents(decoder) == [], "the table is empty after an entry larger than it"


def test_entry_exactly_the_table_size_evicts_everything_else() -> None:
    decoder = HpackDecoder(max_header_list_bytes=UNLIMITED)
    decoder.decode(incremental(b"a", b"1"))
    exact = b"v" * (4096 - ENTRY_OVERHEAD - 1)
    decoder.decode(incremental(b"x", exact))
    assert table_contents(decoder) == [(b"x", exact)], "a 4096-byte entry fills the table alone"


@pytest.mark.parametrize(
    ("table_size", "kept"),
    [
        (3 * (1 + 1 + ENTRY_OVERHEAD), [(b"c", b"3"), (b"b", b"2"), (b"a", b"1")]),
        (3 * (1 + 1 + ENTRY_OVERHEAD) - 1, [(b"c", b"3"), (b"b", b"2")]),
        (2 * (1 + 1 + ENTRY_OVERHEAD) - 1, [(b"c", b"3")]),
        (1 + 1 + ENTRY_OVERHEAD - 1, []),
    ],
    ids=["three-fit", "one-byte-short-of-three", "one-byte-short-of-two", "none-fit"],
)
def test_table_accounting_evicts_oldest_first(table_size: int, kept: list[Header]) -> None:
    decoder = HpackDecoder(max_header_list_bytes=UNLIMITED)
    block = (
        size_update(table_size) + incremental(b"a", b"1") + incremental(b"b", b"2") + incremental(b"c", b"3")
    )
    assert decoder.decode(block) == [(b"a", b"1"), (b"b", b"2"), (b"c", b"3")], "the fields are decoded"
    assert table_contents(decoder) == kept, f"table of {table_size} bytes with 34-byte entries"


def test_size_update_shrinking_the_table_evicts_oldest_first() -> None:
    decoder = HpackDecoder(max_header_list_bytes=UNLIMITED)
    decoder.decode(incremental(b"a", b"1") + incremental(b"b", b"2") + incremental(b"c", b"3"))
    decoder.decode(size_update(2 * (1 + 1 + ENTRY_OVERHEAD)))
    assert table_contents(decoder) == [(b"c", b"3"), (b"b", b"2")], "shrinking keeps the newest entries"
    decoder.decode(size_update(0) + size_update(4096))
    assert table_contents(decoder) == [], (
        "a size of 0 empties the table, growing it again brings nothing back"
    )
