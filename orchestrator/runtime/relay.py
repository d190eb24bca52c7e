"""The head's HTTP/2 front door: gRPC calls relayed frame by frame, grpcio out of the hot path.

Why: with grpcio in Python a proxied unary call costs a server call plus a client call, each
crossing grpcio's completion-queue thread: about 0.6 ms on a 2-core machine, as much as a
worker's whole request. The head's hot path -- a unary `Call` routed to ANY replica --
needs nothing of gRPC beyond HTTP/2 framing, so this module relays it itself:

* fast path (`/orchestrator.v1.Executor/Call`, ANY polling, no uses_before): the request's
  HEADERS and DATA are buffered (so it can be retried), sent on a persistent HTTP/2
  connection to the least-loaded READY replica of the head's `Pool`, and the response is
  relayed once complete. The payload is never decoded. A replica that refuses (connection
  lost, stream reset, GOAWAY, or a trailers-only UNAVAILABLE/CANCELLED) is marked unhealthy
  and the request goes to another one: a request fails only when no replica can serve it.
* everything else (Health, Control, Stream, ALL polling, uses_before/uses_after) is piped
  frame by frame, flow-controlled, to the head's own grpcio server on a loopback port,
  which keeps the full semantics.

Header blocks are decoded (HPACK state is per connection) and re-encoded statelessly for
the other side. Flow control: inbound DATA of the fast path is acknowledged on receipt
(bounded by the message-size limit); piped DATA is acknowledged when it has been sent on,
so a slow reader backs up to its writer as with any HTTP/2 proxy.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

from orchestrator.runtime.hpack import Decoder, HpackError, NeverIndexed, encode
from orchestrator.runtime.metrics import CONTENT_TYPE
from orchestrator.runtime.pool import Pool, Replica, ReplicaKey

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
WATCH_PATH = b"/grpc.health.v1.Health/Watch"
MAX_PLAIN_REQUEST = 8192  # bytes of an HTTP/1.1 request head (GET /metrics)
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, \
    CONTINUATION = range(10)
END_STREAM = ACK = 0x1
END_HEADERS, PADDED, PRIORITY_FLAG = 0x4, 0x8, 0x20
# error codes
NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, FLOW_CONTROL_ERROR = 0x0, 0x1, 0x2, 0x3
REFUSED_STREAM, CANCEL, COMPRESSION_ERROR, FRAME_SIZE_ERROR = 0x7, 0x8, 0x9, 0x6
# settings
S_HEADER_TABLE_SIZE, S_ENABLE_PUSH, S_MAX_CONCURRENT, S_INITIAL_WINDOW, S_MAX_FRAME = 1, 2, 3, 4, 5

WINDOW = 1 << 20          # our per-stream receive window
CONN_WINDOW = 1 << 30     # our connection receive window
MAX_FRAME = 1 << 20       # largest frame we accept
MAX_HEADER_BLOCK = 64 << 10  # grpcio's own metadata limit is 8-16 KiB
MAX_STREAMS = 1000           # concurrent streams per client connection (advertised, enforced)
MAX_WINDOW = (1 << 31) - 1
LAST_STREAM_ID = (1 << 31) - 1
CONNECT_TIMEOUT = 3.0
# gRPC codes
GRPC_OK, GRPC_CANCELLED, GRPC_RESOURCE_EXHAUSTED, GRPC_UNAVAILABLE = b"0", b"1", b"8", b"14"
RETRYABLE = frozenset({GRPC_CANCELLED, GRPC_UNAVAILABLE})

_HEAD = struct.Struct(">HBBBL")
Headers = list[tuple[bytes, bytes]]


def frame(kind: int, flags: int, sid: int, payload: bytes = b"") -> bytes:
    """One HTTP/2 frame."""
    n = len(payload)
    return _HEAD.pack(n >> 8, n & 0xFF, kind, flags, sid) + payload


def _settings(*pairs: tuple[int, int]) -> bytes:
    return frame(SETTINGS, 0, 0, b"".join(struct.pack(">HL", k, v) for k, v in pairs))


_WINDOW_BOOST = frame(WINDOW_UPDATE, 0, 0, struct.pack(">L", CONN_WINDOW - 65535))
SERVER_HELLO = _settings((S_MAX_CONCURRENT, MAX_STREAMS), (S_INITIAL_WINDOW, WINDOW),
                         (S_MAX_FRAME, MAX_FRAME)) + _WINDOW_BOOST
CLIENT_HELLO = PREFACE + _settings(
    (S_ENABLE_PUSH, 0), (S_INITIAL_WINDOW, WINDOW), (S_MAX_FRAME, MAX_FRAME)) + _WINDOW_BOOST


class ProtocolError(Exception):
    """The peer broke HTTP/2: the connection ends with GOAWAY(code)."""

    def __init__(self, code: int, message: str) -> None:
        self.code = code
        super().__init__(message)


class Handler(Protocol):
    """What a stream's events go to (a relayed call or a pipe)."""

    def on_headers(self, conn: Conn, stream: Stream, headers: Headers, end: bool) -> None: ...

    def on_data(self, conn: Conn, stream: Stream, data: bytes, end: bool) -> None: ...

    def on_reset(self, conn: Conn, stream: Stream, refused: bool) -> None: ...


