"""An executor version that starts healthy and then crashes: a rollout's `monitor` window
must catch it."""

from __future__ import annotations

import os
import threading
from typing import Any

from orchestrator import Executor, requests


class CrashAfter(Executor):
    """Serves, then kills its own process `after` seconds after start-up."""

    def __init__(self, after: float = 1.0, tag: str = "crashy", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.tag = tag
        threading.Timer(after, os._exit, args=(1,)).start()

    @requests
    def echo(self, docs: list[dict[str, Any]], **kwargs: Any) -> None:
        """Stamp the tag."""
        for d in docs:
            d["tag"] = self.tag


class CrashOnce(Executor):
    """Replica `replica` crashes once, `after` seconds after its first start; once the
    engine has restarted it (its container file system keeps the marker) it serves."""

    def __init__(self, after: float = 3.0, replica: int = 0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        marker = os.path.join(self.runtime_args.workspace, "crashed-once")
        if self.runtime_args.replica_id == replica and not os.path.exists(marker):
            open(marker, "w").close()
            threading.Timer(after, os._exit, args=(1,)).start()

    @requests
    def echo(self, docs: list[dict[str, Any]], **kwargs: Any) -> None:
        """Stamp the pod."""
        for d in docs:
            d["pod"] = self.runtime_args.name
