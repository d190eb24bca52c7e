"""GPUs per replica: the `gpus` forms, which devices each replica slot gets (round robin,
wrap-around, per-slot lists), and the same on a whole Deployment on the in-memory engine:
device requests per replica, the RR variable consumed, slots keeping their devices through
rollouts and scale-ups, `ps` showing them, and a clear error before anything starts when
the engine has no GPU. No machine here has a GPU: the Docker side is the request it builds.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from orchestrator import labels as L
from orchestrator.cli.ps import format_table
from orchestrator.deployment import Deployment
from orchestrator.engine.memory import MemoryEngine
from orchestrator.errors import SpecError
from orchestrator.model import ContainerSpec
from orchestrator.planning.gpus import GpuRequest, check_available, parse_gpus, slot_devices
from orchestrator.spec import DeploymentSpec
from orchestrator.status import pod_statuses
from tests.support.fakes import EngineProbe, FakeHeads

IMAGE = "orchestrator-runtime:test"
FOUR = ["0", "1", "2", "3"]


@pytest.mark.parametrize(
    ("value", "env", "expected"),
    [
        (None, {}, None),
        (0, {}, None),
        ("all", {}, GpuRequest(count=-1)),
        (2, {}, GpuRequest(count=2)),
        ("2", {}, GpuRequest(count=2)),
        ("device=1", {}, GpuRequest(count=1, groups=(("1",),))),
        ("device=0,1", {}, GpuRequest(count=2, groups=(("0", "1"),))),
        ("device=0,device=3", {}, GpuRequest(count=2, groups=(("0", "3"),))),
        (["2", 3], {}, GpuRequest(count=2, groups=(("2", "3"),))),
        ("device=GPU-8f4e-11aa", {}, GpuRequest(count=1, groups=(("GPU-8f4e-11aa",),))),
        ([["0", "1"], ["2", "3"]], {}, GpuRequest(count=2, groups=(("0", "1"), ("2", "3")))),
        (None, {"CUDA_VISIBLE_DEVICES": "RR"}, GpuRequest(count=1, round_robin=True)),
        (None, {"CUDA_VISIBLE_DEVICES": "RR1:3"},
         GpuRequest(count=1, groups=(("1",), ("2",)), round_robin=True)),
        ("all", {"CUDA_VISIBLE_DEVICES": "RR0,2"},
         GpuRequest(count=1, groups=(("0",), ("2",)), round_robin=True)),
        (None, {"CUDA_VISIBLE_DEVICES": "0"}, None),  # a plain value is the user's own
    ],
)
def test_the_forms_of_gpus(value: Any, env: dict[str, str], expected: GpuRequest | None
                           ) -> None:
    assert parse_gpus(value, env) == expected


@pytest.mark.parametrize(
    ("value", "env", "field", "problem"),
    [
        ("some", {}, "gpus", "not a GPU device id"),
        (-1, {}, "gpus", "a GPU count"),
        (True, {}, "gpus", "a GPU count"),
        ("device=0,0", {}, "gpus", "names a device twice"),
        ("capabilities=compute", {}, "gpus", "only 'device=ID'"),
        ([["0"], []], {}, "gpus", "is empty"),
        (2, {"CUDA_VISIBLE_DEVICES": "RR"}, "gpus", "either it or gpus"),
        (None, {"CUDA_VISIBLE_DEVICES": "RR3:1"}, "env.CUDA_VISIBLE_DEVICES", "start < end"),
        (None, {"CUDA_VISIBLE_DEVICES": "RRx"}, "env.CUDA_VISIBLE_DEVICES", "expected RR"),
    ],
)
def test_bad_gpus_are_named(value: Any, env: dict[str, str], field: str, problem: str
                            ) -> None:
    with pytest.raises(SpecError) as info:
        parse_gpus(value, env)
    assert info.value.field == field and problem in str(info.value)


@pytest.mark.parametrize(
    ("request_", "available", "slots"),
    [
        # a count: each replica its own devices, spread in slot order, wrapping around
        (GpuRequest(count=1), FOUR, [("0",), ("1",), ("2",), ("3",), ("0",), ("1",)]),
        (GpuRequest(count=2), FOUR, [("0", "1"), ("2", "3"), ("0", "1")]),
        (GpuRequest(count=3), FOUR, [("0", "1", "2"), ("3", "0", "1")]),
        # Jina's RR: one device each, over every device or over the selection
        (GpuRequest(count=1, round_robin=True), ["0", "1", "2"],
         [("0",), ("1",), ("2",), ("0",), ("1",)]),
        (GpuRequest(count=1, groups=(("1",), ("2",)), round_robin=True), FOUR,
         [("1",), ("2",), ("1",)]),
        # ids for everyone; one list per slot, cycled
        (GpuRequest(count=2, groups=(("2", "3"),)), FOUR, [("2", "3"), ("2", "3")]),
        (GpuRequest(count=1, groups=(("3",), ("1",))), FOUR, [("3",), ("1",), ("3",)]),
        # all: Docker's --gpus all for every replica
        (GpuRequest(count=-1), FOUR, [None, None]),
        # the engine's devices unknown (an export): a count stays a count
        (GpuRequest(count=2), [], [(), ()]),
    ],
)
def test_which_devices_each_slot_gets(request_: GpuRequest, available: list[str],
                                      slots: list[tuple[str, ...] | None]) -> None:
    assert [slot_devices(request_, s, available) for s in range(len(slots))] == slots


@pytest.mark.parametrize(
    ("request_", "available", "problem"),
    [
        (GpuRequest(count=1), [], "has none"),
        (GpuRequest(count=1, round_robin=True), [], "has none"),
        (GpuRequest(count=5), FOUR, "5 GPUs per replica asked for; the engine has 4"),
        (GpuRequest(count=1, groups=(("7",),)), FOUR, "device(s) 7 not found"),
    ],
)
def test_what_the_engine_cannot_give_is_refused(request_: GpuRequest, available: list[str],
                                                problem: str) -> None:
    with pytest.raises(SpecError) as info:
        check_available(request_, available, "unix:///var/run/docker.sock")
    assert problem in str(info.value)


@pytest.mark.parametrize("value", ["all", 3, "device=0,2", [["0"], ["1", "2"]]])
def test_gpus_round_trip_through_the_spec_label(value: Any) -> None:
    spec = DeploymentSpec.from_fields(name="g", uses="pkg.m:E", gpus=value)
    assert DeploymentSpec.from_fields(**spec.to_fields()) == spec


# -- a whole deployment on the in-memory engine ----------------------------------------------


@pytest.fixture
def engine() -> MemoryEngine:
    engine = MemoryEngine()
    engine.add_image(IMAGE)
    engine.gpus = ["0", "1", "2"]
    return engine


def make(engine: MemoryEngine, **fields: Any) -> Deployment:
    return Deployment(name=f"g{uuid.uuid4().hex[:8]}", uses="pkg.mod:Exec", image=IMAGE,
                      engine=engine, probe=EngineProbe(engine),
                      connect=FakeHeads(engine).connect, reaper=False, **fields)


def worker_specs(engine: MemoryEngine, dep: Deployment) -> dict[int, ContainerSpec]:
    """Running worker containers by replica slot (one per slot once an update is done)."""
    out: dict[int, ContainerSpec] = {}
    for c in engine.list_containers(L.for_deployment(dep.name)):
        if c.labels[L.ROLE] == "worker" and c.running:
            out[int(c.labels[L.REPLICA])] = engine.container_spec(c.name)
    return out


def test_round_robin_gives_each_replica_its_own_device_and_slots_keep_them(
        engine: MemoryEngine) -> None:
    with make(engine, replicas=4, env={"CUDA_VISIBLE_DEVICES": "RR", "A": "1"}) as dep:
        specs = worker_specs(engine, dep)
        assert {s: c.gpu_ids for s, c in specs.items()} == {
            0: ("0",), 1: ("1",), 2: ("2",), 3: ("0",)}  # wraps around after 3 devices
        assert all(c.gpus == 1 for c in specs.values())
        # the RR marker is consumed: in the container, its one device is its only GPU
        assert all(dict(c.env) == {"A": "1"} for c in specs.values())
        first = {c.name for c in specs.values()}
        dep.rolling_update_sync(uses_with={"tag": "v2"})
        after = worker_specs(engine, dep)
        assert first.isdisjoint(c.name for c in after.values())  # really replaced
        assert {s: c.gpu_ids for s, c in after.items()} == {
            s: c.gpu_ids for s, c in specs.items()}
        dep.scale_sync(5)
        assert worker_specs(engine, dep)[4].gpu_ids == ("1",)
        rows = [p.to_dict() for p in pod_statuses(
            engine.list_containers(L.for_deployment(dep.name)),
            health=lambda _i: "serving", head_views=lambda _i: {})]
        shown = {r["replica"]: r["gpus"] for r in rows if r["role"] == "worker"}
        assert shown == {0: "0", 1: "1", 2: "2", 3: "0", 4: "1"}
        table = format_table(rows, with_deployment=False)
        assert table.splitlines()[0].split()[-2] == "GPUS"


def test_a_count_spreads_replicas_over_the_devices(engine: MemoryEngine) -> None:
    engine.gpus = ["0", "1", "2", "3"]
    with make(engine, replicas=3, gpus=2) as dep:
        assert {s: c.gpu_ids for s, c in worker_specs(engine, dep).items()} == {
            0: ("0", "1"), 1: ("2", "3"), 2: ("0", "1")}


def test_all_asks_for_every_device(engine: MemoryEngine) -> None:
    with make(engine, replicas=2, gpus="all") as dep:
        specs = worker_specs(engine, dep).values()
        assert {(c.gpus, c.gpu_ids) for c in specs} == {(-1, ())}


@pytest.mark.parametrize(("devices", "fields", "problem"), [
    ([], {"gpus": 1}, "has none"),
    ([], {"env": {"CUDA_VISIBLE_DEVICES": "RR"}}, "has none"),
    (["0"], {"gpus": "device=1"}, "device(s) 1 not found"),
])
def test_no_gpu_is_a_clear_error_before_anything_starts(
        engine: MemoryEngine, devices: list[str], fields: dict[str, Any], problem: str) -> None:
    engine.gpus = devices
    dep = make(engine, **fields)
    with pytest.raises(SpecError) as info:
        dep.start()
    assert problem in str(info.value) and info.value.field in ("gpus",
                                                               "env.CUDA_VISIBLE_DEVICES")
    assert engine.list_containers(L.managed()) == []
    assert engine.list_networks(L.managed()) == []
    dep.close()


def test_an_update_asking_for_more_than_the_engine_has_changes_nothing(
        engine: MemoryEngine) -> None:
    with make(engine, replicas=2, gpus=1) as dep:
        before = {c.name for c in worker_specs(engine, dep).values()}
        with pytest.raises(SpecError) as info:
            dep.rolling_update_sync(gpus="device=7")
        assert info.value.field == "gpus" and "device(s) 7 not found" in str(info.value)
        assert {c.name for c in worker_specs(engine, dep).values()} == before
        assert dep.spec.gpus is not None and dep.spec.gpus.count == 1
        dep.rolling_update_sync(gpus="device=2")  # one the engine has: rolled out
        assert {c.gpu_ids for c in worker_specs(engine, dep).values()} == {("2",)}


def test_the_docker_adapter_requests_exactly_the_slot_devices(tmp_path: Path) -> None:
    from orchestrator.engine.docker_engine import _host_config, _nvidia_devices

    ids = _host_config(ContainerSpec(name="w", image="i", gpus=2, gpu_ids=("1", "3")))
    (request,) = ids["device_requests"]
    assert request["DeviceIDs"] == ["1", "3"] and request["Capabilities"] == [["gpu"]]
    everything = _host_config(ContainerSpec(name="w", image="i", gpus=-1))
    assert everything["device_requests"][0]["Count"] == -1
    assert "device_requests" not in _host_config(ContainerSpec(name="w", image="i"))
    for name in ("nvidia0", "nvidia1", "nvidia10", "nvidiactl", "nvidia-uvm", "null"):
        (tmp_path / name).touch()
    assert _nvidia_devices(tmp_path) == ["0", "1", "10"]
