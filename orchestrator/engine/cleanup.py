"""Find and remove what the project created, by its ownership labels.

Labels are the source of truth, so this works after a crash and from another
process. Only resources carrying `orchestrator.managed=true` are ever listed,
and the engine itself refuses to remove anything else.
"""

from __future__ import annotations

from dataclasses import dataclass

from orchestrator import labels as L
from orchestrator.engine.base import (
    ContainerEngine,
    ContainerInfo,
    NetworkInfo,
    VolumeEngine,
    VolumeInfo,
)
from orchestrator.errors import EngineError, ResourceNotFound


@dataclass(frozen=True)
class Owned:
    """Containers, networks and volumes (the rollout history's records) carrying our
    labels."""

    containers: tuple[ContainerInfo, ...] = ()
    networks: tuple[NetworkInfo, ...] = ()
    volumes: tuple[VolumeInfo, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.containers or self.networks or self.volumes)

    def names(self) -> list[str]:
        """Container, network then volume names, for messages."""
        return [c.name for c in self.containers] + [n.name for n in self.networks] + \
            [v.name for v in self.volumes]


def _filter(deployment: str | None, owner: str | None = None) -> dict[str, str]:
    wanted = L.for_deployment(deployment) if deployment is not None else L.managed()
    if owner is not None:
        wanted[L.OWNER] = owner
    return wanted


def list_owned(
    engine: ContainerEngine, deployment: str | None = None, *, owner: str | None = None
) -> Owned:
    """Everything managed (of one deployment when `deployment` is given, and of one owner,
    the process-session that created it, when `owner` is given).

    Raises:
        EngineUnavailable: the engine does not answer.
    """
    wanted = _filter(deployment, owner)
    return Owned(
        containers=tuple(engine.list_containers(wanted)),
        networks=tuple(engine.list_networks(wanted)),
        volumes=tuple(engine.list_volumes(wanted)) if isinstance(engine, VolumeEngine)
        else (),
    )


def remove_owned(
    engine: ContainerEngine,
    deployment: str | None = None,
    *,
    grace: float = 5.0,
    owner: str | None = None,
) -> Owned:
    """Stop and remove managed containers, then managed networks and volumes; return what
    went.

    Every resource is attempted even when one fails; the first failure is
    raised at the end (the rest are not lost: `list_owned` shows them).

    Raises:
        EngineUnavailable: the engine does not answer.
        EngineError: a resource could not be removed (e.g. a network still has
            an endpoint of a container we do not own).
    """
    found = list_owned(engine, deployment, owner=owner)
    first_error: EngineError | None = None
    removed_containers: list[ContainerInfo] = []
    # The head goes last: a `heal` watching from another process must never see a
    # deployment whose head is gone while its workers still run (it would recreate it).
    ordered = sorted(found.containers, key=lambda c: c.labels.get(L.ROLE) == "head")
    for container in ordered:
        try:
            if container.running:
                engine.stop_container(container.id, grace=grace)
            engine.remove_container(container.id, force=True)
            removed_containers.append(container)
        except ResourceNotFound:
            continue  # raced with another remover: already gone
        except EngineError as exc:
            first_error = first_error or exc
    removed_networks: list[NetworkInfo] = []
    for network in found.networks:
        try:
            engine.remove_network(network.id)
            removed_networks.append(network)
        except EngineError as exc:
            first_error = first_error or exc
    removed_volumes: list[VolumeInfo] = []
    for volume in found.volumes:
        try:
            assert isinstance(engine, VolumeEngine)  # listed only when it is one
            engine.remove_volume(volume.name)
            removed_volumes.append(volume)
        except EngineError as exc:
            first_error = first_error or exc
    if first_error is not None:
        raise first_error
    return Owned(tuple(removed_containers), tuple(removed_networks), tuple(removed_volumes))
