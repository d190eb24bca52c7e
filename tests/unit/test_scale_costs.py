"""What a deployment costs the engine as N grows, on the in-memory engine: the calls a
teardown, a heal tick and a start make must not multiply by the replica count where one
call would do (bench/bench_scale.py measures the same on Docker)."""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from typing import Any

import pytest

from orchestrator import labels as L
from orchestrator.actuator import Actuator
from orchestrator.control.healer import FULL_LOOK_EVERY
from orchestrator.control.lifecycle import remove_network
from orchestrator.deployment import Deployment
from orchestrator.engine.memory import MemoryEngine
from orchestrator.errors import ResourceConflict
from tests.support.fakes import EngineProbe, FakeHeads, memory_deployment

IMAGE = "orchestrator-runtime:test"


class CallLog:
    """A MemoryEngine proxy that records (method, first argument) of every call, and the
    keyword arguments of each in `kwargs`."""

    def __init__(self, inner: MemoryEngine) -> None:
        self.inner = inner
        self.calls: list[tuple[str, Any]] = []
        self.kwargs: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        value = getattr(self.inner, name)
        if not callable(value) or name.startswith("_"):
            return value

        def recorded(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                self.calls.append((name, args[0] if args else None))
                self.kwargs.append(kwargs)
            return value(*args, **kwargs)

        return recorded

    def counts(self) -> Counter[str]:
        return Counter(name for name, _ in self.calls)


def started(replicas: int) -> tuple[Deployment, CallLog]:
    engine = MemoryEngine()
    engine.add_image(IMAGE)
    log = CallLog(engine)
    dep = memory_deployment(log, FakeHeads(engine), replicas=replicas)
    dep.start()
    return dep, log


@pytest.mark.parametrize("replicas", [2, 16])
def test_teardown_lists_once_and_inspects_nothing(replicas: int) -> None:
    dep, log = started(replicas)
    engine = log.inner
    log.calls.clear()
    log.kwargs.clear()
    dep.close()
    counts = log.counts()
    assert counts["list_containers"] == 1
    listing = next(k for (name, _), k in zip(log.calls, log.kwargs, strict=True)
                   if name == "list_containers")
    assert listing.get("brief") is True  # Docker: no inspect per container
    assert counts["inspect_container"] == 0
    assert counts["stop_container"] == replicas + 1  # when each: test_deployment_memory
    assert engine.list_containers(L.managed()) == []
    assert engine.list_networks(L.managed()) == []


@pytest.mark.parametrize("replicas", [2, 16])
def test_heal_looks_at_rest_cost_one_engine_call_in_ten_whatever_the_replica_count(
        replicas: int) -> None:
    dep, log = started(replicas)
    try:
        dep.heal(30.0)  # the first look lists (and may take over what start left)
        assert log.counts()["list_containers"] >= 1
        log.calls.clear()
        for _ in range(2 * FULL_LOOK_EVERY):
            assert dep.heal(30.0) == []
        # the others only asked the head
        assert log.counts() == Counter({"list_containers": 2})
    finally:
        dep.close()


class HungProbe(EngineProbe):
    """An EngineProbe under which the pods named in `hung` never answer SERVING; it counts
    the probes of each pod."""

    def __init__(self, engine: MemoryEngine) -> None:
        super().__init__(engine)
        self.hung: set[str] = set()
        self.calls: Counter[str] = Counter()

    def serving(self, address: str, service: str = "") -> bool:
        pod = self._pod(address)
        name = pod.name if pod is not None else address
        self.calls[name] += 1
        return name not in self.hung and super().serving(address, service)


def test_a_hung_uses_pod_is_probed_once_per_heal_look() -> None:
    """Its probe waits out a whole timeout; the quick, the full and the careful look of one
    heal share one probe of it (they took three)."""
    engine = MemoryEngine()
    engine.add_image(IMAGE)
    probe = HungProbe(engine)
    dep = memory_deployment(engine, FakeHeads(engine), uses_before="pkg.mod:Before",
                            probe=probe)
    dep.start()
    try:
        before = next(c.name for c in engine.list_containers(L.managed())
                      if c.labels.get(L.ROLE) == "uses_before")
        assert dep.heal(30.0) == []
        probe.hung.add(before)
        probe.calls.clear()
        for look in range(1, 4):
            assert dep.heal(30.0) == []  # down, not yet for 30 s
            assert probe.calls[before] == look
        probe.hung.clear()  # it answers again: the next look sees it well (a fresh probe)
        assert dep.heal(30.0) == []
        assert probe.calls[before] == 4
    finally:
        dep.close()


def test_start_inspects_each_pod_a_bounded_number_of_times() -> None:
    engine = MemoryEngine()
    engine.add_image(IMAGE)
    heads = FakeHeads(engine)
    log = CallLog(engine)
    dep = Deployment(name=f"s{uuid.uuid4().hex[:8]}", uses="pkg.mod:Exec", replicas=16,
                     image=IMAGE, engine=log, probe=EngineProbe(engine),  # type: ignore[arg-type]
                     connect=heads.connect, reaper=False)
    with dep:
        counts = log.counts()
    assert counts["run_container"] == 17
    assert counts["inspect_container"] <= 3 * 17


def test_remove_in_order_stops_last_only_after_first_and_reports_an_error_at_the_end(
) -> None:
    engine = MemoryEngine()
    engine.add_image(IMAGE)
    log = CallLog(engine)
    act = Actuator(log, "net", EngineProbe(engine))  # type: ignore[arg-type]
    act.remove_in_order(["missing-a", "missing-b"], ["missing-head"], grace=0)
    stops = [arg for name, arg in log.calls if name == "stop_container"]
    assert stops[-1] == "missing-head" and sorted(stops[:2]) == ["missing-a", "missing-b"]


def test_remove_network_retries_a_network_the_engine_still_thinks_in_use() -> None:
    class Busy:
        def __init__(self, refusals: int) -> None:
            self.refusals = refusals
            self.removed = False

        def remove_network(self, name: str) -> None:
            if self.refusals:
                self.refusals -= 1
                raise ResourceConflict(f"network {name} has active endpoints")
            self.removed = True

    busy = Busy(3)
    remove_network(busy, "net")  # type: ignore[arg-type]
    assert busy.removed
    with pytest.raises(ResourceConflict):
        remove_network(Busy(10**6), "net", patience=0.05)  # type: ignore[arg-type]


def test_worker_pods_turn_the_image_healthcheck_off_and_the_others_keep_it() -> None:
    from orchestrator.planning.pods import PodContext, initial_pods
    from orchestrator.spec import DeploymentSpec

    spec = DeploymentSpec.from_fields(name="dep", uses="pkg.mod:Exec", replicas=3,
                                      image=IMAGE, uses_after="pkg.mod:After")
    plans = initial_pods(spec, PodContext(owner="o", token="t"))
    checked = {p.role: p.container.image_healthcheck for p in plans}
    assert checked == {"head": True, "worker": False, "uses_after": True}