class Stream:
    """One HTTP/2 stream on one connection: its send window and queued output."""

    __slots__ = ("closed", "handler", "pending", "sid", "trailers", "unacked", "window")

    def __init__(self, sid: int, handler: Handler | None, window: int) -> None:
        self.sid = sid
        self.handler = handler
        self.window = window
        self.pending: deque[tuple[memoryview, bool, Callable[[int], None] | None]] = deque()
        self.trailers: bytes | None = None
        self.unacked = 0
        self.closed = False


class Conn(asyncio.Protocol):
    """One HTTP/2 connection (either side); frames in, batched writes out."""

    client = False

    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        self.transport: asyncio.Transport | None = None
        self.streams: dict[int, Stream] = {}
        self.decoder = Decoder()
        self.window = 65535          # our send window on the connection
        self.peer_window = 65535     # peer's initial stream window
        self.peer_frame = 16384      # peer's max frame size
        self.unacked = 0
        self.open = True
        self.usable = True           # may start new streams
        self._buf = bytearray()
        self._out: list[bytes] = []
        self._dirty = False
        self._blocked: set[Stream] = set()
        self._preface = not self.client
        self._cont: tuple[int, int, bytearray] | None = None

    # ---- asyncio.Protocol ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        if self.client:  # a server says hello once the client's preface is in (see below)
            self.emit(CLIENT_HELLO)
            self.relay.flush_soon()

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        try:
            if self._preface:
                if buf[:4] == b"GET " and self.plain_get(buf):
                    return
                if len(buf) < len(PREFACE):
                    return
                if buf[:len(PREFACE)] != PREFACE:
                    raise ProtocolError(PROTOCOL_ERROR, "not an HTTP/2 client")
                del buf[:len(PREFACE)]
                self._preface = False
                # Our SETTINGS only now: an HTTP/1.1 client (GET /metrics) must not get a
                # binary frame before its response.
                self.emit(SERVER_HELLO)
                self.on_preface()
            i, n = 0, len(buf)
            view = memoryview(buf)
            try:
                while n - i >= 9:
                    hi, lo, kind, flags, sid = _HEAD.unpack_from(buf, i)
                    length = hi << 8 | lo
                    if length > MAX_FRAME:
                        raise ProtocolError(FRAME_SIZE_ERROR, f"frame of {length} bytes")
                    if n - i < 9 + length:
                        break
                    payload = bytes(view[i + 9:i + 9 + length])
                    i += 9 + length
                    self._frame(kind, flags, sid & LAST_STREAM_ID, payload)
            finally:
                view.release()
                del buf[:i]
        except (ProtocolError, HpackError) as exc:
            code = exc.code if isinstance(exc, ProtocolError) else COMPRESSION_ERROR
            self.abort(code, str(exc))
        finally:
            self.relay.flush_soon()

    def connection_lost(self, exc: Exception | None) -> None:
        self.open = self.usable = False
        streams, self.streams = self.streams, {}
        for stream in streams.values():
            if stream.handler is not None and not stream.closed:
                stream.closed = True
                stream.handler.on_reset(self, stream, refused=False)
        self.lost()
        self.relay.flush_soon()

    def lost(self) -> None:
        """Hook: the connection is gone."""

    def on_preface(self) -> None:
        """Hook (server side): the client's preface arrived and our SETTINGS are queued."""

    def plain_get(self, buf: bytearray) -> bool:
        """Hook: an HTTP/1.1 GET where the HTTP/2 preface should be; True when handled
        (or when more of it must arrive first)."""
        return False

    # ---- output ----------------------------------------------------------------------

    def emit(self, data: bytes) -> None:
        """Queue bytes; the relay writes each connection's queue once per event."""
        self._out.append(data)
        if not self._dirty:
            self._dirty = True
            self.relay.dirty.append(self)

    def write_out(self) -> None:
        """Write what was queued (called by the relay)."""
        self._dirty = False
        out, self._out = self._out, []
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(out[0] if len(out) == 1 else b"".join(out))

    def send_headers(self, stream: Stream, headers: Headers, end: bool) -> None:
        """HEADERS (+CONTINUATION); after any queued DATA when they are trailers."""
        block = encode_cached(headers)
        if stream.pending:
            stream.trailers = block
            return
        self._emit_headers(stream, block, end)

    def _emit_headers(self, stream: Stream, block: bytes, end: bool) -> None:
        flags = END_STREAM if end else 0
        limit = self.peer_frame
        if len(block) <= limit:
            self.emit(frame(HEADERS, flags | END_HEADERS, stream.sid, block))
        else:
            self.emit(frame(HEADERS, flags, stream.sid, block[:limit]))
            rest = block[limit:]
            while rest:
                part, rest = rest[:limit], rest[limit:]
                self.emit(frame(CONTINUATION, 0 if rest else END_HEADERS, stream.sid, part))
        if end:
            self._end_local(stream)

    def send_data(self, stream: Stream, data: bytes, end: bool,
                  sent: Callable[[int], None] | None = None) -> None:
        """DATA within the peer's windows; the rest waits for WINDOW_UPDATE.

        `sent(n)` is told as bytes actually go out (a pipe acknowledges its source then).
        """
        n = len(data)
        if (not stream.pending and n <= stream.window and n <= self.window
                and n <= self.peer_frame):
            stream.window -= n
            self.window -= n
            self.emit(frame(DATA, END_STREAM if end else 0, stream.sid, data))
            if sent is not None and n:
                sent(n)
            if end:
                self._end_local(stream)
            return
        stream.pending.append((memoryview(data), end, sent))
        self._pump(stream)

    def _pump(self, stream: Stream) -> None:
        while stream.pending:
            view, end, sent = stream.pending[0]
            size = min(len(view), stream.window, self.window, self.peer_frame)
            if size <= 0 and len(view):
                self._blocked.add(stream)
                return
            last = size == len(view)
            stream.window -= size
            self.window -= size
            self.emit(frame(DATA, END_STREAM if end and last else 0, stream.sid,
                            bytes(view[:size])))
            if sent is not None and size:
                sent(size)
            if last:
                stream.pending.popleft()
                if end:
                    self._end_local(stream)
            else:
                stream.pending[0] = (view[size:], end, sent)
        self._blocked.discard(stream)
        if stream.trailers is not None:
            block, stream.trailers = stream.trailers, None
            self._emit_headers(stream, block, True)

    def _end_local(self, stream: Stream) -> None:
        """We sent END_STREAM; forget the stream once the peer has ended too."""

    def reset(self, stream: Stream, code: int = CANCEL) -> None:
        """RST_STREAM and forget the stream (no handler callback)."""
        if not stream.closed:
            stream.closed = True
            self.emit(frame(RST_STREAM, 0, stream.sid, struct.pack(">L", code)))
        self.forget(stream)

    def forget(self, stream: Stream) -> None:
        """Drop a finished stream."""
        stream.closed = True
        self.streams.pop(stream.sid, None)
        self._blocked.discard(stream)
        stream.pending.clear()

    def ack(self, stream: Stream | None, n: int) -> None:
        """Give the peer back `n` bytes of receive window on the stream (and connection)."""
        if stream is not None and not stream.closed:
            stream.unacked += n
            if stream.unacked >= WINDOW // 2:
                self.emit(frame(WINDOW_UPDATE, 0, stream.sid, struct.pack(">L", stream.unacked)))
                stream.unacked = 0

    def abort(self, code: int, message: str) -> None:
        """Connection error: GOAWAY and close."""
        self.emit(frame(GOAWAY, 0, 0, struct.pack(">LL", 0, code) + message.encode()[:200]))
        self.relay.flush()
        if self.transport is not None:
            self.transport.close()

    # ---- input -----------------------------------------------------------------------

    def _frame(self, kind: int, flags: int, sid: int, payload: bytes) -> None:
        if self._cont is not None and kind != CONTINUATION:
            raise ProtocolError(PROTOCOL_ERROR, "expected CONTINUATION")
        if kind == DATA:
            self._on_data(flags, sid, payload)
        elif kind == HEADERS:
            if flags & PADDED:
                payload = _unpad(payload)
            if flags & PRIORITY_FLAG:
                payload = payload[5:]
            if len(payload) > MAX_HEADER_BLOCK:
                raise ProtocolError(PROTOCOL_ERROR, "header block too large")
            if flags & END_HEADERS:
                self._on_block(sid, flags, payload)
            else:
                self._cont = (sid, flags, bytearray(payload))
        elif kind == CONTINUATION:
            if self._cont is None or self._cont[0] != sid:
                raise ProtocolError(PROTOCOL_ERROR, "unexpected CONTINUATION")
            block = self._cont[2]
            block += payload
            if len(block) > MAX_HEADER_BLOCK:
                raise ProtocolError(PROTOCOL_ERROR, "header block too large")
            if flags & END_HEADERS:
                _, first, _ = self._cont
                self._cont = None
                self._on_block(sid, first, bytes(block))
        elif kind == SETTINGS:
            if not flags & ACK:
                self._on_settings(payload)
                self.emit(frame(SETTINGS, ACK, 0))
        elif kind == WINDOW_UPDATE:
            self._on_window_update(sid, payload)
        elif kind == PING:
            if not flags & ACK:
                self.emit(frame(PING, ACK, 0, payload))
        elif kind == RST_STREAM:
            stream = self.streams.pop(sid, None)
            if stream is not None and not stream.closed:
                stream.closed = True
                self._blocked.discard(stream)
                code = int.from_bytes(payload[:4], "big")
                if stream.handler is not None:
                    stream.handler.on_reset(self, stream, refused=code == REFUSED_STREAM)
        elif kind == GOAWAY:
            last = int.from_bytes(payload[:4], "big") & LAST_STREAM_ID
            self.on_goaway(last)
        elif kind == PUSH_PROMISE:
            raise ProtocolError(PROTOCOL_ERROR, "push is disabled")
        # PRIORITY and unknown frame types are ignored, as the spec requires

    def _on_data(self, flags: int, sid: int, payload: bytes) -> None:
        size = len(payload)
        self.unacked += size
        if self.unacked >= CONN_WINDOW // 2:
            self.emit(frame(WINDOW_UPDATE, 0, 0, struct.pack(">L", self.unacked)))
            self.unacked = 0
        if flags & PADDED:
            pad = size - len(payload := _unpad(payload))
            stream = self.streams.get(sid)
            if stream is not None and pad:
                self.ack(stream, pad)
        stream = self.streams.get(sid)
        if stream is None or stream.closed or stream.handler is None:
            return
        stream.handler.on_data(self, stream, payload, bool(flags & END_STREAM))

    def _on_block(self, sid: int, flags: int, block: bytes) -> None:
        headers = self.decoder.decode(block)
        end = bool(flags & END_STREAM)
        stream = self.streams.get(sid)
        if stream is None:
            self.new_stream(sid, headers, end)
        elif stream.handler is not None and not stream.closed:
            stream.handler.on_headers(self, stream, headers, end)

    def new_stream(self, sid: int, headers: Headers, end: bool) -> None:
        """A peer-initiated stream (server side only)."""
        raise ProtocolError(PROTOCOL_ERROR, f"unexpected stream {sid}")

    def on_goaway(self, last: int) -> None:
        """The peer will not take streams above `last`."""
        self.usable = False

    def _on_settings(self, payload: bytes) -> None:
        for off in range(0, len(payload) - 5, 6):
            key, value = struct.unpack_from(">HL", payload, off)
            if key == S_INITIAL_WINDOW:
                if value > MAX_WINDOW:
                    raise ProtocolError(FLOW_CONTROL_ERROR, "initial window too large")
                delta, self.peer_window = value - self.peer_window, value
                for stream in self.streams.values():
                    stream.window += delta
                self._unblock()
            elif key == S_MAX_FRAME:
                self.peer_frame = value

    def _on_window_update(self, sid: int, payload: bytes) -> None:
        inc = int.from_bytes(payload[:4], "big") & LAST_STREAM_ID
        if sid == 0:
            self.window += inc
            self._unblock()
            return
        stream = self.streams.get(sid)
        if stream is not None:
            stream.window += inc
            if stream.pending:
                self._pump(stream)

    def _unblock(self) -> None:
        for stream in list(self._blocked):
            if self.window <= 0:
                return
            self._pump(stream)


