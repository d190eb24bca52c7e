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
  With `timeout_send`, an attempt that gets no answer in time is cancelled and the request
  goes to another replica too (DEADLINE_EXCEEDED once none is left).
* everything else (Health, Control, Stream, ALL polling, uses_before/uses_after) is piped
  frame by frame, flow-controlled, to the head's own grpcio server on a loopback port,
  which keeps the full semantics.

A client whose first bytes are HTTP/1.x, and a plain (non-gRPC) request on an HTTP/2
stream, go to front.py: GET /metrics, and Jina's HTTP interface when the head serves it,
whose data requests come back here as internal gRPC calls routed like any other.

The HTTP/2 protocol itself (frames, stream states, flow control, the limits a peer could
abuse) is the sans-I/O connection layer in `h2/`; this module is the gRPC routing on top
(fast path with retries, pipe, per-replica links) and the thin asyncio transport under it.

Header blocks are decoded (HPACK state is per connection) and re-encoded statelessly for
the other side. Flow control: inbound DATA of the fast path is acknowledged on receipt
(bounded by the message-size limit, and held against the connection's and the relay's
byte budgets, see h2/limits.py); piped DATA is acknowledged when it has been sent on, so a
slow reader backs up to its writer as with any HTTP/2 proxy.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import Callable
from typing import Any, Protocol

from orchestrator.runtime.front import H2Request, Session
from orchestrator.runtime.h2.connection import (
    Buffers,
    ClientConnection,
    Connection,
    Headers,
    ServerConnection,
    Stream,
)
from orchestrator.runtime.h2.frames import NO_ERROR, rst_stream
from orchestrator.runtime.h2.limits import Limits
from orchestrator.runtime.hpack import NeverIndexed
from orchestrator.runtime.pool import Pool, Replica, ReplicaKey

WATCH_PATH = b"/grpc.health.v1.Health/Watch"
CONNECT_TIMEOUT = 3.0
# gRPC codes
GRPC_OK, GRPC_CANCELLED, GRPC_RESOURCE_EXHAUSTED, GRPC_UNAVAILABLE = b"0", b"1", b"8", b"14"
GRPC_DEADLINE_EXCEEDED = b"4"
RETRYABLE = frozenset({GRPC_CANCELLED, GRPC_UNAVAILABLE})


class _Wired(Connection, asyncio.Protocol):
    """The asyncio transport under a sans-I/O connection: bytes in, batched writes out."""

    def __init__(self, relay: Relay, limits: Limits, shared: Buffers) -> None:
        super().__init__(limits, shared)
        self.relay = relay
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.initiate()
        self.relay.flush_soon()

    def data_received(self, data: bytes) -> None:
        self.receive(data)
        self.relay.flush_soon()

    def connection_lost(self, exc: Exception | None) -> None:
        self.terminated()
        self.relay.flush_soon()

    def output_ready(self) -> None:
        self.relay.dirty.append(self)

    def write_out(self) -> None:
        """Write what was queued (the relay calls this once per loop iteration)."""
        data = self.data_to_send()
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(data)
            backlog = transport.get_write_buffer_size()
            if backlog or self.backlog:
                self.set_backlog(backlog)

    def resume_writing(self) -> None:
        if self.transport is not None:
            self.set_backlog(self.transport.get_write_buffer_size())

    def close(self, hard: bool = False) -> None:
        super().close(hard)
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        self.write_out()
        if hard or transport.get_write_buffer_size():  # a peer that does not read
            transport.abort()
        else:
            transport.close()


class Downstream(_Wired, ServerConnection):
    """A client's connection to the head."""

    http: Session | None = None  # an HTTP/1.1 client (see `plain_request`)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        relay = self.relay
        if len(relay.clients) >= self.limits.max_connections:
            assert isinstance(transport, asyncio.Transport)
            transport.abort()  # past max_connections: dropped before any work
            self.open = self.usable = False
            return
        super().connection_made(transport)
        relay.clients.add(self)
        if not relay.accepting:
            self.usable = False  # GOAWAY right after our SETTINGS

    def lost(self) -> None:
        self.relay.clients.discard(self)
        if self.http is not None:
            self.http.lost()

    def start(self, stream: Stream, headers: Headers, end: bool) -> None:
        self.relay.start(self, stream, headers, end)

    def on_preface(self) -> None:
        if not self.usable:  # the head began to shut down first: GOAWAY follows SETTINGS
            self.goaway()

    def plain_request(self, buf: bytearray) -> bool:
        """HTTP/1.1 on the head's one port: `GET /metrics` (Prometheus), and Jina's HTTP
        interface when the head serves it (see front.py)."""
        if self.http is None:
            self.http = Session(self, self.relay)
        self.http.receive(buf)
        return True

    def tick(self, now: float) -> None:
        if self.http is not None:
            self.http.tick(now)
            return
        super().tick(now)

    def goaway(self) -> None:
        super().goaway()
        if self.http is not None:
            self.http.goaway()


