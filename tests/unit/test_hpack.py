"""HPACK codec (orchestrator.runtime.hpack) against RFC 7541 and its own round trips."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.runtime.hpack import (
    _HUFFMAN_CODES,
    STATIC_TABLE,
    Decoder,
    HpackError,
    NeverIndexed,
    _decode_int,
    _encode_int,
    encode,
    huffman_decode,
    huffman_encode,
)

Fields = list[tuple[bytes, bytes]]

# --------------------------------------------------------------- RFC 7541 Appendix C data

DATE_21 = b"Mon, 21 Oct 2013 20:13:21 GMT"
DATE_22 = b"Mon, 21 Oct 2013 20:13:22 GMT"
LOCATION = b"https://www.example.com"
COOKIE = b"foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1"
AUTHORITY = (b":authority", b"www.example.com")
NO_CACHE = (b"cache-control", b"no-cache")
CUSTOM = (b"custom-key", b"custom-value")
GET_HTTP_ROOT: Fields = [(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/")]

# (block hex, decoded fields, dynamic table newest first, table size) per request.
REQUESTS: list[tuple[Fields, Fields, int]] = [
    ([*GET_HTTP_ROOT, AUTHORITY], [AUTHORITY], 57),
    ([*GET_HTTP_ROOT, AUTHORITY, NO_CACHE], [NO_CACHE, AUTHORITY], 110),
    (
        [(b":method", b"GET"), (b":scheme", b"https"), (b":path", b"/index.html"), AUTHORITY,
         CUSTOM],
        [CUSTOM, NO_CACHE, AUTHORITY],
        164,
    ),
]
C3_BLOCKS = [  # C.3: requests without Huffman
    "8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
    "8286 84be 5808 6e6f 2d63 6163 6865",
    "8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65",
]
C4_BLOCKS = [  # C.4: the same requests with Huffman
    "8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff",
    "8286 84be 5886 a8eb 1064 9cbf",
    "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf",
]

RESPONSES: list[tuple[Fields, Fields, int]] = [
    (
        [(b":status", b"302"), (b"cache-control", b"private"), (b"date", DATE_21),
         (b"location", LOCATION)],
        [(b"location", LOCATION), (b"date", DATE_21), (b"cache-control", b"private"),
         (b":status", b"302")],
        222,
    ),
    (
        [(b":status", b"307"), (b"cache-control", b"private"), (b"date", DATE_21),
         (b"location", LOCATION)],
        [(b":status", b"307"), (b"location", LOCATION), (b"date", DATE_21),
         (b"cache-control", b"private")],
        222,
    ),
    (
        [(b":status", b"200"), (b"cache-control", b"private"), (b"date", DATE_22),
         (b"location", LOCATION), (b"content-encoding", b"gzip"), (b"set-cookie", COOKIE)],
        [(b"set-cookie", COOKIE), (b"content-encoding", b"gzip"), (b"date", DATE_22)],
        215,
    ),
]
C5_BLOCKS = [  # C.5: responses without Huffman, 256-byte table
    "4803 3330 3258 0770 7269 7661 7465 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133"
    " 2032 303a 3133 3a32 3120 474d 546e 1768 7474 7073 3a2f 2f77 7777 2e65 7861 6d70"
    " 6c65 2e63 6f6d",
    "4803 3330 37c1 c0bf",
    "88c1 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32 3220 474d"
    " 54c0 5a04 677a 6970 7738 666f 6f3d 4153 444a 4b48 514b 425a 584f 5157 454f 5049"
    " 5541 5851 5745 4f49 553b 206d 6178 2d61 6765 3d33 3630 303b 2076 6572 7369 6f6e"
    " 3d31",
]
C6_BLOCKS = [  # C.6: the same responses with Huffman
    "4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6"
    " 2d1b ff6e 919d 29ad 1718 63c7 8f0b 97c8 e9ae 82ae 43d3",
    "4883 640e ffc1 c0bf",
    "88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff c05a 839b d9ab"
    " 77ad 94e7 821d d7f2 e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f"
    " 9587 3160 65c0 03ed 4ee5 b106 3d50 07",
]

# Appendix C strings and their Huffman codings.
HUFFMAN_VECTORS = [
    (b"www.example.com", "f1e3c2e5f23a6ba0ab90f4ff"),
    (b"no-cache", "a8eb10649cbf"),
    (b"custom-key", "25a849e95ba97d7f"),
    (b"custom-value", "25a849e95bb8e8b4bf"),
    (b"302", "6402"),
    (b"307", "640eff"),
    (b"private", "aec3771a4b"),
    (DATE_21, "d07abe941054d444a8200595040b8166e082a62d1bff"),
    (DATE_22, "d07abe941054d444a8200595040b8166e084a62d1bff"),
    (LOCATION, "9d29ad171863c78f0b97c8e9ae82ae43d3"),
    (b"gzip", "9bd9ab"),
    (COOKIE, "94e7821dd7f2e6c7b335dfdfcd5b3960d5af27087f3672c1ab270fb5291f9587316065c003ed4ee5"
             "b1063d5007"),
]


def unhex(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


# ------------------------------------------------------------------------ C.1 integers


@pytest.mark.parametrize(
    ("value", "prefix", "wire"),
    [
        (10, 5, "0a"),  # C.1.1
        (1337, 5, "1f9a0a"),  # C.1.2
        (42, 8, "2a"),  # C.1.3
        (0, 5, "00"),
        (30, 5, "1e"),  # largest value that fits the prefix
        (31, 5, "1f00"),  # prefix saturated, zero continuation
        (32, 5, "1f01"),
        (31 + 127, 5, "1f7f"),  # largest one-continuation-byte value
        (31 + 128, 5, "1f8001"),  # needs two continuation bytes
        (126, 7, "7e"),
        (127, 7, "7f00"),
        (254, 8, "fe"),
        (255, 8, "ff00"),
        (0, 1, "00"),
        (1, 1, "0100"),
        (2**32, 4, "0ff1ffffff0f"),
    ],
)
def test_integer_representation(value: int, prefix: int, wire: str) -> None:
    data = unhex(wire)
    assert _encode_int(value, prefix) == data
    assert _decode_int(data + b"\xaa", 0, prefix) == (value, len(data))


def test_integer_prefix_ignores_the_flag_bits_above_it() -> None:
    assert _encode_int(1337, 5, 0xE0) == b"\xff\x9a\x0a"
    assert _decode_int(b"\xff\x9a\x0a", 0, 5) == (1337, 3)
    assert _decode_int(b"\x00\xea", 1, 5) == (10, 2)  # 111 01010 at pos 1


@given(st.integers(min_value=0, max_value=2**34), st.integers(min_value=1, max_value=8))
def test_integer_round_trip(value: int, prefix: int) -> None:
    data = _encode_int(value, prefix)
    assert _decode_int(data, 0, prefix) == (value, len(data))


def test_negative_integer_cannot_be_encoded() -> None:
    with pytest.raises(ValueError, match="unsigned"):
        _encode_int(-1, 5)


# ------------------------------------------------------------------------- tables


def test_static_table_is_appendix_a() -> None:
    assert len(STATIC_TABLE) == 61
    assert STATIC_TABLE[0] == (b":authority", b"")
    assert STATIC_TABLE[1] == (b":method", b"GET")
    assert STATIC_TABLE[7] == (b":status", b"200")
    assert STATIC_TABLE[15] == (b"accept-encoding", b"gzip, deflate")
    assert STATIC_TABLE[30] == (b"content-type", b"")
    assert STATIC_TABLE[54] == (b"set-cookie", b"")
    assert STATIC_TABLE[60] == (b"www-authenticate", b"")
    # Every wire index decodes to its entry.
    block = bytes(0x80 | i for i in range(1, 62))
    assert Decoder().decode(block) == list(STATIC_TABLE)


def test_huffman_code_is_the_canonical_complete_code_of_appendix_b() -> None:
    assert len(_HUFFMAN_CODES) == 257
    # Spot checks against Appendix B rows.
    assert _HUFFMAN_CODES[0] == (0x1FF8, 13)
    assert _HUFFMAN_CODES[ord("0")] == (0x0, 5)
    assert _HUFFMAN_CODES[ord("a")] == (0x3, 5)
    assert _HUFFMAN_CODES[ord("\\")] == (0x7FFF0, 19)
    assert _HUFFMAN_CODES[255] == (0x3FFFFEE, 26)
    assert _HUFFMAN_CODES[256] == (0x3FFFFFFF, 30)  # EOS
    # The code is canonical (sorted by length then symbol, consecutive codes), so a
    # typo in any code or length breaks this chain.
    order = sorted(range(257), key=lambda sym: (_HUFFMAN_CODES[sym][1], sym))
    expected, previous_length = -1, _HUFFMAN_CODES[order[0]][1]
    for sym in order:
        code, length = _HUFFMAN_CODES[sym]
        expected = (expected + 1) << (length - previous_length)
        previous_length = length
        assert code == expected, sym
    # ...and complete: the Kraft sum is exactly one.
    assert sum(1 << (30 - length) for _, length in _HUFFMAN_CODES) == 1 << 30


# ------------------------------------------------------------------------- Huffman


@pytest.mark.parametrize(("plain", "coded"), HUFFMAN_VECTORS)
def test_huffman_appendix_c_strings(plain: bytes, coded: str) -> None:
    assert huffman_encode(plain) == unhex(coded)
    assert huffman_decode(unhex(coded)) == plain


def test_huffman_every_symbol_round_trips() -> None:
    every = bytes(range(256))
    assert huffman_decode(huffman_encode(every)) == every
    assert huffman_decode(huffman_encode(every[::-1] * 3)) == every[::-1] * 3
    for byte in range(256):  # alone: exercises each code's padding
        assert huffman_decode(huffman_encode(bytes((byte,)))) == bytes((byte,))


@given(st.binary(max_size=300))
def test_huffman_round_trip(data: bytes) -> None:
    assert huffman_decode(huffman_encode(data)) == data


def test_huffman_empty_and_seven_bits_of_padding_are_valid() -> None:
    assert huffman_decode(b"") == b""
    coded = huffman_encode(b"0  ")  # 5 + 6 + 6 = 17 bits: 7 bits of padding
    assert coded == bytes((0b00000010, 0b10001010, 0b01111111))
    assert huffman_decode(coded) == b"0  "


@pytest.mark.parametrize(
    ("coded", "message"),
    [
        (b"\xff\xff\xff\xff", "EOS"),  # EOS (30 ones) then 2 bits of padding
        (huffman_encode(b"a") + b"\xff\xff\xff\xff", "EOS"),
        (b"\x1f\xff", "longer than 7 bits"),  # 'a' then 11 ones
        (b"\xff", "longer than 7 bits"),  # a whole byte of padding
        (huffman_encode(b"0  ") + b"\xff", "longer than 7 bits"),
        (b"\x18", "not all ones"),  # 'a' (00011) then 000
        (b"\x00", "not all ones"),  # '0' then 000
        (b"\xfe", "not all ones"),  # 1111111 then a 0: an unfinished code
        (b"\xff\xfe", "not all ones"),  # cut inside the 19-bit code of '\\'
    ],
)
def test_huffman_invalid_strings_raise(coded: bytes, message: str) -> None:
    with pytest.raises(HpackError, match=message):
        huffman_decode(coded)


# ---------------------------------------------------------------- Appendix C blocks


@pytest.mark.parametrize(
    ("block", "fields", "table", "size"),
    [
        (  # C.2.1 literal with indexing
            "400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572",
            [(b"custom-key", b"custom-header")],
            [(b"custom-key", b"custom-header")],
            55,
        ),
        (  # C.2.2 literal without indexing
            "040c 2f73 616d 706c 652f 7061 7468", [(b":path", b"/sample/path")], [], 0,
        ),
        (  # C.2.3 literal never indexed
            "1008 7061 7373 776f 7264 0673 6563 7265 74",
            [NeverIndexed((b"password", b"secret"))], [], 0,
        ),
        ("82", [(b":method", b"GET")], [], 0),  # C.2.4 indexed
    ],
    ids=["C.2.1", "C.2.2", "C.2.3", "C.2.4"],
)
def test_appendix_c2_field_representations(
    block: str, fields: Fields, table: Fields, size: int
) -> None:
    decoder = Decoder()
    assert decoder.decode(unhex(block)) == fields
    assert decoder.dynamic_table == table
    assert decoder.table_size == size


@pytest.mark.parametrize(
    ("blocks", "expected", "max_size"),
    [
        (C3_BLOCKS, REQUESTS, 4096),
        (C4_BLOCKS, REQUESTS, 4096),
        (C5_BLOCKS, RESPONSES, 256),
        (C6_BLOCKS, RESPONSES, 256),
    ],
    ids=["C.3", "C.4", "C.5", "C.6"],
)
def test_appendix_c_block_sequences_share_one_dynamic_table(
    blocks: list[str], expected: list[tuple[Fields, Fields, int]], max_size: int
) -> None:
    decoder = Decoder(max_size)
    for block, (fields, table, size) in zip(blocks, expected, strict=True):
        assert decoder.decode(unhex(block)) == fields
        assert decoder.dynamic_table == table
        assert decoder.table_size == size
        assert size == sum(32 + len(name) + len(value) for name, value in table)


def test_decode_accepts_bytearray_and_memoryview() -> None:
    block = unhex(C6_BLOCKS[0])
    assert Decoder(256).decode(bytearray(block)) == RESPONSES[0][0]
    assert Decoder(256).decode(memoryview(block)) == RESPONSES[0][0]
    assert Decoder(256).decode(memoryview(b"\x00" + block)[1:]) == RESPONSES[0][0]
    assert Decoder().decode(b"") == []


def _huffman_literal(name: bytes, value: bytes) -> bytes:
    """Literal with incremental indexing, new name, both strings Huffman-coded."""
    coded_name, coded_value = huffman_encode(name), huffman_encode(value)
    return (
        b"\x40"
        + _encode_int(len(coded_name), 7, 0x80) + coded_name
        + _encode_int(len(coded_value), 7, 0x80) + coded_value
    )


def test_huffman_heavy_block_built_from_the_rfc_examples() -> None:
    fields = [*REQUESTS[2][0], *RESPONSES[2][0], (b"x-long", COOKIE * 4)]  # 224-byte value
    decoder = Decoder()
    block = b"".join(_huffman_literal(name, value) for name, value in fields)
    assert decoder.decode(block) == fields
    assert decoder.dynamic_table == fields[::-1]
    assert decoder.table_size == sum(32 + len(n) + len(v) for n, v in fields)
    # The next block refers to all of them by dynamic index (62 = newest).
    count = len(fields)
    again = b"".join(_encode_int(61 + count - i, 7, 0x80) for i in range(count))
    assert decoder.decode(again) == fields
    # And a re-encoding for the other connection decodes to the same list.
    assert Decoder().decode(encode(fields)) == fields


# ---------------------------------------------------------------- dynamic table


def _literal(name: bytes, value: bytes) -> bytes:
    """Literal with incremental indexing, new name, raw strings."""
    return b"\x40" + _encode_int(len(name), 7) + name + _encode_int(len(value), 7) + value


def test_eviction_drops_the_oldest_entries_first() -> None:
    decoder = Decoder(100)  # room for two 34..49-byte entries
    decoder.decode(_literal(b"a", b"1") + _literal(b"b", b"2"))  # 34 + 34
    assert decoder.table_size == 68
    decoder.decode(_literal(b"c", b"3"))  # 102 > 100: "a" goes
    assert decoder.dynamic_table == [(b"c", b"3"), (b"b", b"2")]
    assert decoder.table_size == 68
    assert decoder.decode(b"\xbe\xbf") == [(b"c", b"3"), (b"b", b"2")]


def test_entry_larger_than_the_table_empties_it_and_is_not_added() -> None:
    decoder = Decoder(64)
    assert decoder.decode(_literal(b"k", b"v") + _literal(b"big", b"x" * 40)) == [
        (b"k", b"v"), (b"big", b"x" * 40)
    ]
    assert decoder.dynamic_table == []
    assert decoder.table_size == 0
    entry_of_exactly_64 = _literal(b"n", b"v" * 31)
    decoder.decode(entry_of_exactly_64)
    assert decoder.table_size == 64


def test_literal_may_name_a_dynamic_entry_that_its_insertion_evicts() -> None:
    decoder = Decoder(70)
    decoder.decode(_literal(b"name", b"1"))  # 37 bytes
    assert decoder.decode(b"\x7e\x01" + b"2") == [(b"name", b"2")]  # name = index 62
    assert decoder.dynamic_table == [(b"name", b"2")]


def test_size_updates_evict_and_zero_empties_the_table() -> None:
    decoder = Decoder()
    decoder.decode(_literal(b"a", b"1") + _literal(b"b", b"2") + _literal(b"c", b"3"))
    assert decoder.table_size == 102
    decoder.decode(b"\x3f\x2d")  # size update to 31 + 45 = 76: "a" goes
    assert decoder.table_limit == 76
    assert decoder.dynamic_table == [(b"c", b"3"), (b"b", b"2")]
    decoder.decode(b"\x20")  # size update to 0
    assert decoder.dynamic_table == []
    assert decoder.table_size == 0
    assert decoder.decode(_literal(b"d", b"4")) == [(b"d", b"4")]
    assert decoder.dynamic_table == []  # nothing fits a 0-byte table
    # Several updates at the start of a block are allowed; the last one wins.
    fields = decoder.decode(b"\x20" + _encode_int(4096, 5, 0x20) + _literal(b"e", b"5"))
    assert fields == [(b"e", b"5")]
    assert decoder.table_limit == 4096
    assert decoder.dynamic_table == [(b"e", b"5")]


@given(
    st.lists(st.tuples(st.binary(max_size=40), st.binary(max_size=40)), max_size=30),
    st.integers(min_value=0, max_value=300),
)
@settings(max_examples=60)
def test_table_matches_a_reference_model(fields: Fields, max_size: int) -> None:
    decoder = Decoder(max_size)
    assert decoder.decode(b"".join(_literal(n, v) for n, v in fields)) == fields
    model: Fields = []
    for field in fields:
        model.insert(0, field)
        while sum(32 + len(n) + len(v) for n, v in model) > max_size:
            model.pop()
    assert decoder.dynamic_table == model
    assert decoder.table_size == sum(32 + len(n) + len(v) for n, v in model)


def test_a_remembered_block_is_decoded_afresh_once_the_table_changed() -> None:
    decoder = Decoder()
    decoder.decode(_literal(b"x-tag", b"one"))  # dynamic index 62 is x-tag: one
    newest = b"\xbe"
    assert decoder.decode(newest) == [(b"x-tag", b"one")]
    assert decoder.decode(newest) == [(b"x-tag", b"one")]  # remembered
    decoder.decode(_literal(b"x-tag", b"two"))  # 62 now names the new entry
    assert decoder.decode(newest) == [(b"x-tag", b"two")]
    decoder.decode(b"\x20")  # size update to 0 empties the table
    with pytest.raises(HpackError, match="index 62 out of range"):
        decoder.decode(newest)


@given(st.lists(st.one_of(
    st.tuples(st.just("insert"), st.binary(max_size=8), st.binary(max_size=8)),
    st.tuples(st.just("refer"), st.integers(min_value=62, max_value=66), st.just(b"")),
), max_size=40))
@settings(max_examples=80)
def test_remembered_blocks_decode_like_fresh_ones(steps: list[tuple[str, Any, bytes]]) -> None:
    """Decoding with the memo gives what decoding without it gives, after any mix of
    table changes and repeated blocks."""
    remembering, forgetting = Decoder(200), Decoder(200)
    for kind, a, b in steps:
        block = _literal(a, b) if kind == "insert" else bytes([0x80 | a])
        outcomes = []
        for decoder in (remembering, forgetting):
            if decoder is forgetting:
                decoder._memo.clear()
            try:
                outcomes.append(decoder.decode(block))
            except HpackError as exc:
                outcomes.append(str(exc))
        assert outcomes[0] == outcomes[1]


# ------------------------------------------------------------------------ errors


@pytest.mark.parametrize(
    ("block", "message"),
    [
        (b"\x80", "index 0 out of range"),
        (b"\xbe", "index 62 out of range"),  # empty dynamic table
        (b"\xff\x00", "index 127 out of range"),
        (b"\x7e\x01x", "index 62 out of range"),  # literal with indexed name
        (b"\x0f\x2f\x01x", "index 62 out of range"),  # 4-bit prefix, 15 + 47
        (b"\x1f\x2f\x01x", "index 62 out of range"),  # never indexed
        (b"\xff", "truncated HPACK integer"),
        (b"\xff\x80", "truncated HPACK integer"),
        (b"\x3f", "truncated HPACK integer"),  # size update
        (b"\x40\x7f", "truncated HPACK integer"),  # string length
        (b"\xff" + b"\x80" * 5 + b"\x01", "too long"),
        (b"\x40\x05abc", "truncated HPACK string"),  # name literal cut short
        (b"\x40", "truncated HPACK string"),  # name literal missing
        (b"\x04", "truncated HPACK string"),  # value missing
        (b"\x04\x05ab", "truncated HPACK string"),  # value cut short
        (b"\x40\x01a\x7f\x05", "truncated HPACK string"),  # long length, no octets
        (b"\x04\x81\x00", "not all ones"),  # Huffman value
        (b"\x40\x81\x18\x00", "not all ones"),  # Huffman name
        (b"\x04\x82\x1f\xff", "longer than 7 bits"),
        (b"\x04\x84\xff\xff\xff\xff", "EOS"),
        (_encode_int(4097, 5, 0x20), "exceeds the maximum 4096"),
        (b"\x82\x20", "size update after a header field"),
        (b"\x20\x82\x3f\x01", "size update after a header field"),
    ],
)
def test_malformed_blocks_raise_hpack_error(block: bytes, message: str) -> None:
    with pytest.raises(HpackError, match=message):
        Decoder().decode(block)


def test_index_past_a_nonempty_dynamic_table_raises() -> None:
    decoder = Decoder()
    decoder.decode(_literal(b"a", b"1"))
    assert decoder.decode(b"\xbe") == [(b"a", b"1")]
    with pytest.raises(HpackError, match="index 63 out of range"):
        decoder.decode(b"\xbf")
    with pytest.raises(HpackError, match="index 63 out of range"):
        decoder.decode(b"\x7f\x00\x01x")  # literal naming index 63


def test_size_update_limit_is_the_constructor_maximum() -> None:
    decoder = Decoder(256)
    assert decoder.max_table_size == 256
    decoder.decode(_encode_int(256, 5, 0x20))
    assert decoder.table_limit == 256
    with pytest.raises(HpackError, match="exceeds the maximum 256"):
        decoder.decode(_encode_int(257, 5, 0x20))
    assert issubclass(HpackError, ValueError)
    with pytest.raises(ValueError, match="max_table_size"):
        Decoder(-1)


# ------------------------------------------------------------------------ encode


def test_encode_uses_the_static_table_and_raw_literals() -> None:
    fields = [
        (b":method", b"POST"),  # exact match: index 3
        (b":path", b"/orchestrator.v1.Executor/Call"),  # name index 4 (< 15)
        (b"content-type", b"application/grpc"),  # name index 31 (>= 15)
        (b"te", b"trailers"),  # not in the static table
        (b":scheme", b"http"),  # exact match: index 6
    ]
    assert encode(fields) == (
        b"\x83"
        + b"\x04\x1e/orchestrator.v1.Executor/Call"
        + b"\x0f\x10\x10application/grpc"
        + b"\x00\x02te\x08trailers"
        + b"\x86"
    )


def test_encode_is_stateless_and_matches_names_exactly() -> None:
    decoder = Decoder()
    fields = [(b"Content-Type", b"x"), (b":status", b"201"), (b"accept-encoding", b"gzip")]
    block = encode(iter(fields))
    assert block == encode(fields)  # same bytes every time: no state carried over
    assert block.startswith(b"\x00\x0cContent-Type\x01x")  # case kept, not the static name
    assert decoder.decode(block) == fields
    assert decoder.dynamic_table == []
    assert encode([]) == b""


def test_encode_of_the_appendix_c3_request() -> None:
    assert encode(REQUESTS[2][0]) == unhex(
        "8287 85"
        "01 0f 7777 772e 6578 616d 706c 652e 636f 6d"  # :authority is static index 1
        "00 0a 6375 7374 6f6d 2d6b 6579 0c 6375 7374 6f6d 2d76 616c 7565"
    )


@pytest.mark.parametrize("length", [0, 1, 126, 127, 128, 255, 16384])
def test_encode_string_length_boundaries(length: int) -> None:
    name, value = b"n" * (length or 1), b"v" * length
    block = encode([(name, value)])
    assert block[:1] == b"\x00"
    assert Decoder().decode(block) == [(name, value)]
    assert len(block) == 1 + len(_encode_int(len(name), 7)) + len(name) + len(
        _encode_int(length, 7)
    ) + length


STATIC_NAMES = sorted({name for name, _ in STATIC_TABLE})
STATIC_VALUES = sorted({value for _, value in STATIC_TABLE})
FIELDS = st.one_of(
    st.sampled_from(STATIC_TABLE),
    st.tuples(
        st.one_of(st.sampled_from(STATIC_NAMES), st.binary(max_size=200)),
        st.one_of(st.sampled_from(STATIC_VALUES), st.binary(max_size=200)),
    ),
)


@given(st.lists(FIELDS, max_size=20))
def test_encode_then_decode_round_trips(fields: Fields) -> None:
    decoder = Decoder()
    assert decoder.decode(encode(fields)) == fields
    assert decoder.table_size == 0


# ----------------------------------------------------------------- never indexed (6.2.3)


def test_a_never_indexed_field_is_passed_on_never_indexed() -> None:
    """RFC 7541 section 6.2.3: an intermediary must re-encode such a field in the same
    representation. C.2.3 decodes to a NeverIndexed field and encodes back byte for byte."""
    block = unhex("1008 7061 7373 776f 7264 0673 6563 7265 74")
    [field] = Decoder().decode(block)
    assert type(field) is NeverIndexed
    name, value = field  # unpacks like any field
    assert (name, value) == (b"password", b"secret")
    assert field != (b"password", b"secret") and hash(field) != hash((name, value))
    assert encode([field]) == block
    assert encode([(b"password", b"secret")]) == unhex("0008") + block[2:]  # plain: 0000


def test_never_indexed_with_a_static_name_and_even_an_exact_static_match() -> None:
    # authorization is static index 23: 4-bit prefix 0x1F then 23 - 15 = 8
    secret = NeverIndexed((b"authorization", b"Bearer t0ken"))
    block = encode([secret])
    assert block[:2] == b"\x1f\x08"
    # an exact static match must not turn into an indexed field either
    method = NeverIndexed((b":method", b"GET"))
    assert encode([method]) == b"\x12\x03GET"  # never indexed, name index 2
    decoder = Decoder()
    assert decoder.decode(block + encode([method])) == [secret, method]
    assert decoder.table_size == 0


@given(st.lists(st.tuples(FIELDS, st.booleans()), max_size=20))
def test_never_indexed_marks_survive_encode_then_decode(marked: list[tuple[Any, bool]]
                                                        ) -> None:
    fields = [NeverIndexed(f) if never else tuple(f) for f, never in marked]
    decoded = Decoder().decode(encode(fields))
    assert decoded == fields
    assert [type(f) is NeverIndexed for f in decoded] == [never for _, never in marked]