_ENCODED: dict[tuple[tuple[bytes, bytes], ...], bytes] = {}


def encode_cached(headers: Headers) -> bytes:
    """`encode`, memoized: a worker's response headers and trailers repeat on every call."""
    key = tuple(headers)
    block = _ENCODED.get(key)
    if block is None:
        if len(_ENCODED) >= 4096:
            _ENCODED.clear()
        block = _ENCODED[key] = encode(headers)
    return block


def _with_value(field: tuple[bytes, bytes], value: bytes) -> tuple[bytes, bytes]:
    """`field` with another value, in the same representation (never indexed stays so)."""
    return NeverIndexed((field[0], value)) if type(field) is NeverIndexed else (field[0], value)


def _unpad(payload: bytes) -> bytes:
    if not payload or payload[0] >= len(payload):
        raise ProtocolError(PROTOCOL_ERROR, "bad padding")
    return payload[1:len(payload) - payload[0]]


class Downstream(Conn):
    """A client's connection to the head."""

    def __init__(self, relay: Relay) -> None:
        super().__init__(relay)
        self.last_sid = 0  # highest stream id the client opened

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.relay.clients.add(self)
        if not self.relay.accepting:
            self.usable = False  # GOAWAY right after our SETTINGS

    def lost(self) -> None:
        self.relay.clients.discard(self)

    def new_stream(self, sid: int, headers: Headers, end: bool) -> None:
        if sid % 2 == 0 or sid <= self.last_sid:
            raise ProtocolError(PROTOCOL_ERROR, f"bad stream id {sid}")
        self.last_sid = sid
        stream = Stream(sid, None, self.peer_window)
        if not self.usable or len(self.streams) >= MAX_STREAMS:  # after GOAWAY, or too many
            self.reset(stream, REFUSED_STREAM)
            return
        self.streams[sid] = stream
        self.relay.start(self, stream, headers, end)

    def _end_local(self, stream: Stream) -> None:
        self.forget(stream)  # our response is complete: the stream is done for us

    def on_preface(self) -> None:
        if not self.usable:  # the head began to shut down first: GOAWAY follows SETTINGS
            self.goaway()

    def plain_get(self, buf: bytearray) -> bool:
        """`GET /metrics` (Prometheus) on the head's one port; any other path is 404."""
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if len(buf) > MAX_PLAIN_REQUEST:
                raise ProtocolError(PROTOCOL_ERROR, "HTTP/1.1 request head too large")
            return True  # wait for the rest of the request head
        parts = bytes(buf[:buf.find(b"\r\n")]).split(b" ")
        del buf[:]
        path = parts[1].split(b"?", 1)[0] if len(parts) == 3 else b""
        if path == b"/metrics":
            status, kind, body = b"200 OK", CONTENT_TYPE.encode(), self.relay.hooks.metrics()
        else:
            status, kind = b"404 Not Found", b"text/plain; charset=utf-8"
            body = b"this port serves gRPC (HTTP/2) and GET /metrics\n"
        self.emit(b"HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n"
                  b"Connection: close\r\n\r\n%s" % (status, kind, len(body), body))
        self.relay.flush()
        self.open = self.usable = False
        if self.transport is not None:
            self.transport.close()
        return True

    def goaway(self) -> None:
        """Tell the client no new streams will be accepted (once its preface is in)."""
        self.usable = False
        if not self._preface:
            self.emit(frame(GOAWAY, 0, 0, struct.pack(">LL", self.last_sid, NO_ERROR)))


