"""Differential fuzzing of our HPACK codec (runtime/hpack.py) against python-hyper's `hpack`
(a dev dependency, the oracle): on valid header blocks both decode the same fields, on
mutated ones both refuse or both decode the same fields; our stateless encoder's blocks
decode back to what was encoded.

Example counts: FUZZ_EXAMPLES (default 200 per test in CI; see the note for a longer run).
"""

from __future__ import annotations

import os

import hpack as oracle
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from orchestrator.runtime import hpack

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "200"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

STATIC_NAMES = sorted({name for name, _ in hpack.STATIC_TABLE})
names = st.one_of(st.sampled_from(STATIC_NAMES),
                  st.binary(min_size=1, max_size=24).map(bytes.lower))
values = st.one_of(st.sampled_from([b"", b"0", b"200", b"application/grpc", b"trailers"]),
                   st.binary(max_size=300))
fields = st.tuples(names, values, st.booleans())  # (name, value, sensitive)
blocks = st.lists(fields, max_size=16)
Field = tuple[bytes, bytes, bool]


def plain(headers: object) -> list[tuple[bytes, bytes, bool]]:
    """(name, value, never indexed) of either decoder's output."""
    out = []
    for f in headers:  # type: ignore[attr-defined]
        name, value = f[0], f[1]
        never = type(f) is hpack.NeverIndexed or type(f) is oracle.NeverIndexedHeaderTuple
        out.append((bytes(name), bytes(value), never))
    return out


def oracle_blocks(seq: list[list[Field]], huffman: list[bool], table: int | None) -> list[bytes]:
    """Header blocks from the oracle's stateful encoder (dynamic table and all)."""
    encoder = oracle.Encoder()
    if table is not None:
        encoder.header_table_size = table  # a size update opens the next block
    return [encoder.encode([(n, v, s) for n, v, s in block], huffman=h)
            for block, h in zip(seq, huffman, strict=False)]


def decode_both(data: list[bytes], limit: int = 1 << 20) -> tuple[object, object]:
    """Each decoder's result for the block sequence: the fields, or "error"."""
    ours, theirs = hpack.Decoder(max_header_list_size=limit), oracle.Decoder(limit)
    out_ours: list[object] = []
    out_theirs: list[object] = []
    for block in data:
        try:
            out_ours.append(plain(ours.decode(block)))
        except hpack.HpackError:
            out_ours.append("error")
            break
    for block in data:
        try:
            out_theirs.append(plain(theirs.decode(block, raw=True)))
        except oracle.HPACKError:
            out_theirs.append("error")
            break
    return out_ours, out_theirs


@FUZZ
@given(st.lists(blocks, min_size=1, max_size=6), st.lists(st.booleans(), min_size=6,
                                                          max_size=6),
       st.one_of(st.none(), st.integers(0, 4096)))
def test_valid_blocks_decode_as_the_oracle_decodes_them(
        seq: list[list[Field]], huffman: list[bool], table: int | None) -> None:
    data = oracle_blocks(seq, huffman, table)
    ours, theirs = decode_both(data)
    assert ours == theirs
    # (the oracle indexes an exact static-table match even when asked to keep it sensitive)
    assert [[f[:2] for f in block] for block in ours] == [
        [(n, v) for n, v, _ in block] for block in seq]


@FUZZ
@given(st.lists(blocks, min_size=1, max_size=4), st.lists(st.booleans(), min_size=4,
                                                          max_size=4),
       st.data())
@example(seq=[[(b"a", b"b", False)]], huffman=[False] * 4, data=None)
def test_mutated_blocks_are_refused_or_decoded_as_the_oracle_does(
        seq: list[list[Field]], huffman: list[bool], data: st.DataObject | None) -> None:
    encoded = oracle_blocks(seq, huffman, None)
    if data is not None:
        which = data.draw(st.integers(0, len(encoded) - 1))
        block = bytearray(encoded[which])
        for _ in range(data.draw(st.integers(1, 4))):
            op = data.draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
            at = data.draw(st.integers(0, max(0, len(block) - 1)))
            if op == "flip" and block:
                block[at] ^= data.draw(st.integers(1, 255))
            elif op == "insert":
                block[at:at] = data.draw(st.binary(min_size=1, max_size=6))
            elif op == "delete" and block:
                del block[at]
            elif op == "truncate":
                del block[at:]
        encoded[which] = bytes(block)
    ours, theirs = decode_both(encoded)
    assert ours == theirs


@FUZZ
@given(st.binary(max_size=200))
@example(b"\x3f\xe1\x1f")  # a size update to 4096: fine
@example(b"\x3f\xe2\x1f")  # a size update to 4097: over the advertised 4096
@example(b"\x82\x3f\xe1\x1f")  # a size update after a field: refused
def test_random_bytes_are_refused_or_decoded_as_the_oracle_does(block: bytes) -> None:
    ours, theirs = decode_both([block])
    assert ours == theirs


@FUZZ
@given(st.lists(blocks, min_size=1, max_size=4), st.integers(0, 3000))
def test_the_header_list_limit_matches_the_oracle(seq: list[list[Field]], limit: int) -> None:
    data = oracle_blocks(seq, [True] * len(seq), None)
    ours, theirs = decode_both(data, limit)
    assert ours == theirs


@FUZZ
@given(blocks)
def test_our_stateless_encoding_decodes_back_with_the_oracle(block: list[Field]) -> None:
    headers = [hpack.NeverIndexed((n, v)) if s else (n, v) for n, v, s in block]
    encoded = hpack.encode(headers)
    assert plain(oracle.Decoder().decode(encoded, raw=True)) == block
    assert hpack.encode_cached(headers) == encoded


@pytest.mark.parametrize("huffman", [True, False])
def test_a_bomb_is_refused_by_both(huffman: bool) -> None:
    encoder = oracle.Encoder()
    first = encoder.encode([(b"x-bomb", b"v" * 4000)], huffman=huffman)
    again = encoder.encode([(b"x-bomb", b"v" * 4000)] * 100, huffman=huffman)  # indexed
    ours, theirs = decode_both([first, again], limit=65536)
    assert ours == theirs and ours[-1] == "error"
