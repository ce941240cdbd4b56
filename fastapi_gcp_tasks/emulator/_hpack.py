"""HPACK header-block decoding (RFC 7541) for the emulator's gRPC server.

The `hpack` package's own decoder spends most of a gRPC call's server CPU on a block of a dozen headers;
this one decodes the same blocks several times faster by keeping the dynamic table as plain tuples. It
borrows only the static table and the Huffman code from `hpack`.
"""

from __future__ import annotations

import collections

from hpack.exceptions import HPACKDecodingError
from hpack.huffman_table import decode_huffman
from hpack.table import HeaderTable

__all__ = ["HPACKDecoder", "HPACKError", "HeaderListTooLargeError"]

_STATIC: tuple[tuple[str, str], ...] = (
    ("", ""),  # index 0 is not an entry
    *((name.decode("latin-1"), value.decode("latin-1")) for name, value in HeaderTable.STATIC_TABLE),
)
_STATIC_COUNT = len(_STATIC) - 1
_ENTRY_OVERHEAD = 32


class HPACKError(ValueError):
    """A header block that cannot be decoded: the connection must end with COMPRESSION_ERROR."""


class HeaderListTooLargeError(HPACKError):
    """The whole block was decoded (the dynamic table is in step) but its header list is over the limit."""


class HPACKDecoder:
    """Decodes the header blocks of one connection, in order (the dynamic table is shared state)."""

    def __init__(self, *, max_header_list_size: int, table_size_limit: int = 4096) -> None:
        self.max_header_list_size = max_header_list_size
        self._limit = table_size_limit  # SETTINGS_HEADER_TABLE_SIZE we announced
        self._max_size = table_size_limit  # what the encoder chose, at most the limit
        self._size = 0
        self._dynamic: collections.deque[tuple[str, str]] = collections.deque()  # newest first
        self.list_size = 0
        """The size of the last header list decoded, as RFC 7541 4.1 counts it (name + value + 32 a field)."""

    def decode(self, block: bytes) -> list[tuple[str, str]]:
        """The (name, value) pairs of one complete header block."""
        headers: list[tuple[str, str]] = []
        position = 0
        end = len(block)
        list_size = 0
        try:
            while position < end:
                first = block[position]
                if first & 0x80:  # indexed field
                    index, position = self._integer(block, position, 7)
                    header = self._entry(index)
                elif first & 0x40:  # literal, added to the dynamic table
                    header, position = self._literal(block, position, 6)
                    self._add(header)
                elif first & 0x20:  # dynamic table size update, only before the first field
                    if list_size:
                        raise HPACKError("a table size update after a header field")
                    size, position = self._integer(block, position, 5)
                    if size > self._limit:
                        raise HPACKError(f"table size {size} is above the announced {self._limit}")
                    self._max_size = size
                    self._evict(0)
                    continue
                else:  # literal without indexing (0000) or never indexed (0001)
                    header, position = self._literal(block, position, 4)
                list_size += len(header[0]) + len(header[1]) + _ENTRY_OVERHEAD
                if list_size <= self.max_header_list_size:
                    headers.append(header)  # over the limit, decode on (for the dynamic table) but keep nothing
        except IndexError:
            raise HPACKError("a truncated header block") from None
        self.list_size = list_size
        if list_size > self.max_header_list_size:
            raise HeaderListTooLargeError(f"the header list is larger than {self.max_header_list_size} bytes")
        return headers

    @staticmethod
    def _integer(block: bytes, position: int, prefix_bits: int) -> tuple[int, int]:
        mask = (1 << prefix_bits) - 1
        value = block[position] & mask
        position += 1
        if value < mask:
            return value, position
        shift = 0
        while True:
            byte = block[position]
            position += 1
            value += (byte & 0x7F) << shift
            if not byte & 0x80:
                return value, position
            shift += 7
            if shift > 28:
                raise HPACKError("an integer longer than 4 bytes")

    def _string(self, block: bytes, position: int) -> tuple[str, int]:
        huffman = block[position] & 0x80
        length, position = self._integer(block, position, 7)
        stop = position + length
        if stop > len(block):
            raise HPACKError("a string longer than its header block")
        raw = block[position:stop]
        if huffman:
            try:
                raw = decode_huffman(raw)
            except HPACKDecodingError as exc:
                raise HPACKError(f"bad Huffman code: {exc}") from None
        return raw.decode("latin-1"), stop

    def _literal(self, block: bytes, position: int, prefix_bits: int) -> tuple[tuple[str, str], int]:
        index, position = self._integer(block, position, prefix_bits)
        if index:
            name = self._entry(index)[0]
        else:
            name, position = self._string(block, position)
        value, position = self._string(block, position)
        return (name, value), position

    def _entry(self, index: int) -> tuple[str, str]:
        if 0 < index <= _STATIC_COUNT:
            return _STATIC[index]
        offset = index - _STATIC_COUNT - 1
        if index == 0 or offset >= len(self._dynamic):
            raise HPACKError(f"header table index {index} is out of range")
        return self._dynamic[offset]

    def _add(self, header: tuple[str, str]) -> None:
        size = len(header[0]) + len(header[1]) + _ENTRY_OVERHEAD
        if size > self._max_size:
            self._dynamic.clear()  # an entry larger than the table empties it (RFC 7541 section 4.4)
            self._size = 0
            return
        self._evict(size)
        self._dynamic.appendleft(header)
        self._size += size

    def _evict(self, room: int) -> None:
        while self._dynamic and self._size + room > self._max_size:
            name, value = self._dynamic.pop()
            self._size -= len(name) + len(value) + _ENTRY_OVERHEAD
