"""A client load in its own process, as real clients are: the orchestrating process's work
(polling, engine calls) must not share a GIL with the clients whose latency is measured.

Timestamps are `time.monotonic()`, which is one system-wide clock on Linux, so the parent
can cut the child's results into windows with its own timestamps.
"""

from __future__ import annotations

import multiprocessing as mp
import multiprocessing.connection
import multiprocessing.sharedctypes
import threading
import time
from typing import Any

Sample = tuple[float, float, bool]  # started, ended, ok


def _child(address: str, threads: int, rate: float, stop: Any, count: Any, conn: Any) -> None:
    from orchestrator.client import Client
    from orchestrator.errors import OrchestratorError

    samples: list[Sample] = []
    lock = threading.Lock()

    def run() -> None:
        period = threads / rate if rate > 0 else 0.0
        next_send = time.monotonic()
        with Client(address) as client:
            while not stop.is_set():
                if period:  # paced (open-loop) load: send on a schedule, not back to back
                    next_send += period
                    pause = next_send - time.monotonic()
                    if pause > 0:
                        stop.wait(pause)
                started = time.monotonic()
                try:
                    client.post("/echo", docs=[{"i": 1}], timeout=30)
                    ok = True
                except OrchestratorError:
                    ok = False
                with lock:
                    samples.append((started, time.monotonic(), ok))
                with count.get_lock():
                    count.value += 1

    workers = [threading.Thread(target=run) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    conn.send(samples)
    conn.close()


class ProcessLoad:
    """`threads` clients in a child process post /echo until `stop()`: without pause, or at
    `rate` requests per second in total when `rate` > 0."""

    def __init__(self, address: str, threads: int = 2, rate: float = 0.0) -> None:
        ctx = mp.get_context("spawn")
        self._stop = ctx.Event()
        self._count: multiprocessing.sharedctypes.Synchronized[int] = ctx.Value("i", 0)
        self._recv, send = ctx.Pipe(duplex=False)
        self._proc = ctx.Process(target=_child,
                                 args=(address, threads, rate, self._stop, self._count,
                                       send))
        self.samples: list[Sample] = []

    def __enter__(self) -> ProcessLoad:
        self._proc.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait_for(self, more: int, timeout: float = 120.0) -> None:
        """Block until `more` further requests have completed."""
        target = self._count.value + more
        deadline = time.monotonic() + timeout
        while self._count.value < target:
            if time.monotonic() > deadline or not self._proc.is_alive():
                raise RuntimeError(f"load stalled below {target} requests")
            self._stop.wait(0.02)

    def stop(self) -> list[Sample]:
        if self._proc.is_alive() or not self.samples:
            self._stop.set()
            if self._recv.poll(60):
                self.samples = self._recv.recv()
            self._proc.join(timeout=30)
        return self.samples