class Upstream(_Wired, ClientConnection):
    """The head's connection to a worker (or to its own grpcio server)."""


def _with_value(field: tuple[bytes, bytes], value: bytes) -> tuple[bytes, bytes]:
    """`field` with another value, in the same representation (never indexed stays so)."""
    return NeverIndexed((field[0], value)) if type(field) is NeverIndexed else (field[0], value)


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
                loop.create_connection(self.relay.upstream, self.host, self.port),
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

    def http_enabled(self) -> bool:
        """Does the head serve Jina's HTTP interface (else only GET /metrics)?"""

    def http_status(self) -> dict[str, Any]:
        """GET /status: at least `name`, `version` and `serving`."""

    def send_timeout(self, endpoint: bytes | None) -> float | None:
        """timeout_send of `endpoint`, in seconds (None: no limit per attempt)."""


class Call:
    """One fast-path unary call: buffered request, tried on replicas until one answers."""

    __slots__ = (
        "body",
        "data",
        "deadline",
        "done",
        "down",
        "expired",
        "finished",
        "headers",
        "held",
        "last_error",
        "relay",
        "replica",
        "resp",
        "resp_held",
        "send_timeout",
        "started",
        "stream",
        "timer",
        "tried",
        "up",
        "up_stream",
    )

    def __init__(self, relay: Relay, down: ServerConnection, stream: Stream,
                 headers: Headers) -> None:
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
        self.held = 0       # bytes counted against the client connection's budgets
        self.resp_held = 0  # of which the current attempt's response
        self.send_timeout: float | None = None  # timeout_send: seconds per attempt
        self.timer: asyncio.TimerHandle | None = None
        self.expired = False  # an attempt ran out of timeout_send

    def hold(self, n: int, response: bool = False) -> bool:
        """Count `n` bytes this call keeps (request kept for retries, response until its
        trailers): False when the client connection's or the relay's budget is over."""
        self.held += n
        if response:
            self.resp_held += n
        return self.down.hold(n)

    def _drop_response(self) -> None:
        self.down.release(self.resp_held)
        self.held -= self.resp_held
        self.resp_held = 0

    # events from either connection
    def on_headers(self, conn: Connection, stream: Stream, headers: Headers, end: bool) -> None:
        if conn is self.down:  # request trailers: gRPC clients send none; finish the request
            if end:
                self.relay.dispatch(self)
            return
        if self.resp is None and not end:
            self.resp = headers
            return
        if end:
            self._complete(headers)

    def on_data(self, conn: Connection, stream: Stream, data: bytes, end: bool) -> None:
        if conn is self.down:
            conn.ack(stream, len(data))
            self.body += data
            if len(self.body) > self.relay.max_body:
                self.fail(GRPC_RESOURCE_EXHAUSTED,
                          f"received message larger than max ({len(self.body) - 5} vs. "
                          f"{self.relay.max_body - 5})", unread=not end)
                return
            if not self.hold(len(data)):
                self.fail(GRPC_RESOURCE_EXHAUSTED, "the head holds too much data; try again",
                          unread=not end)
                return
            if end:
                self.relay.dispatch(self)
            return
        conn.ack(stream, len(data))
        if not self.hold(len(data), response=True):
            if self.up is not None and self.up_stream is not None:
                self.up.reset(self.up_stream)
            self.fail(GRPC_RESOURCE_EXHAUSTED, "the head holds too much data; try again")
            return
        self.data.append(data)
        if end:  # a response without trailers: not gRPC; treat as the replica failing
            self._attempt_failed("response ended without trailers")

    def on_reset(self, conn: Connection, stream: Stream, refused: bool) -> None:
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
        self._drop_response()
        if not self.done:
            self.relay.dispatch(self)

    def timed_out(self, up_stream: Stream) -> None:
        """timeout_send ran out on this attempt: cancel it, try another replica (a replica
        that hangs on one request is not marked unhealthy: its health says otherwise)."""
        self.timer = None
        if self.done or self.up_stream is not up_stream or self.up is None:
            return
        self.expired = True
        self.up.reset(up_stream)
        self.up = self.up_stream = None
        if self.replica is not None:
            assert self.send_timeout is not None
            self.last_error = (f"{self.replica.address}: no answer within timeout_send "
                               f"({self.send_timeout * 1000:g} ms)")
        self._release(False)
        self.resp = None
        self.data = []
        self._drop_response()
        self.relay.dispatch(self)
        self.relay.flush_soon()

    def _release(self, ok: bool | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.replica is not None:
            self.replica.end(ok)
            self.replica = None

    def _finish(self, status: bytes) -> None:
        if not self.finished:
            self.finished = True
            self.down.release(self.held)  # what is still to send is held by the stream
            self.held = self.resp_held = 0
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
            self.down.emit(rst_stream(self.stream.sid, NO_ERROR))
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

    def __init__(self, relay: Relay, down: ServerConnection, stream: Stream,
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

    def _other(self, conn: Connection) -> tuple[Connection | None, Stream | None]:
        if conn is self.down:
            return self.up, self.up_stream
        return self.down, self.down_stream

    def on_headers(self, conn: Connection, stream: Stream, headers: Headers, end: bool) -> None:
        if self.early is not None:
            self.early.append((headers, b"", end))
            return
        other, out = self._other(conn)
        if other is not None and out is not None and not out.closed:
            other.send_headers(out, headers, end)
            self.replied = self.replied or other is self.down
        if end:
            self._ended(conn, stream)

    def on_data(self, conn: Connection, stream: Stream, data: bytes, end: bool) -> None:
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

    def on_reset(self, conn: Connection, stream: Stream, refused: bool) -> None:
        other, out = self._other(conn)
        if other is not None and out is not None:
            if conn is self.down or out.sid not in other.streams:
                other.reset(out)
            else:  # the inner server reset: tell the client with a status it understands
                other.send_headers(out, _trailers_only(
                    GRPC_UNAVAILABLE, "head's inner server reset the stream"), True)
        self._closed()

    def _ended(self, conn: Connection, stream: Stream) -> None:
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

    def __init__(self, hooks: HeadHooks, inner_address: str, max_message_bytes: int,
                 limits: Limits | None = None) -> None:
        self.hooks = hooks
        self.limits = limits if limits is not None else Limits.for_messages(max_message_bytes)
        self.buffers = Buffers(self.limits.max_buffered_total)  # every client connection's
        self.upstream_buffers = Buffers(self.limits.max_buffered_total)  # workers' and inner
        self.inner = Link(self, inner_address)
        self.max_body = max_message_bytes + 5  # gRPC's 5-byte message prefix
        self.dirty: list[_Wired] = []
        self._flush_pending = False
        self.clients: set[Downstream] = set()
        self.pipes: set[Pipe] = set()
        self.calls = 0  # fast-path calls in flight
        self.accepting = True
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._idle = asyncio.Event()
        self._idle.set()

    async def listen(self, host: str, port: int, tls: ssl.SSLContext | None = None) -> int:
        """Bind and serve (over TLS with `tls`, see h2/tls.py); returns the bound port.

        Raises:
            OSError: the address cannot be bound.
        """
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: Downstream(self, self.limits, self.buffers), host or None, port,
            reuse_address=True, ssl=tls,
            ssl_handshake_timeout=self.limits.handshake_timeout if tls else None)
        self.spawn(self._tick())
        bound: int = self._server.sockets[0].getsockname()[1]
        return bound

    def upstream(self) -> Upstream:
        """A new connection to a worker or to the inner server."""
        return Upstream(self, self.limits, self.upstream_buffers)

    async def _tick(self) -> None:
        """Every `limits.tick` seconds, the client connections check their timeouts."""
        while True:
            await asyncio.sleep(self.limits.tick)
            now = time.monotonic()
            for client in list(self.clients):
                client.tick(now)
            self.flush()

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

    def start(self, down: ServerConnection, stream: Stream, headers: Headers,
              end: bool) -> None:
        """A new client stream (from a client's connection, or an HTTP request's `Sink`):
        fast path or pipe."""
        path = endpoint = timeout = kind = None
        for key, value in headers:
            if key == b":path":
                path = value
            elif key == b"x-endpoint":
                endpoint = value
            elif key == b"grpc-timeout":
                timeout = value
            elif key == b"content-type":
                kind = value
        if path == b"/orchestrator.v1.Executor/Call" and self.hooks.fast_path(endpoint):
            call = Call(self, down, stream, headers)
            stream.handler = call
            if timeout is not None and (seconds := parse_timeout(timeout)) is not None:
                call.deadline = time.monotonic() + seconds
            call.send_timeout = self.hooks.send_timeout(endpoint)
            self.calls += 1
            self._idle.clear()
            if not call.hold(down.decoder.last_size):  # its headers, kept for retries
                call.fail(GRPC_RESOURCE_EXHAUSTED, "the head holds too much data; try again",
                          unread=not end)
            elif end:
                self.dispatch(call)
            return
        if (kind is None or not kind.startswith(b"application/grpc")) \
                and self.hooks.http_enabled():  # not gRPC: the HTTP interface, over HTTP/2
            stream.handler = H2Request(self, down, stream, headers)
            if end:
                stream.handler.on_headers(down, stream, [], True)
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
            call.fail(GRPC_DEADLINE_EXCEEDED, "deadline exceeded in the head")
            return
        replica = self.hooks.pool.pick_any(call.tried)
        if replica is None:
            cause = f" (last error: {call.last_error})" if call.last_error else ""
            if call.expired:
                call.fail(GRPC_DEADLINE_EXCEEDED,
                          f"no replica answered within timeout_send{cause}")
            else:
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
        if call.send_timeout is not None:
            call.timer = asyncio.get_running_loop().call_later(
                call.send_timeout, call.timed_out, stream)

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