class Upstream(Conn):
    """The head's connection to a worker (or to its own grpcio server)."""

    client = True

    def __init__(self, relay: Relay) -> None:
        super().__init__(relay)
        self.next_sid = 1

    def open_stream(self, handler: Handler, headers: Headers, end: bool) -> Stream:
        """Start a stream carrying `headers`."""
        sid = self.next_sid
        self.next_sid += 2
        if self.next_sid >= LAST_STREAM_ID:
            self.usable = False  # ids run out: the next request opens a new connection
        stream = Stream(sid, handler, self.peer_window)
        self.streams[sid] = stream
        self._emit_headers(stream, encode_cached(headers), end)
        return stream

    def new_stream(self, sid: int, headers: Headers, end: bool) -> None:
        """HEADERS on a stream we opened and already reset or finished: the peer sent them
        before it saw our RST_STREAM, and RFC 9113 section 5.1 says to ignore them (the
        block was still decoded, so the HPACK table stays in step)."""
        if sid % 2 == 0 or sid >= self.next_sid:
            super().new_stream(sid, headers, end)

    def on_goaway(self, last: int) -> None:
        self.usable = False
        for sid in [s for s in self.streams if s > last]:
            stream = self.streams.pop(sid)
            if not stream.closed and stream.handler is not None:
                stream.closed = True
                stream.handler.on_reset(self, stream, refused=True)
        self.close_if_idle()

    def close_if_idle(self) -> None:
        """An unusable connection closes with its last stream."""
        if not self.usable and not self.streams and self.transport is not None:
            self.transport.close()

    def forget(self, stream: Stream) -> None:
        super().forget(stream)
        self.close_if_idle()


