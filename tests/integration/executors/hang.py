"""Executors that misbehave on purpose: start-up failures, hung replicas, hung requests."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from orchestrator import Executor, requests


class NeverReady(Executor):
    """Its __init__ never returns, so the worker never reports SERVING."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        threading.Event().wait()

    @requests
    def default(self, docs: list[dict[str, Any]], **kwargs: Any) -> None:
        """Never reached."""


class Freezes(Executor):
    """Serves /echo; /freeze blocks the worker's event loop for good, so its health checks
    stop answering while the container keeps running: a hung replica."""

    @requests(on="/echo")
    def echo(self, docs: list[dict[str, Any]], **kwargs: Any) -> None:
        for d in docs:
            d["pod"] = self.runtime_args.name

    @requests(on="/freeze")
    async def freeze(self, docs: list[dict[str, Any]], **kwargs: Any) -> None:
        threading.Event().wait()  # on the event loop: nothing else runs in this worker


class HangsOn(Executor):
    """A worker that hangs on some requests while staying healthy: `/hang` never answers
    on the replicas listed in `hang_replicas` (every replica by default), and answers like
    `/echo` on the others; `/echo` always answers. The handler awaits forever, so the
    worker's event loop (and its health checks) keeps running: a hung request, not a dead
    replica."""

    def __init__(self, hang_replicas: list[int] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.hang_replicas = hang_replicas

    @requests(on="/echo")
    def echo(self, docs: list[dict[str, Any]], **kwargs: Any) -> None:
        for d in docs:
            d["replica"] = self.runtime_args.replica_id

    @requests(on="/hang")
    async def hang(self, docs: list[dict[str, Any]], parameters: dict[str, Any],
                   **kwargs: Any) -> None:
        """Hangs on the replicas of `hang_replicas`, or on every one when the request's
        parameters say {"everywhere": true}."""
        if (self.hang_replicas is None or parameters.get("everywhere")
                or self.runtime_args.replica_id in self.hang_replicas):
            await asyncio.Event().wait()
        self.echo(docs)

    @requests(on="/fail")
    def fail(self, docs: list[dict[str, Any]], **kwargs: Any) -> None:
        raise ValueError("failed on purpose")
