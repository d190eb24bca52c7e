"""HPACK (RFC 7541) header compression for the head's HTTP/2 fast path.

The head relays gRPC calls between client connections and worker connections at the
HTTP/2 frame level. Each connection has its own HPACK state, so a header block read
from one side cannot be forwarded verbatim: the head decodes it with that connection's
`Decoder` (which tracks the peer's dynamic table) and re-encodes the fields with
`encode` for the other connection.

`encode` is stateless on purpose: it never inserts into a dynamic table, so its output
is valid on any connection and needs no per-connection encoder state or locking. It
uses static-table indexes where possible, raw literals otherwise, and no Huffman coding
(cheaper to produce, and gRPC header blocks are small).

Everything malformed raises `HpackError`, which the caller turns into a connection
error of type COMPRESSION_ERROR (RFC 7540 section 4.3).
"""

from __future__ import annotations

from array import array
from collections import deque
from collections.abc import Iterable

__all__ = [
    "DEFAULT_TABLE_SIZE",
    "ENCODE_CACHE_BYTES",
    "STATIC_TABLE",
    "Decoder",
    "HeaderListTooLarge",
    "HpackError",
    "NeverIndexed",
    "encode",
    "encode_cached",
    "huffman_decode",
    "huffman_encode",
]

DEFAULT_TABLE_SIZE = 4096
ENTRY_OVERHEAD = 32  # RFC 7541 section 4.1: each entry costs len(name) + len(value) + 32


class NeverIndexed(tuple[bytes, bytes]):
    """A header field that arrived as "never indexed" (RFC 7541 section 6.2.3): a value,
    such as a credential, that its sender keeps out of every compression table. An
    intermediary must pass it on in the same representation, and `encode` does.

    It unpacks and indexes like a plain (name, value) pair, but never equals one (nor
    hashes like one), so a block memoized for the plain fields is never reused for it.
    """

    __slots__ = ()

    def __eq__(self, other: object) -> bool:
        return type(other) is NeverIndexed and tuple.__eq__(self, other) is True

    def __ne__(self, other: object) -> bool:
        return not self.__eq__(other)

    def __hash__(self) -> int:
        return hash((NeverIndexed, tuple.__hash__(self)))


class HpackError(ValueError):
    """Malformed header block (COMPRESSION_ERROR)."""


class HeaderListTooLarge(HpackError):
    """The block decodes to more than the decoder's `max_header_list_size` (RFC 9113
    section 6.5.2: 32 + name + value per field): raised as the field that crosses the
    limit is read, so a decompression bomb is never expanded. The connection must end
    (its HPACK state is lost): with ENHANCE_YOUR_CALM, as python-hyper's h2 does."""


# RFC 7541 Appendix A. Index 1 is the first entry; `_STATIC` below shifts it so that
# the wire index can be used directly.
STATIC_TABLE: tuple[tuple[bytes, bytes], ...] = (
    (b":authority", b""),
    (b":method", b"GET"),
    (b":method", b"POST"),
    (b":path", b"/"),
    (b":path", b"/index.html"),
    (b":scheme", b"http"),
    (b":scheme", b"https"),
    (b":status", b"200"),
    (b":status", b"204"),
    (b":status", b"206"),
    (b":status", b"304"),
    (b":status", b"400"),
    (b":status", b"404"),
    (b":status", b"500"),
    (b"accept-charset", b""),
    (b"accept-encoding", b"gzip, deflate"),
    (b"accept-language", b""),
    (b"accept-ranges", b""),
    (b"accept", b""),
    (b"access-control-allow-origin", b""),
    (b"age", b""),
    (b"allow", b""),
    (b"authorization", b""),
    (b"cache-control", b""),
    (b"content-disposition", b""),
    (b"content-encoding", b""),
    (b"content-language", b""),
    (b"content-length", b""),
    (b"content-location", b""),
    (b"content-range", b""),
    (b"content-type", b""),
    (b"cookie", b""),
    (b"date", b""),
    (b"etag", b""),
    (b"expect", b""),
    (b"expires", b""),
    (b"from", b""),
    (b"host", b""),
    (b"if-match", b""),
    (b"if-modified-since", b""),
    (b"if-none-match", b""),
    (b"if-range", b""),
    (b"if-unmodified-since", b""),
    (b"last-modified", b""),
    (b"link", b""),
    (b"location", b""),
    (b"max-forwards", b""),
    (b"proxy-authenticate", b""),
    (b"proxy-authorization", b""),
    (b"range", b""),
    (b"referer", b""),
    (b"refresh", b""),
    (b"retry-after", b""),
    (b"server", b""),
    (b"set-cookie", b""),
    (b"strict-transport-security", b""),
    (b"transfer-encoding", b""),
    (b"user-agent", b""),
    (b"vary", b""),
    (b"via", b""),
    (b"www-authenticate", b""),
)
_STATIC_COUNT = len(STATIC_TABLE)  # 61; wire index 62 is the newest dynamic entry
_STATIC: tuple[tuple[bytes, bytes], ...] = ((b"", b""), *STATIC_TABLE)  # [0] is never used

