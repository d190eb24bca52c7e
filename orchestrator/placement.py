"""Placement facts gathered from the engine, for the pure host resolution in
`planning.hosts`.

"Am I inside a container?" is decided by asking the engine, never the file system:
`/.dockerenv` exists on hosts that are no container of the engine they talk to (the
development machines here have it), which is exactly where Jina's `in_docker()` check
goes wrong.
"""

from __future__ import annotations

import contextlib
import socket

from orchestrator.engine.base import ContainerEngine, ContainerInfo
from orchestrator.errors import ResourceNotFound
from orchestrator.planning.hosts import Placement
from orchestrator.spec import CONTAINER_PORT


def self_container(engine: ContainerEngine, hostname: str | None = None) -> ContainerInfo | None:
    """The running container of `engine` this process runs in, or None.

    A container is ours when its id starts with our hostname (Docker's default hostname
    is the short id), or when its hostname is ours and it has addresses of its own (a
    `--network host` container shares the host's name and proves nothing).

    Raises:
        EngineUnavailable: the engine does not answer.
    """
    me = hostname or socket.gethostname()
    with contextlib.suppress(ResourceNotFound):  # the usual case: the hostname is our id
        info = engine.inspect_container(me)
        if info.running and info.id.startswith(me):
            return info
    for info in engine.list_containers({}):
        if not info.running:
            continue
        if info.id.startswith(me) or (info.hostname == me and info.ip_addresses):
            return info
    return None


def container_placement(info: ContainerInfo, engine_id: str) -> Placement:
    """Placement of a container: its name, networks and the host port it publishes."""
    host, port = info.ports.get(CONTAINER_PORT, ("127.0.0.1", CONTAINER_PORT))
    return Placement(
        host=host, port=port, containerized=True, container_name=info.name,
        container_port=CONTAINER_PORT, networks=frozenset(info.ip_addresses),
        engine_id=engine_id,
    )


def orchestrator_placement(engine: ContainerEngine) -> Placement | None:
    """Where this process runs, as `get_worker_host`'s `orchestrator` argument."""
    info = self_container(engine)
    return None if info is None else container_placement(info, engine.engine_id())


_IDS: dict[str, str | None] = {}  # engine id -> id of the container this process runs in


def own_container(engine: ContainerEngine) -> ContainerInfo | None:
    """`self_container`, asked of each engine once per process (a process never moves
    between containers, and the full scan costs one inspect per container), then
    inspected fresh each time so its networks are current."""
    key = engine.engine_id()
    if key not in _IDS:
        info = self_container(engine)
        _IDS[key] = None if info is None else info.id
        return info
    cid = _IDS[key]
    if cid is None:
        return None
    try:
        return engine.inspect_container(cid)
    except ResourceNotFound:
        return None
