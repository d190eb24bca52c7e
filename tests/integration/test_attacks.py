"""HTTP/2 attacks on a real Deployment's published head port, one test per attack class.

For each: a normal client's calls keep succeeding throughout, the attacker's connection is
closed (with GOAWAY and the code the defence names, where one is sent), and the head
container's memory (engine stats) stays under the ceiling the head's limits state
(`h2.limits.memory_ceiling`) above its memory before the attack.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest

from orchestrator import Client
from orchestrator.deployment import Deployment
from orchestrator.engine.cleanup import list_owned, remove_owned
from orchestrator.planning import labels as L
from orchestrator.runtime import hpack, wire
from orchestrator.runtime.h2.connection import client_hello
from orchestrator.runtime.h2.frames import (
    CANCEL,
    CONTINUATION,
    DATA,
    END_HEADERS,
    END_STREAM,
    ENHANCE_YOUR_CALM,
    GOAWAY,
    HEADERS,
    PING,
    PREFACE,
    REFUSED_STREAM,
    RST_STREAM,
    S_INITIAL_WINDOW,
    frame,
    settings_frame,
)
from orchestrator.runtime.h2.limits import Limits, memory_ceiling
from tests.support.paths import ECHO

if TYPE_CHECKING:
    from orchestrator.engine.docker_engine import DockerEngine

pytestmark = pytest.mark.integration

LIMITS = Limits.for_messages(wire.DEFAULT_MAX_MESSAGE_BYTES)  # what a deployed head uses
CEILING = memory_ceiling(LIMITS)
HELLO = client_hello(Limits())
CALL = [(b":method", b"POST"), (b":scheme", b"http"), (b":path", wire.METHOD_CALL.encode()),
        (b":authority", b"head"), (b"content-type", b"application/grpc"), (b"te", b"trailers")]


@dataclass
class Watch:
    """A normal client calling in a loop, and the head container's memory sampled."""

    port: int
    container: Any
    ok: int = 0
    failures: list[Exception] = field(default_factory=list)
    peak: int = 0
    baseline: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def memory(self) -> int:
        stats = self.container.stats(stream=False, one_shot=True)["memory_stats"]
        detail = stats.get("stats", {})
        cache = detail.get("inactive_file", detail.get("total_inactive_file", 0))
        return int(stats["usage"]) - int(cache)

    def __enter__(self) -> Watch:
        self.baseline = self.peak = self.memory()
        for target in (self._call, self._sample):
            thread = threading.Thread(target=target, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def _call(self) -> None:
        with Client(f"127.0.0.1:{self.port}") as client:
            n = 0
            while not self._stop.is_set():
                try:
                    out = client.post("/echo", [{"n": n}], timeout=30)
                    assert out[0]["n"] == n
                    self.ok += 1
                except Exception as exc:  # every failure is reported
                    self.failures.append(exc)
                n += 1

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.memory())

    def __exit__(self, *exc: object) -> None:
        okay_before = self.ok
        while self.ok < okay_before + 3 and not self.failures:  # calls still go through
            time.sleep(0.01)
        self._stop.set()
        for thread in self._threads:
            thread.join(60)


@pytest.fixture(scope="module")
def deployment(docker_engine: DockerEngine, runtime_image: str) -> Iterator[Deployment]:
    name = f"t{uuid.uuid4().hex[:10]}"
    try:
        with Deployment(name=name, uses=f"{ECHO}:Echo", replicas=2,
                        image=runtime_image) as dep:
            yield dep
    finally:
        left = list_owned(docker_engine, name)
        if left:
            remove_owned(docker_engine, name, grace=0)
            pytest.fail(f"deployment {name} left resources behind: {', '.join(left.names())}",
                        pytrace=False)


@pytest.fixture
def head_container(deployment: Deployment, docker_engine: DockerEngine) -> Any:
    import docker  # the engine's stats, for this test only (the adapter has no stats call)

    heads = [c for c in docker_engine.list_containers(L.for_deployment(deployment.name))
             if c.labels[L.ROLE] == "head"]
    client = docker.from_env()
    try:
        yield client.containers.get(heads[0].id)
    finally:
        client.close()


def read_until_closed(sock: socket.socket, timeout: float = 120.0) -> bytes:
    """What the head sends until it closes the connection."""
    sock.settimeout(timeout)
    received = b""
    try:
        while chunk := sock.recv(1 << 16):
            received += chunk
    except ConnectionResetError:
        pass
    return received


def frames(data: bytes) -> list[tuple[int, int, int, bytes]]:
    out = []
    while len(data) >= 9 and len(data) >= 9 + int.from_bytes(data[:3], "big"):
        n = int.from_bytes(data[:3], "big")
        out.append((data[3], data[4], int.from_bytes(data[5:9], "big"), data[9:9 + n]))
        data = data[9 + n:]
    return out


def goaway_code(data: bytes) -> int | None:
    codes = [struct.unpack(">LL", p[:8])[1] for k, _, _, p in frames(data) if k == GOAWAY]
    return codes[-1] if codes else None


def call(sid: int, docs: list[dict[str, Any]] | None = None, end: bool = True) -> bytes:
    body = wire.encode_request("/echo", docs or [{}])
    message = b"\x00" + struct.pack(">L", len(body)) + body
    return (frame(HEADERS, END_HEADERS, sid, hpack.encode(CALL))
            + frame(DATA, END_STREAM if end else 0, sid, message))


