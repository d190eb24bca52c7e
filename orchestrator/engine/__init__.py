"""Container engines: the protocol, the Docker adapter and the in-memory fake."""

from orchestrator.engine.base import (
    MANAGED_LABEL,
    ContainerEngine,
    ContainerInfo,
    ContainerSpec,
    EngineEvent,
    Mount,
    NetworkInfo,
    PortBinding,
)

__all__ = [
    "MANAGED_LABEL",
    "ContainerEngine",
    "ContainerInfo",
    "ContainerSpec",
    "EngineEvent",
    "Mount",
    "NetworkInfo",
    "PortBinding",
]
