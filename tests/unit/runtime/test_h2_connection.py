"""The sans-I/O HTTP/2 connection (runtime/h2/connection.py), fed plain bytes: the RFC 9113
rules a server must enforce, each with the GOAWAY code the RFC names."""

from __future__ import annotations

import struct

import pytest

from orchestrator.runtime.h2.connection import client_hello, server_hello
from orchestrator.runtime.h2.frames import (
    ACK,
    CONTINUATION,
    DATA,
    END_HEADERS,
    END_STREAM,
    FLOW_CONTROL_ERROR,
    FRAME_SIZE_ERROR,
    GOAWAY,
    HEADERS,
    NO_ERROR,
    PING,
    PREFACE,
    PRIORITY,
    PRIORITY_FLAG,
    PROTOCOL_ERROR,
    PUSH_PROMISE,
    RST_STREAM,
    S_ENABLE_CONNECT_PROTOCOL,
    S_ENABLE_PUSH,
    S_INITIAL_WINDOW,
    S_MAX_FRAME,
    S_MAX_HEADER_LIST,
    SETTINGS,
    STREAM_CLOSED,
    WINDOW_UPDATE,
    frame,
    settings_frame,
    window_update,
)
from orchestrator.runtime.h2.limits import Limits
from tests.unit.runtime.h2_support import Server, parse_frames, request, started


def test_a_request_is_opened_and_its_settings_and_window_sent_first() -> None:
    server = started()
    server.feed(request(1))
    assert server.recorder.events[0][:2] == ("open", 1)
    assert bytes(server.sent).startswith(server_hello(server.limits))
    advertised = dict(struct.unpack_from(">HL", parse_frames(bytes(server.sent))[0][3], i)
                      for i in range(0, len(parse_frames(bytes(server.sent))[0][3]), 6))
    assert advertised[S_MAX_HEADER_LIST] == Limits().max_header_list_size
    assert (SETTINGS, ACK, 0, b"") in server.frames()
    assert server.open and server.goaway_code() is None


def test_the_client_hello_refuses_push() -> None:
    hello = client_hello(Limits())
    assert hello.startswith(PREFACE)
    payload = parse_frames(hello[len(PREFACE):])[0][3]
    assert struct.unpack_from(">HL", payload, 0) == (S_ENABLE_PUSH, 0)


@pytest.mark.parametrize(("key", "value", "code"), [
    (S_ENABLE_PUSH, 2, PROTOCOL_ERROR),
    (S_INITIAL_WINDOW, 1 << 31, FLOW_CONTROL_ERROR),
    (S_MAX_FRAME, 0, PROTOCOL_ERROR),  # the report: taken as is, then a spin
    (S_MAX_FRAME, 16383, PROTOCOL_ERROR),
    (S_MAX_FRAME, 1 << 24, PROTOCOL_ERROR),
    (S_ENABLE_CONNECT_PROTOCOL, 2, PROTOCOL_ERROR),
])
def test_invalid_settings_end_the_connection(key: int, value: int, code: int) -> None:
    server = Server()
    server.feed(PREFACE + settings_frame((key, value)))
    assert server.goaway_code() == code
    assert not server.open


@pytest.mark.parametrize(("key", "value"), [
    (S_ENABLE_PUSH, 0), (S_ENABLE_PUSH, 1), (S_INITIAL_WINDOW, (1 << 31) - 1),
    (S_MAX_FRAME, 16384), (S_MAX_FRAME, (1 << 24) - 1), (0xFF, 12345),  # unknown: ignored
])
def test_valid_settings_are_acknowledged(key: int, value: int) -> None:
    server = Server()
    server.feed(PREFACE + settings_frame((key, value)))
    assert server.open and (SETTINGS, ACK, 0, b"") in server.frames()


def test_a_settings_change_that_overflows_an_open_stream_window_is_a_flow_control_error(
) -> None:
    server = started()
    server.feed(request(1))
    server.feed(window_update(1, (1 << 31) - 1 - 65535))
    server.feed(settings_frame((S_INITIAL_WINDOW, 65536)))
    assert server.goaway_code() == FLOW_CONTROL_ERROR