class Link:
    """A replica's upstream connection, (re)opened on demand."""

    def __init__(self, relay: Relay, address: str) -> None:
        self.relay = relay
        self.host, self.port = _split(address)
        self.conn: Upstream | None = None
        self._waiting: list[Callable[[Upstream | None], None]] = []
        self._connecting = False

    def get(self, then: Callable[[Upstream | None], None]) -> None:
        """Call `then(conn)` with a usable connection, now or once connected (None: failed)."""
        conn = self.conn
        if conn is not None and conn.usable:
            then(conn)
            return
        self._waiting.append(then)
        if not self._connecting:
            self._connecting = True
            self.relay.spawn(self._connect())

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        conn: Upstream | None = None
        try:
            _, proto = await asyncio.wait_for(
                loop.create_connection(lambda: Upstream(self.relay), self.host, self.port),
                CONNECT_TIMEOUT)
            conn = proto
        except (OSError, TimeoutError):
            conn = None
        self.conn = conn
        self._connecting = False
        waiting, self._waiting = self._waiting, []
        for then in waiting:
            then(conn if conn is not None and conn.usable else None)
        self.relay.flush_soon()

    def close(self) -> None:
        """Close once the in-flight streams are done."""
        if self.conn is not None:
            self.conn.usable = False
            self.conn.close_if_idle()


