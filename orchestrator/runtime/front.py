"""HTTP/1.1 on the head's port: Prometheus, and Jina's HTTP interface when enabled.

A client whose first bytes are an HTTP/1.x request line (not the HTTP/2 preface) gets a
`Session` (see `Downstream.plain_request` in relay.py). It parses bounded requests
(`http1.Parser`, limits from `h2.limits.Limits`), answers them one at a time, and keeps
the connection open between requests when the HTTP interface is on (HTTP/1.1 keep-alive).

A data request (`POST /post`, `POST /<endpoint>`) becomes one internal gRPC call on a
`Sink`: a connection object that stands where a gRPC client's connection would, so the
relay routes it exactly as it routes a gRPC client's `Call` (fast path with retries and
`timeout_send`, or the head's inner server for ALL polling and uses_before/after) and
counts it in the metrics. What the relay would send to that client is captured and turned
into the JSON answer (`httpapi.answer` / `httpapi.failure`).

Time limits (checked by `tick`): a request head must be complete within
`handshake_timeout` of its first byte, and a request may not stop arriving for longer
than that (408, then close); a kept-alive connection with no request closes after
`idle_timeout`. Bytes of a request are held against the connection's and the relay's
byte budgets as they arrive, like HTTP/2 request bodies.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Protocol
from urllib.parse import unquote

from orchestrator.runtime import httpapi
from orchestrator.runtime.h2.connection import Headers, ServerConnection, Stream
from orchestrator.runtime.h2.frames import CANCEL, MAX_WINDOW
from orchestrator.runtime.http1 import CONTINUE, HttpError, Parser, Request, render
from orchestrator.runtime.metrics import CONTENT_TYPE
from orchestrator.runtime.wire import ENDPOINT_KEY, METHOD_CALL

JSON_TYPE = "application/json"
Done = Callable[[int, str, bytes], None]  # (grpc status, grpc message, response body)


class Hooks(Protocol):
    """What a session asks the head (relay.HeadHooks has these)."""

    def metrics(self) -> bytes: ...

    def http_enabled(self) -> bool: ...

    def http_status(self) -> dict[str, Any]: ...


class Router(Protocol):
    """What a session needs of the relay."""

    @property
    def hooks(self) -> Hooks: ...

    @property
    def max_body(self) -> int: ...

    def start(self, down: ServerConnection, stream: Stream, headers: Headers,
              end: bool) -> None: ...

    def flush_soon(self) -> None: ...


class Sink(ServerConnection):
    """The client end of one internal gRPC call: the relay writes to it as to a client's
    connection; nothing goes on a wire. Byte budgets are the HTTP connection's (`owner`).
    """

    def __init__(self, owner: ServerConnection, done: Done) -> None:
        super().__init__(owner.limits, owner.shared)
        self.owner = owner
        self.done: Done | None = done
        self.stream = Stream(1, None, MAX_WINDOW, MAX_WINDOW)
        self.streams[1] = self.stream
        self.body = bytearray()
        self.kept = 0

    # the budgets are the HTTP connection's
    def hold(self, n: int) -> bool:
        return self.owner.hold(n)

    def release(self, n: int) -> None:
        self.owner.release(n)

    def emit(self, data: bytes) -> None:
        """WINDOW_UPDATE / RST_STREAM for a client that is not on a wire: nothing to do."""

    def send_headers(self, stream: Stream, headers: Headers, end: bool) -> None:
        if end:  # trailers (or trailers-only): the call is over
            status = next((v for k, v in headers if k == b"grpc-status"), b"2")
            message = next((v for k, v in headers if k == b"grpc-message"), b"")
            self._finish(int(status) if status.isdigit() else 2,
                         unquote(message.decode("ascii", errors="replace")))

    def send_data(self, stream: Stream, data: bytes, end: bool,
                  sent: Callable[[int], None] | None = None) -> None:
        self.body += data
        self.kept += len(data)
        self.owner.hold(len(data))  # over budget: the call's own checks end it
        if sent is not None and data:
            sent(len(data))
        if end:  # a response without trailers is not gRPC
            self._finish(2, "the response ended without gRPC trailers")

    def reset(self, stream: Stream, code: int = CANCEL) -> None:
        self._finish(1 if code == CANCEL else 2, "the call was reset")

    def cancel(self) -> None:
        """The HTTP client went away: cancel the call as a gRPC client's reset would."""
        stream = self.stream
        if self.done is not None and stream.handler is not None:
            self.done = None
            stream.closed = True
            stream.handler.on_reset(self, stream, refused=False)
        self._release()

    def _finish(self, status: int, message: str) -> None:
        self.stream.closed = True
        self.streams.clear()
        done, self.done = self.done, None
        body = bytes(self.body)
        self._release()
        if done is not None:
            done(status, message, body)

    def _release(self) -> None:
        self.owner.release(self.kept)
        self.kept = 0
        self.body = bytearray()