def attack(port: int, payload: bytes, *, prefix: bytes = HELLO) -> bytes:
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(prefix + payload)
        return read_until_closed(sock)


# ---- one attack per class: each returns what the attacker received before the close ----

def bomb(port: int) -> bytes:
    insert = b"\x40\x06x-bomb" + hpack._encode_int(4000, 7) + b"v" * 4000
    block = hpack.encode(CALL) + insert + b"\xbe" * 60000
    return attack(port, frame(HEADERS, END_HEADERS, 1, block))


def continuation_flood(port: int) -> bytes:
    return attack(port, frame(HEADERS, 0, 1, b"\x82")
                  + frame(CONTINUATION, 0, 1, b"") * (LIMITS.max_continuations + 10))


def rapid_reset(port: int) -> bytes:
    return attack(port, b"".join(call(sid) + frame(RST_STREAM, 0, sid, struct.pack(">L", CANCEL))
                                 for sid in range(1, 4 * LIMITS.max_resets, 2)))


def ping_flood(port: int) -> bytes:
    return attack(port, frame(PING, 0, 0, b"\x00" * 8) * (2 * LIMITS.max_pings))


def settings_flood(port: int) -> bytes:
    return attack(port, settings_frame() * (2 * LIMITS.max_settings))


def empty_frame_flood(port: int) -> bytes:
    return attack(port, call(1, end=False)
                  + frame(DATA, 0, 1, b"") * (2 * LIMITS.max_empty_frames))


def slow_reader(port: int) -> bytes:
    """No window opened: answers of ~0.5 MB each wait in the head until stall_timeout."""
    blob = "x" * (512 << 10)  # each request in one DATA frame, under max_frame_size
    return attack(port, b"".join(call(sid, [{"blob": blob}]) for sid in range(1, 40, 2)),
                  prefix=PREFACE + settings_frame((S_INITIAL_WINDOW, 0)))


def never_finishes_preface(port: int) -> bytes:
    return attack(port, b"", prefix=PREFACE[:10])


def too_many_streams(port: int) -> bytes:
    over = LIMITS.max_concurrent_streams + LIMITS.max_resets + 10
    return attack(port, b"".join(call(sid, end=False) for sid in range(1, 2 * over, 2)))


ATTACKS: dict[str, tuple[Callable[[int], bytes], int | None]] = {
    "decompression bomb": (bomb, ENHANCE_YOUR_CALM),
    "CONTINUATION flood": (continuation_flood, ENHANCE_YOUR_CALM),
    "rapid reset": (rapid_reset, ENHANCE_YOUR_CALM),
    "PING flood": (ping_flood, ENHANCE_YOUR_CALM),
    "SETTINGS flood": (settings_flood, ENHANCE_YOUR_CALM),
    "empty-frame flood": (empty_frame_flood, ENHANCE_YOUR_CALM),
    "zero-window slow reader": (slow_reader, ENHANCE_YOUR_CALM),
    "handshake never finished": (never_finishes_preface, None),
    "too many streams": (too_many_streams, ENHANCE_YOUR_CALM),
}


@pytest.mark.parametrize("name", list(ATTACKS))
def test_attack(name: str, deployment: Deployment, head_container: Any) -> None:
    run, code = ATTACKS[name]
    with Watch(deployment.head_port, head_container) as watch:
        received = run(deployment.head_port)  # returns once the head closed the connection
    assert goaway_code(received) == code, frames(received)[-3:]
    if name == "too many streams":
        refused = [sid for k, _, sid, p in frames(received)
                   if k == RST_STREAM and p == struct.pack(">L", REFUSED_STREAM)]
        assert refused and min(refused) == 2 * LIMITS.max_concurrent_streams + 1
    assert watch.failures == [] and watch.ok > 0
    print(f"\n{name}: {watch.ok} normal calls, head memory {watch.baseline >> 20} MiB -> "
          f"peak {watch.peak >> 20} MiB (ceiling {CEILING >> 20} MiB above the baseline)")
    assert watch.peak <= watch.baseline + CEILING


def test_too_many_connections(deployment: Deployment, head_container: Any) -> None:
    """Past max_connections a new connection is dropped before any byte is answered."""
    held: list[socket.socket] = []
    dropped = None
    with Watch(deployment.head_port, head_container) as watch:
        try:
            for _ in range(LIMITS.max_connections + 1):
                sock = socket.create_connection(("127.0.0.1", deployment.head_port))
                held.append(sock)
                sock.sendall(HELLO)
                sock.settimeout(30)
                try:
                    first = sock.recv(1 << 16)
                except ConnectionResetError:
                    first = b""
                if not first:  # closed at once: the limit
                    dropped = len(held)
                    break
        finally:
            for sock in held:
                sock.close()
    assert dropped is not None and dropped <= LIMITS.max_connections
    assert watch.failures == [] and watch.ok > 0
    print(f"\ntoo many connections: dropped at #{dropped}; head memory "
          f"{watch.baseline >> 20} MiB -> peak {watch.peak >> 20} MiB")
    assert watch.peak <= watch.baseline + CEILING
