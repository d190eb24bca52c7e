"""Every limit an HTTP/2 peer could abuse, as one value with safe defaults.

A limit is checked as the frame that would cross it arrives, never after the work is done:
a header block is refused while it is being decoded, a flood while it is counted. The
defences and the attack each one answers:

=========================  ==============================================================
setting                    attack
=========================  ==============================================================
max_header_list_size       HPACK decompression bomb: a small block that references a big
                           table entry thousands of times (checked field by field)
max_header_block           CONTINUATION flood (2024): an endless header block
max_continuations          CONTINUATION flood made of tiny frames
header_table_size          a peer's dynamic table (RFC 7541 section 4.2)
max_concurrent_streams     too many streams on one connection
max_resets                 rapid reset (CVE-2023-44487): streams opened and reset, or
                           refused, over and over (counted per `flood_window`)
max_pings, max_settings    PING / SETTINGS floods (each one makes us queue an ACK)
max_empty_frames           empty DATA / HEADERS / CONTINUATION, PRIORITY and unknown frames
max_buffered               zero-window stalls and slow readers: bytes one connection may
                           hold (request bodies, responses not yet sent, socket backlog)
max_buffered_total         the same, summed over every connection of the relay
handshake_timeout          a client that never finishes its preface and SETTINGS
idle_timeout               a connection with no stream open for this long, or a request
                           that stops arriving half-way
stall_timeout              a reader that never opens its flow-control window
max_connections            too many connections (enforced by the relay)
max_http_head              HTTP/1.1 (GET /metrics, the HTTP interface): an endless request
                           line or header section
max_http_body              HTTP/1.1: a body too large to decode (JSON is decoded on the
                           event loop, one body at a time: see `memory_ceiling`)
=========================  ==============================================================

The head's memory ceiling (`memory_ceiling`) follows from these values alone, whatever
clients send.
"""

from __future__ import annotations

from dataclasses import dataclass

from orchestrator.runtime.h2.frames import (
    DEFAULT_MAX_FRAME,
    FLOW_CONTROL_ERROR,
    MAX_FRAME_LIMIT,
    MAX_WINDOW,
    PROTOCOL_ERROR,
    S_ENABLE_CONNECT_PROTOCOL,
    S_ENABLE_PUSH,
    S_INITIAL_WINDOW,
    S_MAX_FRAME,
    ProtocolError,
)

MIB = 1 << 20
READ_CHUNK = 256 << 10  # asyncio reads at most this much per data_received
STREAM_OVERHEAD = 2048  # Python objects of one open stream and its call, header lists aside
CONNECTION_OVERHEAD = 16 << 10  # Python objects of one connection (transport included)