# RFC 7541 Appendix B: (code aligned to the least significant bit, length in bits) for
# symbols 0..255 and EOS (256). The code is canonical: sorted by (length, symbol), each
# code is the previous one plus one, shifted left when the length grows.
_HUFFMAN_CODES: tuple[tuple[int, int], ...] = (
    # 0 - 31: control characters
    (0x1FF8, 13), (0x7FFFD8, 23), (0xFFFFFE2, 28), (0xFFFFFE3, 28), (0xFFFFFE4, 28),
    (0xFFFFFE5, 28), (0xFFFFFE6, 28), (0xFFFFFE7, 28), (0xFFFFFE8, 28), (0xFFFFEA, 24),
    (0x3FFFFFFC, 30), (0xFFFFFE9, 28), (0xFFFFFEA, 28), (0x3FFFFFFD, 30), (0xFFFFFEB, 28),
    (0xFFFFFEC, 28), (0xFFFFFED, 28), (0xFFFFFEE, 28), (0xFFFFFEF, 28), (0xFFFFFF0, 28),
    (0xFFFFFF1, 28), (0xFFFFFF2, 28), (0x3FFFFFFE, 30), (0xFFFFFF3, 28), (0xFFFFFF4, 28),
    (0xFFFFFF5, 28), (0xFFFFFF6, 28), (0xFFFFFF7, 28), (0xFFFFFF8, 28), (0xFFFFFF9, 28),
    (0xFFFFFFA, 28), (0xFFFFFFB, 28),
    # 32 - 47: ' ' ! " # $ % & ' ( ) * + , - . /
    (0x14, 6), (0x3F8, 10), (0x3F9, 10), (0xFFA, 12), (0x1FF9, 13), (0x15, 6), (0xF8, 8),
    (0x7FA, 11), (0x3FA, 10), (0x3FB, 10), (0xF9, 8), (0x7FB, 11), (0xFA, 8), (0x16, 6),
    (0x17, 6), (0x18, 6),
    # 48 - 63: 0 - 9 : ; < = > ?
    (0x0, 5), (0x1, 5), (0x2, 5), (0x19, 6), (0x1A, 6), (0x1B, 6), (0x1C, 6), (0x1D, 6),
    (0x1E, 6), (0x1F, 6), (0x5C, 7), (0xFB, 8), (0x7FFC, 15), (0x20, 6), (0xFFB, 12),
    (0x3FC, 10),
    # 64 - 95: @ A - Z [ \ ] ^ _
    (0x1FFA, 13), (0x21, 6), (0x5D, 7), (0x5E, 7), (0x5F, 7), (0x60, 7), (0x61, 7),
    (0x62, 7), (0x63, 7), (0x64, 7), (0x65, 7), (0x66, 7), (0x67, 7), (0x68, 7), (0x69, 7),
    (0x6A, 7), (0x6B, 7), (0x6C, 7), (0x6D, 7), (0x6E, 7), (0x6F, 7), (0x70, 7), (0x71, 7),
    (0x72, 7), (0xFC, 8), (0x73, 7), (0xFD, 8), (0x1FFB, 13), (0x7FFF0, 19), (0x1FFC, 13),
    (0x3FFC, 14), (0x22, 6),
    # 96 - 127: ` a - z { | } ~ DEL
    (0x7FFD, 15), (0x3, 5), (0x23, 6), (0x4, 5), (0x24, 6), (0x5, 5), (0x25, 6), (0x26, 6),
    (0x27, 6), (0x6, 5), (0x74, 7), (0x75, 7), (0x28, 6), (0x29, 6), (0x2A, 6), (0x7, 5),
    (0x2B, 6), (0x76, 7), (0x2C, 6), (0x8, 5), (0x9, 5), (0x2D, 6), (0x77, 7), (0x78, 7),
    (0x79, 7), (0x7A, 7), (0x7B, 7), (0x7FFE, 15), (0x7FC, 11), (0x3FFD, 14), (0x1FFD, 13),
    (0xFFFFFFC, 28),
    # 128 - 159
    (0xFFFE6, 20), (0x3FFFD2, 22), (0xFFFE7, 20), (0xFFFE8, 20), (0x3FFFD3, 22),
    (0x3FFFD4, 22), (0x3FFFD5, 22), (0x7FFFD9, 23), (0x3FFFD6, 22), (0x7FFFDA, 23),
    (0x7FFFDB, 23), (0x7FFFDC, 23), (0x7FFFDD, 23), (0x7FFFDE, 23), (0xFFFFEB, 24),
    (0x7FFFDF, 23), (0xFFFFEC, 24), (0xFFFFED, 24), (0x3FFFD7, 22), (0x7FFFE0, 23),
    (0xFFFFEE, 24), (0x7FFFE1, 23), (0x7FFFE2, 23), (0x7FFFE3, 23), (0x7FFFE4, 23),
    (0x1FFFDC, 21), (0x3FFFD8, 22), (0x7FFFE5, 23), (0x3FFFD9, 22), (0x7FFFE6, 23),
    (0x7FFFE7, 23), (0xFFFFEF, 24),
    # 160 - 191
    (0x3FFFDA, 22), (0x1FFFDD, 21), (0xFFFE9, 20), (0x3FFFDB, 22), (0x3FFFDC, 22),
    (0x7FFFE8, 23), (0x7FFFE9, 23), (0x1FFFDE, 21), (0x7FFFEA, 23), (0x3FFFDD, 22),
    (0x3FFFDE, 22), (0xFFFFF0, 24), (0x1FFFDF, 21), (0x3FFFDF, 22), (0x7FFFEB, 23),
    (0x7FFFEC, 23), (0x1FFFE0, 21), (0x1FFFE1, 21), (0x3FFFE0, 22), (0x1FFFE2, 21),
    (0x7FFFED, 23), (0x3FFFE1, 22), (0x7FFFEE, 23), (0x7FFFEF, 23), (0xFFFEA, 20),
    (0x3FFFE2, 22), (0x3FFFE3, 22), (0x3FFFE4, 22), (0x7FFFF0, 23), (0x3FFFE5, 22),
    (0x3FFFE6, 22), (0x7FFFF1, 23),
    # 192 - 223
    (0x3FFFFE0, 26), (0x3FFFFE1, 26), (0xFFFEB, 20), (0x7FFF1, 19), (0x3FFFE7, 22),
    (0x7FFFF2, 23), (0x3FFFE8, 22), (0x1FFFFEC, 25), (0x3FFFFE2, 26), (0x3FFFFE3, 26),
    (0x3FFFFE4, 26), (0x7FFFFDE, 27), (0x7FFFFDF, 27), (0x3FFFFE5, 26), (0xFFFFF1, 24),
    (0x1FFFFED, 25), (0x7FFF2, 19), (0x1FFFE3, 21), (0x3FFFFE6, 26), (0x7FFFFE0, 27),
    (0x7FFFFE1, 27), (0x3FFFFE7, 26), (0x7FFFFE2, 27), (0xFFFFF2, 24), (0x1FFFE4, 21),
    (0x1FFFE5, 21), (0x3FFFFE8, 26), (0x3FFFFE9, 26), (0xFFFFFFD, 28), (0x7FFFFE3, 27),
    (0x7FFFFE4, 27), (0x7FFFFE5, 27),
    # 224 - 255
    (0xFFFEC, 20), (0xFFFFF3, 24), (0xFFFED, 20), (0x1FFFE6, 21), (0x3FFFE9, 22),
    (0x1FFFE7, 21), (0x1FFFE8, 21), (0x7FFFF3, 23), (0x3FFFEA, 22), (0x3FFFEB, 22),
    (0x1FFFFEE, 25), (0x1FFFFEF, 25), (0xFFFFF4, 24), (0xFFFFF5, 24), (0x3FFFFEA, 26),
    (0x7FFFF4, 23), (0x3FFFFEB, 26), (0x7FFFFE6, 27), (0x3FFFFEC, 26), (0x3FFFFED, 26),
    (0x7FFFFE7, 27), (0x7FFFFE8, 27), (0x7FFFFE9, 27), (0x7FFFFEA, 27), (0x7FFFFEB, 27),
    (0xFFFFFFE, 28), (0x7FFFFEC, 27), (0x7FFFFED, 27), (0x7FFFFEE, 27), (0x7FFFFEF, 27),
    (0x7FFFFF0, 27), (0x3FFFFEE, 26),
    # 256: EOS
    (0x3FFFFFFF, 30),
)  # fmt: skip
_EOS = 256


