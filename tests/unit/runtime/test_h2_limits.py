"""Each HTTP/2 attack class against the sans-I/O connection, with the named limit that
stops it (runtime/h2/limits.py): the connection ends with GOAWAY(ENHANCE_YOUR_CALM) or
closes, and what it held is released."""

from __future__ import annotations

import struct

import pytest

from orchestrator.runtime import hpack
from orchestrator.runtime.h2.connection import Buffers
from orchestrator.runtime.h2.frames import (
    CANCEL,
    CONTINUATION,
    DATA,
    END_HEADERS,
    END_STREAM,
    ENHANCE_YOUR_CALM,
    HEADERS,
    NO_ERROR,
    PING,
    PREFACE,
    PRIORITY,
    REFUSED_STREAM,
    RST_STREAM,
    S_INITIAL_WINDOW,
    SETTINGS_TIMEOUT,
    frame,
    settings_frame,
    window_update,
)
from orchestrator.runtime.h2.limits import Budget, Limits, connection_ceiling, memory_ceiling
from tests.unit.runtime.h2_support import REQUEST, Clock, Server, request, started


def _bomb(entry: int, references: int) -> bytes:
    """One big literal inserted in the dynamic table, then referenced `references` times."""
    name, value = b"x-bomb", b"v" * entry
    insert = b"\x40" + bytes((len(name),)) + name + hpack._encode_int(len(value), 7) + value
    return hpack.encode(REQUEST) + insert + b"\xbe" * references  # 0xbe: index 62


def test_decompression_bomb_is_stopped_while_decoding() -> None:
    """The issue's attack: a ~4 KB entry referenced once per byte of a 64 KiB block."""
    limits = Limits()
    block = _bomb(4000, 60000)
    assert len(block) <= limits.max_header_block
    server = started(limits)
    server.feed(frame(HEADERS, END_HEADERS | END_STREAM, 1, block))
    assert server.goaway_code() == ENHANCE_YOUR_CALM
    assert server.recorder.events == []  # nothing was opened


def test_the_decoder_refuses_at_the_field_that_crosses_the_limit() -> None:
    """Garbage after the crossing field proves decoding stopped there (it is never read)."""
    decoder = hpack.Decoder(max_header_list_size=20_000)
    with pytest.raises(hpack.HeaderListTooLarge):
        decoder.decode(_bomb(4000, 5) + b"\xff\xff\xff\xff\xff\xff\xff")  # a bad integer
    ok = hpack.Decoder(max_header_list_size=20_000)
    assert len(ok.decode(_bomb(4000, 3))) == len(REQUEST) + 4
    assert ok.last_size == sum(32 + len(n) + len(v) for n, v in ok.decode(_bomb(4000, 3)))


def test_continuation_flood_of_tiny_frames_is_cut_at_max_continuations() -> None:
    limits = Limits(max_continuations=8)
    server = started(limits)
    server.feed(frame(HEADERS, 0, 1, b"\x82") + b"".join(
        frame(CONTINUATION, 0, 1, b"\x82") for _ in range(9)))
    assert server.goaway_code() == ENHANCE_YOUR_CALM and not server.open


def test_an_endless_header_block_is_cut_at_max_header_block() -> None:
    limits = Limits(max_header_block=1024)
    server = started(limits)
    server.feed(frame(HEADERS, 0, 1, b"\x00" * 1000) + frame(CONTINUATION, 0, 1, b"\x00" * 100))
    assert server.goaway_code() == ENHANCE_YOUR_CALM


def test_rapid_reset_is_stopped_at_max_resets() -> None:
    """CVE-2023-44487: open a stream, reset it, again and again."""
    clock = Clock()
    server = started(Limits(max_resets=20), clock)
    attack = b"".join(request(sid, end=True) + frame(RST_STREAM, 0, sid, struct.pack(">L", CANCEL))
                      for sid in range(1, 43, 2))  # 21 streams, each reset
    server.feed(attack)
    assert server.goaway_code() == ENHANCE_YOUR_CALM and not server.open
    opened = [e for e in server.recorder.events if e[0] == "open"]
    assert len(opened) == 21
    server.terminated()  # the transport closes: nothing stays behind
    assert server.streams == {} and server.held == 0


