"""In-process runtime harness: real gRPC servers on loopback, driven from a loop thread."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest

from orchestrator.runtime.config import HeadConfig, WorkerAddress
from orchestrator.runtime.executor import Executor, RuntimeArgs
from orchestrator.runtime.head import HeadServer
from orchestrator.runtime.loader import load_executor
from orchestrator.runtime.worker import WorkerServer

ROOT = Path(__file__).resolve().parents[3]
ECHO = f"{ROOT}/executors/echo.py"
TOKEN = "s3cret"
T = TypeVar("T")


def wait_until(condition: Callable[[], bool], timeout: float = 10.0, what: str = "") -> None:
    """Poll a real condition until it holds; fail the test after `timeout`."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what or condition}")
        time.sleep(0.01)


class LoopThread:
    """An asyncio loop on a daemon thread: servers live here, tests call from outside."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def submit(self, coro: Coroutine[Any, Any, T]) -> Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        return self.submit(coro).result(timeout)

    def close(self) -> None:
        async def drain() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.loop.shutdown_asyncgens()

        self.run(drain())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


class Cluster:
    """Starts workers and heads on one LoopThread and stops them all at teardown."""

    def __init__(self, lt: LoopThread) -> None:
        self.lt = lt
        self._servers: list[WorkerServer | HeadServer] = []

    def worker(
        self, uses: str = f"{ECHO}:Echo", *, shard: int = 0, replica: int = 0,
        port: int = 0, max_message_bytes: int | None = None, **uses_with: Any,
    ) -> WorkerServer:
        executor = load_executor(uses, uses_with,
                                 RuntimeArgs(f"w{shard}-{replica}", shard, replica))
        return self.serve_executor(executor, port=port, max_message_bytes=max_message_bytes)

    def serve_executor(
        self, executor: Executor, *, port: int = 0, max_message_bytes: int | None = None
    ) -> WorkerServer:
        kwargs: dict[str, Any] = {"host": "127.0.0.1", "port": port}
        if max_message_bytes:
            kwargs["max_message_bytes"] = max_message_bytes
        server = WorkerServer(executor, **kwargs)
        self.lt.run(server.start())
        self._servers.append(server)
        return server

    def head(self, shards: int = 1, workers: list[tuple[int, WorkerServer]] = (),  # type: ignore[assignment]
             port: int = 0, **kwargs: Any) -> HeadServer:
        kwargs.setdefault("token", TOKEN)
        kwargs.setdefault("health_interval", 0.05)
        cfg = HeadConfig(shards=shards, host="127.0.0.1", port=port, grace=1.0,
                         workers=tuple(WorkerAddress(s, addr(w)) for s, w in workers), **kwargs)
        server = HeadServer(cfg)
        self.lt.run(server.start())
        self._servers.append(server)
        return server

    def stop(self, server: WorkerServer | HeadServer, grace: float | None = 0) -> None:
        self.lt.run(server.stop(grace))

    def close(self) -> None:
        for server in reversed(self._servers):
            self.lt.run(server.stop(0))


def addr(server: WorkerServer | HeadServer) -> str:
    return f"127.0.0.1:{server.port}"


@contextmanager
def running_cluster() -> Iterator[Cluster]:
    """A Cluster on its own loop thread; every server is stopped on exit, even on failure."""
    lt = LoopThread()
    c = Cluster(lt)
    try:
        yield c
    finally:
        try:
            c.close()
        finally:
            lt.close()
