"""What runs, per pod: the engine's facts, the pod's gRPC health and the head's view.

`deployment_status(engine, name)` is what `orchestrator ps` shows. It lists the
deployment's containers by label, asks every running pod for its gRPC health and every
running head for its view of its workers (routing state, requests served, failed and in
flight), all concurrently, and returns one frozen `PodStatus` per pod, in a stable order.
`pod_statuses` builds the same from a listing, with the probes injectable for tests.

`deployment_usage` is what `orchestrator top` shows: one `PodUsage` (CPU, memory,
restarts, requests in flight) per pod, from one engine stats sample each.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from orchestrator.control import HeadControl
from orchestrator.deployment import running_deployments
from orchestrator.engine.base import ContainerEngine, ContainerInfo, ContainerStats
from orchestrator.errors import DeploymentNotFound, OrchestratorError, ResourceNotFound
from orchestrator.health import GrpcHealthProbe, container_address
from orchestrator.planning import labels as L
from orchestrator.planning import names
from orchestrator.planning.pods import TOKEN_ENV
from orchestrator.spec import CONTAINER_PORT
from orchestrator.tls import ClientTLS, own_tls_of

ROLE_ORDER = {"head": 0, "uses_before": 1, "worker": 2, "uses_after": 3, "gateway": 4}


@dataclass(frozen=True)
class PublishedPort:
    """A container port published on the host."""

    host_ip: str
    host_port: int
    container_port: int

    def __str__(self) -> str:
        return f"{self.host_ip}:{self.host_port}->{self.container_port}/tcp"


@dataclass(frozen=True)
class HeadView:
    """One worker as its head sees it: routing state (ready, unhealthy, draining) and
    requests served, failed and in flight."""

    state: str
    served: int
    failed: int
    in_flight: int


@dataclass(frozen=True)
class PodStatus:
    """One pod. `health`: serving / not-serving from gRPC health, unknown when it has no
    address, '-' when it does not run. `routing`: the head's view (workers only; None when
    the head does not list the pod or does not answer)."""

    deployment: str
    pod: str
    role: str
    shard: int | None
    replica: int | None
    generation: int | None
    state: str
    restarts: int
    health: str
    uptime_seconds: float | None
    ports: tuple[PublishedPort, ...]
    image: str
    exit_code: int | None
    routing: HeadView | None = None
    replaced: int = 0
    """How many times the healer replaced the pod in this slot (from its labels)."""
    replaced_reason: str = ""
    gpus: str | None = None  # the GPU devices it was given ("0,1", "all"); None: none
    node: str = ""  # the node it runs on (Swarm); "" on one host

    def to_dict(self) -> dict[str, Any]:
        """The JSON object `orchestrator ps --json` prints for the pod."""
        seen = self.routing
        return {
            "deployment": self.deployment, "pod": self.pod, "role": self.role,
            "shard": self.shard, "replica": self.replica, "generation": self.generation,
            "state": self.state, "restarts": self.restarts, "health": self.health,
            "uptime_seconds": self.uptime_seconds, "ports": [str(p) for p in self.ports],
            "image": self.image, "exit_code": self.exit_code,
            "routing": seen.state if seen else None, "served": seen.served if seen else None,
            "failed": seen.failed if seen else None, "node": self.node,
            "in_flight": seen.in_flight if seen else None,
            "replaced": self.replaced, "replaced_reason": self.replaced_reason or None,
            "gpus": self.gpus,
        }

    @property
    def sort_key(self) -> tuple[str, int, int, int, str]:
        """Deployment, role (head first), shard, replica, name."""
        return _order(self.deployment, self.role, self.shard, self.replica, self.pod)


def _order(deployment: str, role: str, shard: int | None, replica: int | None, pod: str
           ) -> tuple[str, int, int, int, str]:
    return (deployment, ROLE_ORDER.get(role, 9), -1 if shard is None else shard,
            -1 if replica is None else replica, pod)


HealthCheck = Callable[[ContainerInfo], str]
HeadViews = Callable[[ContainerInfo], Mapping[str, HeadView]]


def list_pods(engine: ContainerEngine, name: str | None = None) -> list[ContainerInfo]:
    """The containers of deployment `name` (None: of every deployment) on the engine.

    Raises:
        DeploymentNotFound: `name` has no container, listing the deployments that run.
    """
    wanted = L.for_deployment(name) if name else L.managed()
    pods = [c for c in engine.list_containers(wanted) if L.DEPLOYMENT in c.labels]
    if name and not pods:
        raise DeploymentNotFound(name, running_deployments(engine))
    return pods


def deployment_status(engine: ContainerEngine, name: str | None = None,
                      now: datetime | None = None) -> list[PodStatus]:
    """One `PodStatus` per pod of `name` (None: of every deployment), health asked now.

    Raises:
        DeploymentNotFound: `name` has no container.
    """
    return pod_statuses(list_pods(engine, name), now)


def pod_statuses(pods: Sequence[ContainerInfo], now: datetime | None = None, *,
                 health: HealthCheck | None = None, head_views: HeadViews | None = None
                 ) -> list[PodStatus]:
    """`PodStatus` of each listed pod, sorted by deployment, role, shard, replica.

    `health` and `head_views` default to asking over gRPC (concurrently, 8 at a time).
    """
    now = now or datetime.now(UTC)
    check = health or grpc_health
    ask = head_views or head_view
    heads = [p for p in pods if p.labels.get(L.ROLE) == "head" and p.running]
    with ThreadPoolExecutor(max_workers=8) as pool:
        states = list(pool.map(check, pods))
        seen: dict[str, HeadView] = {}
        for views in pool.map(ask, heads):
            seen.update(views)
    rows = [pod_status(info, state, now, seen.get(info.name))
            for info, state in zip(pods, states, strict=True)]
    return sorted(rows, key=lambda r: r.sort_key)


def pod_status(info: ContainerInfo, health: str, now: datetime,
               seen: HeadView | None = None) -> PodStatus:
    """One pod's status from its container facts, its health and its head's view."""
    labels = info.labels
    uptime = (now - info.started_at).total_seconds() if info.running and info.started_at \
        else None
    return PodStatus(
        deployment=labels[L.DEPLOYMENT], pod=info.name, role=labels.get(L.ROLE, "?"),
        shard=_number(labels, L.SHARD), replica=_number(labels, L.REPLICA),
        generation=_number(labels, L.GENERATION), state=info.status,
        restarts=info.restart_count, health=health,
        uptime_seconds=round(uptime, 1) if uptime is not None else None,
        ports=tuple(PublishedPort(ip, host_port, port)
                    for port, (ip, host_port) in sorted(info.ports.items())),
        image=info.image, exit_code=info.exit_code, routing=seen,
        replaced=_number(labels, L.REPLACED) or 0,
        replaced_reason=labels.get(L.REPLACED_REASON, ""),
        gpus=labels.get(L.GPUS), node=info.node)


def _number(labels: Mapping[str, str], key: str) -> int | None:
    value = labels.get(key, "")
    return int(value) if value.isdigit() else None


def pod_address(info: ContainerInfo) -> str | None:
    """host:port of a pod on its deployment's network, as this host reaches it."""
    network = names.network_name(info.labels[L.DEPLOYMENT])
    return container_address(info, network, CONTAINER_PORT)