def _build_huffman_decoder() -> tuple[array[int], array[int], dict[int, int]]:
    """Build the byte-at-a-time Huffman decoding automaton from `_HUFFMAN_CODES`.

    States are the 256 internal nodes of the code tree (0 is the root) plus a sink
    (256) entered when EOS is decoded; the sink never leaves. For state `s` and input
    byte `b`, entry `s * 256 + b` of the two returned arrays gives the next state
    (pre-multiplied by 256) and the symbols completed while reading the byte, packed in
    one int: 0 for none, `0x100 | sym` for one, `0x20000 | sym2 << 8 | sym1` for two. The
    dict maps each (pre-multiplied) node on the all-ones path to its depth: a string may
    only end at depth 0..7 of that path (its padding is a short prefix of EOS).

    Arrays of machine ints, not lists of int and bytes objects: the head keeps these
    65,792-entry tables for its whole life, and as lists they cost it 4.3 MB, as
    arrays 0.5 MB (docs/scale.md).

    Raises:
        RuntimeError: the code table is not a complete prefix code (a typo in it).
    """
    sink = 256
    # children[node] = [zero, one]; a child >= 512 is the leaf of symbol child - 512.
    children: list[list[int]] = [[-1, -1]]
    for sym, (code, length) in enumerate(_HUFFMAN_CODES):
        node = 0
        for shift in range(length - 1, 0, -1):
            bit = (code >> shift) & 1
            child = children[node][bit]
            if child == -1:
                child = len(children)
                children.append([-1, -1])
                children[node][bit] = child
            elif child >= 512:
                raise RuntimeError(f"Huffman code of {sym} extends the code of {child - 512}")
            node = child
        if children[node][code & 1] != -1:
            raise RuntimeError(f"Huffman code of {sym} is not a leaf")
        children[node][code & 1] = 512 + sym
    if len(children) != sink or any(c == -1 for pair in children for c in pair):
        raise RuntimeError("the Huffman code table is not a complete prefix code")

    # One nibble at a time first: a nibble completes at most one symbol (codes are >= 5
    # bits long, and a nibble ends at most 4 bits into the next code). Outputs packed as
    # above (0 or 0x100 | sym), so that no bytes object is made (the tables are built at
    # import, and every temporary object would leave the head's heap fragmented).
    nib_next: list[int] = []
    nib_out: list[int] = []
    for state in range(sink + 1):
        for nibble in range(16):
            node, out = state, 0
            for shift in (3, 2, 1, 0):
                if node == sink:
                    break
                child = children[node][(nibble >> shift) & 1]
                if child < 512:
                    node = child
                elif child - 512 == _EOS:
                    node = sink
                else:
                    out = 0x100 | (child - 512)
                    node = 0
            nib_next.append(node)
            nib_out.append(out)

    # Bytes as two nibbles (each nibble completes at most one symbol).
    byte_next = array("I")
    byte_out = array("I")
    for key, first in enumerate(nib_out):  # key = state * 16 + high nibble
        mid = nib_next[key] * 16
        for second_key in range(mid, mid + 16):
            second = nib_out[second_key]
            byte_next.append(nib_next[second_key] * 256)
            byte_out.append(0x20000 | (second & 0xFF) << 8 | (first & 0xFF)
                            if first and second else first or second)

    ones_depth: dict[int, int] = {}
    node, depth = 0, 0
    while node < 512:
        ones_depth[node * 256] = depth
        node, depth = children[node][1], depth + 1
    return byte_next, byte_out, ones_depth


