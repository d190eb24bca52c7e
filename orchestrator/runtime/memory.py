"""Giving memory back to the system once a burst of requests is over.

glibc keeps the heap pages that a burst of requests freed (grpc's buffers, the relay's
connection state), and a process at rest then holds its high-water mark for good. After
start-up, and after every burst followed by a quiet moment, `malloc_trim(0)` returns
those pages: in a head measured after a load, 1.2-1.6 MB of 25 (docs/scale.md). A
C library without `malloc_trim` (musl) gets nothing done, at no cost.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

IDLE = 2.0
"""Seconds without a request after which a burst counts as over."""


def _malloc_trim() -> Callable[[int], int] | None:
    try:
        import ctypes

        trim: Callable[[int], int] = ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None
    return trim


async def trim_when_idle(activity: Callable[[], int], idle: float = IDLE,
                         trim: Callable[[int], int] | None = None) -> None:
    """Trim once now, then whenever `activity()` (a count of requests served) moved and
    has stayed still for `idle` seconds. Runs until cancelled. `trim`: glibc's
    `malloc_trim` by default."""
    trim = trim or _malloc_trim()
    if trim is None:
        return
    trim(0)
    trimmed_at = last = activity()
    while True:
        await asyncio.sleep(idle)
        now = activity()
        if now == last and now != trimmed_at:
            trim(0)
            trimmed_at = now
        last = now
