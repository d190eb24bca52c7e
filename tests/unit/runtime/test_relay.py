"""The head's HTTP/2 relay (relay.py): fast path and pipe, over real sockets, in-process."""

from __future__ import annotations

import contextlib
import socket
import struct
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from orchestrator import Client, RequestError
from orchestrator.control import HeadControl
from orchestrator.runtime import hpack, wire
from orchestrator.runtime.config import PollingPolicy
from orchestrator.runtime.h2.connection import DEFAULT_LIMITS, client_hello
from orchestrator.runtime.h2.frames import (
    CONTINUATION,
    DATA,
    END_HEADERS,
    END_STREAM,
    HEADERS,
    PADDED,
    REFUSED_STREAM,
    RST_STREAM,
    frame,
)
from orchestrator.runtime.relay import parse_timeout
from tests.unit.runtime.harness import TOKEN, Cluster, addr, wait_until
from tests.unit.runtime.test_worker import Gate, assert_graceful_stop

CLIENT_HELLO = client_hello(DEFAULT_LIMITS)
MAX_STREAMS = DEFAULT_LIMITS.max_concurrent_streams


def control(head: Any) -> HeadControl:
    return HeadControl(addr(head), TOKEN, timeout=5)


def test_fast_path_call_survives_its_replica_dying(cluster: Cluster) -> None:
    victim, survivor = cluster.worker(replica=0), cluster.worker(replica=1)
    head = cluster.head(1, [(0, victim), (0, survivor)])
    with Client(addr(head)) as c, control(head) as ctl:
        with ThreadPoolExecutor(8) as pool:
            calls = [pool.submit(c.post, "/slow", [{"i": i}], {"delay": 0.3}, timeout=20)
                     for i in range(16)]
            wait_until(lambda: any(w.outstanding for w in ctl.list_workers()
                                   if w.address == addr(victim)), what="calls on the victim")
            cluster.stop(victim, grace=0)  # in-flight unary calls end CANCELLED / reset
            out = [f.result(20) for f in calls]
        stats = {w.address: w for w in ctl.list_workers()}
    assert [d[0]["i"] for d in out] == list(range(16))
    assert all(d[0]["replica"] == 1 for d in out[8:])  # later calls: the survivor only
    assert stats[addr(victim)].failed >= 1
    assert stats[addr(victim)].state == "unhealthy"


@pytest.mark.parametrize("polling", ["ANY", "ALL"])  # ANY: fast path; ALL: piped to grpcio
def test_large_messages_cross_the_relay_both_ways(cluster: Cluster, polling: str) -> None:
    w = cluster.worker()
    head = cluster.head(1, [(0, w)], polling=PollingPolicy.parse(polling))
    blob = "x" * (3 << 20)  # several times every flow-control window and frame size
    with Client(addr(head)) as c:
        out = c.post("/echo", [{"blob": blob}, {"i": 1}], timeout=30)
        streamed = c.post("/echo", [{"blob": blob} for _ in range(3)], request_size=1,
                          timeout=30)
    assert out[0]["blob"] == blob and out[1]["i"] == 1
    assert [d["blob"] == blob for d in streamed] == [True] * 3


def test_deadline_through_the_fast_path_frees_the_replica(cluster: Cluster) -> None:
    w = cluster.worker()
    head = cluster.head(1, [(0, w)])
    with Client(addr(head)) as c, control(head) as ctl:
        with pytest.raises(RequestError, match="no answer within the timeout"):
            c.post("/slow", [{}], {"delay": 1.0}, timeout=0.2)
        wait_until(lambda: ctl.list_workers()[0].outstanding == 0, what="replica released")
        assert c.post("/echo", [{}], timeout=5)[0]["tag"] == "v1"


def test_head_graceful_stop_lets_fast_path_calls_finish(cluster: Cluster) -> None:
    gate = Gate()
    head = cluster.head(1, [(0, cluster.serve_executor(gate))])
    assert_graceful_stop(cluster, gate, head)


def test_non_http2_client_is_dropped_and_the_head_keeps_serving(cluster: Cluster) -> None:
    w = cluster.worker()
    head = cluster.head(1, [(0, w)])
    with socket.create_connection(("127.0.0.1", head.port), timeout=5) as s:
        s.sendall(b"HELLO / SOMETHING\r\nHost: x\r\n\r\n")  # neither HTTP/2 nor HTTP/1
        received = b""
        while chunk := s.recv(65536):
            received += chunk
    assert b"not an HTTP/2 client" in received  # GOAWAY debug data, then the close
    with socket.create_connection(("127.0.0.1", head.port), timeout=5) as s:
        s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\n\r\n")  # HTTP/1.1, interface off
        received = b""
        while chunk := s.recv(65536):
            received += chunk
    assert received.startswith(b"HTTP/1.1 404") and b"Connection: close" in received
    with Client(addr(head)) as c:
        assert c.post("/echo", [{}], timeout=5)[0]["tag"] == "v1"