def test_resets_spread_over_time_are_fine() -> None:
    clock = Clock()
    server = started(Limits(max_resets=20, flood_window=10.0), clock)
    sid = 1
    for _ in range(5):  # 5 windows of 20 resets each: 100 in all
        for _ in range(20):
            server.feed(request(sid, end=False) + frame(RST_STREAM, 0, sid, b"\x00\x00\x00\x08"))
            sid += 2
        clock.now += 10.0
    assert server.open and server.goaway_code() is None


def test_refused_streams_count_as_resets() -> None:
    server = started(Limits(max_concurrent_streams=2, max_resets=5))
    server.feed(b"".join(request(sid, end=False) for sid in range(1, 20, 2)))
    refused = [sid for k, _, sid, p in server.frames()
               if k == RST_STREAM and p == struct.pack(">L", REFUSED_STREAM)]
    assert refused[:5] == [5, 7, 9, 11, 13]  # beyond max_concurrent_streams
    assert server.goaway_code() == ENHANCE_YOUR_CALM


@pytest.mark.parametrize(("name", "flood"), [
    ("max_pings", frame(PING, 0, 0, b"12345678")),
    ("max_settings", settings_frame()),
    ("max_empty_frames", frame(PRIORITY, 0, 1, b"\x00\x00\x00\x00\x10")),
    ("max_empty_frames", frame(0x77, 0, 0, b"unknown")),
    ("max_empty_frames", None),  # empty DATA on an open stream
])
def test_floods_of_control_and_empty_frames_end_the_connection(name: str,
                                                              flood: bytes | None) -> None:
    server = started(Limits(**{name: 50}))  # type: ignore[arg-type]
    if flood is None:
        server.feed(request(1, end=False))
        flood = frame(DATA, 0, 1, b"")
    server.feed(flood * (49 if name == "max_settings" else 50))  # the client's first counts
    assert server.open
    server.feed(flood)
    assert server.goaway_code() == ENHANCE_YOUR_CALM


def test_a_slow_reader_cannot_make_the_server_hold_more_than_max_buffered() -> None:
    """The client opens no window (INITIAL_WINDOW_SIZE 0): output piles up, held."""
    shared = Buffers(10_000_000)
    server = Server(Limits(max_buffered=100_000), shared=shared)
    server.feed(PREFACE + settings_frame((S_INITIAL_WINDOW, 0)))
    server.feed(request(1) + request(3))
    server.send_data(server.streams[1], b"x" * 60_000, False)
    assert server.open and server.held == 60_000 == shared.total
    server.send_data(server.streams[3], b"y" * 60_000, False)
    assert server.goaway_code() == ENHANCE_YOUR_CALM and not server.open
    server.terminated()
    assert server.held == 0 == shared.total


def test_the_relay_wide_budget_is_shared_by_connections() -> None:
    shared = Buffers(100_000)
    a, b = (Server(Limits(max_buffered=1_000_000), shared=shared) for _ in range(2))
    for server in (a, b):
        server.feed(PREFACE + settings_frame((S_INITIAL_WINDOW, 0)) + request(1))
    a.send_data(a.streams[1], b"x" * 60_000, False)
    b.send_data(b.streams[1], b"y" * 60_000, False)
    assert a.open and b.goaway_code() == ENHANCE_YOUR_CALM


def test_a_window_that_opens_releases_what_was_held() -> None:
    server = Server()
    server.feed(PREFACE + settings_frame((S_INITIAL_WINDOW, 0)) + request(1))
    server.send_data(server.streams[1], b"x" * 1000, True)
    assert server.held == 1000
    server.feed(window_update(1, 1000))
    assert server.held == 0 and server.streams == {}  # END_STREAM went out: done


def test_a_zero_window_stall_ends_after_stall_timeout() -> None:
    clock = Clock()
    server = Server(Limits(stall_timeout=30.0), clock)
    server.feed(PREFACE + settings_frame((S_INITIAL_WINDOW, 0)) + request(1))
    server.send_data(server.streams[1], b"x" * 10, False)
    clock.now += 29.0
    server.tick(clock.now)
    assert server.open
    clock.now += 1.0
    server.tick(clock.now)
    server.sent += server.data_to_send()
    assert server.goaway_code() == ENHANCE_YOUR_CALM


