"""The container engine seam: a narrow protocol (its value types live in orchestrator.model).

Everything above this module talks to an engine only through `ContainerEngine`,
and only in these frozen dataclasses: never docker-py objects. Two
implementations exist: `DockerEngine` (the only module that imports `docker`)
and `MemoryEngine` (a stateful, deterministic fake with fault injection).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import NamedTuple, Protocol, runtime_checkable

from orchestrator.model import (
    MANAGED_LABEL,
    ContainerInfo,
    ContainerSpec,
    ContainerStatus,
    EngineEvent,
    HealthStatus,
    LogLine,
    Mount,
    NetworkInfo,
    PortBinding,
    RestartPolicy,
    VolumeInfo,
)

__all__ = [
    "MANAGED_LABEL",
    "ContainerEngine",
    "ContainerInfo",
    "ContainerSpec",
    "ContainerStatus",
    "EngineEvent",
    "GpuInventory",
    "HealthStatus",
    "LogLine",
    "Mount",
    "NetworkInfo",
    "PortBinding",
    "RestartPolicy",
    "VolumeEngine",
    "VolumeInfo",
]


@runtime_checkable
class ContainerEngine(Protocol):
    """What the orchestrator needs from a container engine.

    Methods that stop, kill or remove a resource refuse (`NotManaged`) one
    that lacks the `orchestrator.managed=true` label. Label filters are exact
    `key=value` matches, all of which must hold.
    """

    def ping(self) -> None:
        """Raise `EngineUnavailable` unless the engine answers."""

    def engine_id(self) -> str:
        """A stable id of this engine (Docker's `Info.ID`)."""

    # -- images ---------------------------------------------------------------------
    def image_exists(self, ref: str) -> bool: ...

    def image_labels(self, ref: str) -> Mapping[str, str]:
        """Labels of a local image. Raises `ImageNotFound`."""

    def pull_image(self, ref: str) -> None:
        """Pull an image. Raises `ImageNotFound` when no registry has it."""

    def build_image(
        self,
        context: Path,
        *,
        tag: str,
        dockerfile: str = "Dockerfile",
        labels: Mapping[str, str] | None = None,
        buildargs: Mapping[str, str] | None = None,
    ) -> str:
        """Build an image and return its id. Raises `ImageBuildError` with the log tail."""

    def import_image(
        self, tarball: Path, *, tag: str, changes: tuple[str, ...] = ()
    ) -> str:
        """`docker import` a root filesystem tarball. Returns the image id."""

    def tag_image(self, ref: str, tag: str) -> None: ...

    def image_tags(self, labels: Mapping[str, str]) -> list[str]:
        """`repository:tag` of every local image whose labels match."""

    def remove_image(self, ref: str, *, force: bool = False) -> None:
        """Remove a local image or one of its tags. Missing images are ignored."""

    # -- networks -------------------------------------------------------------------
    def create_network(self, name: str, *, labels: Mapping[str, str]) -> NetworkInfo:
        """Create a bridge network. Raises `ResourceConflict` if the name is taken."""

    def remove_network(self, name_or_id: str) -> None:
        """Remove a managed network. Missing networks are ignored (idempotent).

        Unmanaged containers still attached (an orchestrating process's own container) are
        detached first; an attached managed container raises `ResourceConflict`.
        """

    def list_networks(self, labels: Mapping[str, str]) -> list[NetworkInfo]: ...

    def connect_network(self, network: str, container: str) -> None:
        """Attach a running container to a managed network (a no-op when it is attached).

        The container need not be managed: this is how the orchestrating process, when it
        runs in a container of this engine, joins a deployment's network. Raises
        `NotManaged` (the network), `ResourceNotFound` (either one).
        """

    # -- containers -----------------------------------------------------------------
    def run_container(self, spec: ContainerSpec) -> ContainerInfo:
        """Create and start a container.

        Raises `ImageNotFound`, `ResourceConflict` (name taken), `PortAllocated`,
        or `EngineError`. A container that was created but failed to start is
        removed before the error is raised.
        """

    def inspect_container(self, name_or_id: str) -> ContainerInfo:
        """Raises `ResourceNotFound`."""

    def list_containers(self, labels: Mapping[str, str], *,
                        brief: bool = False) -> list[ContainerInfo]:
        """All containers (running or not) whose labels match. `brief`: only id, name,
        image, labels, status, addresses and published ports are sure to be filled (one
        engine call, not one per container); the rest may keep its defaults."""

    def logs(self, name_or_id: str, *, tail: int | None = None) -> str:
        """stdout and stderr, interleaved; the last `tail` lines if given."""

    def log_lines(self, name_or_id: str, *, tail: int | None = None,
                  since: datetime | None = None) -> list[LogLine]:
        """Like `logs`, one `LogLine` per line with its time, to interleave several pods;
        only the lines written at or after `since`, if given."""

    def follow_logs(self, name_or_id: str, *, tail: int | None = None,
                    since: datetime | None = None) -> Iterator[LogLine]:
        """Yield log lines as they are written, until the container stops (`tail` and
        `since` pick where the stream starts, as for `log_lines`)."""

    def wait_container(self, name_or_id: str, *, timeout: float | None = None) -> int:
        """Block until the container exits; return its exit code."""

    def stop_container(self, name_or_id: str, *, grace: float = 10.0) -> None:
        """SIGTERM, wait `grace` seconds, then SIGKILL. Missing containers are ignored."""

    def kill_container(self, name_or_id: str, *, signal: str = "SIGKILL") -> None: ...

    def update_container(
        self,
        name_or_id: str,
        *,
        restart_policy: RestartPolicy | None = None,
        max_retries: int = 0,
    ) -> None:
        """Change a managed container's restart policy in place.

        Pods start with restart policy "no", so a crash at start-up is reported at once
        with its exit code; once ready, a pod gets the spec's policy.
        """

    def remove_container(self, name_or_id: str, *, force: bool = True) -> None:
        """Remove a managed container. Missing containers are ignored (idempotent)."""

    # -- events ---------------------------------------------------------------------
    def events(
        self,
        *,
        labels: Mapping[str, str] | None = None,
        since: float | None = None,
        until: float | None = None,
    ) -> Iterator[EngineEvent]:
        """Container and network events, filtered by label. Blocks when `until` is None."""

    def close(self) -> None: ...

    # -- exec and stats (`orchestrator exec`, `orchestrator top`) -------------------------
    def container_stats(self, name_or_id: str) -> ContainerStats:
        """One sample of a container's CPU and memory use, like one line of `docker stats`
        (a stopped container reports all zeros). Raises `ResourceNotFound`."""

    def exec_container(self, name_or_id: str, cmd: Sequence[str], *,
                       tty: bool = False) -> ExecResult:
        """Run `cmd` in a running managed container, wait for it, and return its exit code
        and its stdout and stderr interleaved (`tty`: under a pseudo-terminal, as
        `docker exec -t`). A command that is not found exits 127, as in a shell. Raises
        `NotManaged`, `ResourceNotFound`, `ResourceConflict` (the container does not run)."""


@runtime_checkable
class VolumeEngine(Protocol):
    """Named volumes, used as labelled records (the rollout history). A separate protocol:
    an engine without it still runs deployments; it only keeps no history."""

    def create_volume(self, name: str, *, labels: Mapping[str, str]) -> VolumeInfo:
        """Create an empty local volume (callers pick new names: an engine may hand back
        an existing volume of the same name)."""

    def list_volumes(self, labels: Mapping[str, str]) -> list[VolumeInfo]:
        """Volumes whose labels match all of `labels`, by name."""

    def remove_volume(self, name: str) -> None:
        """Remove a managed volume; a missing one is ignored. Raises `NotManaged`."""


@runtime_checkable
class GpuInventory(Protocol):
    """An engine that can list its GPUs (the Docker adapter, the memory fake). Kept out of
    `ContainerEngine`: an engine without it has no GPU to give."""

    def gpu_devices(self) -> list[str]:
        """The device ids of the engine's GPUs, in order (empty: none)."""


def gpu_devices(engine: object) -> list[str]:
    """The engine's GPUs, or none when it cannot say."""
    return engine.gpu_devices() if isinstance(engine, GpuInventory) else []


@dataclass(frozen=True)
class ContainerStats:
    """A container's resource use at one moment. `cpu_percent` counts one full core as 100
    (so 4 busy cores read 400), as `docker stats` does; `memory_limit_bytes` is the
    container's limit, or the host's memory when it has none."""

    cpu_percent: float
    memory_bytes: int
    memory_limit_bytes: int


class ExecResult(NamedTuple):
    """What a command run in a container returned: `(exit_code, output)`."""

    exit_code: int
    output: str