def _read_frames(s: socket.socket, until_end_of: int) -> list[tuple[int, int, int, bytes]]:
    frames, buf = [], b""
    while True:
        while len(buf) >= 9 and len(buf) >= 9 + int.from_bytes(buf[:3], "big"):
            n = int.from_bytes(buf[:3], "big")
            kind, flags, sid = buf[3], buf[4], int.from_bytes(buf[5:9], "big")
            frames.append((kind, flags, sid, buf[9:9 + n]))
            buf = buf[9 + n:]
            if sid == until_end_of and flags & END_STREAM and kind in (DATA, HEADERS):
                return frames
        chunk = s.recv(65536)
        assert chunk, f"connection closed early; frames so far: {frames}"
        buf += chunk


def test_padded_headers_with_continuation_and_padded_data(cluster: Cluster) -> None:
    """Frame shapes grpcio never sends but any HTTP/2 client may: the relay must parse them."""
    w = cluster.worker()
    head = cluster.head(1, [(0, w)])
    block = hpack.encode([
        (b":method", b"POST"), (b":scheme", b"http"),
        (b":path", wire.METHOD_CALL.encode()), (b":authority", b"head"),
        (b"content-type", b"application/grpc"), (b"te", b"trailers"),
    ])
    body = wire.encode_request("/echo", [{"i": 42}])
    message = b"\x00" + struct.pack(">L", len(body)) + body
    pad = 7
    with socket.create_connection(("127.0.0.1", head.port), timeout=5) as s:
        s.sendall(
            CLIENT_HELLO
            + frame(HEADERS, PADDED, 1, bytes([pad]) + block[:5] + b"\x00" * pad)
            + frame(CONTINUATION, END_HEADERS, 1, block[5:])
            + frame(DATA, PADDED | END_STREAM, 1, bytes([pad]) + message + b"\x00" * pad)
        )
        frames = _read_frames(s, until_end_of=1)
    decoder = hpack.Decoder()
    blocks = [decoder.decode(p) for k, _, sid, p in frames if k == HEADERS and sid == 1]
    data = b"".join(p for k, _, sid, p in frames if k == DATA and sid == 1)
    assert (b"grpc-status", b"0") in blocks[-1]
    resp = wire.parse_response(data[5:])
    assert resp.status.code == wire.OK and wire.decode_docs(resp.docs)[0]["i"] == 42


def test_streams_beyond_the_advertised_limit_are_refused(cluster: Cluster) -> None:
    w = cluster.worker()
    head = cluster.head(1, [(0, w)])
    block = hpack.encode([
        (b":method", b"POST"), (b":scheme", b"http"), (b":path", wire.METHOD_CALL.encode()),
        (b":authority", b"head"), (b"content-type", b"application/grpc"),
    ])
    over = 2 * MAX_STREAMS + 1  # client stream ids are odd: this is stream number MAX + 1
    with socket.create_connection(("127.0.0.1", head.port), timeout=5) as s:
        s.sendall(CLIENT_HELLO + b"".join(frame(HEADERS, END_HEADERS, sid, block)
                                          for sid in range(1, over + 1, 2)))
        buf = b""
        while True:  # until the RST_STREAM for the stream over the limit
            chunk = s.recv(65536)
            assert chunk, "connection closed before the refusal"
            buf += chunk
            if frame(RST_STREAM, 0, over, struct.pack(">L", REFUSED_STREAM)) in buf:
                break
    assert frame(RST_STREAM, 0, over - 2, struct.pack(">L", REFUSED_STREAM)) not in buf
    with Client(addr(head)) as c:  # the half-sent calls died with their connection
        assert c.post("/echo", [{}], timeout=5)[0]["tag"] == "v1"


@pytest.mark.parametrize(("value", "seconds"), [
    (b"100m", 0.1), (b"2S", 2.0), (b"5u", 5e-6), (b"1H", 3600.0), (b"x", None), (b"10", None),
])
def test_parse_timeout(value: bytes, seconds: float | None) -> None:
    assert parse_timeout(value) == (None if seconds is None else pytest.approx(seconds))


def test_replicas_are_connected_before_their_first_request(cluster: Cluster) -> None:
    first, later = cluster.worker(replica=0), cluster.worker(replica=1)
    head = cluster.head(1, [(0, first)])
    with control(head) as ctl:
        ctl.add_worker(0, addr(later))

    def connected() -> bool:
        links = [r.link for r in head.pool]
        return all(link is not None and link.conn is not None and link.conn.open
                   for link in links)

    wait_until(connected, what="relay connections to both replicas")
    assert {r.served for r in head.pool} == {0}  # no request has been routed yet


