"""The HTTP/2 connection state machine, sans I/O: `receive(bytes)` in, handler calls out,
`data_to_send()` read back.

Events go to the handler of each stream (`Handler`: headers, data, reset) and to hooks a
subclass overrides (`new_stream`, `on_goaway`, `on_preface`, `plain_request`, `lost`), rather
than into a list of event objects: the relay's fast path pays for every allocation per
frame, and a unit test or fuzzer gets the same events with a recording handler.

I/O stays outside: a transport calls `initiate` once connected, feeds `receive`, writes
what `data_to_send` returns when `output_ready` says there is some (and reports what it
could not write yet with `set_backlog`), calls `tick(now)` every `limits.tick` seconds and
`terminated` at the end, and implements `close` (end the connection once what was
queued is written; `hard`: drop it now).

Enforced here, as each frame arrives (RFC 9113): frame sizes per type, stream states (idle,
open, half-closed), flow control both ways, SETTINGS values, the first frame being
SETTINGS, header blocks (size, CONTINUATION count, decoded size while decoding) and the
flood budgets and timeouts of `Limits`. A broken rule ends the connection with GOAWAY and
the error code the RFC names (a stream error is treated as a connection error, which RFC
9113 section 5.4 allows); a limit crossed ends it with ENHANCE_YOUR_CALM.
"""

from __future__ import annotations

import struct
import time
from collections import deque
from collections.abc import Callable
from functools import cache
from typing import Protocol

from orchestrator.runtime.h2.frames import (
    ACK,
    CANCEL,
    COMPRESSION_ERROR,
    CONTINUATION,
    DATA,
    DEFAULT_MAX_FRAME,
    DEFAULT_WINDOW,
    END_HEADERS,
    END_STREAM,
    ENHANCE_YOUR_CALM,
    FLOW_CONTROL_ERROR,
    FRAME_SIZE_ERROR,
    GOAWAY,
    HEAD,
    HEADERS,
    LAST_STREAM_ID,
    MAX_WINDOW,
    NO_ERROR,
    PADDED,
    PING,
    PREFACE,
    PRIORITY,
    PRIORITY_FLAG,
    PROTOCOL_ERROR,
    PUSH_PROMISE,
    REFUSED_STREAM,
    RST_STREAM,
    S_ENABLE_PUSH,
    S_HEADER_TABLE_SIZE,
    S_INITIAL_WINDOW,
    S_MAX_CONCURRENT,
    S_MAX_FRAME,
    S_MAX_HEADER_LIST,
    SETTINGS,
    SETTINGS_TIMEOUT,
    STREAM_CLOSED,
    WINDOW_UPDATE,
    ProtocolError,
    frame,
    goaway,
    rst_stream,
    settings_frame,
    unpad,
    window_update,
)
from orchestrator.runtime.h2.limits import Budget, Limits, check_setting
from orchestrator.runtime.hpack import Decoder, HeaderListTooLarge, HpackError, encode_cached
from orchestrator.runtime.http1 import looks_like_http1

Headers = list[tuple[bytes, bytes]]
DEFAULT_LIMITS = Limits()


class Handler(Protocol):
    """What a stream's events go to (in the relay: a relayed call or a pipe)."""

    def on_headers(self, conn: Connection, stream: Stream, headers: Headers,
                   end: bool) -> None: ...

    def on_data(self, conn: Connection, stream: Stream, data: bytes, end: bool) -> None: ...

    def on_reset(self, conn: Connection, stream: Stream, refused: bool) -> None: ...


class Stream:
    """One HTTP/2 stream on one connection: windows both ways and queued output."""

    __slots__ = ("closed", "ended", "handler", "held", "last", "pending", "recv_window",
                 "sid", "trailers", "unacked", "window")

    def __init__(self, sid: int, handler: Handler | None, window: int, recv_window: int,
                 now: float = 0.0) -> None:
        self.sid = sid
        self.handler = handler
        self.window = window            # what we may still send
        self.recv_window = recv_window  # what the peer may still send
        self.pending: deque[tuple[memoryview, bool, Callable[[int], None] | None]] = deque()
        self.held = 0                   # bytes of `pending`
        self.trailers: bytes | None = None
        self.unacked = 0
        self.closed = False
        self.ended = False              # the peer sent END_STREAM
        self.last = now                 # when the peer last sent on it


