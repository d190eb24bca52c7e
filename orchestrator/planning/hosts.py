"""Which address the head uses to reach a worker: a pure function of placement facts.

The facts (is the pod a container, on which engine and networks, is the
orchestrating process itself inside a container) are gathered elsewhere, by
asking the engine; here they are plain values, so every case is a unit test.
"""

from __future__ import annotations

from dataclasses import dataclass

from orchestrator.spec import CONTAINER_PORT

DOCKER_HOST = "host.docker.internal"
"""`__docker_host__`: the name a container uses for the host. On Linux the head
container maps it to the bridge gateway with `extra_hosts={name: "host-gateway"}`."""

__docker_host__ = DOCKER_HOST

LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "0.0.0.0", "::1", ""})


@dataclass(frozen=True)
class Placement:
    """Where a pod runs, as seen from the engine's host.

    `host`/`port` are how the host itself reaches the pod (for a container: its
    published port, if any). `container_name`/`networks`/`engine_id` are set only
    for containers.
    """

    host: str = "127.0.0.1"
    port: int = CONTAINER_PORT
    containerized: bool = False
    container_name: str = ""
    container_port: int = CONTAINER_PORT
    networks: frozenset[str] = frozenset()
    engine_id: str = ""

    @property
    def on_this_host(self) -> bool:
        return self.host in LOCAL_HOSTS


def resolve_worker_address(
    worker: Placement, head: Placement, orchestrator: Placement | None = None
) -> tuple[str, int]:
    """(host, port) the head dials to reach `worker`.

    `orchestrator` is the container the orchestrating process runs in, or None
    when it runs directly on the host.
    """
    if not worker.on_this_host:
        return worker.host, worker.port
    same_engine = worker.engine_id == head.engine_id
    if worker.containerized and head.containerized and same_engine:
        if worker.networks & head.networks:
            return worker.container_name, worker.container_port
        return DOCKER_HOST, worker.port
    if not worker.containerized and orchestrator is not None:
        # A local process inside the orchestrator's own container: 127.0.0.1 there
        # means nothing to the head. Use that container's name when they share a
        # network, else go through the host.
        if head.containerized and orchestrator.networks & head.networks:
            return orchestrator.container_name, worker.port
        return (DOCKER_HOST if head.containerized else worker.host), worker.port
    if head.containerized:
        return DOCKER_HOST, worker.port
    return worker.host, worker.port
