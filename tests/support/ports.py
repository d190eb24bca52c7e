"""Free loopback ports for the tests."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A port that was free a moment ago (only for subprocesses; servers bind port 0)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port