class Buffers:
    """Bytes held by every connection sharing this object, against one limit."""

    __slots__ = ("limit", "total")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.total = 0


@cache
def server_hello(limits: Limits) -> bytes:
    """Our SETTINGS as a server, and the connection window raised to ours."""
    pairs = [(S_MAX_CONCURRENT, limits.max_concurrent_streams),
             (S_INITIAL_WINDOW, limits.initial_window), (S_MAX_FRAME, limits.max_frame_size),
             (S_MAX_HEADER_LIST, limits.max_header_list_size)]
    if limits.header_table_size != 4096:
        pairs.insert(0, (S_HEADER_TABLE_SIZE, limits.header_table_size))
    return settings_frame(*pairs) + _boost(limits)


@cache
def client_hello(limits: Limits) -> bytes:
    """The preface, our SETTINGS as a client, and the connection window raised to ours."""
    pairs = [(S_ENABLE_PUSH, 0), (S_INITIAL_WINDOW, limits.initial_window),
             (S_MAX_FRAME, limits.max_frame_size),
             (S_MAX_HEADER_LIST, limits.max_header_list_size)]
    if limits.header_table_size != 4096:
        pairs.insert(0, (S_HEADER_TABLE_SIZE, limits.header_table_size))
    return PREFACE + settings_frame(*pairs) + _boost(limits)


def _boost(limits: Limits) -> bytes:
    extra = limits.connection_window - DEFAULT_WINDOW
    return window_update(0, extra) if extra > 0 else b""


