"""Value types shared by planning and the engines: what a container is, as data.

Both `planning/` (which decides) and `engine/` (which does) import this module, and it
imports neither, so the two never form a loop. Every type is a frozen dataclass.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from orchestrator.labels import MANAGED as MANAGED_LABEL

__all__ = [
    "MANAGED_LABEL",
    "ContainerInfo",
    "ContainerSpec",
    "ContainerStatus",
    "EngineEvent",
    "HealthStatus",
    "LogLine",
    "Mount",
    "NetworkInfo",
    "PortBinding",
    "RestartPolicy",
    "WorkerStatus",
]

RestartPolicy = Literal["no", "on-failure", "always", "unless-stopped"]


@dataclass(frozen=True)
class PortBinding:
    """Publish `container_port/tcp` on `host_ip:host_port` (None: the engine picks a free one)."""

    container_port: int
    host_ip: str = "127.0.0.1"
    host_port: int | None = None


@dataclass(frozen=True)
class Mount:
    """A bind mount of a host path into the container."""

    source: str
    target: str
    read_only: bool = True


@dataclass(frozen=True)
class ContainerSpec:
    """Everything needed to create and start one container."""

    name: str
    image: str
    command: tuple[str, ...] = ()
    entrypoint: tuple[str, ...] | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    network: str | None = None
    aliases: tuple[str, ...] = ()
    hostname: str | None = None
    ports: tuple[PortBinding, ...] = ()
    mounts: tuple[Mount, ...] = ()
    user: str | None = None
    working_dir: str | None = None
    cpus: float | None = None
    memory_bytes: int | None = None
    gpus: int | None = None  # None: none; -1: all
    gpu_ids: tuple[str, ...] = ()  # these devices (then `gpus` is their count)
    cpu_shares: int | None = None  # relative CPU weight under contention (default 1024)
    cap_drop: tuple[str, ...] = ("ALL",)
    security_opt: tuple[str, ...] = ("no-new-privileges",)
    restart_policy: RestartPolicy = "no"
    restart_max_retries: int = 0
    extra_hosts: Mapping[str, str] = field(default_factory=dict)
    stop_signal: str = "SIGTERM"
    stop_timeout: int | None = None
    # log rotation when the engine logs to files (json-file, local): rotate at this many
    # bytes, keep this many files; None: the engine's own settings
    log_max_bytes: int | None = None
    log_max_files: int = 1
    # False: the image's HEALTHCHECK is turned off for this container (worker pods: their
    # head checks them over gRPC; an exec'd probe per replica costs ~0.4% of a core at rest
    # and piles up under load, see docs/scale.md)
    image_healthcheck: bool = True
    # where the pod may run, on an engine of several nodes (Swarm placement constraints such
    # as "node.labels.zone==a"); an engine of one host ignores them
    constraints: tuple[str, ...] = ()


ContainerStatus = Literal[
    "created", "running", "paused", "restarting", "removing", "exited", "dead"
]
HealthStatus = Literal["starting", "healthy", "unhealthy"]


@dataclass(frozen=True)
class ContainerInfo:
    """A snapshot of one container, as the engine reports it."""

    id: str
    name: str
    image: str
    labels: Mapping[str, str]
    status: ContainerStatus
    exit_code: int | None = None
    health: HealthStatus | None = None
    ip_addresses: Mapping[str, str] = field(default_factory=dict)  # network name -> IP
    ports: Mapping[int, tuple[str, int]] = field(default_factory=dict)  # container -> host
    started_at: datetime | None = None
    hostname: str = ""
    restart_count: int = 0
    oom_killed: bool = False
    env: Mapping[str, str] = field(default_factory=dict, repr=False)  # may hold secrets
    node: str = ""  # the node it runs on, on an engine of several nodes (Swarm); "" on one host

    @property
    def running(self) -> bool:
        return self.status == "running"


@dataclass(frozen=True)
class LogLine:
    """One log line and when the container wrote it."""

    time: datetime
    text: str


@dataclass(frozen=True)
class NetworkInfo:
    """A user-defined network."""

    id: str
    name: str
    labels: Mapping[str, str]


@dataclass(frozen=True)
class VolumeInfo:
    """A named volume. The orchestrator keeps records in their labels (the rollout history:
    one empty volume per revision, never mounted), as kubectl keeps old ReplicaSets."""

    name: str
    labels: Mapping[str, str]


@dataclass(frozen=True)
class EngineEvent:
    """One engine event: `type` is 'container' or 'network', `action` e.g. 'start', 'die'."""

    type: str
    action: str
    id: str
    name: str
    labels: Mapping[str, str]
    time: float
    exit_code: int | None = None


@dataclass(frozen=True)
class WorkerStatus:
    """One worker as a head sees it. `state` is ready, unhealthy or draining."""

    shard: int
    address: str
    worker_id: str
    state: str
    outstanding: int = 0
    served: int = 0
    failed: int = 0