@pytest.mark.parametrize(("data", "code"), [
    (frame(DATA, 0, 1, b"x"), PROTOCOL_ERROR),                   # first frame not SETTINGS
    (frame(SETTINGS, ACK, 0), PROTOCOL_ERROR),                   # not even a SETTINGS ACK
    (frame(SETTINGS, 0, 1), PROTOCOL_ERROR),                     # SETTINGS on a stream
    (frame(SETTINGS, 0, 0, b"\x00" * 5), FRAME_SIZE_ERROR),      # not a multiple of 6
])
def test_the_first_frame_must_be_a_well_formed_settings(data: bytes, code: int) -> None:
    server = Server()
    server.feed(PREFACE + data)
    assert server.goaway_code() == code


@pytest.mark.parametrize(("data", "code"), [
    (frame(SETTINGS, ACK, 0, b"\x00" * 6), FRAME_SIZE_ERROR),
    (frame(PING, 0, 0, b"\x00" * 7), FRAME_SIZE_ERROR),
    (frame(PING, 0, 1, b"\x00" * 8), PROTOCOL_ERROR),
    (frame(RST_STREAM, 0, 1, b"\x00" * 3), FRAME_SIZE_ERROR),
    (frame(RST_STREAM, 0, 0, b"\x00" * 4), PROTOCOL_ERROR),
    (frame(WINDOW_UPDATE, 0, 0, b"\x00" * 5), FRAME_SIZE_ERROR),
    (frame(WINDOW_UPDATE, 0, 0, b"\x00" * 4), PROTOCOL_ERROR),  # increment 0
    (frame(PRIORITY, 0, 1, b"\x00" * 4), FRAME_SIZE_ERROR),
    (frame(PRIORITY, 0, 0, b"\x00" * 5), PROTOCOL_ERROR),
    (frame(GOAWAY, 0, 0, b"\x00" * 7), FRAME_SIZE_ERROR),
    (frame(GOAWAY, 0, 1, b"\x00" * 8), PROTOCOL_ERROR),
    (frame(DATA, 0, 0, b"x"), PROTOCOL_ERROR),
    (frame(HEADERS, END_HEADERS, 0, b"\x82"), PROTOCOL_ERROR),
    (frame(HEADERS, END_HEADERS | PRIORITY_FLAG, 1, b"\x00" * 4), FRAME_SIZE_ERROR),
    (frame(HEADERS, END_HEADERS | PRIORITY_FLAG, 1, struct.pack(">L", 1) + b"\x10"),
     PROTOCOL_ERROR),  # depends on itself
    (frame(PUSH_PROMISE, END_HEADERS, 1, b"\x00" * 4), PROTOCOL_ERROR),
    (frame(CONTINUATION, END_HEADERS, 1, b"\x82"), PROTOCOL_ERROR),  # no HEADERS before
    (frame(0x20, 0, 0), NO_ERROR),  # an unknown frame type: ignored
])
def test_frame_sizes_and_streams_are_checked_per_type(data: bytes, code: int) -> None:
    server = started()
    server.feed(data)
    assert (server.goaway_code() or NO_ERROR) == code


def test_a_frame_larger_than_advertised_is_a_frame_size_error() -> None:
    server = started(Limits(max_frame_size=16384))
    server.feed(frame(DATA, 0, 1, b"x" * 16385)[:20])  # the header alone is enough
    assert server.goaway_code() == FRAME_SIZE_ERROR


@pytest.mark.parametrize(("data", "code"), [
    (frame(DATA, 0, 1, b"x"), PROTOCOL_ERROR),                  # idle stream
    (window_update(3, 1), PROTOCOL_ERROR),                      # idle stream
    (frame(RST_STREAM, 0, 5, b"\x00" * 4), PROTOCOL_ERROR),     # idle stream
    (request(2), PROTOCOL_ERROR),                               # even: a server's id
])
def test_frames_on_streams_never_opened_are_protocol_errors(data: bytes, code: int) -> None:
    server = started()
    server.feed(data)
    assert server.goaway_code() == code


def test_data_after_end_stream_is_stream_closed() -> None:
    server = started()
    server.feed(request(1, end=True))
    server.feed(frame(DATA, 0, 1, b"late"))
    assert server.goaway_code() == STREAM_CLOSED


def test_trailers_without_end_stream_are_a_protocol_error() -> None:
    server = started()
    server.feed(request(1, end=False))
    server.feed(request(1, end=False))
    assert server.goaway_code() == PROTOCOL_ERROR


