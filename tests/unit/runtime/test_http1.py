"""The head's HTTP/1.1 parser, sans I/O: bytes in, one bounded request out."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.runtime.http1 import HttpError, Parser, Request, looks_like_http1, render


def parse(data: bytes, max_head: int = 1024, max_body: int = 1024) -> Request | None:
    parser = Parser(max_head, max_body)
    parser.feed(data)
    return parser.next_request()


@pytest.mark.parametrize(("data", "expected"), [
    (b"GET /metrics HTTP/1.1\r\n", True),
    (b"POST /post HTTP/1.1\r\n", True),
    (b"PUT /x HTTP/1.1", True),
    (b"PO", None),            # POST, PUT or the HTTP/2 preface's PRI: too early to tell
    (b"G", None),
    (b"PRI * HTTP/2.0\r\n", False),
    (b"\x16\x03\x01", False),  # a TLS ClientHello on a clear port
    (b"HELLO", False),
])
def test_http1_is_told_apart_from_http2_by_the_first_bytes(data: bytes,
                                                           expected: bool | None) -> None:
    assert looks_like_http1(data) is expected


def test_a_request_with_a_body_in_pieces() -> None:
    parser = Parser(1024, 1024)
    raw = (b"POST /post?x=1 HTTP/1.1\r\nHost: h\r\nContent-Type: application/json\r\n"
           b"Content-Length: 11\r\n\r\n{\"data\":[]}")
    for i in range(len(raw) - 1):  # one byte at a time: nothing until the last one
        parser.feed(raw[i:i + 1])
        assert parser.next_request() is None
    assert parser.busy and parser.head_done
    parser.feed(raw[-1:])
    req = parser.next_request()
    assert req is not None
    assert (req.method, req.target, req.path, req.body) == ("POST", "/post?x=1", "/post",
                                                            b'{"data":[]}')
    assert req.header("content-type") == "application/json" and req.keep_alive
    assert not parser.busy


def test_pipelined_requests_come_out_one_at_a_time() -> None:
    parser = Parser(1024, 1024)
    parser.feed(b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\nConnection: close\r\n\r\n")
    first, second = parser.next_request(), parser.next_request()
    assert first is not None and second is not None
    assert (first.path, first.keep_alive, second.path, second.keep_alive) == \
        ("/a", True, "/b", False)
    assert parser.next_request() is None


@pytest.mark.parametrize(("version", "connection", "keep"), [
    ("HTTP/1.1", None, True), ("HTTP/1.1", "close", False), ("HTTP/1.1", "Keep-Alive, Close",
                                                              False),
    ("HTTP/1.0", None, False), ("HTTP/1.0", "keep-alive", True),
])
def test_keep_alive_follows_the_version_and_connection(version: str, connection: str | None,
                                                       keep: bool) -> None:
    extra = f"Connection: {connection}\r\n" if connection else ""
    req = parse(f"GET / {version}\r\n{extra}\r\n".encode())
    assert req is not None and req.keep_alive is keep


def test_expect_100_continue_is_seen_before_the_body() -> None:
    parser = Parser(1024, 1024)
    parser.feed(b"POST /post HTTP/1.1\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n")
    assert parser.next_request() is None and parser.continue_wanted
    parser.feed(b"{}")
    req = parser.next_request()
    assert req is not None and req.body == b"{}" and not parser.continue_wanted


@pytest.mark.parametrize(("data", "status"), [
    (b"GET / HTTP/1.1\r\nContent-Length: 5000\r\n\r\n", 413),        # body over max_body
    (b"GET / HTTP/1.1\r\nX: " + b"a" * 2000 + b"\r\n\r\n", 431),     # head over max_head
    (b"GET / HTTP/1.1\r\nX: " + b"a" * 2000, 431),                   # ... still arriving
    (b"GET /" + b"a" * 2000, 414),                                   # request line alone
    (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", 501),  # no smuggling
    (b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nContent-Length: 1e3\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nX: a\r\n folded\r\n\r\n", 400),               # obsolete folding
    (b"GET / HTTP/1.1\r\nBad Name: a\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nNoColon\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nX: a\nY: b\r\n\r\n", 400),                   # bare LF in a field
    (b"GET / HTTP/2.0\r\n\r\n", 505),
    (b"GET / FTP/1.0\r\n\r\n", 400),
    (b"GET  / HTTP/1.1\r\n\r\n", 400),
    (b"GET http://x/ HTTP/1.1\r\n\r\n", 400),                         # absolute form
    (b"GET / HTTP/1.1\r\nExpect: something\r\n\r\n", 417),
])
def test_malformed_or_oversized_requests_get_their_status(data: bytes, status: int) -> None:
    with pytest.raises(HttpError) as caught:
        parse(data)
    assert caught.value.status == status


def test_same_content_length_twice_is_one_value() -> None:
    req = parse(b"POST / HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n{}")
    assert req is not None and req.body == b"{}"


@settings(deadline=None)  # a loaded CI machine is not a failure
@given(st.binary(max_size=300))
def test_any_bytes_parse_or_fail_cleanly_within_the_limits(data: bytes) -> None:
    parser = Parser(128, 64)
    parser.feed(data)
    try:
        while (req := parser.next_request()) is not None:
            assert len(req.body) <= 64
    except HttpError as exc:
        assert 400 <= exc.status < 600
        return
    # waiting for more: never more than a head's or a body's worth kept
    assert len(parser.buf) <= (64 if parser.head_done else 128)


def test_render_says_length_and_connection() -> None:
    out = render(404, b'{"x":1}', "application/json", keep_alive=False)
    assert out.startswith(b"HTTP/1.1 404 Not Found\r\n")
    assert b"Content-Length: 7\r\n" in out and b"Connection: close\r\n" in out
    assert out.endswith(b'\r\n\r\n{"x":1}')
    head_only = render(200, b"abc", "text/plain", keep_alive=True, head_only=True)
    assert head_only.endswith(b"\r\n\r\n") and b"Content-Length: 3" in head_only


def test_the_memory_ceiling_counts_one_json_body_being_decoded_when_http_is_on() -> None:
    from orchestrator.runtime.h2.limits import HTTP_DECODE_FACTOR, Limits, memory_ceiling

    limits = Limits(max_http_body=1 << 20)
    assert memory_ceiling(limits, http=True) - memory_ceiling(limits) == \
        HTTP_DECODE_FACTOR * (1 << 20)
