"""Helpers of the sans-I/O HTTP/2 tests: a server connection fed plain bytes, with a
recording handler and a fake clock."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from orchestrator.runtime import hpack
from orchestrator.runtime.h2.connection import (
    Buffers,
    Connection,
    Headers,
    ServerConnection,
    Stream,
)
from orchestrator.runtime.h2.frames import (
    END_HEADERS,
    END_STREAM,
    GOAWAY,
    HEADERS,
    PREFACE,
    settings_frame,
)
from orchestrator.runtime.h2.limits import Limits

REQUEST = [(b":method", b"POST"), (b":scheme", b"http"), (b":path", b"/svc/M"),
           (b":authority", b"head"), (b"content-type", b"application/grpc")]
CLIENT_START = PREFACE + settings_frame()


class Clock:
    """Seconds that move only when a test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Recorder:
    """A stream handler that keeps every event."""

    events: list[tuple[str, int, object]] = field(default_factory=list)

    def on_headers(self, conn: Connection, stream: Stream, headers: Headers, end: bool) -> None:
        self.events.append(("headers", stream.sid, (headers, end)))

    def on_data(self, conn: Connection, stream: Stream, data: bytes, end: bool) -> None:
        self.events.append(("data", stream.sid, (data, end)))
        conn.ack(stream, len(data))

    def on_reset(self, conn: Connection, stream: Stream, refused: bool) -> None:
        self.events.append(("reset", stream.sid, refused))


class Server(ServerConnection):
    """A server connection whose streams all go to one Recorder; `close` is recorded."""

    def __init__(self, limits: Limits | None = None, clock: Clock | None = None,
                 shared: Buffers | None = None) -> None:
        self.fake_clock = clock or Clock()
        super().__init__(limits or Limits(), shared, self.fake_clock)
        self.recorder = Recorder()
        self.closed_hard: bool | None = None
        self.sent = bytearray()

    def start(self, stream: Stream, headers: Headers, end: bool) -> None:
        stream.handler = self.recorder
        self.recorder.events.append(("open", stream.sid, (headers, end)))

    def close(self, hard: bool = False) -> None:
        super().close(hard)
        self.closed_hard = hard

    def feed(self, data: bytes) -> None:
        self.receive(data)
        self.sent += self.data_to_send()

    def frames(self) -> list[tuple[int, int, int, bytes]]:
        """Every frame sent so far."""
        self.sent += self.data_to_send()
        return parse_frames(bytes(self.sent))

    def goaway_code(self) -> int | None:
        codes = [struct.unpack(">LL", p[:8])[1] for k, _, _, p in self.frames() if k == GOAWAY]
        return codes[-1] if codes else None


def parse_frames(data: bytes) -> list[tuple[int, int, int, bytes]]:
    out = []
    while len(data) >= 9:
        n = int.from_bytes(data[:3], "big")
        if len(data) < 9 + n:
            break
        out.append((data[3], data[4], int.from_bytes(data[5:9], "big") & 0x7FFFFFFF,
                    data[9:9 + n]))
        data = data[9 + n:]
    return out


def request(sid: int, end: bool = True, headers: Headers | None = None) -> bytes:
    """A request's HEADERS frame (stateless HPACK)."""
    from orchestrator.runtime.h2.frames import frame

    block = hpack.encode(headers or REQUEST)
    return frame(HEADERS, END_HEADERS | (END_STREAM if end else 0), sid, block)


def started(limits: Limits | None = None, clock: Clock | None = None,
            shared: Buffers | None = None) -> Server:
    """A server connection past the client's preface and SETTINGS."""
    server = Server(limits, clock, shared)
    server.feed(CLIENT_START)
    return server
