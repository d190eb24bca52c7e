"""Container engines: the protocol, the Docker adapter and the in-memory fake.

Importing this package loads only the protocol and the value types. The fake
(`MemoryEngine`, ...) is loaded on first use of its names, and `DockerEngine` is
never re-exported (import it from orchestrator.engine.docker_engine), so users of
the fake never import docker and users of Docker never load the fake.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from orchestrator.engine.base import ContainerEngine
from orchestrator.model import (
    MANAGED_LABEL,
    ContainerInfo,
    ContainerSpec,
    EngineEvent,
    Mount,
    NetworkInfo,
    PortBinding,
)

if TYPE_CHECKING:
    from orchestrator.engine.memory import Clock, FakeClock, Faults, MemoryEngine, RealClock

_FAKE = ("Clock", "FakeClock", "Faults", "MemoryEngine", "RealClock")

__all__ = [
    "MANAGED_LABEL",
    "Clock",
    "ContainerEngine",
    "ContainerInfo",
    "ContainerSpec",
    "EngineEvent",
    "FakeClock",
    "Faults",
    "MemoryEngine",
    "Mount",
    "NetworkInfo",
    "PortBinding",
    "RealClock",
]


def __getattr__(name: str) -> Any:
    if name in _FAKE:
        return getattr(importlib.import_module("orchestrator.engine.memory"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
