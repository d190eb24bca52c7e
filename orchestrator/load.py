"""A bounded client load: threads that post without pause while something changes.

Used by the demo, the benchmarks and the zero-downtime tests: every request's start,
end, outcome and result docs are recorded, so a caller can count failures and see which
version answered when. Bounded in time (`max_seconds`) and stopped explicitly.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from orchestrator.client import Client
from orchestrator.errors import OrchestratorError
from orchestrator.tls import ClientTLS


@dataclass
class Result:
    started: float
    ended: float
    ok: bool
    docs: list[dict[str, Any]] = field(default_factory=list)
    error: str = ""


class Load:
    """`threads` clients post without pause until stopped (or `max_seconds` pass)."""

    def __init__(self, host: str, port: int, *, endpoint: str = "/echo",
                 parameters: dict[str, Any] | None = None, threads: int = 2,
                 max_seconds: float = 300.0, timeout: float = 30.0,
                 tls: ClientTLS | None = None) -> None:
        self.address = f"{host}:{port}"
        self.tls = tls  # the head serves TLS: e.g. Deployment.spec.own_tls()
        self.endpoint = endpoint
        self.parameters = parameters or {}
        self.timeout = timeout
        self.max_seconds = max_seconds
        self.results: list[Result] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True)
                         for i in range(threads)]

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        self.wait_for(5)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=self.timeout + 5)

    def _run(self, index: int) -> None:  # one client thread
        deadline = time.monotonic() + self.max_seconds
        with Client(self.address, tls=self.tls or False) as client:
            n = 0
            while not self._stop.is_set() and time.monotonic() < deadline:
                n += 1
                started = time.monotonic()
                try:
                    docs = client.post(self.endpoint, docs=[{"i": n, "thread": index}],
                                       parameters=self.parameters, timeout=self.timeout)
                    result = Result(started, time.monotonic(), True, docs)
                except OrchestratorError as exc:
                    result = Result(started, time.monotonic(), False, error=str(exc))
                with self._lock:
                    self.results.append(result)

    def wait_for(self, count: int, timeout: float = 60.0) -> None:
        """Block until `count` more requests have completed (the load is really flowing)."""
        with self._lock:
            target = len(self.results) + count
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.results) >= target:
                    return
            self._stop.wait(0.05)
        raise AssertionError(f"load stalled: fewer than {count} requests in {timeout}s")

    @property
    def failures(self) -> list[Result]:
        with self._lock:
            return [r for r in self.results if not r.ok]

    def after(self, moment: float) -> list[Result]:
        """Requests that started after `moment` (time.monotonic())."""
        with self._lock:
            return [r for r in self.results if r.started > moment]
