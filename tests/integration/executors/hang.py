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