class Connection:
    """One HTTP/2 connection (either side): frames in, queued bytes out.

    Args:
        limits: what the peer may do (see `Limits`).
        shared: the byte budget shared with other connections (`limits.max_buffered_total`
            when omitted: a budget of its own).
        clock: seconds, monotonic (injected so tests control time).
    """

    client = False

    def __init__(self, limits: Limits = DEFAULT_LIMITS, shared: Buffers | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits
        self.shared = shared if shared is not None else Buffers(limits.max_buffered_total)
        self.clock = clock
        self.now = clock()               # refreshed once per `receive`, not per frame
        self.streams: dict[int, Stream] = {}
        self.decoder = Decoder(limits.header_table_size, limits.max_header_list_size)
        self.window = DEFAULT_WINDOW     # our send window on the connection
        self.peer_window = DEFAULT_WINDOW  # peer's initial stream window
        self.peer_frame = DEFAULT_MAX_FRAME  # peer's max frame size
        self.recv_window = limits.connection_window  # what the peer may still send
        self.unacked = 0
        self.open = True                 # not closed nor lost
        self.usable = True               # may start new streams
        self.last_sid = 0                # highest stream id the peer opened
        self.held = 0                    # bytes held for this connection (see `hold`)
        self.backlog = 0                 # bytes the transport could not write yet
        self.error: tuple[int, str] | None = None  # the GOAWAY we ended with
        self._buf = bytearray()
        self._out: list[bytes] = []
        self._dirty = False
        self._blocked: set[Stream] = set()
        self._stalled: float | None = None  # since when output waits for a window
        self._preface = not self.client
        self._plain = False              # an HTTP/1.1 client (see `plain_request`)
        self._settings_seen = False
        self._resize = False             # the peer set its HPACK table size: tell it ours
        self._cont: tuple[int, int, bytearray, int] | None = None
        self._born = self.now
        self._idle_since = self.now
        self._resets = Budget(limits.max_resets, limits.flood_window)
        self._pings = Budget(limits.max_pings, limits.flood_window)
        self._settings = Budget(limits.max_settings, limits.flood_window)
        self._empty = Budget(limits.max_empty_frames, limits.flood_window)

    # ---- transport-facing ------------------------------------------------------------

    def initiate(self) -> None:
        """The transport is up: a client sends its preface and SETTINGS now (a server
        waits for the client's preface, see `receive`)."""
        if self.client:
            self.emit(client_hello(self.limits))

    def receive(self, data: bytes) -> None:
        """Bytes from the peer: handle every complete frame (a broken rule ends the
        connection: GOAWAY queued, `close` called)."""
        if not self.open:
            return
        buf = self._buf
        buf += data
        self.now = self.clock()
        try:
            if self._preface and not self._read_preface(buf):
                return
            self._frames(buf)
        except ProtocolError as exc:
            self.abort(exc.code, str(exc))
        except HeaderListTooLarge as exc:
            self.abort(ENHANCE_YOUR_CALM, str(exc))
        except HpackError as exc:
            self.abort(COMPRESSION_ERROR, str(exc))

    def _read_preface(self, buf: bytearray) -> bool:
        if self._plain or looks_like_http1(buf):
            self._plain = self.plain_request(buf)
            if self._plain:
                return False
            raise ProtocolError(PROTOCOL_ERROR, "not an HTTP/2 client")
        if len(buf) < len(PREFACE):
            if not PREFACE.startswith(bytes(buf)) and looks_like_http1(buf) is not None:
                raise ProtocolError(PROTOCOL_ERROR, "not an HTTP/2 client")
            return False
        if buf[:len(PREFACE)] != PREFACE:
            raise ProtocolError(PROTOCOL_ERROR, "not an HTTP/2 client")
        del buf[:len(PREFACE)]
        self._preface = False
        # Our SETTINGS only now: an HTTP/1.1 client (GET /metrics, ...) must not get a binary
        # frame before its response.
        self.emit(server_hello(self.limits))
        self.on_preface()
        return True

    def _frames(self, buf: bytearray) -> None:
        i, n = 0, len(buf)
        view = memoryview(buf)
        limit = self.limits.max_frame_size
        try:
            while n - i >= 9 and self.open:
                hi, lo, kind, flags, sid = HEAD.unpack_from(buf, i)
                length = hi << 8 | lo
                if length > limit:
                    raise ProtocolError(FRAME_SIZE_ERROR, f"frame of {length} bytes")
                if n - i < 9 + length:
                    break
                payload = bytes(view[i + 9:i + 9 + length])
                i += 9 + length
                self._frame(kind, flags, sid & LAST_STREAM_ID, payload)
        finally:
            view.release()
            del buf[:i]

    def terminated(self) -> None:
        """The transport is gone: every open stream is reset (its handler told), and what
        the connection held is released."""
        self.open = self.usable = False
        streams, self.streams = self.streams, {}
        for stream in streams.values():
            if stream.held:
                self.release(stream.held)
                stream.held = 0
            stream.pending.clear()
            if stream.handler is not None and not stream.closed:
                stream.closed = True
                stream.handler.on_reset(self, stream, refused=False)
        self._blocked.clear()
        self._stalled = None
        self.set_backlog(0)
        self.lost()

    def tick(self, now: float) -> None:
        """Check the timeouts (the transport calls this every `limits.tick` seconds)."""
        if not self.open:
            return
        limits = self.limits
        if not self._settings_seen:
            if now - self._born >= limits.handshake_timeout:
                if self._preface:  # not even the preface: maybe not HTTP/2, say nothing
                    self.close(hard=True)
                else:
                    self.abort(SETTINGS_TIMEOUT, "handshake not finished in time")
            return
        if self._stalled is not None and now - self._stalled >= limits.stall_timeout:
            self.abort(ENHANCE_YOUR_CALM, "flow-control window closed for too long")
            return
        if self.streams:
            self._idle_since = now
            if not self.client:
                self._reap_silent(now)
        elif now - self._idle_since >= limits.idle_timeout:
            self.usable = False
            self.emit(goaway(self.last_sid, NO_ERROR, b"idle"))
            self.close()

    def _reap_silent(self, now: float) -> None:
        """Requests that stopped arriving half-way for `idle_timeout` are cancelled."""
        timeout = self.limits.idle_timeout
        for stream in [s for s in self.streams.values()
                       if not s.ended and now - s.last >= timeout]:
            handler = stream.handler
            self.reset(stream, CANCEL)
            if handler is not None:
                handler.on_reset(self, stream, refused=False)

    # ---- hooks -----------------------------------------------------------------------

    def output_ready(self) -> None:
        """Hook: bytes were queued after `data_to_send` last emptied the queue."""

    def close(self, hard: bool = False) -> None:
        """Hook (the transport's part): end the connection once what is queued is written
        (`hard`: now, dropping it). This base marks the connection closed."""
        self.open = self.usable = False

    def lost(self) -> None:
        """Hook: the connection is gone."""

    def on_preface(self) -> None:
        """Hook (server side): the client's preface arrived and our SETTINGS are queued."""

    def plain_request(self, buf: bytearray) -> bool:
        """Hook: an HTTP/1.x request where the HTTP/2 preface should be. True: this
        connection speaks HTTP/1.1 from now on, and every later byte comes here too
        (`buf` holds what is not consumed yet). False: not served (the connection ends)."""
        return False

    def new_stream(self, sid: int, headers: Headers, end: bool) -> None:
        """Hook: a peer-initiated stream (server side only)."""
        raise ProtocolError(PROTOCOL_ERROR, f"unexpected stream {sid}")

    def on_goaway(self, last: int) -> None:
        """Hook: the peer will not take streams above `last`."""
        self.usable = False

    def idle_stream(self, sid: int) -> bool:
        """Is `sid` a stream that was never opened (by either side)?"""
        return sid % 2 == 0 or sid > self.last_sid

    # ---- output ----------------------------------------------------------------------

    def emit(self, data: bytes) -> None:
        """Queue bytes to send."""
        self._out.append(data)
        if not self._dirty:
            self._dirty = True
            self.output_ready()

    def data_to_send(self) -> bytes:
        """Everything queued since the last call (and empty the queue)."""
        self._dirty = False
        out, self._out = self._out, []
        return out[0] if len(out) == 1 else b"".join(out)

    def send_headers(self, stream: Stream, headers: Headers, end: bool) -> None:
        """HEADERS (+CONTINUATION); after any queued DATA when they are trailers."""
        block = encode_cached(headers)
        if stream.pending:
            stream.trailers = block
            return
        self._emit_headers(stream, block, end)

    def _emit_headers(self, stream: Stream, block: bytes, end: bool) -> None:
        if self._resize:  # RFC 7541 section 4.2: the first block after the change says
            self._resize = False  # our table size; 0 fits any limit (we never index)
            block = b"\x20" + block
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
        """DATA within the peer's windows; the rest waits for WINDOW_UPDATE (held against
        `limits.max_buffered`: a reader that lets too much pile up is dropped).

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
        stream.held += n
        if not self.hold(n):
            self.abort(ENHANCE_YOUR_CALM, "too much output waiting for a slow reader")
            return
        self._pump(stream)

    def _pump(self, stream: Stream) -> None:
        while stream.pending:
            view, end, sent = stream.pending[0]
            # (a window can be negative after a SETTINGS change: an empty frame still goes)
            size = max(0, min(len(view), stream.window, self.window, self.peer_frame))
            if size == 0 and len(view):
                if not self._blocked:
                    self._stalled = self.clock()
                self._blocked.add(stream)
                return
            last = size == len(view)
            stream.window -= size
            self.window -= size
            stream.held -= size
            self.release(size)
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
        self._unstall(stream)
        if stream.trailers is not None:
            block, stream.trailers = stream.trailers, None
            self._emit_headers(stream, block, True)

    def _unstall(self, stream: Stream) -> None:
        blocked = self._blocked
        if stream in blocked:
            blocked.discard(stream)
            self._stalled = self.clock() if blocked else None

    def _end_local(self, stream: Stream) -> None:
        """Hook: we sent END_STREAM on `stream`."""

    def reset(self, stream: Stream, code: int = CANCEL) -> None:
        """RST_STREAM and forget the stream (no handler callback)."""
        if not stream.closed:
            stream.closed = True
            self.emit(rst_stream(stream.sid, code))
        self.forget(stream)

    def forget(self, stream: Stream) -> None:
        """Drop a finished stream (and what it still held)."""
        stream.closed = True
        self.streams.pop(stream.sid, None)
        if stream.pending:
            self._unstall(stream)
            stream.pending.clear()
        if stream.held:
            self.release(stream.held)
            stream.held = 0

    def ack(self, stream: Stream | None, n: int) -> None:
        """Give the peer back `n` bytes of receive window on the stream."""
        if stream is not None and not stream.closed:
            stream.unacked += n
            if stream.unacked >= self.limits.initial_window // 2:
                self.emit(window_update(stream.sid, stream.unacked))
                stream.recv_window += stream.unacked
                stream.unacked = 0

    def abort(self, code: int, message: str) -> None:
        """Connection error: GOAWAY(code) and close."""
        if not self.open:
            return
        self.error = (code, message)
        self.usable = False
        self.emit(goaway(self.last_sid, code, message.encode()[:200]))
        self.close()

    # ---- buffers ---------------------------------------------------------------------

    def hold(self, n: int) -> bool:
        """Count `n` more bytes held for this connection; False when this connection's
        (`limits.max_buffered`) or every connection's (`shared.limit`) budget is over."""
        self.held += n
        shared = self.shared
        shared.total += n
        return self.held <= self.limits.max_buffered and shared.total <= shared.limit

    def release(self, n: int) -> None:
        """`n` bytes counted by `hold` are gone."""
        self.held -= n
        self.shared.total -= n

    def set_backlog(self, n: int) -> None:
        """The transport has `n` bytes it could not write yet: they count as held; a peer
        that does not read while they pile up past the budget is dropped."""
        delta, self.backlog = n - self.backlog, n
        if delta <= 0:
            self.release(-delta)
        elif not self.hold(delta) and self.open:
            self.error = (ENHANCE_YOUR_CALM, "the peer does not read what it asked for")
            self.close(hard=True)

    # ---- input -----------------------------------------------------------------------

    def _frame(self, kind: int, flags: int, sid: int, payload: bytes) -> None:
        if self._cont is not None and kind != CONTINUATION:
            raise ProtocolError(PROTOCOL_ERROR, "expected CONTINUATION")
        if not self._settings_seen:
            if kind != SETTINGS or flags & ACK:
                raise ProtocolError(PROTOCOL_ERROR, "the first frame must be SETTINGS")
            self._settings_seen = True
        if kind == DATA:
            self._on_data(flags, sid, payload)
        elif kind == HEADERS:
            self._on_headers(flags, sid, payload)
        elif kind == CONTINUATION:
            self._on_continuation(flags, sid, payload)
        elif kind == SETTINGS:
            self._on_settings(flags, sid, payload)
        elif kind == WINDOW_UPDATE:
            self._on_window_update(sid, payload)
        elif kind == PING:
            self._on_ping(flags, sid, payload)
        elif kind == RST_STREAM:
            self._on_rst(sid, payload)
        elif kind == GOAWAY:
            if sid:
                raise ProtocolError(PROTOCOL_ERROR, "GOAWAY on a stream")
            if len(payload) < 8:
                raise ProtocolError(FRAME_SIZE_ERROR, "GOAWAY shorter than 8 bytes")
            self.on_goaway(int.from_bytes(payload[:4], "big") & LAST_STREAM_ID)
        elif kind == PUSH_PROMISE:
            raise ProtocolError(PROTOCOL_ERROR, "push is disabled")
        elif kind == PRIORITY:
            if not sid:
                raise ProtocolError(PROTOCOL_ERROR, "PRIORITY on stream 0")
            if len(payload) != 5:
                raise ProtocolError(FRAME_SIZE_ERROR, "PRIORITY not 5 bytes")
            self._useless()
        else:  # unknown frame types are ignored, as the spec requires (and counted)
            self._useless()

    def _useless(self) -> None:
        """A frame that costs us work and does nothing: counted against max_empty_frames.
        (Flood budgets bind clients; a worker's connection is ours, and grpcio's BDP pings
        can be frequent under load.)"""
        if not self.client and not self._empty.spend(self.now):
            raise ProtocolError(ENHANCE_YOUR_CALM, "too many empty or useless frames")

    def _on_data(self, flags: int, sid: int, payload: bytes) -> None:
        if not sid:
            raise ProtocolError(PROTOCOL_ERROR, "DATA on stream 0")
        size = len(payload)
        self.recv_window -= size
        if self.recv_window < 0:
            raise ProtocolError(FLOW_CONTROL_ERROR, "DATA beyond the connection window")
        self.unacked += size
        if self.unacked >= self.limits.connection_window // 2:
            self.emit(window_update(0, self.unacked))
            self.recv_window += self.unacked
            self.unacked = 0
        stream = self.streams.get(sid)
        if stream is None:
            if self.idle_stream(sid):
                raise ProtocolError(PROTOCOL_ERROR, f"DATA on idle stream {sid}")
            self._useless()  # a stream we reset or finished: in flight, or a flood
            return
        if stream.ended:
            raise ProtocolError(STREAM_CLOSED, f"DATA after END_STREAM on stream {sid}")
        stream.recv_window -= size
        if stream.recv_window < 0:
            raise ProtocolError(FLOW_CONTROL_ERROR, f"DATA beyond the window of stream {sid}")
        if flags & PADDED:
            pad = size - len(payload := unpad(payload))
            if pad:
                self.ack(stream, pad)
        end = bool(flags & END_STREAM)
        if not payload and not end:
            self._useless()
        stream.last = self.now
        if end:
            stream.ended = True
        if stream.closed or stream.handler is None:
            return
        stream.handler.on_data(self, stream, payload, end)

    def _on_headers(self, flags: int, sid: int, payload: bytes) -> None:
        if not sid:
            raise ProtocolError(PROTOCOL_ERROR, "HEADERS on stream 0")
        if flags & PADDED:
            payload = unpad(payload)
        if flags & PRIORITY_FLAG:
            if len(payload) < 5:
                raise ProtocolError(FRAME_SIZE_ERROR, "HEADERS too short for its priority")
            if int.from_bytes(payload[:4], "big") & LAST_STREAM_ID == sid:
                raise ProtocolError(PROTOCOL_ERROR, f"stream {sid} depends on itself")
            payload = payload[5:]
        if len(payload) > self.limits.max_header_block:
            raise ProtocolError(ENHANCE_YOUR_CALM, "header block too large")
        if flags & END_HEADERS:
            self._on_block(sid, flags, payload)
        else:
            if not payload:
                self._useless()
            self._cont = (sid, flags, bytearray(payload), 0)

    def _on_continuation(self, flags: int, sid: int, payload: bytes) -> None:
        cont = self._cont
        if cont is None or cont[0] != sid:
            raise ProtocolError(PROTOCOL_ERROR, "unexpected CONTINUATION")
        _, first, block, count = cont
        block += payload
        if len(block) > self.limits.max_header_block:
            raise ProtocolError(ENHANCE_YOUR_CALM, "header block too large")
        if count >= self.limits.max_continuations:
            raise ProtocolError(ENHANCE_YOUR_CALM, "too many CONTINUATION frames")
        if flags & END_HEADERS:
            self._cont = None
            self._on_block(sid, first, bytes(block))
            return
        if not payload:
            self._useless()
        self._cont = (sid, first, block, count + 1)

    def _on_block(self, sid: int, flags: int, block: bytes) -> None:
        headers = self.decoder.decode(block)
        end = bool(flags & END_STREAM)
        stream = self.streams.get(sid)
        if stream is None:
            self.new_stream(sid, headers, end)
            return
        if stream.ended:
            raise ProtocolError(STREAM_CLOSED, f"HEADERS after END_STREAM on stream {sid}")
        if not self.client and not end:
            raise ProtocolError(PROTOCOL_ERROR, f"trailers without END_STREAM on stream {sid}")
        stream.last = self.now
        if end:
            stream.ended = True
        if stream.handler is not None and not stream.closed:
            stream.handler.on_headers(self, stream, headers, end)

    def _on_settings(self, flags: int, sid: int, payload: bytes) -> None:
        if sid:
            raise ProtocolError(PROTOCOL_ERROR, "SETTINGS on a stream")
        if flags & ACK:
            if payload:
                raise ProtocolError(FRAME_SIZE_ERROR, "SETTINGS ACK with a payload")
            return
        if len(payload) % 6:
            raise ProtocolError(FRAME_SIZE_ERROR, "SETTINGS not a multiple of 6 bytes")
        if not self.client and not self._settings.spend(self.now):
            raise ProtocolError(ENHANCE_YOUR_CALM, "too many SETTINGS frames")
        window_changed = False
        for off in range(0, len(payload), 6):
            key, value = struct.unpack_from(">HL", payload, off)
            check_setting(key, value, client=self.client)
            if key == S_INITIAL_WINDOW:
                delta, self.peer_window = value - self.peer_window, value
                for stream in self.streams.values():
                    stream.window += delta
                    if stream.window > MAX_WINDOW:
                        raise ProtocolError(FLOW_CONTROL_ERROR, "a stream window overflowed")
                window_changed = True
            elif key == S_MAX_FRAME:
                self.peer_frame = value
            elif key == S_HEADER_TABLE_SIZE:
                self._resize = True
        # The ACK goes before any DATA the new windows let out: a peer (python-hyper's h2)
        # applies its own SETTINGS only when the ACK arrives, and would count such DATA
        # against the old, smaller window (found by test_fuzz_h2).
        self.emit(frame(SETTINGS, ACK, 0))
        if window_changed:
            self._unblock()

    def _on_ping(self, flags: int, sid: int, payload: bytes) -> None:
        if sid:
            raise ProtocolError(PROTOCOL_ERROR, "PING on a stream")
        if len(payload) != 8:
            raise ProtocolError(FRAME_SIZE_ERROR, "PING not 8 bytes")
        if flags & ACK:
            return
        if not self.client and not self._pings.spend(self.now):
            raise ProtocolError(ENHANCE_YOUR_CALM, "too many PINGs")
        self.emit(frame(PING, ACK, 0, payload))

    def _on_rst(self, sid: int, payload: bytes) -> None:
        if not sid:
            raise ProtocolError(PROTOCOL_ERROR, "RST_STREAM on stream 0")
        if len(payload) != 4:
            raise ProtocolError(FRAME_SIZE_ERROR, "RST_STREAM not 4 bytes")
        if self.idle_stream(sid):
            raise ProtocolError(PROTOCOL_ERROR, f"RST_STREAM on idle stream {sid}")
        if not self.client and not self._resets.spend(self.now):
            raise ProtocolError(ENHANCE_YOUR_CALM, "too many stream resets")
        stream = self.streams.pop(sid, None)
        if stream is not None and not stream.closed:
            stream.closed = True
            self.forget(stream)
            code = int.from_bytes(payload[:4], "big")
            if stream.handler is not None:
                stream.handler.on_reset(self, stream, refused=code == REFUSED_STREAM)

    def refused(self) -> None:
        """We refused a stream: counted with the peer's resets (a rapid-reset variant).

        Raises:
            ProtocolError: ENHANCE_YOUR_CALM, past `limits.max_resets` per window.
        """
        if not self._resets.spend(self.now):
            raise ProtocolError(ENHANCE_YOUR_CALM, "too many refused streams")

    def _on_window_update(self, sid: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise ProtocolError(FRAME_SIZE_ERROR, "WINDOW_UPDATE not 4 bytes")
        inc = int.from_bytes(payload, "big") & LAST_STREAM_ID
        if not inc:
            raise ProtocolError(PROTOCOL_ERROR, "WINDOW_UPDATE of 0")
        if sid == 0:
            self.window += inc
            if self.window > MAX_WINDOW:
                raise ProtocolError(FLOW_CONTROL_ERROR, "connection window overflowed")
            self._unblock()
            return
        stream = self.streams.get(sid)
        if stream is None:
            if self.idle_stream(sid):
                raise ProtocolError(PROTOCOL_ERROR, f"WINDOW_UPDATE on idle stream {sid}")
            return
        stream.window += inc
        if stream.window > MAX_WINDOW:
            raise ProtocolError(FLOW_CONTROL_ERROR, f"window of stream {sid} overflowed")
        if stream.pending:
            self._pump(stream)

    def _unblock(self) -> None:
        for stream in list(self._blocked):
            if self.window <= 0:
                return
            self._pump(stream)


class ServerConnection(Connection):
    """The server side: takes streams the client opens, up to `max_concurrent_streams`."""

    def new_stream(self, sid: int, headers: Headers, end: bool) -> None:
        if sid % 2 == 0:
            raise ProtocolError(PROTOCOL_ERROR, f"client stream id {sid} is even")
        if sid <= self.last_sid:
            # A stream we reset or finished: trailers in flight, as the RFC allows, or a
            # flood of them (the block was decoded, so the HPACK table stays in step).
            self._useless()
            return
        self.last_sid = sid
        stream = Stream(sid, None, self.peer_window, self.limits.initial_window, self.now)
        stream.ended = end
        if not self.usable or len(self.streams) >= self.limits.max_concurrent_streams:
            self.reset(stream, REFUSED_STREAM)  # after GOAWAY, or too many
            self.refused()
            return
        self.streams[sid] = stream
        self.start(stream, headers, end)

    def start(self, stream: Stream, headers: Headers, end: bool) -> None:
        """Hook: a new stream, in the table; set its handler. This base resets it."""
        self.reset(stream, REFUSED_STREAM)

    def _end_local(self, stream: Stream) -> None:
        self.forget(stream)  # our response is complete: the stream is done for us

    def on_goaway(self, last: int) -> None:
        """The client is going away: it opens no more streams (and we push none), so
        nothing changes here; what it still sends is served (found by test_fuzz_h2: a
        client's GOAWAY used to make us refuse its next streams)."""

    def goaway(self) -> None:
        """Tell the client no new streams will be accepted (once its preface is in)."""
        self.usable = False
        if not self._preface:
            self.emit(goaway(self.last_sid, NO_ERROR))


class ClientConnection(Connection):
    """The client side: opens streams (odd ids); push is refused."""

    client = True

    def __init__(self, limits: Limits = DEFAULT_LIMITS, shared: Buffers | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(limits, shared, clock)
        self.next_sid = 1

    def idle_stream(self, sid: int) -> bool:
        return sid % 2 == 0 or sid >= self.next_sid

    def open_stream(self, handler: Handler, headers: Headers, end: bool) -> Stream:
        """Start a stream carrying `headers`."""
        sid = self.next_sid
        self.next_sid += 2
        if self.next_sid >= LAST_STREAM_ID:
            self.usable = False  # ids run out: the next request opens a new connection
        stream = Stream(sid, handler, self.peer_window, self.limits.initial_window, self.now)
        self.streams[sid] = stream
        self._emit_headers(stream, encode_cached(headers), end)
        return stream

    def new_stream(self, sid: int, headers: Headers, end: bool) -> None:
        """HEADERS on a stream we opened and already reset or finished: the peer sent them
        before it saw our RST_STREAM, and RFC 9113 section 5.1 says to ignore them (the
        block was still decoded, so the HPACK table stays in step)."""
        if self.idle_stream(sid):
            super().new_stream(sid, headers, end)

    def on_goaway(self, last: int) -> None:
        self.usable = False
        for sid in [s for s in self.streams if s > last]:
            stream = self.streams.pop(sid)
            if not stream.closed and stream.handler is not None:
                stream.closed = True
                self.forget(stream)
                stream.handler.on_reset(self, stream, refused=True)
        self.close_if_idle()

    def close_if_idle(self) -> None:
        """An unusable connection closes with its last stream."""
        if not self.usable and not self.streams and self.open:
            self.close()

    def forget(self, stream: Stream) -> None:
        super().forget(stream)
        self.close_if_idle()
