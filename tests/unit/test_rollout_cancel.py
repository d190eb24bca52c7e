"""Ctrl-C during an update: the step under way (a thread) ends before the cancellation
goes on, so the rollout lock is never released while a thread still changes pods."""

from __future__ import annotations

import asyncio
import threading

import pytest

from orchestrator.control.rollout import _whole_step


def test_a_cancelled_step_still_ends_before_the_cancellation_goes_on() -> None:
    started, release = threading.Event(), threading.Event()
    ended: list[str] = []

    def step(name: str) -> None:
        started.set()
        release.wait(10)
        ended.append(name)

    async def main() -> None:
        task = asyncio.ensure_future(_whole_step(step, "s0-r1"))
        await asyncio.to_thread(started.wait, 10)
        task.cancel()
        await asyncio.sleep(0)  # the cancellation reaches the step's await
        assert not task.done()  # it waits for the thread instead of leaving it behind
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert ended == ["s0-r1"]

    asyncio.run(main())


def test_an_uncancelled_step_returns_or_raises_as_it_is() -> None:
    def fails() -> None:
        raise ValueError("no")

    asyncio.run(_whole_step(lambda: None))
    with pytest.raises(ValueError, match="no"):
        asyncio.run(_whole_step(fails))
