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
from orchestrator.engine.memory import Clock, FakeClock, Faults, MemoryEngine, RealClock

# DockerEngine is not re-exported: import it from orchestrator.engine.docker_engine,
# so users of the fake never import docker.
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