def test_compressed_calls_pass_through(cluster: Cluster) -> None:
    """grpc-encoding and compressed messages go through the fast path as they are."""
    w = cluster.worker()
    head = cluster.head(1, [(0, w)])
    with grpc.insecure_channel(addr(head), compression=grpc.Compression.Gzip) as ch:
        call = ch.unary_unary(wire.METHOD_CALL, request_serializer=wire.identity,
                              response_deserializer=wire.identity)
        body = wire.encode_request("/echo", [{"text": "y" * 50_000}])
        resp = wire.parse_response(call(body, timeout=5))
    with control(head) as ctl:
        assert ctl.list_workers()[0].served == 1  # it took the fast path to the worker
    assert resp.status.code == wire.OK
    assert wire.decode_docs(resp.docs)[0]["text"] == "y" * 50_000


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    except OSError:
        return False
    return True


def test_head_answers_not_serving_while_it_still_checks_its_workers(cluster: Cluster) -> None:
    """A readiness probe must reach the head during start-up (and hear NOT_SERVING), not be
    refused and back off."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from orchestrator.runtime.config import HeadConfig, WorkerAddress
    from orchestrator.runtime.head import HeadServer
    from tests.support.ports import free_port

    with socket.socket() as mute:  # accepts connections, never speaks: checks time out
        mute.bind(("127.0.0.1", 0))
        mute.listen()
        port = free_port()
        head = HeadServer(HeadConfig(
            shards=1, host="127.0.0.1", port=port, health_interval=0.5, token=TOKEN,
            workers=(WorkerAddress(0, f"127.0.0.1:{mute.getsockname()[1]}"),)))
        starting = cluster.lt.submit(head.start())
        try:
            wait_until(lambda: _accepts(port) or starting.done(), what="head port open")
            # a local subchannel pool: no backoff inherited from an earlier test's channel
            # to a port that free_port() hands out again
            with grpc.insecure_channel(f"127.0.0.1:{port}",
                                       options=[("grpc.use_local_subchannel_pool", 1)]) as ch:
                stub = health_pb2_grpc.HealthStub(ch)
                resp = stub.Check(health_pb2.HealthCheckRequest(), timeout=5,
                                  wait_for_ready=True)
                assert not starting.done()  # the worker's check is still pending
            assert resp.status == health_pb2.HealthCheckResponse.NOT_SERVING
        finally:
            starting.result(10)
            cluster.lt.run(head.stop(0))


def test_a_reply_to_a_cancelled_call_leaves_the_replica_connection_up(cluster: Cluster) -> None:
    """The client gives up, the relay resets the worker's stream, the worker answers anyway
    (its reply was already under way): RFC 9113 section 5.1 says such frames are ignored, so
    the connection, and every other call on it, must survive."""
    gate = Gate()
    head = cluster.head(1, [(0, cluster.serve_executor(gate))])
    (replica,) = head.pool
    with Client(addr(head)) as c:
        with pytest.raises(RequestError, match="no answer within the timeout"):
            c.post("/x", [{}], timeout=0.3)
        assert gate.started.is_set()
        link = replica.link
        assert link is not None and link.conn is not None
        conn = link.conn
        wait_until(lambda: not conn.streams, what="the relay to reset the worker's stream")
        gate.release.set()  # the worker now sends its reply on the reset stream
        assert c.post("/x", [{"i": 1}], timeout=5) == [{"i": 1}]
    assert link.conn is conn and conn.open and conn.usable


@pytest.mark.parametrize("polling", ["ANY", "ALL"])  # ANY: fast path; ALL: piped to grpcio
def test_a_call_the_client_cancels_is_not_counted_against_the_replica(
        cluster: Cluster, polling: str) -> None:
    gate = Gate()
    head = cluster.head(1, [(0, cluster.serve_executor(gate))],
                        polling=PollingPolicy.parse(polling))
    body = wire.encode_request("/x", [{}], None, request_id="cancelled", timeout=None)
    with grpc.insecure_channel(addr(head)) as channel, control(head) as ctl:
        call: Any = channel.unary_unary(wire.METHOD_CALL)
        pending = call.future(body, timeout=10)
        assert gate.started.wait(10), "the call never reached the executor"
        assert pending.cancel()
        wait_until(lambda: ctl.list_workers()[0].outstanding == 0, what="replica released")
        gate.release.set()
        (worker,) = ctl.list_workers()
        assert (worker.served, worker.failed, worker.state) == (0, 0, "ready")
        assert wire.parse_response(call(body, timeout=5)).status.code == wire.OK
        assert ctl.list_workers()[0].served == 1


def test_a_health_watch_ends_with_unavailable_and_does_not_hold_the_head_shutdown(
        cluster: Cluster) -> None:
    head = cluster.head(1, [(0, cluster.worker())])
    with grpc.insecure_channel(addr(head)) as channel:
        watch = health_pb2_grpc.HealthStub(channel).Watch(
            health_pb2.HealthCheckRequest(service=""), timeout=120)
        wait_until(lambda: next(watch).status == health_pb2.HealthCheckResponse.SERVING,
                   what="the watch to report SERVING")
        stopping = cluster.lt.submit(head.stop(grace=120))
        seen = []
        with pytest.raises(grpc.RpcError) as ended:
            for update in watch:
                seen.append(update.status)
        assert ended.value.code() == grpc.StatusCode.UNAVAILABLE
        assert seen == [health_pb2.HealthCheckResponse.NOT_SERVING]  # told first, then ended
        stopping.result(timeout=60)  # well within the 120 s grace: nothing else was in flight


class RecordingProxy:
    """A TCP pass-through in front of a worker that keeps what the head sends it, one
    buffer per connection (the head's health checks connect through it too)."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.sent: list[bytearray] = []
        self.sockets: list[socket.socket] = []
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen()
        self.port = self.listener.getsockname()[1]
        self.pool = ThreadPoolExecutor(16)
        self.accepting = self.pool.submit(self._accept)

    def _accept(self) -> None:
        while True:
            try:
                down, _ = self.listener.accept()
            except OSError:
                return
            up = socket.create_connection(("127.0.0.1", self.target))
            self.sockets += (down, up)
            record = bytearray()
            self.sent.append(record)
            self.pool.submit(self._pump, down, up, record)
            self.pool.submit(self._pump, up, down, None)

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket, record: bytearray | None) -> None:
        with contextlib.suppress(OSError):
            while chunk := src.recv(65536):
                if record is not None:
                    record += chunk
                dst.sendall(chunk)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() below
        self.accepting.result(5)
        self.listener.close()
        for s in self.sockets:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()
        self.pool.shutdown(wait=True)

    def header_blocks(self) -> list[list[tuple[bytes, bytes]]]:
        """Every header block the head sent, decoded per connection."""
        blocks = []
        for record in self.sent:
            data, decoder = bytes(record[len(CLIENT_HELLO):]), hpack.Decoder()
            while len(data) >= 9 and len(data) >= 9 + int.from_bytes(data[:3], "big"):
                n = int.from_bytes(data[:3], "big")
                if data[3] == HEADERS:
                    blocks.append(decoder.decode(data[9:9 + n]))  # small: END_HEADERS
                data = data[9 + n:]
        return blocks