def test_data_beyond_the_stream_window_is_a_flow_control_error() -> None:
    limits = Limits(initial_window=65535)
    server = started(limits)
    server.feed(request(1, end=False))
    chunk = b"x" * 16384
    server.feed(b"".join(frame(DATA, 0, 1, chunk) for _ in range(3)))  # 48 KiB: fine
    assert server.open
    # the Recorder acknowledges what it reads: once half the window is back, more may come
    assert any(k == WINDOW_UPDATE and sid == 1 for k, _, sid, _ in server.frames())
    server.recorder.on_data = lambda *a: None  # type: ignore[method-assign]  # stops reading
    server.feed(b"".join(frame(DATA, 0, 1, chunk) for _ in range(5)))
    assert server.goaway_code() == FLOW_CONTROL_ERROR


def test_window_updates_that_overflow_are_flow_control_errors() -> None:
    server = started()
    server.feed(window_update(0, (1 << 31) - 1))
    assert server.goaway_code() == FLOW_CONTROL_ERROR
    server = started()
    server.feed(request(1, end=False))
    server.feed(window_update(1, (1 << 31) - 1))
    assert server.goaway_code() == FLOW_CONTROL_ERROR


def test_frames_for_a_stream_we_reset_are_ignored() -> None:
    server = started()
    server.feed(request(1, end=False))
    stream = server.streams[1]
    server.reset(stream)
    server.feed(frame(DATA, END_STREAM, 1, b"in flight") + request(1, end=True))
    assert server.open and server.goaway_code() is None


def test_an_http1_request_is_told_it_is_not_http2_early() -> None:
    server = Server()
    server.feed(b"POST / HTTP/1.1\r\n")
    assert server.goaway_code() == PROTOCOL_ERROR


def test_a_peer_reset_reaches_the_handler_and_frees_the_stream() -> None:
    server = started()
    server.feed(request(1, end=False))
    server.feed(frame(RST_STREAM, 0, 1, struct.pack(">L", 8)))
    assert ("reset", 1, False) in server.recorder.events
    assert server.streams == {}


def test_a_client_goaway_does_not_refuse_what_it_still_sends() -> None:
    server = started()
    server.feed(frame(GOAWAY, 0, 0, struct.pack(">LL", 0, 0)) + request(1))
    assert server.open and server.usable
    assert server.recorder.events[0][:2] == ("open", 1)


def test_continuation_is_reassembled() -> None:
    from orchestrator.runtime import hpack
    from tests.unit.runtime.h2_support import REQUEST

    block = hpack.encode(REQUEST)
    server = started()
    server.feed(frame(HEADERS, END_STREAM, 1, block[:3]) + frame(CONTINUATION, 0, 1, block[3:6])
                + frame(CONTINUATION, END_HEADERS, 1, block[6:]))
    assert server.recorder.events == [("open", 1, (REQUEST, True))]


def test_an_empty_end_stream_on_a_negative_window_leaves_the_windows_alone() -> None:
    """Found by test_fuzz_h2: after a SETTINGS change made a stream window negative, an
    empty DATA(END_STREAM) was sent with a negative size that *grew* both windows, and
    the head then overran the client's connection window (h2: FlowControlError)."""
    server = started()
    server.feed(request(1, end=True))
    stream = server.streams[1]
    server.send_data(stream, b"x" * 1000, False)
    server.feed(settings_frame((S_INITIAL_WINDOW, 10)))  # 10 - 1000: negative
    window, stream_window = server.window, stream.window
    assert stream_window == 10 - 1000
    server.send_data(stream, b"", True)
    assert (server.window, stream.window) == (window, stream_window)
    assert (DATA, END_STREAM, 1, b"") in server.frames() and server.streams == {}


def test_the_settings_ack_goes_before_data_a_larger_window_lets_out() -> None:
    """Found by test_fuzz_h2: python-hyper's h2 applies its SETTINGS when the ACK arrives,
    so DATA sent on the new window must follow the ACK."""
    server = Server()
    server.feed(PREFACE + settings_frame((S_INITIAL_WINDOW, 10)) + request(1))
    server.send_data(server.streams[1], b"x" * 100, True)
    server.frames()  # what went out so far: 10 bytes
    server.sent.clear()
    server.feed(settings_frame((S_INITIAL_WINDOW, 1000)))
    kinds = [(k, f) for k, f, _, _ in server.frames()]
    assert kinds == [(SETTINGS, ACK), (DATA, END_STREAM)]
