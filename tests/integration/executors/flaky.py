"""An executor version that fails to start on one replica slot: a rollout to it gets
part way, then must roll back the replicas it already replaced."""

from __future__ import annotations

import socket
from typing import Any

from orchestrator import Executor, requests


class FailOnReplica(Executor):
    """Echo-like (sets tag and pod), except that replica `fail_replica` raises in __init__."""

    def __init__(self, tag: str = "v1", fail_replica: int = 1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.tag = tag
        if self.runtime_args.replica_id == fail_replica:
            raise RuntimeError(f"replica {fail_replica} refuses to start")

    @requests
    def echo(self, docs: list[dict[str, Any]], **kwargs: Any) -> None:
        """Stamp tag and pod."""
        for d in docs:
            d["tag"] = self.tag
            d["pod"] = socket.gethostname()