def call_headers(endpoint: str) -> Headers:
    """The HTTP/2 header block of an internal unary `Call` to `endpoint`."""
    return [(b":method", b"POST"), (b":scheme", b"http"), (b":path", METHOD_CALL.encode()),
            (b":authority", b"head"), (b"content-type", b"application/grpc"),
            (b"te", b"trailers"), (ENDPOINT_KEY.encode(), endpoint.encode())]


Reply = Callable[[int, bytes, str], None]  # (HTTP status, body, content type)


def answer_request(req: Request, relay: Router, owner: ServerConnection,
                   reply: Reply) -> Sink | None:
    """Serve one complete HTTP request (HTTP/1.1 or HTTP/2): `reply` is called once, now
    or when its internal call is done (that call's `Sink` is returned, to cancel it)."""
    hooks = relay.hooks
    try:
        route = httpapi.route(req.method, req.path, hooks.http_enabled())
        if route.kind == "data":
            call = httpapi.to_request(req.body, route.endpoint)
    except HttpError as exc:
        reply(exc.status, httpapi.error_body(exc.status, str(exc)), JSON_TYPE)
        return None
    if route.kind == "metrics":
        reply(200, hooks.metrics(), CONTENT_TYPE)
    elif route.kind == "health":
        serving = hooks.http_status()["serving"]
        reply(200 if serving else 503, json.dumps(
            {"status": "SERVING" if serving else "NOT_SERVING"}).encode(), JSON_TYPE)
    elif route.kind == "status":
        reply(200, json.dumps(hooks.http_status()).encode(), JSON_TYPE)
    elif route.kind == "openapi":
        info = hooks.http_status()
        reply(200, httpapi.openapi(info["name"], info["version"]), JSON_TYPE)
    else:
        req.body = b""

        def done(status: int, message: str, body: bytes) -> None:
            try:
                if status == 0:
                    code, out = httpapi.answer(call, httpapi.grpc_unframe(body))
                else:
                    code, out = httpapi.failure(call, status, message)
            except HttpError as exc:
                code, out = exc.status, httpapi.error_body(exc.status, str(exc))
            reply(code, out, JSON_TYPE)
            relay.flush_soon()

        sink = Sink(owner, done)
        relay.start(sink, sink.stream, call_headers(call.endpoint), False)
        handler = sink.stream.handler
        if handler is not None and sink.done is not None:
            handler.on_data(sink, sink.stream, httpapi.grpc_frame(call.raw), True)
        return sink if sink.done is not None else None
    return None


class H2Request:
    """A plain HTTP request (not gRPC) on an HTTP/2 stream, such as curl's over TLS: the
    same interface as HTTP/1.1; the body is bounded by `max_http_body` and held against
    the connection's budgets while it arrives."""

    def __init__(self, relay: Router, down: ServerConnection, stream: Stream,
                 headers: Headers) -> None:
        self.relay = relay
        self.down = down
        self.stream = stream
        fields = {k: v for k, v in headers}
        self.method = fields.get(b":method", b"GET").decode(errors="replace")
        self.target = fields.get(b":path", b"/").decode(errors="replace")
        self.headers = [(k.decode(errors="replace"), v.decode("latin-1")) for k, v in headers
                        if not k.startswith(b":")]
        self.body = bytearray()
        self.limit = min(down.limits.max_http_body, relay.max_body)
        self.sink: Sink | None = None
        self.answered = False

    def on_headers(self, conn: Any, stream: Stream, headers: Headers, end: bool) -> None:
        if end:
            self._complete()

    def on_data(self, conn: Any, stream: Stream, data: bytes, end: bool) -> None:
        conn.ack(stream, len(data))
        if self.answered:
            return
        self.body += data
        held = self.down.hold(len(data))
        if len(self.body) > self.limit or not held:
            status = 413 if len(self.body) > self.limit else 503
            self._release()
            self._reply(status, httpapi.error_body(
                status, f"the body is over the limit of {self.limit} bytes" if status == 413
                else "the head holds too much data; try again"), JSON_TYPE)
            self.down.reset(stream, 0)  # NO_ERROR: stop sending, the answer is complete
            return
        if end:
            self._complete()

    def on_reset(self, conn: Any, stream: Stream, refused: bool) -> None:
        self.answered = True
        self._release()
        if self.sink is not None:
            self.sink.cancel()
            self.sink = None

    def _complete(self) -> None:
        if self.answered:
            return
        body = bytes(self.body)
        self._release()
        req = Request(self.method, self.target, "HTTP/2", self.headers, body)
        self.sink = answer_request(req, self.relay, self.down, self._reply)

    def _release(self) -> None:
        self.down.release(len(self.body))
        self.body = bytearray()

    def _reply(self, status: int, body: bytes, content_type: str) -> None:
        self.sink = None
        if self.answered or self.stream.closed:
            return
        self.answered = True
        head_only = self.method == "HEAD"
        self.down.send_headers(self.stream, [
            (b":status", str(status).encode()), (b"content-type", content_type.encode()),
            (b"content-length", str(len(body)).encode())], head_only)
        if not head_only:
            self.down.send_data(self.stream, body, True)
        self.relay.flush_soon()


