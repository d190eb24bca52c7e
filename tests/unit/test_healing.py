"""`orchestrator.healing.keep_healthy`: the foreground heal loop, on the in-memory engine
with recording deployment handles."""

from __future__ import annotations

import threading
from typing import Any, cast

from orchestrator.control.healer import FULL_LOOK_EVERY
from orchestrator.deployment import Deployment
from orchestrator.engine.base import ContainerSpec
from orchestrator.engine.memory import MemoryEngine
from orchestrator.errors import RequestError
from orchestrator.healing import HealReport, keep_healthy
from orchestrator.planning import labels as L
from orchestrator.progress import ProgressCallback, ProgressEvent

IMAGE = "orchestrator-runtime:test"


class Healed:
    """A handle whose heal plays a script: a list of replaced pods, or an error; after the
    script it removes its pods (as `orchestrator down` from elsewhere would)."""

    def __init__(self, engine: MemoryEngine, name: str, script: list[Any]) -> None:
        self.engine, self.name, self.script = engine, name, list(script)
        self.calls: list[float] = []
        engine.run_container(ContainerSpec(name=f"{name}-head", image=IMAGE,
                                           labels=L.for_deployment(name)))

    def heal(self, unhealthy_for: float, on_progress: ProgressCallback | None = None,
             on_replaced: Any = None) -> list[str]:
        self.calls.append(unhealthy_for)
        step = self.script.pop(0) if self.script else None
        if not self.script:
            self.engine.remove_container(f"{self.name}-head")
        if isinstance(step, Exception):
            raise step
        if step and on_progress is not None:
            on_progress(ProgressEvent("added", self.name, 0, 0, pod=step[0],
                                      message="registered again"))
            on_progress(ProgressEvent("healthy", self.name, 0, 0, pod=step[0]))
        return list(step or [])


def engine() -> MemoryEngine:
    memory = MemoryEngine()
    memory.add_image(IMAGE)
    return memory


def test_heals_each_until_another_process_removed_them_all() -> None:
    memory = engine()
    a = Healed(memory, "a", [["a-s0-r0-g1"], RequestError("head down"), []])
    b = Healed(memory, "b", [[]])
    reports: list[HealReport] = []
    keep_healthy(cast(list[Deployment], [a, b]), 5.0, threading.Event(), reports.append,
                 poll=0)
    # which ones were removed is listed every FULL_LOOK_EVERY looks, not at every look
    assert a.calls == [5.0] * FULL_LOOK_EVERY and b.calls == [5.0] * FULL_LOOK_EVERY
    assert reports == [
        HealReport("a", "changed", ("a-s0-r0-g1",), "registered again"),
        HealReport("a", "replaced", ("a-s0-r0-g1",)),
        HealReport("a", "failed", message="head down"),  # reported; the next look retries
        HealReport("a", "removed"),
        HealReport("b", "removed"),
    ]


def test_stop_ends_the_loop_and_zero_turns_replacing_off() -> None:
    memory = engine()
    a = Healed(memory, "a", [[], [], []])
    stop = threading.Event()
    stop.set()
    keep_healthy(cast(list[Deployment], [a]), 5.0, stop, poll=0)
    assert a.calls == []
    looks = 0

    class Counting(threading.Event):
        def wait(self, timeout: float | None = None) -> bool:
            nonlocal looks
            looks += 1
            return looks > 3

    keep_healthy(cast(list[Deployment], [a]), 0, Counting(), poll=0)
    assert looks == 4 and a.calls == []
