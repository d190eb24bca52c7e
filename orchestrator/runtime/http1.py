"""Sans-I/O HTTP/1.1 on the head's port: bytes in, one bounded request out, bytes back.

The head's port faces the network, so parsing is strict and every size is bounded before
the bytes are kept:

* the request head (request line and header fields) is at most `max_head` bytes, else
  431 (or 414 when the request line alone is too long);
* a body needs `Content-Length` (at most `max_body`, else 413); `Transfer-Encoding` is
  refused with 501, so a body's end is never ambiguous (no request smuggling);
* obsolete line folding, a bare LF inside a field, a field name that is not a token,
  two different `Content-Length` values: 400;
* only HTTP/1.0 and HTTP/1.1 (505 otherwise).

Time limits (a head that never completes, a body that stops) are the transport's, see
`Session.tick` in `runtime/front.py`. This module only parses and renders.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from http import HTTPStatus

METHODS = (b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"OPTIONS", b"PATCH")
_STARTS = tuple(m + b" " for m in METHODS)
_TOKEN = re.compile(rb"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_TARGET = re.compile(rb"^/[\x21-\x7e]*$")


def looks_like_http1(buf: bytes | bytearray) -> bool | None:
    """Does `buf` start an HTTP/1.x request? None: too few bytes to tell."""
    head = bytes(buf[:8])
    if any(head.startswith(s) for s in _STARTS):
        return True
    if any(s.startswith(head) for s in _STARTS):
        return None
    return False


class HttpError(Exception):
    """A request the head answers with `status` (and closes the connection after)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Request:
    """One parsed request (the body complete)."""

    method: str
    target: str
    version: str
    headers: list[tuple[str, str]]
    body: bytes = b""
    keep_alive: bool = True

    @property
    def path(self) -> str:
        """The target without its query string."""
        return self.target.split("?", 1)[0]

    def header(self, name: str) -> str | None:
        """The first value of a header field (`name` in lowercase)."""
        return next((v for k, v in self.headers if k == name), None)


@dataclass
class Parser:
    """Parses requests from a byte buffer, one at a time.

    `feed` takes bytes; `next_request` returns a complete request or None (more bytes
    needed). `expects_continue` says a client waits for `100 Continue` before its body.

    Raises (from `next_request`):
        HttpError: the request is malformed or over a limit.
    """

    max_head: int
    max_body: int
    buf: bytearray = field(default_factory=bytearray)
    _pending: Request | None = None  # head parsed, body not complete
    _length: int = 0
    continue_wanted: bool = False  # the pending request sent `Expect: 100-continue`

    def feed(self, data: bytes) -> None:
        """Bytes from the client."""
        self.buf += data

    @property
    def busy(self) -> bool:
        """A request has begun (bytes of it are here) but is not complete."""
        return self._pending is not None or bool(self.buf)

    @property
    def head_done(self) -> bool:
        """The pending request's head is parsed (its body is arriving)."""
        return self._pending is not None

    def next_request(self) -> Request | None:
        """The next complete request, or None until more bytes arrive."""
        if self._pending is None:
            self._pending = self._head()
            if self._pending is None:
                return None
        if len(self.buf) < self._length:
            return None
        req, self._pending = self._pending, None
        req.body = bytes(self.buf[:self._length])
        del self.buf[:self._length]
        self._length = 0
        self.continue_wanted = False
        return req

    def _head(self) -> Request | None:
        buf = self.buf
        while buf.startswith(b"\r\n"):  # RFC 9112 section 2.2: ignore empty lines first
            del buf[:2]
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            line_end = buf.find(b"\r\n")
            if line_end < 0 and len(buf) > self.max_head:
                raise HttpError(414, "request line too long")
            if len(buf) > self.max_head:
                raise HttpError(431, f"request head larger than {self.max_head} bytes")
            return None
        if end + 4 > self.max_head:
            raise HttpError(431, f"request head larger than {self.max_head} bytes")
        head = bytes(buf[:end])
        del buf[:end + 4]
        lines = head.split(b"\r\n")
        req = _request_line(lines[0])
        for line in lines[1:]:
            req.headers.append(_field(line))
        self._length = _content_length(req)
        if self._length > self.max_body:
            raise HttpError(413, f"body of {self._length} bytes is larger than the limit "
                                 f"of {self.max_body}")
        connection = {t.strip().lower() for t in (req.header("connection") or "").split(",")}
        req.keep_alive = ("close" not in connection if req.version == "HTTP/1.1"
                          else "keep-alive" in connection)
        expect = req.header("expect")
        if expect is not None:
            if expect.lower() != "100-continue":
                raise HttpError(417, f"cannot meet Expect: {expect}")
            self.continue_wanted = req.version == "HTTP/1.1" and self._length > 0
        return req


def _request_line(line: bytes) -> Request:
    parts = line.split(b" ")
    if len(parts) != 3 or not _TOKEN.match(parts[0]):
        raise HttpError(400, "malformed request line")
    method, target, version = parts
    if version not in (b"HTTP/1.1", b"HTTP/1.0"):
        if version.startswith(b"HTTP/"):
            raise HttpError(505, f"{version.decode(errors='replace')} is not supported")
        raise HttpError(400, "malformed request line")
    if not _TARGET.match(target):
        raise HttpError(400, "the request target must be an absolute path")
    return Request(method.decode(), target.decode(), version.decode(), [])


def _field(line: bytes) -> tuple[str, str]:
    if line[:1] in (b" ", b"\t"):
        raise HttpError(400, "obsolete line folding is not accepted")
    name, sep, value = line.partition(b":")
    if not sep or not _TOKEN.match(name):
        raise HttpError(400, "malformed header field")
    if b"\n" in value or b"\r" in value or b"\x00" in value:
        raise HttpError(400, "invalid character in a header field")
    return name.decode().lower(), value.strip(b" \t").decode("latin-1")


def _content_length(req: Request) -> int:
    if req.header("transfer-encoding") is not None:
        raise HttpError(501, "Transfer-Encoding is not supported: send Content-Length")
    values = {v.strip() for k, raw in req.headers if k == "content-length"
              for v in raw.split(",")}
    if not values:
        return 0
    if len(values) > 1:
        raise HttpError(400, "conflicting Content-Length values")
    value = values.pop()
    if not value.isdigit() or not value.isascii() or len(value) > 18:
        raise HttpError(400, "malformed Content-Length")
    return int(value)


CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


def render(status: int, body: bytes, content_type: str, *, keep_alive: bool,
           head_only: bool = False, extra: tuple[tuple[str, str], ...] = ()) -> bytes:
    """One response (`head_only`: a HEAD request's, without the body)."""
    reason = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else ""
    lines = [f"HTTP/1.1 {status} {reason}", f"Content-Type: {content_type}",
             f"Content-Length: {len(body)}",
             "Connection: keep-alive" if keep_alive else "Connection: close"]
    lines.extend(f"{k}: {v}" for k, v in extra)
    out = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return out if head_only else out + body