def test_a_never_indexed_header_reaches_the_worker_never_indexed(cluster: Cluster) -> None:
    """RFC 7541 section 6.2.3: an intermediary must pass a never-indexed field (here a
    credential) on in that representation; the fast path decodes and re-encodes every
    block. (The pipe to the head's own grpcio server encodes the same way, and grpcio ends
    the call there.)"""
    w = cluster.worker()
    proxy = RecordingProxy(w.port)
    try:
        head = cluster.head(1, [])
        with control(head) as ctl:
            ctl.add_worker(0, f"127.0.0.1:{proxy.port}")
            wait_until(lambda: [x.state for x in ctl.list_workers()] == ["ready"],
                       what="the worker ready behind the proxy")
        secret = hpack.NeverIndexed((b"authorization", b"Bearer s3cret"))
        block = hpack.encode([
            (b":method", b"POST"), (b":scheme", b"http"),
            (b":path", wire.METHOD_CALL.encode()), (b":authority", b"head"),
            (b"content-type", b"application/grpc"), (b"te", b"trailers"), secret,
        ])
        body = wire.encode_request("/echo", [{"i": 7}])
        with socket.create_connection(("127.0.0.1", head.port), timeout=5) as s:
            s.sendall(CLIENT_HELLO + frame(HEADERS, END_HEADERS, 1, block)
                      + frame(DATA, END_STREAM, 1,
                              b"\x00" + struct.pack(">L", len(body)) + body))
            frames = _read_frames(s, until_end_of=1)
        assert any(k == DATA and sid == 1 for k, _, sid, _ in frames)  # it was served
        calls = [b for b in proxy.header_blocks()
                 if (b":path", wire.METHOD_CALL.encode()) in b]
        assert calls, "the call never reached the worker"
        forwarded = [f for f in calls[-1] if f[0] == b"authorization"]
        assert forwarded == [secret] and type(forwarded[0]) is hpack.NeverIndexed
    finally:
        proxy.close()
