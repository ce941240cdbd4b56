"""The emulator's HPACK decoder, against the `hpack` package's encoder and decoder as oracles."""

from __future__ import annotations

import hpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastapi_gcp_tasks.emulator._hpack import HeaderListTooLargeError, HPACKDecoder, HPACKError

_names = st.sampled_from([":path", ":authority", "content-type", "grpc-timeout", "te", "x-goog-request-params"]) | (
    st.text("abcdefghijklmnopqrstuvwxyz0123456789-_", min_size=1, max_size=30)
)
_values = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=200)
_header_lists = st.lists(st.tuples(_names, _values), max_size=12)


def _decoder() -> HPACKDecoder:
    return HPACKDecoder(max_header_list_size=1 << 20)


@settings(max_examples=150, deadline=None)
@given(
    blocks=st.lists(
        st.tuples(_header_lists, st.booleans(), st.sampled_from([None, 0, 256, 4096]), st.booleans()),
        min_size=1,
        max_size=8,
    )
)
def test_decodes_what_hpack_encodes_over_a_connection(
    blocks: list[tuple[list[tuple[str, str]], bool, int | None, bool]],
) -> None:
    """A sequence of blocks on one connection: indexing, Huffman or not, table size updates, never-indexed fields."""
    encoder = hpack.Encoder()
    ours = _decoder()
    for headers, huffman, table_size, sensitive in blocks:
        if table_size is not None:
            encoder.header_table_size = table_size
        encoded = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in headers]
        fields = [hpack.NeverIndexedHeaderTuple(*field) if sensitive else field for field in encoded]
        block = encoder.encode(fields, huffman=huffman)
        assert ours.decode(block) == headers


def test_rfc_7541_examples_with_huffman_coding() -> None:
    """Appendix C.4: three requests on one connection, the later ones using the dynamic table."""
    ours = _decoder()
    first = bytes.fromhex("828684418cf1e3c2e5f23a6ba0ab90f4ff")
    second = bytes.fromhex("828684be5886a8eb10649cbf")
    third = bytes.fromhex("828785bf408825a849e95ba97d7f8925a849e95bb8e8b4bf")
    assert ours.decode(first) == [
        (":method", "GET"),
        (":scheme", "http"),
        (":path", "/"),
        (":authority", "www.example.com"),
    ]
    assert ours.decode(second)[-1] == ("cache-control", "no-cache")
    assert ours.decode(third) == [
        (":method", "GET"),
        (":scheme", "https"),
        (":path", "/index.html"),
        (":authority", "www.example.com"),
        ("custom-key", "custom-value"),
    ]


def test_evicts_oldest_entries_like_the_reference_decoder() -> None:
    encoder = hpack.Encoder()
    encoder.header_table_size = 200
    reference = hpack.Decoder()
    ours = _decoder()
    for index in range(40):
        block = encoder.encode([(f"x-name-{index % 7}", "v" * (index * 3 % 50)), (":path", f"/{index % 3}")])
        assert ours.decode(block) == [(str(name), str(value)) for name, value in reference.decode(block)]


@pytest.mark.parametrize(
    ("block", "message"),
    [
        (b"\x80", "index 0"),
        (b"\xbf", "out of range"),  # index 63: the dynamic table is empty
        (b"\x40\x05ab", "longer than its header block"),
        (b"\xff\xff\xff\xff\xff\xff", "truncated|longer than 4 bytes"),
        (b"\x3f\xe1\x7f", "above the announced"),  # table size update to 16384 > 4096
        (b"\x82\x20", "after a header field"),
        (b"\x00\x81\xff\x00", "Huffman"),  # a Huffman string of one all-ones byte: padding only, no symbol
    ],
)
def test_rejects_malformed_blocks(block: bytes, message: str) -> None:
    with pytest.raises(HPACKError, match=message.replace("index 0", "index 0 is out of range")):
        _decoder().decode(block)


def test_header_list_size_is_bounded() -> None:
    ours = HPACKDecoder(max_header_list_size=100)
    block = hpack.Encoder().encode([("x-big", "v" * 80)])
    with pytest.raises(HPACKError, match="larger than 100 bytes"):
        ours.decode(block)


def test_an_oversized_header_list_is_decoded_to_the_end_so_the_table_stays_in_step() -> None:
    encoder = hpack.Encoder()
    ours = HPACKDecoder(max_header_list_size=100)
    with pytest.raises(HeaderListTooLargeError):
        ours.decode(encoder.encode([("x-big", "v" * 80), ("x-indexed", "after the limit")]))
    assert ours.decode(encoder.encode([("x-indexed", "after the limit")])) == [("x-indexed", "after the limit")]
