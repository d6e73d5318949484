"""HPACK (RFC 7541) decoding of request header blocks, with the header-list size enforced as it decodes.

Why not ``hpack.Decoder``: it costs about 20 us for the nine fields a gRPC client sends with each
call (it logs every field and builds an object per field), a tenth of the whole call. This
decoder uses that package's static table and Huffman decoder, and keeps only the dynamic table
and integer coding here; tests/serving_image/test_http2_hpack.py decodes what ``hpack.Encoder``
produces, for any header list Hypothesis makes, and compares it with ``hpack.Decoder``'s result.
"""

from collections import deque

from hpack.exceptions import HPACKDecodingError
from hpack.huffman_table import decode_huffman
from hpack.table import HeaderTable

from serving_image.http2_frames import ErrorCode, ProtocolViolation

_STATIC: tuple[tuple[bytes, bytes], ...] = HeaderTable.STATIC_TABLE
_STATIC_SIZE = len(_STATIC)
_ENTRY_OVERHEAD = 32  # RFC 7541 section 4.1
_MAX_INTEGER_SHIFT = 28  # no field of this server needs an integer above 2^35


class HeaderListTooLarge(Exception):
    """The block decoded to more than the limit; the table was still updated, so the connection can go on."""


class HpackDecoder:
    """One connection's decoding context (the dynamic table lives as long as the connection)."""

    def __init__(self, max_header_list_bytes: int, max_table_bytes: int = 4096) -> None:
        self.max_header_list_bytes = max_header_list_bytes
        self._allowed = max_table_bytes  # what our SETTINGS_HEADER_TABLE_SIZE allows (the default)
        self._max = max_table_bytes  # what the encoder last chose, at most ``_allowed``
        self._size = 0
        self._dynamic: deque[tuple[bytes, bytes]] = deque()  # newest first: index 62 is [0]

    def decode(self, block: bytes) -> list[tuple[bytes, bytes]]:
        """The (name, value) fields of a complete header block; ``ProtocolViolation`` (COMPRESSION_ERROR)
        if it is malformed, ``HeaderListTooLarge`` if it decodes to more than ``max_header_list_bytes``.

        An oversized block is decoded to its end all the same, keeping only the dynamic table's
        changes, so the one call can be refused and the connection's other calls go on; what
        that costs is bounded by the block's own length, which the caller limits.
        """
        headers: list[tuple[bytes, bytes]] = []
        position, end, inflated = 0, len(block), 0
        fields = 0  # decoded, kept or not: a table size update may come only before the first
        while position < end:
            first = block[position]
            if first & 0x80:  # indexed field
                if first != 0xFF:
                    header, position = self._entry(first & 0x7F), position + 1
                else:
                    index, position = _integer(block, position, 7)
                    header = self._entry(index)
            elif first & 0x40:  # literal with incremental indexing
                header, position = self._literal(block, position, 6)
                self._add(header)
            elif first & 0x20:  # dynamic table size update, only before the first field
                if fields:
                    raise _compression("a table size update after a header field")
                size, position = _integer(block, position, 5)
                if size > self._allowed:
                    raise _compression(f"a table size of {size} above the {self._allowed} allowed")
                self._max = size
                self._evict()
                continue
            else:  # literal without indexing, or never indexed
                header, position = self._literal(block, position, 4)
            fields += 1
            inflated += len(header[0]) + len(header[1]) + _ENTRY_OVERHEAD
            if inflated <= self.max_header_list_bytes:
                headers.append(header)
        if inflated > self.max_header_list_bytes:
            raise HeaderListTooLarge
        return headers

    def _entry(self, index: int) -> tuple[bytes, bytes]:
        if 0 < index <= _STATIC_SIZE:
            return _STATIC[index - 1]
        offset = index - _STATIC_SIZE - 1
        if index == 0 or offset >= len(self._dynamic):
            raise _compression(f"header table index {index} is out of range")
        return self._dynamic[offset]

    def _literal(self, block: bytes, position: int, prefix: int) -> tuple[tuple[bytes, bytes], int]:
        index, position = _integer(block, position, prefix)
        if index:
            name = self._entry(index)[0]
        else:
            name, position = self._string(block, position)
        value, position = self._string(block, position)
        return (name, value), position

    def _string(self, block: bytes, position: int) -> tuple[bytes, int]:
        if position >= len(block):
            raise _compression("a header block ends inside a field")
        huffman = block[position] & 0x80
        length, position = _integer(block, position, 7)
        end = position + length
        if end > len(block):
            raise _compression("a header block ends inside a string")
        data = block[position:end]
        if huffman:
            try:
                data = decode_huffman(data)
            except HPACKDecodingError as error:
                raise _compression(f"bad Huffman coding: {error}") from None
        return data, end

    def _add(self, header: tuple[bytes, bytes]) -> None:
        size = len(header[0]) + len(header[1]) + _ENTRY_OVERHEAD
        if size > self._max:  # RFC 7541 section 4.4: the table is emptied and the entry not added
            self._dynamic.clear()
            self._size = 0
            return
        self._dynamic.appendleft(header)
        self._size += size
        self._evict()

    def _evict(self) -> None:
        while self._size > self._max:
            name, value = self._dynamic.pop()
            self._size -= len(name) + len(value) + _ENTRY_OVERHEAD


def _integer(block: bytes, position: int, prefix: int) -> tuple[int, int]:
    """An HPACK integer (RFC 7541 section 5.1) whose first byte is at ``position``; the value and the
    position after it."""
    mask = (1 << prefix) - 1
    value = block[position] & mask
    position += 1
    if value < mask:
        return value, position
    shift = 0
    while True:
        if position >= len(block):
            raise _compression("a header block ends inside an integer")
        byte = block[position]
        position += 1
        value += (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, position
        shift += 7
        if shift > _MAX_INTEGER_SHIFT:
            raise _compression("an integer of more than 5 bytes")


def _compression(reason: str) -> ProtocolViolation:
    return ProtocolViolation(ErrorCode.COMPRESSION_ERROR, f"bad header block: {reason}")
