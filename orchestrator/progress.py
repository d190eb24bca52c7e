"""Progress events of start, rolling update and scale, for callbacks and progress bars."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

EventKind = Literal[
    "plan", "starting", "healthy", "added", "draining", "stopped", "failed", "rollback", "done",
]


@dataclass(frozen=True)
class ProgressEvent:
    """One step of an operation. `done`/`total` count replica steps for a progress bar."""

    kind: EventKind
    deployment: str
    done: int
    total: int
    shard: int | None = None
    replica: int | None = None
    pod: str = ""
    message: str = ""


ProgressCallback = Callable[[ProgressEvent], None]
