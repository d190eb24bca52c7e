"""Sample executors: `Echo` (with a slow endpoint), `Broken`, `Sum` (uses_after), `Stamp`
(uses_before).

Run one: `python -m orchestrator.runtime worker --uses executors.echo:Echo --uses-with
'{"tag": "v2"}'`.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

from orchestrator import Executor, requests

Doc = dict[str, Any]


class Echo(Executor):
    """Echoes docs, stamped with its tag and where it ran."""

    def __init__(self, tag: str = "v1", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.tag = tag

    @requests(on="/echo")
    def echo(self, docs: list[Doc], **kwargs: Any) -> None:
        """Set tag, pod (hostname), shard and replica on every doc."""
        for d in docs:
            d["tag"] = self.tag
            d["pod"] = socket.gethostname()
            d["shard"] = self.runtime_args.shard_id
            d["replica"] = self.runtime_args.replica_id

    @requests(on="/slow")
    async def slow(self, docs: list[Doc], parameters: dict[str, Any], **kwargs: Any) -> None:
        """Wait `parameters["delay"]` seconds (default 0.5), then echo like /echo.

        Async, so a slow request does not hold the worker's handler thread.
        """
        await asyncio.sleep(float(parameters.get("delay", 0.5)))
        self.echo(docs)

    @requests
    def default(self, docs: list[Doc], **kwargs: Any) -> list[Doc]:
        """Any other endpoint: docs come back unchanged."""
        return docs


class Broken(Executor):
    """Fails at load time, to test start-up failure reporting."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        raise RuntimeError("broken on purpose")


class Sum(Executor):
    """uses_after for ALL polling: the head sends it ONE request whose docs are all shards'
    docs concatenated in shard order; it reduces them to one doc."""

    @requests
    def reduce(self, docs: list[Doc], **kwargs: Any) -> list[Doc]:
        """One doc: how many docs came in and from which shards."""
        shards = sorted({d["shard"] for d in docs if isinstance(d.get("shard"), int)})
        return [{"count": len(docs), "shards": shards}]


class Stamp(Executor):
    """uses_before: sees every request first and marks each doc."""

    @requests
    def stamp(self, docs: list[Doc], **kwargs: Any) -> None:
        """Set doc["before"] = True."""
        for d in docs:
            d["before"] = True
