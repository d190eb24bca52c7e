"""Executors that misbehave on purpose, for start-up failure tests."""

from __future__ import annotations

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
