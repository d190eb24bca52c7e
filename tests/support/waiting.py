"""Poll a real condition until a deadline (never a bare sleep standing in for readiness)."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_until(condition: Callable[[], bool], *, timeout: float = 10.0, what: str = "") -> None:
    """Return as soon as `condition()` holds.

    Raises:
        TimeoutError: it still did not hold after `timeout` seconds.
    """
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"still not true after {timeout}s: {what or condition}")
        time.sleep(0.02)