class Session:
    """One HTTP/1.1 client connection: requests parsed and answered one at a time."""

    def __init__(self, down: ServerConnection, relay: Router) -> None:
        self.down = down
        self.relay = relay
        limits = down.limits
        self.enabled = relay.hooks.http_enabled()
        self.parser = Parser(limits.max_http_head, min(limits.max_http_body, relay.max_body))
        self.busy = False         # a request is being served
        self.started = down.now   # when the current request's first bytes came
        self.last = down.now      # when bytes last came
        self.idle_since = down.now
        self.held = 0
        self.continued = False
        self.advancing = False
        self.sink: Sink | None = None

    # ---- bytes in --------------------------------------------------------------------

    def receive(self, buf: bytearray) -> None:
        """Bytes from the client (consumed from `buf`)."""
        now = self.down.now
        if not self.busy and not self.parser.busy:
            self.started = now
        self.last = now
        self.parser.feed(bytes(buf))
        del buf[:]
        if not self._account(len(self.parser.buf)):
            return
        self._advance()

    def _account(self, n: int) -> bool:
        """Hold `n` bytes of request in all; over a budget: 413/503 and close."""
        delta, self.held = n - self.held, n
        if delta <= 0:
            self.down.release(-delta)
            return True
        if self.down.hold(delta):
            if not self.busy or n <= self.parser.max_head + self.parser.max_body:
                return True
            self._error(HttpError(413, "too many bytes sent ahead of the answer"), close=True)
            return False
        self._error(HttpError(503, "the head holds too much data; try again"), close=True)
        return False

    def _advance(self) -> None:
        """Serve the requests that are complete, one at a time (a loop, not a recursion:
        a client may pipeline thousands of small requests in one read)."""
        if self.advancing:
            return  # an answer given while serving: the loop below goes on
        self.advancing = True
        try:
            while not self.busy and self.down.open:
                try:
                    req = self.parser.next_request()
                except HttpError as exc:
                    self._error(exc, close=True)
                    return
                if req is None:
                    if self.parser.continue_wanted and not self.continued:
                        self.continued = True
                        self.down.emit(CONTINUE)
                    return
                self.continued = False
                self.busy = True
                self.serve(req)
        finally:
            self.advancing = False

    # ---- answering -------------------------------------------------------------------

    def serve(self, req: Request) -> None:
        """Answer one complete request (now, or once its call is done)."""
        self._account(len(self.parser.buf))  # the body is read: held by its call now

        def reply(status: int, body: bytes, content_type: str) -> None:
            self.sink = None
            if self.down.open:
                self._reply(req, status, body, content_type)

        self.sink = answer_request(req, self.relay, self.down, reply)

    def _error(self, exc: HttpError, req: Request | None = None, close: bool = False) -> None:
        body = httpapi.error_body(exc.status, str(exc))
        if req is None:
            self.down.emit(render(exc.status, body, JSON_TYPE, keep_alive=False))
            self.busy = True  # nothing more is read
            self.down.close()
            return
        self._reply(req, exc.status, body, JSON_TYPE, close=close)

    def _reply(self, req: Request, status: int, body: bytes, content_type: str,
               close: bool = False) -> None:
        keep = req.keep_alive and self.enabled and self.down.usable and not close
        extra: tuple[tuple[str, str], ...] = ()
        if status == 405:
            extra = (("Allow", "GET, HEAD" if req.path in httpapi.RESERVED else "POST"),)
        self.down.emit(render(status, body, content_type, keep_alive=keep,
                              head_only=req.method == "HEAD", extra=extra))
        self.busy = False
        self.idle_since = self.started = self.last = self.down.clock()
        self._account(len(self.parser.buf))  # the request's body is gone
        if not keep:
            self.busy = True  # nothing more is read
            self.down.close()
            return
        if self.parser.busy:
            self._advance()

    # ---- time and the end ------------------------------------------------------------

    def tick(self, now: float) -> None:
        """Timeouts (see the module docstring)."""
        if self.busy or not self.down.open:
            return
        limits = self.down.limits
        if self.parser.busy:
            if now - self.last >= limits.handshake_timeout or (
                    not self.parser.head_done
                    and now - self.started >= limits.handshake_timeout):
                self._error(HttpError(408, "the request did not arrive in time"))
        elif now - self.idle_since >= limits.idle_timeout:
            self.busy = True
            self.down.close()

    def goaway(self) -> None:
        """The head is stopping: an idle connection closes now, a busy one after its
        answer (which says `Connection: close`)."""
        if not self.busy and not self.parser.busy:
            self.busy = True
            self.down.close()

    def lost(self) -> None:
        """The client went away: cancel a call in flight, release what was held."""
        if self.sink is not None:
            self.sink.cancel()
            self.sink = None
        self._account(0)
