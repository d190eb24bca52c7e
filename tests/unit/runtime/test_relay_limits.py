"""The relay's defences over real sockets, in-process: each attack ends the attacker's
connection, a normal client is served throughout, and nothing stays held afterwards."""

from __future__ import annotations

import socket
import struct

import pytest

from orchestrator import Client
from orchestrator.runtime import hpack, wire
from orchestrator.runtime.config import HeadConfig, WorkerAddress
from orchestrator.runtime.h2.connection import client_hello
from orchestrator.runtime.h2.frames import (
    CANCEL,
    DATA,
    END_HEADERS,
    END_STREAM,
    ENHANCE_YOUR_CALM,
    GOAWAY,
    HEADERS,
    PING,
    PREFACE,
    RST_STREAM,
    S_INITIAL_WINDOW,
    frame,
    settings_frame,
)
from orchestrator.runtime.h2.limits import Limits
from orchestrator.runtime.head import HeadServer
from orchestrator.runtime.worker import WorkerServer
from tests.unit.runtime.harness import TOKEN, Cluster, addr, wait_until

CALL = [(b":method", b"POST"), (b":scheme", b"http"), (b":path", wire.METHOD_CALL.encode()),
        (b":authority", b"head"), (b"content-type", b"application/grpc"), (b"te", b"trailers")]


def head_with(cluster: Cluster, limits: Limits, worker: WorkerServer) -> HeadServer:
    cfg = HeadConfig(shards=1, host="127.0.0.1", port=0, grace=1.0, token=TOKEN,
                     health_interval=0.05, workers=(WorkerAddress(0, addr(worker)),))
    head = HeadServer(cfg, limits)
    cluster.lt.run(head.start())
    cluster._servers.append(head)
    return head


def message(docs: list[dict[str, object]], endpoint: str = "/echo") -> bytes:
    body = wire.encode_request(endpoint, docs)
    return b"\x00" + struct.pack(">L", len(body)) + body


def call_frames(sid: int, docs: list[dict[str, object]] | None = None) -> bytes:
    return (frame(HEADERS, END_HEADERS, sid, hpack.encode(CALL))
            + frame(DATA, END_STREAM, sid, message(docs or [{}])))


def read_until_closed(s: socket.socket) -> bytes:
    """Everything the head sends until it closes the connection."""
    received = b""
    s.settimeout(30)
    try:
        while chunk := s.recv(65536):
            received += chunk
    except ConnectionResetError:
        pass
    return received


def goaway_codes(data: bytes) -> list[int]:
    codes = []
    while len(data) >= 9 and len(data) >= 9 + int.from_bytes(data[:3], "big"):
        n = int.from_bytes(data[:3], "big")
        if data[3] == GOAWAY:
            codes.append(struct.unpack(">LL", data[9:17])[1])
        data = data[9 + n:]
    return codes


def assert_serving_and_clean(head: HeadServer) -> None:
    with Client(addr(head)) as c:
        assert c.post("/echo", [{"i": 1}], timeout=10)[0]["i"] == 1
    relay = head._relay
    assert relay is not None
    wait_until(lambda: relay.calls == 0 and relay.buffers.total == 0,
               what="every call finished and nothing held")


@pytest.fixture
def worker(cluster: Cluster) -> WorkerServer:
    return cluster.worker()


def test_rapid_reset_closes_the_attacker_and_the_head_keeps_serving(
        cluster: Cluster, worker: WorkerServer) -> None:
    head = head_with(cluster, Limits(max_resets=50), worker)
    attack = b"".join(call_frames(sid) + frame(RST_STREAM, 0, sid, struct.pack(">L", CANCEL))
                      for sid in range(1, 2 * 200, 2))
    with socket.create_connection(("127.0.0.1", head.port)) as s:
        s.sendall(client_hello(Limits()) + attack)
        received = read_until_closed(s)
    assert ENHANCE_YOUR_CALM in goaway_codes(received)
    assert_serving_and_clean(head)


def test_a_decompression_bomb_closes_the_attacker(cluster: Cluster,
                                                  worker: WorkerServer) -> None:
    head = head_with(cluster, Limits(), worker)
    insert = b"\x40\x06x-bomb" + hpack._encode_int(4000, 7) + b"v" * 4000
    block = hpack.encode(CALL) + insert + b"\xbe" * 60000
    with socket.create_connection(("127.0.0.1", head.port)) as s:
        s.sendall(client_hello(Limits()) + frame(HEADERS, END_HEADERS, 1, block))
        received = read_until_closed(s)
    assert ENHANCE_YOUR_CALM in goaway_codes(received)
    assert_serving_and_clean(head)


def test_a_ping_flood_closes_the_attacker(cluster: Cluster, worker: WorkerServer) -> None:
    head = head_with(cluster, Limits(max_pings=100), worker)
    with socket.create_connection(("127.0.0.1", head.port)) as s:
        s.sendall(client_hello(Limits()) + frame(PING, 0, 0, b"\x00" * 8) * 1000)
        received = read_until_closed(s)
    assert ENHANCE_YOUR_CALM in goaway_codes(received)
    assert_serving_and_clean(head)


def test_a_slow_reader_is_dropped_and_what_it_held_released(cluster: Cluster,
                                                             worker: WorkerServer) -> None:
    """The client opens no window and asks for big answers: they pile up in the head up to
    max_buffered (calls past it are refused with RESOURCE_EXHAUSTED), and after
    stall_timeout the connection goes, and its bytes with it."""
    head = head_with(cluster, Limits(max_buffered=2 << 20, stall_timeout=0.5, tick=0.05),
                     worker)
    blob = "x" * (300 << 10)
    calls = b"".join(call_frames(sid, [{"blob": blob}]) for sid in range(1, 40, 2))
    with socket.create_connection(("127.0.0.1", head.port)) as s:
        s.sendall(PREFACE + settings_frame((S_INITIAL_WINDOW, 0)) + calls)
        received = read_until_closed(s)
    assert ENHANCE_YOUR_CALM in goaway_codes(received)
    assert_serving_and_clean(head)


def test_a_client_that_never_finishes_its_preface_is_dropped(
        cluster: Cluster, worker: WorkerServer) -> None:
    head = head_with(cluster, Limits(handshake_timeout=0.3, tick=0.05), worker)
    with socket.create_connection(("127.0.0.1", head.port)) as s:
        s.sendall(PREFACE[:5])
        assert read_until_closed(s) == b""
    assert_serving_and_clean(head)


def test_connections_beyond_max_connections_are_dropped(cluster: Cluster,
                                                        worker: WorkerServer) -> None:
    head = head_with(cluster, Limits(max_connections=3), worker)
    relay = head._relay
    assert relay is not None
    held = [socket.create_connection(("127.0.0.1", head.port)) for _ in range(3)]
    try:
        for s in held:
            s.sendall(client_hello(Limits()))
        wait_until(lambda: len(relay.clients) == 3, what="three clients connected")
        with socket.create_connection(("127.0.0.1", head.port)) as extra:
            extra.sendall(client_hello(Limits()))
            assert read_until_closed(extra) == b""
        assert len(relay.clients) == 3
    finally:
        for s in held:
            s.close()
    wait_until(lambda: not relay.clients, what="the held connections gone")
    assert_serving_and_clean(head)
