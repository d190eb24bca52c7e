"""runtime.memory.trim_when_idle: memory is given back after start-up and after each
burst of requests, never while requests keep coming, never twice for one burst."""

from __future__ import annotations

import asyncio

from orchestrator.runtime.memory import _malloc_trim, trim_when_idle


def test_trims_at_start_and_once_after_each_burst() -> None:
    served = 0
    trims: list[int] = []  # the request count at each trim

    def trim(_pad: int) -> int:
        trims.append(served)
        return 1

    async def scenario() -> None:
        nonlocal served
        task = asyncio.ensure_future(trim_when_idle(lambda: served, idle=0.02, trim=trim))
        await asyncio.sleep(0.05)          # at rest after start-up: one trim, no more
        for _ in range(10):                # a burst: requests keep coming
            served += 1
            await asyncio.sleep(0.005)
        await asyncio.sleep(0.1)           # the burst is over
        served += 5                        # a second burst
        await asyncio.sleep(0.1)
        task.cancel()

    asyncio.run(scenario())
    # [0, 10, 15] on a quiet machine; a stall mid-burst longer than `idle` may add one
    assert trims[0] == 0 and 10 in trims and trims[-1] == 15
    assert trims == sorted(set(trims))  # never twice for the same count


def test_glibc_has_it() -> None:
    trim = _malloc_trim()
    assert trim is not None and trim(0) in (0, 1)