def grpc_health(info: ContainerInfo) -> str:
    """'serving' / 'not-serving' from gRPC health, '-' when the pod is not running,
    'unknown' when it has no address."""
    if not info.running:
        return "-"
    address = pod_address(info)
    if address is None:
        return "unknown"
    probe = GrpcHealthProbe(timeout=1.0, tls=head_tls(info))
    try:
        return "serving" if probe.serving(address) else "not-serving"
    finally:
        probe.close()


def head_tls(info: ContainerInfo) -> ClientTLS | None:
    """How this process reaches a head that serves TLS (None: a worker, or in clear)."""
    if info.labels.get(L.ROLE) != "head":
        return None
    try:
        fields = json.loads(info.labels.get(L.SPEC, "{}"))
    except ValueError:
        return None
    return own_tls_of(fields) if isinstance(fields, dict) else None


def head_view(head: ContainerInfo) -> dict[str, HeadView]:
    """The head's view of its workers, by pod name (empty when it does not answer)."""
    address = pod_address(head)
    if address is None:
        return {}
    try:
        with HeadControl(address, head.env.get(TOKEN_ENV, ""), timeout=2.0,
                         tls=head_tls(head)) as control:
            return {w.worker_id: HeadView(w.state, w.served, w.failed, w.outstanding)
                    for w in control.list_workers()}
    except OrchestratorError:
        return {}