_HUFF_NEXT, _HUFF_OUT, _HUFF_ONES_DEPTH = _build_huffman_decoder()
_HUFF_SINK = 256 * 256


def huffman_decode(data: bytes) -> bytes:
    """Decode a Huffman-coded string literal (RFC 7541 section 5.2).

    Raises:
        HpackError: EOS is decoded, or the padding is longer than 7 bits or not a
            prefix of EOS (all ones).
    """
    nxt = _HUFF_NEXT
    outs = _HUFF_OUT
    state = 0
    out = bytearray()
    append = out.append
    for byte in data:
        i = state + byte
        packed = outs[i]
        if packed:
            append(packed & 0xFF)
            if packed >= 0x20000:
                append(packed >> 8 & 0xFF)
        state = nxt[i]
    depth = _HUFF_ONES_DEPTH.get(state)
    if depth is None or depth > 7:
        if state == _HUFF_SINK:
            raise HpackError("Huffman string contains the EOS symbol")
        if depth is None:
            raise HpackError("Huffman string padding is not all ones")
        raise HpackError("Huffman string padding is longer than 7 bits")
    return bytes(out)


def huffman_encode(data: bytes) -> bytes:
    """Huffman-code a string (RFC 7541 section 5.2), padding the last byte with ones.

    `encode` never uses it; it is here for tests and tools that need Huffman input.
    """
    codes = _HUFFMAN_CODES
    acc, bits = 0, 0
    for byte in data:
        code, length = codes[byte]
        acc = (acc << length) | code
        bits += length
    pad = -bits % 8
    acc = (acc << pad) | ((1 << pad) - 1)
    return acc.to_bytes((bits + pad) // 8, "big")


def _encode_int(value: int, prefix_bits: int, flags: int = 0) -> bytes:
    """Encode an integer with an N-bit prefix (RFC 7541 section 5.1).

    `flags` holds the bits of the first byte above the prefix.

    Raises:
        ValueError: `value` is negative.
    """
    if value < 0:
        raise ValueError(f"HPACK integers are unsigned, got {value}")
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes((flags | value,))
    out = bytearray((flags | limit,))
    value -= limit
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


_MAX_INT_SHIFT = 28  # at most 5 continuation bytes: larger values are never legitimate


def _decode_int_tail(data: bytes, pos: int, value: int) -> tuple[int, int]:
    """Finish an integer whose prefix was all ones; `pos` is its first continuation byte.

    Returns:
        The integer and the position after it.

    Raises:
        HpackError: the integer is truncated or absurdly long.
    """
    shift = 0
    end = len(data)
    while pos < end:
        byte = data[pos]
        pos += 1
        value += (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift > _MAX_INT_SHIFT:
            raise HpackError("HPACK integer is too long")
    raise HpackError("truncated HPACK integer")


def _decode_int(data: bytes, pos: int, prefix_bits: int) -> tuple[int, int]:
    """Decode an integer with an N-bit prefix starting at `data[pos]`.

    Returns:
        The integer and the position after it.

    Raises:
        HpackError: the integer is truncated or absurdly long.
    """
    if pos >= len(data):
        raise HpackError("truncated HPACK integer")
    limit = (1 << prefix_bits) - 1
    value = data[pos] & limit
    if value < limit:
        return value, pos + 1
    return _decode_int_tail(data, pos + 1, value)


def _read_string(data: bytes, pos: int) -> tuple[bytes, int]:
    """Read a string literal (H bit, 7-bit-prefix length, octets) at `data[pos]`.

    Returns:
        The decoded octets and the position after the literal.

    Raises:
        HpackError: the literal is truncated or its Huffman coding is invalid.
    """
    if pos >= len(data):
        raise HpackError("truncated HPACK string literal")
    first = data[pos]
    length = first & 0x7F
    pos += 1
    if length == 0x7F:
        length, pos = _decode_int_tail(data, pos, 0x7F)
    end = pos + length
    if end > len(data):
        raise HpackError("truncated HPACK string literal")
    if first & 0x80:
        return huffman_decode(data[pos:end]), end
    return data[pos:end], end


MEMO_BLOCK = 1024   # the longest header block a decoder remembers
MEMO_BYTES = 16 << 10  # what a decoder's memo may hold: blocks plus decoded fields
UNLIMITED = 1 << 62


class Decoder:
    """Decoding context of one connection direction: the peer encoder's dynamic table.

    Args:
        max_table_size: the SETTINGS_HEADER_TABLE_SIZE this side advertised; the peer
            may shrink its table below it with size updates but never exceed it.
        max_header_list_size: the SETTINGS_MAX_HEADER_LIST_SIZE this side advertised:
            a block that decodes to more raises `HeaderListTooLarge` as soon as it does.

    Raises:
        ValueError: `max_table_size` is negative.
    """

    __slots__ = ("_entries", "_limit", "_max_list", "_max_table_size", "_memo",
                 "_memo_bytes", "_size", "last_size")

    def __init__(self, max_table_size: int = DEFAULT_TABLE_SIZE,
                 max_header_list_size: int | None = None) -> None:
        if max_table_size < 0:
            raise ValueError(f"max_table_size must be >= 0, got {max_table_size}")
        self._max_table_size = max_table_size
        self._max_list = UNLIMITED if max_header_list_size is None else max_header_list_size
        self.last_size = 0  # decoded size (32 + name + value per field) of the last block
        self._limit = max_table_size  # the size the peer currently uses
        self._size = 0
        self._entries: deque[tuple[bytes, bytes]] = deque()  # newest first
        # Blocks that left the table alone, decoded: a connection's blocks repeat (the
        # same indexed fields call after call), and they mean the same until the table
        # changes, which empties this.
        self._memo: dict[bytes, tuple[tuple[tuple[bytes, bytes], ...], int]] = {}
        self._memo_bytes = 0

    @property
    def max_table_size(self) -> int:
        """Upper bound for the peer's size updates (the advertised setting)."""
        return self._max_table_size

    @property
    def table_limit(self) -> int:
        """Current maximum size of the dynamic table (after the peer's size updates)."""
        return self._limit

    @property
    def table_size(self) -> int:
        """Current size of the dynamic table: 32 + len(name) + len(value) per entry."""
        return self._size

    @property
    def dynamic_table(self) -> list[tuple[bytes, bytes]]:
        """A copy of the dynamic table, newest entry (wire index 62) first."""
        return list(self._entries)

    def decode(self, block: bytes | bytearray | memoryview) -> list[tuple[bytes, bytes]]:
        """Decode one complete header block; updates the dynamic table.

        Args:
            block: the concatenated fragments of HEADERS/PUSH_PROMISE + CONTINUATION.

        Returns:
            The header fields in order, names exactly as they are on the wire.

        Raises:
            HpackError: on any malformation: index 0 or past the tables, truncated
                integer or string, invalid Huffman (padding over 7 bits, padding not
                all ones, EOS decoded), a table size update above `max_table_size`,
                or a size update after the first header field. The dynamic table may
                then be half-updated: the error is fatal to the connection anyway.
            HeaderListTooLarge: the fields read so far exceed `max_header_list_size`.
        """
        data = block if type(block) is bytes else bytes(block)
        known = self._memo.get(data)
        if known is not None:
            self.last_size = known[1]
            return list(known[0])
        budget = self._max_list
        end = len(data)
        changed = False
        static = _STATIC
        entries = self._entries
        fields: list[tuple[bytes, bytes]] = []
        append = fields.append
        pos = 0
        while pos < end:
            first = data[pos]
            pos += 1
            if first & 0x80:  # indexed header field (section 6.1)
                index = first & 0x7F
                if index == 0x7F:
                    index, pos = _decode_int_tail(data, pos, 0x7F)
                if 0 < index <= _STATIC_COUNT:
                    field = static[index]
                elif _STATIC_COUNT < index <= _STATIC_COUNT + len(entries):
                    field = entries[index - _STATIC_COUNT - 1]
                else:
                    field = self._dynamic(index)  # raises the out-of-range error
                budget -= ENTRY_OVERHEAD + len(field[0]) + len(field[1])
                if budget < 0:
                    raise HeaderListTooLarge(self._too_large())
                append(field)
                continue
            never = 0
            if first & 0x40:  # literal with incremental indexing (section 6.2.1)
                index = first & 0x3F
                if index == 0x3F:
                    index, pos = _decode_int_tail(data, pos, 0x3F)
            elif first & 0x20:  # dynamic table size update (section 6.3)
                if fields:
                    raise HpackError("dynamic table size update after a header field")
                size = first & 0x1F
                if size == 0x1F:
                    size, pos = _decode_int_tail(data, pos, 0x1F)
                self._resize(size)
                changed = True
                continue
            else:  # literal without indexing (0000) or never indexed (0001), 6.2.2/3
                never = first & 0x10
                index = first & 0x0F
                if index == 0x0F:
                    index, pos = _decode_int_tail(data, pos, 0x0F)
            if index == 0:
                name, pos = _read_string(data, pos)
            elif index <= _STATIC_COUNT:
                name = static[index][0]
            else:
                name = self._dynamic(index)[0]
            # The value literal, inlined: it is the hottest string read.
            if pos >= end:
                raise HpackError("truncated HPACK string literal")
            head = data[pos]
            length = head & 0x7F
            pos += 1
            if length == 0x7F:
                length, pos = _decode_int_tail(data, pos, 0x7F)
            stop = pos + length
            if stop > end:
                raise HpackError("truncated HPACK string literal")
            # (a Huffman string expands at most 8/5: the block's own limit bounds it)
            value = huffman_decode(data[pos:stop]) if head & 0x80 else data[pos:stop]
            pos = stop
            budget -= ENTRY_OVERHEAD + len(name) + len(value)
            if budget < 0:
                raise HeaderListTooLarge(self._too_large())
            append(NeverIndexed((name, value)) if never else (name, value))
            if first & 0x40:
                self._insert(name, value)
                changed = True
        size = self._max_list - budget
        self.last_size = size
        if not changed and end <= MEMO_BLOCK:
            cost = end + size
            if self._memo_bytes + cost > MEMO_BYTES:
                self._memo.clear()
                self._memo_bytes = 0
            self._memo[data] = (tuple(fields), size)
            self._memo_bytes += cost
        return fields

    def _too_large(self) -> str:
        return f"header list larger than {self._max_list} bytes (SETTINGS_MAX_HEADER_LIST_SIZE)"

    def _dynamic(self, index: int) -> tuple[bytes, bytes]:
        """The field at wire `index` of the dynamic table (62 is the newest entry).

        Raises:
            HpackError: `index` is 0 or past the end of the dynamic table.
        """
        offset = index - _STATIC_COUNT - 1
        if offset < 0 or offset >= len(self._entries):
            raise HpackError(
                f"header table index {index} out of range "
                f"(1..{_STATIC_COUNT + len(self._entries)})"
            )
        return self._entries[offset]

    def _insert(self, name: bytes, value: bytes) -> None:
        """Add an entry, evicting the oldest ones to make room (section 4.4)."""
        self._memo.clear()  # indices moved: a remembered block may mean something else
        self._memo_bytes = 0
        cost = ENTRY_OVERHEAD + len(name) + len(value)
        entries = self._entries
        if cost > self._limit:  # larger than the table: empties it, is not added
            entries.clear()
            self._size = 0
            return
        size = self._size + cost
        limit = self._limit
        while size > limit:
            old_name, old_value = entries.pop()
            size -= ENTRY_OVERHEAD + len(old_name) + len(old_value)
        entries.appendleft((name, value))
        self._size = size

    def _resize(self, limit: int) -> None:
        """Apply a dynamic table size update, evicting as needed (section 4.3).

        Raises:
            HpackError: `limit` exceeds `max_table_size`.
        """
        if limit > self._max_table_size:
            raise HpackError(
                f"dynamic table size update to {limit} exceeds the maximum "
                f"{self._max_table_size}"
            )
        self._limit = limit
        self._memo.clear()
        self._memo_bytes = 0
        entries = self._entries
        size = self._size
        while size > limit:
            old_name, old_value = entries.pop()
            size -= ENTRY_OVERHEAD + len(old_name) + len(old_value)
        self._size = size


# encode(): an exact static match is one byte (indexed, 1xxxxxxx); a static name match
# is the first byte(s) of a literal without indexing with an indexed name (0000xxxx).
_ENCODE_EXACT: dict[tuple[bytes, bytes], bytes] = {
    field: _encode_int(index, 7, 0x80) for index, field in enumerate(STATIC_TABLE, 1)
}
_ENCODE_NAME: dict[bytes, bytes] = {}
for _index, (_name, _) in enumerate(STATIC_TABLE, 1):
    _ENCODE_NAME.setdefault(_name, _encode_int(_index, 4))
del _index, _name
_SHORT_LENGTHS: tuple[bytes, ...] = tuple(bytes((n,)) for n in range(0x7F))  # H=0 lengths
_NEW_NAME = b"\x00"  # literal without indexing, literal name
_NEVER_NEW_NAME = b"\x10"  # never indexed, literal name


def encode(headers: Iterable[tuple[bytes, bytes]]) -> bytes:
    """Encode header fields without touching any dynamic table.

    Stateless, so the block can be sent on any connection: an exact static-table
    match becomes an indexed field; a static-table name match a literal without
    indexing with an indexed name; anything else a literal without indexing with a
    literal name. Strings are sent raw (no Huffman: cheaper to produce).

    A `NeverIndexed` field (as `Decoder` returns a field received "never indexed") goes
    out never indexed (RFC 7541 section 6.2.3), whatever the static table holds.

    Args:
        headers: (name, value) pairs, sent in order and byte for byte.

    Returns:
        The header block.
    """
    exact = _ENCODE_EXACT
    names = _ENCODE_NAME
    short = _SHORT_LENGTHS
    parts: list[bytes] = []
    append = parts.append
    for field in headers:
        hit = exact.get(field)  # never a NeverIndexed field: it equals no plain pair
        if hit is not None:
            append(hit)
            continue
        name, value = field
        prefix = names.get(name)
        never = field.__class__ is NeverIndexed  # sent on as it came: 0001xxxx
        if prefix is None:
            append(_NEVER_NEW_NAME if never else _NEW_NAME)
            length = len(name)
            append(short[length] if length < 0x7F else _encode_int(length, 7))
            append(name)
        else:
            append(bytes((prefix[0] | 0x10,)) + prefix[1:] if never else prefix)
        length = len(value)
        append(short[length] if length < 0x7F else _encode_int(length, 7))
        append(value)
    return b"".join(parts)


ENCODE_CACHE_BYTES = 1 << 20  # what `encode_cached` may hold: fields plus blocks
_ENCODE_CACHE_BLOCK = 4096    # longer blocks are encoded every time, never cached
_encoded: dict[tuple[tuple[bytes, bytes], ...], bytes] = {}
_encoded_bytes = 0


def encode_cached(headers: list[tuple[bytes, bytes]]) -> bytes:
    """`encode`, memoized: a worker's response headers and trailers repeat on every call.

    The cache holds at most ENCODE_CACHE_BYTES (an entry costs its block twice, for the
    fields and the encoding, plus 128 bytes of objects per field): when a new entry would
    not fit, it starts over. A block longer than 4 KiB is never cached.
    """
    global _encoded_bytes
    key = tuple(headers)
    block = _encoded.get(key)
    if block is None:
        block = encode(headers)
        cost = 2 * len(block) + 128 * len(key)  # the fields' objects, roughly, and the block
        if len(block) <= _ENCODE_CACHE_BLOCK:
            if _encoded_bytes + cost > ENCODE_CACHE_BYTES:
                _encoded.clear()
                _encoded_bytes = 0
            _encoded[key] = block
            _encoded_bytes += cost
    return block


def encode_cache_bytes() -> int:
    """Bytes `encode_cached` currently accounts for (for tests and the memory ceiling)."""
    return _encoded_bytes
