"""The actuator over the in-memory engine: start, readiness and failure paths, no Docker."""

from __future__ import annotations

import pytest

from orchestrator.actuator import Actuator
from orchestrator.engine.memory import MemoryEngine
from orchestrator.errors import HealthCheckTimeout, PodStartError, SpecError
from orchestrator.planning import labels as L
from orchestrator.planning.names import network_name
from orchestrator.planning.pods import PodContext, PodPlan, initial_pods
from orchestrator.spec import DeploymentSpec
from tests.support.fakes import EngineProbe

IMAGE = "orchestrator-runtime:test"


def setup(replicas: int = 2, **fields: object) -> tuple[MemoryEngine, Actuator, list[PodPlan]]:
    spec = DeploymentSpec.from_fields(name="dep", uses="pkg.mod:Exec", replicas=replicas,
                                      image=IMAGE, **fields)
    engine = MemoryEngine()
    engine.add_image(IMAGE)
    engine.create_network(network_name("dep"), labels=L.for_deployment("dep"))
    act = Actuator(engine, network_name("dep"), EngineProbe(engine))
    return engine, act, initial_pods(spec, PodContext(owner="o", token="t"))


def ready(act: Actuator) -> object:
    return lambda plan, info: act.serving(info)


def test_start_creates_every_pod_once_and_waits_until_each_serves() -> None:
    engine, act, plans = setup()
    infos = act.start(plans, ready(act), timeout=5)
    assert sorted(infos) == sorted(p.name for p in plans)
    for plan in plans:
        info = engine.inspect_container(plan.name)
        assert info.running
    created = [e for e in engine.events(since=0, until=engine.clock.now() + 1)
               if e.type == "container" and e.action == "create"]
    assert len(created) == len(plans)


def test_a_pod_that_exits_fails_the_batch_naming_it_and_removes_every_pod() -> None:
    engine, act, plans = setup()
    engine.faults.exit_after_start("dep-s0-r1-*", code=3, logs="cannot import pkg.mod")
    with pytest.raises(PodStartError) as info:
        act.start(plans, ready(act), timeout=5)
    err = info.value
    assert err.pod == "dep-s0-r1-g1" and err.exit_code == 3
    assert "cannot import pkg.mod" in err.log_tail
    assert engine.list_containers(L.managed()) == []


def test_a_pod_that_never_serves_times_out_and_nothing_is_left() -> None:
    engine, act, plans = setup()
    engine.faults.never_healthy("dep-s0-r0-*")
    with pytest.raises(HealthCheckTimeout) as info:
        act.start(plans, ready(act), timeout=0.5)
    assert info.value.pod == "dep-s0-r0-g1"
    assert engine.list_containers(L.managed()) == []


def test_a_create_failure_removes_what_was_created() -> None:
    engine, act, plans = setup(replicas=3)
    engine.faults.create_failure("dep-s0-r2-*")
    with pytest.raises(PodStartError, match="dep-s0-r2-g1"):
        act.start(plans, ready(act), timeout=5)
    assert engine.list_containers(L.managed()) == []


def test_a_taken_port_is_a_spec_error_on_the_port_field() -> None:
    engine, act, plans = setup(port=41234)
    other = plans[0].container.__class__(
        name="other", image=IMAGE, labels=L.managed(),
        ports=plans[0].container.ports,
    )
    engine.run_container(other)
    with pytest.raises(SpecError) as info:
        act.start(plans, ready(act), timeout=5)
    assert info.value.field == "port"
    assert [c.name for c in engine.list_containers(L.managed())] == ["other"]


def test_missing_image_is_a_spec_error_before_anything_starts() -> None:
    engine, act, _ = setup()
    with pytest.raises(SpecError) as info:
        act.check_images([("uses", "absent:1")])
    assert info.value.field == "uses"
    assert engine.list_containers(L.managed()) == []


class RecordingProbe(EngineProbe):
    """Also records when each pod was first seen serving (engine clock)."""

    def __init__(self, engine: MemoryEngine) -> None:
        super().__init__(engine)
        self.ready_at: dict[str, float] = {}

    def serving(self, address: str, service: str = "") -> bool:
        ok = super().serving(address, service)
        pod = self._pod(address)
        if ok and pod is not None:
            self.ready_at.setdefault(pod.name, self.engine.clock.now())
        return ok


@pytest.mark.parametrize("limit", [1, 2])
def test_a_staggered_start_never_has_more_than_max_starting_pods_starting(limit: int) -> None:
    engine, _, plans = setup(replicas=4)
    probe = RecordingProbe(engine)
    act = Actuator(engine, network_name("dep"), probe)
    engine.faults.slow_start("dep-*", 0.05)  # each pod takes a moment to turn healthy
    act.start(plans, ready(act), timeout=5, max_starting=limit)
    started = {e.name: e.time for e in engine.events(since=0, until=engine.clock.now() + 1)
               if e.type == "container" and e.action == "start"}
    assert set(started) == set(probe.ready_at) == {p.name for p in plans}
    for name, at in started.items():
        starting = [other for other, t in started.items()
                    if other != name and t <= at < probe.ready_at[other]]
        assert len(starting) <= limit - 1, (name, starting)
