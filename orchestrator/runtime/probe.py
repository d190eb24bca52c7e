"""One gRPC health check with the standard library only: the Docker HEALTHCHECK's probe.

Docker runs the probe as a fresh process every interval (Swarm's start-first updates wait
for it), so its cost is paid over and over: importing grpcio alone takes ~70 ms of CPU,
which is more than the rest of the probe. This module speaks just enough HTTP/2 (cleartext,
prior knowledge, as gRPC does) to call `grpc.health.v1.Health/Check` with an empty request,
and reads the answer from the reply's DATA: the message `status: SERVING` is the two bytes
08 01. Header blocks are never decoded, so no HPACK decoder is needed; anything other than
that message (NOT_SERVING, an error status with no message, a reset, GOAWAY, a timeout, a
peer that is not HTTP/2) means not serving.
"""

from __future__ import annotations

import socket
import struct
import time
from typing import TYPE_CHECKING

from orchestrator.runtime.h2.frames import (  # no asyncio nor HPACK behind this import
    ACK,
    DATA,
    DEFAULT_MAX_FRAME,
    END_HEADERS,
    END_STREAM,
    GOAWAY,
    HEADERS,
    PADDED,
    PING,
    PREFACE,
    RST_STREAM,
    SETTINGS,
    frame,
)

if TYPE_CHECKING:
    import ssl  # imported by the caller only when the probe speaks TLS

STREAM = 1
SERVING = b"\x08\x01"  # HealthCheckResponse{status: SERVING}: field 1, varint 1
PATH = b"/grpc.health.v1.Health/Check"


def _literal(name_index: int, value: bytes) -> bytes:
    """HPACK literal without indexing, name from the static table (index < 15), raw value."""
    assert name_index < 15 and len(value) < 127
    return bytes((name_index, len(value))) + value


def request(port: int) -> bytes:
    """Preface, SETTINGS, and the one Check call on stream 1."""
    block = (b"\x83\x86"  # :method POST, :scheme http (static table 3 and 6)
             + _literal(4, PATH)  # :path
             + _literal(1, f"127.0.0.1:{port}".encode())  # :authority
             + b"\x0f\x10" + bytes((16,)) + b"application/grpc"  # content-type (index 31)
             + b"\x00\x02te\x08trailers")  # a new name: te
    message = b"\x00\x00\x00\x00\x00"  # uncompressed, 0 bytes: HealthCheckRequest(service="")
    return (PREFACE + frame(SETTINGS, 0, 0)
            + frame(HEADERS, END_HEADERS, STREAM, block)
            + frame(DATA, END_STREAM, STREAM, message))


def check(port: int, timeout: float = 2.0, host: str = "127.0.0.1",
          tls: ssl.SSLContext | None = None) -> bool:
    """True when the server on host:port answers SERVING within `timeout` seconds (over
    TLS with `tls`, e.g. `h2.tls.probe_context()` for a head serving TLS)."""
    deadline = time.monotonic() + timeout
    try:
        with socket.create_connection((host, port), timeout=timeout) as raw:
            if tls is None:
                raw.sendall(request(port))
                return _serving(raw, deadline)
            with tls.wrap_socket(raw, server_hostname=host) as sock:
                sock.sendall(request(port))
                return _serving(sock, deadline)
    except (OSError, ValueError):
        return False


def _serving(sock: socket.socket, deadline: float) -> bool:
    buffered = b""
    data = b""
    while True:
        while len(buffered) >= 9:
            length = int.from_bytes(buffered[:3], "big")
            if length > DEFAULT_MAX_FRAME:
                return False  # more than our SETTINGS allow: a FRAME_SIZE_ERROR
            if len(buffered) < 9 + length:
                break
            kind, flags = buffered[3], buffered[4]
            stream = int.from_bytes(buffered[5:9], "big") & 0x7FFF_FFFF
            payload, buffered = buffered[9:9 + length], buffered[9 + length:]
            if kind == SETTINGS and not flags & ACK:
                sock.sendall(frame(SETTINGS, ACK, 0))
            elif kind == PING and not flags & ACK:
                if len(payload) != 8:
                    return False  # a FRAME_SIZE_ERROR: the peer is broken
                sock.sendall(frame(PING, ACK, 0, payload))
            elif kind == GOAWAY or (kind == RST_STREAM and stream == STREAM):
                return False
            elif stream == STREAM and kind in (DATA, HEADERS):
                if kind == DATA:
                    if flags & PADDED:
                        if not payload or payload[0] >= len(payload):
                            return False  # padding as long as the frame: a PROTOCOL_ERROR
                        payload = payload[1:len(payload) - payload[0]]
                    data += payload
                if flags & END_STREAM:
                    return data == b"\x00" + struct.pack(">I", len(SERVING)) + SERVING
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        sock.settimeout(left)
        chunk = sock.recv(65536)
        if not chunk:
            return False
        buffered += chunk