def test_a_socket_backlog_past_the_budget_drops_the_peer_at_once() -> None:
    server = started(Limits(max_buffered=1000))
    server.set_backlog(999)
    assert server.open and server.held == 999
    server.set_backlog(1001)
    assert server.closed_hard is True and not server.open


def test_a_client_that_never_sends_its_preface_is_dropped_after_handshake_timeout() -> None:
    clock = Clock()
    server = Server(Limits(handshake_timeout=5.0), clock)
    server.feed(PREFACE[:10])
    clock.now += 5.0
    server.tick(clock.now)
    assert server.closed_hard is True and server.sent == b""  # maybe not HTTP/2: no frame


def test_a_client_that_never_sends_settings_gets_settings_timeout() -> None:
    clock = Clock()
    server = Server(Limits(handshake_timeout=5.0), clock)
    server.feed(PREFACE)
    clock.now += 5.0
    server.tick(clock.now)
    server.sent += server.data_to_send()
    assert server.goaway_code() == SETTINGS_TIMEOUT and not server.open


def test_an_idle_connection_is_closed_with_no_error() -> None:
    clock = Clock()
    server = started(Limits(idle_timeout=60.0), clock)
    server.feed(request(1, end=False))
    clock.now += 120.0
    server.tick(clock.now)  # a stream is open, though silent: it is cancelled instead
    server.sent += server.data_to_send()
    assert ("reset", 1, False) in server.recorder.events and server.open
    assert (RST_STREAM, 0, 1, struct.pack(">L", CANCEL)) in server.frames()
    clock.now += 59.0
    server.tick(clock.now)
    assert server.open
    clock.now += 61.0
    server.tick(clock.now)
    server.sent += server.data_to_send()
    assert server.goaway_code() == NO_ERROR and not server.open


def test_budget_counts_per_window() -> None:
    budget = Budget(3, 1.0)
    assert [budget.spend(0.0) for _ in range(4)] == [True, True, True, False]
    assert budget.spend(1.0)


@pytest.mark.parametrize("bad", [
    {"max_frame_size": 1000}, {"max_frame_size": 1 << 24}, {"initial_window": 1 << 31},
    {"max_concurrent_streams": 0}, {"idle_timeout": 0}, {"header_table_size": -1},
])
def test_limits_out_of_range_are_refused(bad: dict[str, int]) -> None:
    with pytest.raises(ValueError, match=next(iter(bad))):
        Limits(**bad)  # type: ignore[arg-type]


def test_the_memory_ceiling_follows_from_the_limits() -> None:
    limits = Limits()
    per_conn = connection_ceiling(limits)
    assert per_conn < 4 << 20
    assert memory_ceiling(limits) == (limits.max_connections * per_conn
                                      + 2 * limits.max_buffered_total
                                      + hpack.ENCODE_CACHE_BYTES)
    small = Limits(max_connections=10, max_buffered_total=1 << 20)
    assert memory_ceiling(small) < memory_ceiling(limits)


def test_for_messages_lets_one_connection_hold_a_whole_message() -> None:
    limits = Limits.for_messages(64 << 20)
    assert limits.max_buffered > 64 << 20 and limits.max_buffered_total >= 2 * limits.max_buffered


def test_encode_cached_is_bounded_by_bytes() -> None:
    for i in range(5000):
        hpack.encode_cached([(b"x-big", b"%d" % i + b"v" * 2000)])
        assert hpack.encode_cache_bytes() <= hpack.ENCODE_CACHE_BYTES
    huge = [(b"x-huge", b"v" * 10_000)]
    before = hpack.encode_cache_bytes()
    assert hpack.encode_cached(huge) == hpack.encode(huge)
    assert hpack.encode_cache_bytes() == before  # never cached


def test_flood_budgets_bind_clients_not_the_workers_we_connect_to() -> None:
    """grpcio's BDP pings can be frequent under load: a worker connection is ours."""
    from orchestrator.runtime.h2.connection import ClientConnection

    worker = ClientConnection(Limits(max_pings=5, max_settings=5, max_empty_frames=5))
    worker.initiate()
    worker.receive(settings_frame() * 10 + frame(PING, 0, 0, b"12345678") * 10
                   + frame(0x77, 0, 0) * 10)
    assert worker.open and worker.error is None