def select_pods(pods: Sequence[ContainerInfo], name: str, pod: str | None
                ) -> list[ContainerInfo]:
    """Every pod of deployment `name`, or the one `pod` names: its container name or the
    part after 'NAME-' (`head`, `s0-r1-g2`).

    Raises:
        OrchestratorError: no such pod (the message lists the pods there are).
    """
    if pod is None:
        return list(pods)
    chosen = [p for p in pods if p.name in (pod, f"{name}-{pod}")]
    if not chosen:
        known = ", ".join(p.name for p in pods)
        raise OrchestratorError(f"deployment {name!r} has no pod {pod!r} (pods: {known})")
    return chosen


# -- resource use (`orchestrator top`) ------------------------------------------------------


@dataclass(frozen=True)
class PodUsage:
    """One pod's resource use at one moment. `in_flight`: requests its head has sent it
    and not had answered (workers the head lists only)."""

    deployment: str
    pod: str
    role: str
    shard: int | None
    replica: int | None
    state: str
    cpu_percent: float
    memory_bytes: int
    memory_limit_bytes: int
    restarts: int
    in_flight: int | None

    @property
    def memory_percent(self) -> float | None:
        if not self.memory_limit_bytes:
            return None
        return round(100.0 * self.memory_bytes / self.memory_limit_bytes, 2)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object `orchestrator top --json` prints for the pod."""
        return {"deployment": self.deployment, "pod": self.pod, "role": self.role,
                "shard": self.shard, "replica": self.replica, "state": self.state,
                "cpu_percent": self.cpu_percent, "memory_bytes": self.memory_bytes,
                "memory_limit_bytes": self.memory_limit_bytes,
                "memory_percent": self.memory_percent, "restarts": self.restarts,
                "in_flight": self.in_flight}


def deployment_usage(engine: ContainerEngine, name: str | None = None, *,
                     head_views: HeadViews | None = None) -> list[PodUsage]:
    """One sample of every pod of `name` (None: of every deployment), sampled concurrently
    (a Docker sample takes about a second). A pod removed meanwhile is left out.

    Raises:
        DeploymentNotFound: `name` has no container.
    """
    pods = list_pods(engine, name)
    ask = head_views or head_view
    heads = [p for p in pods if p.labels.get(L.ROLE) == "head" and p.running]
    with ThreadPoolExecutor(max_workers=16) as pool:
        samples = list(pool.map(lambda p: _sample(engine, p), pods))
        seen: dict[str, HeadView] = {}
        for views in pool.map(ask, heads):
            seen.update(views)
    rows = [pod_usage(info, stats, seen.get(info.name))
            for info, stats in zip(pods, samples, strict=True) if stats is not None]
    return sorted(rows, key=lambda r: _order(r.deployment, r.role, r.shard, r.replica, r.pod))


def _sample(engine: ContainerEngine, info: ContainerInfo) -> ContainerStats | None:
    try:
        return engine.container_stats(info.id)
    except ResourceNotFound:
        return None


def pod_usage(info: ContainerInfo, stats: ContainerStats, seen: HeadView | None = None
              ) -> PodUsage:
    """One pod's usage from its container facts, a stats sample and its head's view."""
    labels = info.labels
    return PodUsage(
        deployment=labels[L.DEPLOYMENT], pod=info.name, role=labels.get(L.ROLE, "?"),
        shard=_number(labels, L.SHARD), replica=_number(labels, L.REPLICA), state=info.status,
        cpu_percent=stats.cpu_percent, memory_bytes=stats.memory_bytes,
        memory_limit_bytes=stats.memory_limit_bytes, restarts=info.restart_count,
        in_flight=seen.in_flight if seen is not None else None)