@dataclass(frozen=True, kw_only=True)
class Limits:
    """Limits of one HTTP/2 endpoint (see the module docstring for what each one stops).

    Counts marked "per window" are budgets over `flood_window` seconds: exceeding one ends
    the connection with GOAWAY(ENHANCE_YOUR_CALM).

    Raises:
        ValueError: a value is out of its range (named in the message).
    """

    max_concurrent_streams: int = 256
    initial_window: int = MIB                # our receive window per stream
    connection_window: int = 1 << 30         # our receive window on the connection
    max_frame_size: int = MIB                # largest frame we accept (advertised)
    header_table_size: int = 4096            # HPACK dynamic table we keep for the peer
    max_header_list_size: int = 64 << 10     # decoded, 32 + name + value per field
    max_header_block: int = 64 << 10         # encoded bytes of one block, all frames
    max_continuations: int = 64              # CONTINUATION frames in one header block
    max_buffered: int = 80 * MIB             # bytes one connection may hold
    max_buffered_total: int = 256 * MIB      # bytes all connections may hold together
    flood_window: float = 10.0               # seconds over which floods are counted
    max_resets: int = 500                    # per window: RST_STREAM received + refused
    max_pings: int = 1000                    # per window
    max_settings: int = 100                  # per window
    max_empty_frames: int = 1000             # per window
    handshake_timeout: float = 10.0          # seconds to send the preface and SETTINGS
    idle_timeout: float = 300.0              # seconds with no stream open, or a request
                                             # stream that receives nothing
    stall_timeout: float = 60.0              # seconds output may wait for a window
    max_connections: int = 256               # client connections of one relay
    tick: float = 1.0                        # how often timeouts are checked
    max_http_head: int = 16 << 10            # HTTP/1.1 request line + header fields
    max_http_body: int = 8 * MIB             # HTTP/1.1 body (JSON of the HTTP interface)

    def __post_init__(self) -> None:
        for name in ("max_concurrent_streams", "max_header_list_size", "max_header_block",
                     "max_continuations", "max_buffered", "max_buffered_total",
                     "max_resets", "max_pings", "max_settings", "max_empty_frames",
                     "max_connections", "max_http_head", "max_http_body"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not DEFAULT_MAX_FRAME <= self.max_frame_size <= MAX_FRAME_LIMIT:
            raise ValueError(f"max_frame_size must be in [{DEFAULT_MAX_FRAME}, "
                             f"{MAX_FRAME_LIMIT}], got {self.max_frame_size}")
        for name in ("initial_window", "connection_window"):
            if not 65535 <= getattr(self, name) <= MAX_WINDOW:
                raise ValueError(f"{name} must be in [65535, {MAX_WINDOW}]")
        if self.header_table_size < 0:
            raise ValueError("header_table_size must be >= 0")
        for name in ("flood_window", "handshake_timeout", "idle_timeout", "stall_timeout",
                     "tick"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")

    @classmethod
    def for_messages(cls, max_message_bytes: int, **overrides: float) -> Limits:
        """Limits that let one connection hold a whole message of `max_message_bytes`
        (a request buffered for retries, or a response to a slow reader) and the relay
        a few of them at once."""
        per_conn = max_message_bytes + MIB
        values: dict[str, float] = {"max_buffered": per_conn,
                                    "max_buffered_total": max(256 * MIB, 2 * per_conn)}
        values.update(overrides)
        return cls(**values)  # type: ignore[arg-type]


def connection_ceiling(limits: Limits) -> int:
    """Bytes one connection can make the relay hold, apart from `max_buffered` (which the
    relay-wide `max_buffered_total` covers): its receive buffer (one partial frame plus one
    read), one header block being assembled, the HPACK table and memo, and the objects of
    its open streams."""
    from orchestrator.runtime.hpack import ENTRY_OVERHEAD, MEMO_BYTES

    table = limits.header_table_size + ENTRY_OVERHEAD * (limits.header_table_size // 32 + 1)
    return (CONNECTION_OVERHEAD + limits.max_frame_size + 9 + READ_CHUNK
            + limits.max_header_block + table + MEMO_BYTES
            + limits.max_concurrent_streams * STREAM_OVERHEAD)


HTTP_DECODE_FACTOR = 25
"""Python objects per byte of JSON, at worst (`[{},{},...]` measured x25; docs x9)."""


def memory_ceiling(limits: Limits, *, http: bool = False) -> int:
    """The most memory the relay can take, whatever clients send:

        max_connections x connection_ceiling(limits)      client connections
        + max_buffered_total                              bytes held for clients
        + max_buffered_total                              bytes held for workers
        + ENCODE_CACHE_BYTES                              hpack's encode_cached
        + HTTP_DECODE_FACTOR x max_http_body              with `http`: one JSON body
                                                          being decoded

    An HTTP/1.1 connection holds at most `max_http_head` bytes of a request head (less
    than an HTTP/2 connection's frame buffer, so `connection_ceiling` covers it); its body
    is held against the clients' budget as it arrives. The HTTP interface decodes a JSON
    body synchronously on the event loop, so one body's objects exist at a time.

    Bytes held for clients are request bodies and decoded request headers kept for
    retries, responses waiting for a slow reader, and socket backlogs; bytes held for
    workers (and the head's inner grpcio server) are requests and piped data waiting for
    their flow-control windows. Each budget is shared by every connection of its side, and
    a connection that would cross it is refused the bytes or closed. The connections to the
    workers themselves (one per replica, plus one to the inner server) and the process's
    own baseline (Python and grpcio: about 22 MB measured in the head's container) come on
    top.
    """
    from orchestrator.runtime.hpack import ENCODE_CACHE_BYTES

    return (limits.max_connections * connection_ceiling(limits)
            + 2 * limits.max_buffered_total + ENCODE_CACHE_BYTES
            + (HTTP_DECODE_FACTOR * limits.max_http_body if http else 0))


class Budget:
    """At most `limit` events per `window` seconds (a fixed window: cheap, and a flood
    many times the limit is caught within one window)."""

    __slots__ = ("count", "limit", "start", "window")

    def __init__(self, limit: int, window: float) -> None:
        self.limit = limit
        self.window = window
        self.start = -window
        self.count = 0

    def spend(self, now: float) -> bool:
        """Count one event at `now`; False once the window's budget is exceeded."""
        if now - self.start >= self.window:
            self.start, self.count = now, 0
        self.count += 1
        return self.count <= self.limit


def check_setting(key: int, value: int, *, client: bool) -> None:
    """Validate one received setting (RFC 9113 section 6.5.2); `client`: we are the client.

    Raises:
        ProtocolError: FLOW_CONTROL_ERROR for an initial window above 2^31-1;
            PROTOCOL_ERROR for ENABLE_PUSH not 0/1 (or 1 sent by a server), a frame size
            outside [2^14, 2^24-1], ENABLE_CONNECT_PROTOCOL not 0/1.
    """
    if key == S_INITIAL_WINDOW:
        if value > MAX_WINDOW:
            raise ProtocolError(FLOW_CONTROL_ERROR, f"SETTINGS_INITIAL_WINDOW_SIZE {value} "
                                                    f"> {MAX_WINDOW}")
    elif key == S_MAX_FRAME:
        if not DEFAULT_MAX_FRAME <= value <= MAX_FRAME_LIMIT:
            raise ProtocolError(PROTOCOL_ERROR, f"SETTINGS_MAX_FRAME_SIZE {value} outside "
                                                f"[{DEFAULT_MAX_FRAME}, {MAX_FRAME_LIMIT}]")
    elif key == S_ENABLE_PUSH:
        if value > 1 or (client and value == 1):
            raise ProtocolError(PROTOCOL_ERROR, f"SETTINGS_ENABLE_PUSH {value}")
    elif key == S_ENABLE_CONNECT_PROTOCOL and value > 1:
        raise ProtocolError(PROTOCOL_ERROR, f"SETTINGS_ENABLE_CONNECT_PROTOCOL {value}")
