"""A host port reserved for a deployment's head from construction until its start.

Jina's Deployment knows its port as soon as it is built (its parser draws a random free
port). We do the same, without Jina's race: the port is bound (not listened on) by a socket
of this process from `Deployment(...)` on, so no other `bind(0)` on this host gets it, and
the socket is closed just before the head's container is created and published there.

What a reservation cannot cover: Docker's own port allocator (another container published
on "any free port" between construction and start may be given it), and an engine on
another host (the orchestrator inside a container, or DOCKER_HOST=tcp://...). In both
cases the head cannot be published on the reserved port, and `Deployment.start` falls back
to a port Docker picks (`head_port` then reports that one).
"""

from __future__ import annotations

import contextlib
import socket


class PortReservation:
    """One free TCP port on `host`, held until `release`."""

    def __init__(self, host: str) -> None:
        self._sock: socket.socket | None = _bound(host)
        self.port: int = self._sock.getsockname()[1]

    @property
    def held(self) -> bool:
        return self._sock is not None

    def release(self) -> None:
        """Free the port for the engine to publish the head on (idempotent)."""
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.release()


def reserve(host: str) -> PortReservation | None:
    """A reservation, or None when no port can be bound here (the engine then picks one at
    start, as before)."""
    try:
        return PortReservation(host)
    except OSError:
        return None


def _bound(host: str) -> socket.socket:
    """A socket bound to a free port of `host` (all interfaces when `host` is not an
    address of this machine)."""
    wanted = "0.0.0.0" if host in ("", "0.0.0.0") else host
    for address in (wanted, "0.0.0.0"):
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.bind((address, 0))
        except OSError:
            sock.close()
            continue
        return sock
    raise OSError(f"no free port could be bound on {host}")