def _split(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


class HeadHooks(Protocol):
    """What the relay needs from the head server."""

    pool: Pool

    def fast_path(self, endpoint: bytes | None) -> bool: ...

    def replica_failed(self, replica: Replica) -> None: ...

    def finished(self, seconds: float, code: int) -> None:
        """A fast-path call was answered with gRPC status `code` (1: its client gave up)."""

    def metrics(self) -> bytes:
        """The Prometheus text for `GET /metrics`."""


class Call:
    """One fast-path unary call: buffered request, tried on replicas until one answers."""

    __slots__ = (
        "body",
        "data",
        "deadline",
        "done",
        "down",
        "finished",
        "headers",
        "last_error",
        "relay",
        "replica",
        "resp",
        "started",
        "stream",
        "tried",
        "up",
        "up_stream",
    )

    def __init__(self, relay: Relay, down: Downstream, stream: Stream, headers: Headers) -> None:
        self.relay = relay
        self.down = down
        self.stream = stream
        self.headers = headers
        self.started = time.monotonic()
        self.body = bytearray()
        self.deadline: float | None = None
        self.tried: set[ReplicaKey] = set()
        self.replica: Replica | None = None
        self.up: Upstream | None = None
        self.up_stream: Stream | None = None
        self.resp: Headers | None = None
        self.data: list[bytes] = []
        self.done = False
        self.finished = False
        self.last_error = ""

    # events from either connection
    def on_headers(self, conn: Conn, stream: Stream, headers: Headers, end: bool) -> None:
        if conn is self.down:  # request trailers: gRPC clients send none; finish the request
            if end:
                self.relay.dispatch(self)
            return
        if self.resp is None and not end:
            self.resp = headers
            return
        if end:
            self._complete(headers)

    def on_data(self, conn: Conn, stream: Stream, data: bytes, end: bool) -> None:
        if conn is self.down:
            conn.ack(stream, len(data))
            self.body += data
            if len(self.body) > self.relay.max_body:
                self.fail(GRPC_RESOURCE_EXHAUSTED,
                          f"received message larger than max ({len(self.body) - 5} vs. "
                          f"{self.relay.max_body - 5})", unread=not end)
                return
            if end:
                self.relay.dispatch(self)
            return
        conn.ack(stream, len(data))
        self.data.append(data)
        if end:  # a response without trailers: not gRPC; treat as the replica failing
            self._attempt_failed("response ended without trailers")

    def on_reset(self, conn: Conn, stream: Stream, refused: bool) -> None:
        if conn is self.down:  # the client cancelled or went away
            self.done = True
            self._release(None)
            if self.up is not None and self.up_stream is not None:
                self.up.reset(self.up_stream)
            self._finish(GRPC_CANCELLED)
            return
        self._attempt_failed("stream refused" if refused else "connection lost")

    # outcomes
    def _complete(self, trailers: Headers) -> None:
        assert self.up is not None and self.up_stream is not None
        self.up.forget(self.up_stream)
        status = next((v for k, v in trailers if k == b"grpc-status"), None)
        if self.resp is None and status in RETRYABLE:  # trailers-only refusal: try another
            message = next((v for k, v in trailers if k == b"grpc-message"), b"")
            self._attempt_failed(f"status {status.decode()}: {message.decode(errors='replace')}")
            return
        self._release(status == GRPC_OK)
        if self.done:
            return
        self.done = True
        self._finish(status or b"2")  # no grpc-status at all: UNKNOWN
        down, stream = self.down, self.stream
        if self.resp is None:
            down.send_headers(stream, trailers, True)
            return
        down.send_headers(stream, self.resp, False)
        for chunk in self.data:
            down.send_data(stream, chunk, False)
        down.send_headers(stream, trailers, True)

    def _attempt_failed(self, why: str) -> None:
        replica = self.replica
        if self.up is not None and self.up_stream is not None:
            self.up.forget(self.up_stream)
        self.up = self.up_stream = None
        self._release(False)
        if replica is not None:
            self.last_error = f"{replica.address}: {why}"
            self.relay.hooks.replica_failed(replica)
        self.resp = None
        self.data = []
        if not self.done:
            self.relay.dispatch(self)

    def _release(self, ok: bool | None) -> None:
        if self.replica is not None:
            self.replica.end(ok)
            self.replica = None

    def _finish(self, status: bytes) -> None:
        if not self.finished:
            self.finished = True
            self.relay.calls -= 1
            self.relay.check_idle()
            code = int(status) if status.isdigit() else 2
            self.relay.hooks.finished(time.monotonic() - self.started, code)

    def fail(self, code: bytes, message: str, unread: bool = False) -> None:
        """Answer the client with a trailers-only gRPC error.

        `unread`: the request is not over; RST_STREAM(NO_ERROR) tells the client to stop.
        """
        if self.done:
            return
        self.done = True
        self.down.send_headers(self.stream, _trailers_only(code, message), True)
        if unread:
            self.down.emit(frame(RST_STREAM, 0, self.stream.sid, struct.pack(">L", NO_ERROR)))
        self._release(False)
        self._finish(code)


def _grpc_status(code: bytes, message: str) -> Headers:
    """The status fields of gRPC trailers."""
    return [(b"grpc-status", code), (b"grpc-message", _percent(message))]


def _trailers_only(code: bytes, message: str) -> Headers:
    return [(b":status", b"200"), (b"content-type", b"application/grpc"),
            *_grpc_status(code, message)]


def _percent(text: str) -> bytes:
    """grpc-message encoding: printable ASCII except '%' as is, the rest %XX of UTF-8."""
    out = bytearray()
    for byte in text.encode():
        if 0x20 <= byte <= 0x7E and byte != 0x25:
            out.append(byte)
        else:
            out += b"%%%02X" % byte
    return bytes(out)


_UNITS = {b"H": 3600.0, b"M": 60.0, b"S": 1.0, b"m": 1e-3, b"u": 1e-6, b"n": 1e-9}


def parse_timeout(value: bytes) -> float | None:
    """grpc-timeout header value -> seconds (None if malformed)."""
    unit = _UNITS.get(value[-1:])
    if unit is None or not value[:-1].isdigit():
        return None
    return int(value[:-1]) * unit


class Pipe:
    """A stream passed through to the head's grpcio server, both ways, flow-controlled."""

    __slots__ = ("down", "down_stream", "early", "relay", "replied", "up", "up_stream",
                 "watch")

    def __init__(self, relay: Relay, down: Downstream, stream: Stream,
                 watch: bool = False) -> None:
        self.relay = relay
        self.down = down
        self.down_stream = stream
        self.up: Upstream | None = None
        self.up_stream: Stream | None = None
        self.watch = watch  # a health Watch: open-ended, it does not hold a shutdown
        self.replied = False  # response headers went to the client
        # what the client sent before the inner connection was there
        self.early: list[tuple[Headers | None, bytes, bool]] | None = []

    def connect(self, headers: Headers, end: bool, up: Upstream | None) -> None:
        """Open the inner stream (or answer UNAVAILABLE if the inner server is gone)."""
        early, self.early = self.early or [], None
        if self.down_stream.closed:
            self._closed()
            return
        if up is None:
            self.down.send_headers(self.down_stream, _trailers_only(
                GRPC_UNAVAILABLE, "the head's inner server is unreachable"), True)
            self._closed()
            return
        self.up = up
        self.up_stream = up.open_stream(self, headers, end)
        for more_headers, data, more_end in early:
            if more_headers is not None:
                self.on_headers(self.down, self.down_stream, more_headers, more_end)
            else:
                self.on_data(self.down, self.down_stream, data, more_end)

    def _other(self, conn: Conn) -> tuple[Conn | None, Stream | None]:
        if conn is self.down:
            return self.up, self.up_stream
        return self.down, self.down_stream

    def on_headers(self, conn: Conn, stream: Stream, headers: Headers, end: bool) -> None:
        if self.early is not None:
            self.early.append((headers, b"", end))
            return
        other, out = self._other(conn)
        if other is not None and out is not None and not out.closed:
            other.send_headers(out, headers, end)
            self.replied = self.replied or other is self.down
        if end:
            self._ended(conn, stream)

    def on_data(self, conn: Conn, stream: Stream, data: bytes, end: bool) -> None:
        if self.early is not None:
            self.early.append((None, data, end))
            return
        other, out = self._other(conn)
        if other is None or out is None or out.closed:
            conn.ack(stream, len(data))
            return
        other.send_data(out, data, end, lambda n: conn.ack(stream, n))
        if end:
            self._ended(conn, stream)

    def on_reset(self, conn: Conn, stream: Stream, refused: bool) -> None:
        other, out = self._other(conn)
        if other is not None and out is not None:
            if conn is self.down or out.sid not in other.streams:
                other.reset(out)
            else:  # the inner server reset: tell the client with a status it understands
                other.send_headers(out, _trailers_only(
                    GRPC_UNAVAILABLE, "head's inner server reset the stream"), True)
        self._closed()

    def _ended(self, conn: Conn, stream: Stream) -> None:
        """`conn` sent END_STREAM on `stream`: when the response side ends, all is done."""
        if conn is not self.down and isinstance(conn, Upstream):
            conn.forget(stream)
            self._closed()

    def end(self, message: str) -> None:
        """Finish the stream from the relay: UNAVAILABLE to the client, CANCEL inside."""
        if self.up is not None and self.up_stream is not None:
            self.up.reset(self.up_stream)
        if not self.down_stream.closed:
            status = _grpc_status if self.replied else _trailers_only
            self.down.send_headers(self.down_stream, status(GRPC_UNAVAILABLE, message), True)
        self._closed()

    def _closed(self) -> None:
        self.relay.pipes.discard(self)
        self.relay.check_idle()


class Relay:
    """The head's listening socket: routes each stream to a replica or to the inner server."""

    def __init__(self, hooks: HeadHooks, inner_address: str, max_message_bytes: int) -> None:
        self.hooks = hooks
        self.inner = Link(self, inner_address)
        self.max_body = max_message_bytes + 5  # gRPC's 5-byte message prefix
        self.dirty: list[Conn] = []
        self._flush_pending = False
        self.clients: set[Downstream] = set()
        self.pipes: set[Pipe] = set()
        self.calls = 0  # fast-path calls in flight
        self.accepting = True
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._idle = asyncio.Event()
        self._idle.set()

    async def listen(self, host: str, port: int) -> int:
        """Bind and serve; returns the bound port.

        Raises:
            OSError: the address cannot be bound.
        """
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: Downstream(self), host or None, port,
                                                reuse_address=True)
        bound: int = self._server.sockets[0].getsockname()[1]
        return bound

    def spawn(self, coro: Any) -> None:
        """Run a background task owned by the relay."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def flush_soon(self) -> None:
        """Flush once the event loop has run every callback that is ready now: under load,
        responses that several workers' connections deliver in one loop iteration reach a
        client's socket in one write (sends cost most of the relay's CPU)."""
        if not self._flush_pending:
            self._flush_pending = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        """Write every connection's queued output (one write per connection)."""
        self._flush_pending = False
        dirty = self.dirty
        while dirty:
            dirty.pop().write_out()

    # ---- routing ---------------------------------------------------------------------

    def start(self, down: Downstream, stream: Stream, headers: Headers, end: bool) -> None:
        """A new client stream: fast path or pipe."""
        path = endpoint = timeout = None
        for key, value in headers:
            if key == b":path":
                path = value
            elif key == b"x-endpoint":
                endpoint = value
            elif key == b"grpc-timeout":
                timeout = value
        if path == b"/orchestrator.v1.Executor/Call" and self.hooks.fast_path(endpoint):
            call = Call(self, down, stream, headers)
            stream.handler = call
            if timeout is not None and (seconds := parse_timeout(timeout)) is not None:
                call.deadline = time.monotonic() + seconds
            self.calls += 1
            self._idle.clear()
            if end:
                self.dispatch(call)
            return
        pipe = Pipe(self, down, stream, watch=path == WATCH_PATH)
        stream.handler = pipe
        self.pipes.add(pipe)
        self._idle.clear()
        self.inner.get(lambda up: pipe.connect(headers, end, up))

    def dispatch(self, call: Call) -> None:
        """Send a complete request to the least-loaded READY replica not tried yet."""
        if call.done:
            return
        if call.deadline is not None and time.monotonic() >= call.deadline:
            call.fail(b"4", "deadline exceeded in the head")
            return
        replica = self.hooks.pool.pick_any(call.tried)
        if replica is None:
            cause = f" (last error: {call.last_error})" if call.last_error else ""
            call.fail(GRPC_UNAVAILABLE, f"no live replica of any shard could serve{cause}")
            return
        call.tried.add(replica.key)
        replica.begin()
        call.replica = replica
        link: Link | None = replica.link
        if link is None:
            link = replica.link = Link(self, replica.address)
        link.get(lambda up: self._send(call, replica, up))

    def _send(self, call: Call, replica: Replica, up: Upstream | None) -> None:
        if call.done or call.replica is not replica:
            return
        if up is None:
            call._attempt_failed("cannot connect")
            return
        headers = call.headers
        if call.deadline is not None:  # retries get what is left of the client's deadline
            left = max(1, int((call.deadline - time.monotonic()) * 1e6))
            headers = [f if f[0] != b"grpc-timeout" else _with_value(f, b"%du" % left)
                       for f in headers]
        call.up = up
        call.up_stream = stream = up.open_stream(call, headers, False)
        up.send_data(stream, bytes(call.body), True)

    def connect(self, replica: Replica) -> None:
        """Open the connection to a new replica now, so its first request does not wait."""
        if replica.link is None:
            replica.link = Link(self, replica.address)
        replica.link.get(lambda _up: None)

    def forget(self, replica: Replica) -> None:
        """A replica left the pool: close its connection once its streams are done."""
        if replica.link is not None:
            replica.link.close()

    def check_idle(self) -> None:
        """Wake a graceful shutdown once nothing is in flight (a health Watch never ends
        by itself, so it does not count)."""
        if self.calls == 0 and all(pipe.watch for pipe in self.pipes):
            self._idle.set()

    # ---- shutdown --------------------------------------------------------------------

    async def shutdown(self, grace: float | None) -> None:
        """Refuse new streams (GOAWAY), let in-flight ones finish within `grace`, close."""
        self.accepting = False
        if self._server is not None:
            self._server.close()
        for client in list(self.clients):
            client.goaway()
        self.flush()
        self.check_idle()
        if grace is not None:  # None: stop now, like grpcio's stop(None)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), grace)
        for pipe in [p for p in self.pipes if p.watch]:  # watchers learn the head is going
            pipe.end("the head is shutting down")
        self.flush()
        for client in list(self.clients):
            if client.transport is not None:
                client.transport.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def close_upstreams(self, replicas: list[Replica]) -> None:
        """Close every upstream connection now."""
        for replica in replicas:
            link: Link | None = replica.link
            if link is not None and link.conn is not None and link.conn.transport is not None:
                link.conn.transport.close()
        if self.inner.conn is not None and self.inner.conn.transport is not None:
            self.inner.conn.transport.close()

