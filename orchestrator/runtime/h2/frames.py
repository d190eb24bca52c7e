"""HTTP/2 wire constants and frame encoding (RFC 9113 sections 4, 6, 7 and 11)."""

from __future__ import annotations

import struct

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# frame types (section 6)
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, \
    CONTINUATION = range(10)
# flags
END_STREAM = ACK = 0x1
END_HEADERS, PADDED, PRIORITY_FLAG = 0x4, 0x8, 0x20

# error codes (section 7)
NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, FLOW_CONTROL_ERROR = 0x0, 0x1, 0x2, 0x3
SETTINGS_TIMEOUT, STREAM_CLOSED, FRAME_SIZE_ERROR, REFUSED_STREAM = 0x4, 0x5, 0x6, 0x7
CANCEL, COMPRESSION_ERROR, CONNECT_ERROR, ENHANCE_YOUR_CALM = 0x8, 0x9, 0xA, 0xB
INADEQUATE_SECURITY, HTTP_1_1_REQUIRED = 0xC, 0xD

# settings (section 6.5.2)
S_HEADER_TABLE_SIZE, S_ENABLE_PUSH, S_MAX_CONCURRENT, S_INITIAL_WINDOW, S_MAX_FRAME, \
    S_MAX_HEADER_LIST = 1, 2, 3, 4, 5, 6
S_ENABLE_CONNECT_PROTOCOL = 8  # RFC 8441

DEFAULT_WINDOW = 65535
DEFAULT_MAX_FRAME = 16384
MAX_WINDOW = (1 << 31) - 1
MAX_FRAME_LIMIT = (1 << 24) - 1
LAST_STREAM_ID = (1 << 31) - 1

HEAD = struct.Struct(">HBBBL")  # a frame header: length (hi 16, lo 8), type, flags, stream
FRAME_HEADER = 9


class ProtocolError(Exception):
    """The peer broke HTTP/2: the connection ends with GOAWAY(code)."""

    def __init__(self, code: int, message: str) -> None:
        self.code = code
        super().__init__(message)


def frame(kind: int, flags: int, sid: int, payload: bytes = b"") -> bytes:
    """One HTTP/2 frame."""
    n = len(payload)
    return HEAD.pack(n >> 8, n & 0xFF, kind, flags, sid) + payload


def settings_frame(*pairs: tuple[int, int]) -> bytes:
    """A SETTINGS frame carrying `pairs` of (identifier, value)."""
    return frame(SETTINGS, 0, 0, b"".join(struct.pack(">HL", k, v) for k, v in pairs))


def rst_stream(sid: int, code: int) -> bytes:
    """RST_STREAM(code) on `sid`."""
    return frame(RST_STREAM, 0, sid, struct.pack(">L", code))


def goaway(last_sid: int, code: int, debug: bytes = b"") -> bytes:
    """GOAWAY: streams above `last_sid` were not processed; `code` says why."""
    return frame(GOAWAY, 0, 0, struct.pack(">LL", last_sid, code) + debug)


def window_update(sid: int, increment: int) -> bytes:
    """WINDOW_UPDATE giving the peer `increment` more bytes on `sid` (0: the connection)."""
    return frame(WINDOW_UPDATE, 0, sid, struct.pack(">L", increment))


def unpad(payload: bytes) -> bytes:
    """The payload of a PADDED frame without its pad length byte and padding.

    Raises:
        ProtocolError: the padding is as long as the payload or longer (section 6.1).
    """
    if not payload or payload[0] >= len(payload):
        raise ProtocolError(PROTOCOL_ERROR, "bad padding")
    return payload[1:len(payload) - payload[0]]
