"""`orchestrator.status`: one typed row per pod, from the engine's listing, the pod's
health and the head's view; on the in-memory engine with the probes injected."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from orchestrator.engine.base import ContainerInfo, ContainerSpec, PortBinding
from orchestrator.engine.memory import MemoryEngine
from orchestrator.errors import DeploymentNotFound, OrchestratorError
from orchestrator.planning import labels as L
from orchestrator.status import (
    HeadView,
    PodStatus,
    PublishedPort,
    deployment_status,
    deployment_usage,
    grpc_health,
    list_pods,
    pod_status,
    pod_statuses,
    select_pods,
)

IMAGE = "orchestrator-runtime:test"
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def pod(engine: MemoryEngine, deployment: str, suffix: str, role: str, *,
        shard: int | None = None, replica: int | None = None,
        ports: tuple[PortBinding, ...] = ()) -> str:
    labels = {**L.for_deployment(deployment), L.ROLE: role, L.GENERATION: "1"}
    if shard is not None:
        labels[L.SHARD] = str(shard)
    if replica is not None:
        labels[L.REPLICA] = str(replica)
    name = f"{deployment}-{suffix}"
    engine.run_container(ContainerSpec(name=name, image=IMAGE, labels=labels, ports=ports))
    return name


@pytest.fixture
def engine() -> MemoryEngine:
    memory = MemoryEngine()
    memory.add_image(IMAGE)
    # created out of order: the status sorts them
    pod(memory, "b", "head", "head")
    pod(memory, "a", "s1-r0-g1", "worker", shard=1, replica=0)
    pod(memory, "a", "s0-r1-g1", "worker", shard=0, replica=1)
    pod(memory, "a", "after", "uses_after")
    pod(memory, "a", "s0-r0-g1", "worker", shard=0, replica=0)
    pod(memory, "a", "head", "head", ports=(PortBinding(50051),))
    return memory


def healthy(info: ContainerInfo) -> str:
    return "serving" if info.running else "-"


def views(head: ContainerInfo) -> dict[str, HeadView]:
    if head.name != "a-head":
        return {}
    return {"a-s0-r0-g1": HeadView("ready", 7, 1, 2), "a-s0-r1-g1": HeadView("draining", 3, 0, 0)}


def test_rows_sorted_by_deployment_role_shard_replica(engine: MemoryEngine) -> None:
    rows = pod_statuses(list_pods(engine), NOW, health=healthy, head_views=views)
    assert [r.pod for r in rows] == ["a-head", "a-s0-r0-g1", "a-s0-r1-g1", "a-s1-r0-g1",
                                     "a-after", "b-head"]
    worker = rows[1]
    assert (worker.role, worker.shard, worker.replica, worker.generation) == ("worker", 0, 0, 1)
    assert worker.routing == HeadView("ready", 7, 1, 2)
    assert rows[3].routing is None  # the head does not list it
    assert rows[0].shard is None and rows[0].health == "serving"
    assert len(rows[0].ports) == 1 and rows[0].ports[0].container_port == 50051


def test_one_deployment_or_not_found_naming_the_running_ones(engine: MemoryEngine) -> None:
    assert {p.name for p in list_pods(engine, "b")} == {"b-head"}
    with pytest.raises(DeploymentNotFound) as info:
        deployment_status(engine, "nope")
    assert info.value.known == ("a", "b")


def test_stopped_pods_have_no_health_uptime_or_head_view(engine: MemoryEngine) -> None:
    engine.stop_container("a-s1-r0-g1", grace=0)
    info = engine.inspect_container("a-s1-r0-g1")
    assert grpc_health(info) == "-"  # not running: nothing is asked
    status = pod_status(info, "-", NOW)
    assert (status.state, status.uptime_seconds, status.routing) == ("exited", None, None)


def test_to_dict_is_the_ps_json_object() -> None:
    status = PodStatus(
        deployment="d", pod="d-s0-r0-g2", role="worker", shard=0, replica=0, generation=2,
        state="running", restarts=1, health="serving", uptime_seconds=5.0,
        ports=(PublishedPort("127.0.0.1", 9, 50051),), image="img", exit_code=None,
        routing=HeadView("ready", 10, 2, 1))
    assert status.to_dict() == {
        "deployment": "d", "pod": "d-s0-r0-g2", "role": "worker", "shard": 0, "replica": 0,
        "generation": 2, "state": "running", "restarts": 1, "health": "serving",
        "uptime_seconds": 5.0, "ports": ["127.0.0.1:9->50051/tcp"], "image": "img",
        "exit_code": None, "routing": "ready", "served": 10, "failed": 2, "in_flight": 1,
        "replaced": 0, "replaced_reason": None, "gpus": None, "node": ""}
    bare = PodStatus(**{**status.__dict__, "routing": None}).to_dict()
    assert (bare["routing"], bare["served"], bare["failed"], bare["in_flight"]) == (
        None, None, None, None)


def test_uptime_counts_from_the_start() -> None:
    info = ContainerInfo(id="1", name="d-head", image="img", status="running",
                         started_at=NOW - timedelta(seconds=90.26),
                         labels={L.DEPLOYMENT: "d", L.ROLE: "head"})
    assert pod_status(info, "serving", NOW).uptime_seconds == 90.3


def test_usage_per_pod_with_the_heads_in_flight_count(engine: MemoryEngine) -> None:
    engine.set_usage("a-s0-r0-g1", cpu_percent=150.0, memory_bytes=64 * 1024**2)
    engine.stop_container("a-after", grace=0)
    rows = {r.pod: r for r in deployment_usage(engine, "a", head_views=views)}
    assert list(rows) == ["a-head", "a-s0-r0-g1", "a-s0-r1-g1", "a-s1-r0-g1", "a-after"]
    busy = rows["a-s0-r0-g1"]
    assert (busy.cpu_percent, busy.memory_bytes, busy.in_flight) == (150.0, 64 * 1024**2, 2)
    assert busy.memory_percent == round(100 * 64 / 8192, 2)  # of the fake host's 8 GiB
    assert rows["a-s1-r0-g1"].in_flight is None  # not listed by the head
    stopped = rows["a-after"]
    assert (stopped.state, stopped.cpu_percent, stopped.memory_bytes) == ("exited", 0.0, 0)
    assert stopped.memory_percent is None
    assert set(busy.to_dict()) == {"deployment", "pod", "role", "shard", "replica", "state",
                                   "cpu_percent", "memory_bytes", "memory_limit_bytes",
                                   "memory_percent", "restarts", "in_flight"}


def test_select_pods_by_container_name_or_short_name(engine: MemoryEngine) -> None:
    pods = list_pods(engine, "a")
    assert select_pods(pods, "a", None) == pods
    assert [p.name for p in select_pods(pods, "a", "head")] == ["a-head"]
    assert [p.name for p in select_pods(pods, "a", "a-s0-r1-g1")] == ["a-s0-r1-g1"]
    with pytest.raises(OrchestratorError, match=r"no pod 'zz' \(pods: a-after, a-head"):
        select_pods(pods, "a", "zz")
