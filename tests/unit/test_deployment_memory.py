"""The whole Deployment on the in-memory engine with a fake head: start, rolling update,
rollback, scale, converge, heal and take-over, in seconds and without Docker.

The same scenarios run on the real engine in tests/integration/test_rollout.py; here the
fake head checks the zero-downtime invariant at every drain and removal instead of a
client load counting failed requests.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from orchestrator import labels as L
from orchestrator.deployment import Deployment
from orchestrator.engine.memory import MemoryEngine
from orchestrator.errors import RolloutError, RolloutInProgress, SpecError
from orchestrator.planning.pods import PodContext, executor_pod
from orchestrator.progress import ProgressEvent
from orchestrator.spec import DeploymentSpec, UpdatePolicy
from tests.support.fakes import EngineProbe, FakeHeads, RecordingEngine, memory_deployment

IMAGE = "orchestrator-runtime:test"


@pytest.fixture
def engine() -> MemoryEngine:
    engine = MemoryEngine()
    engine.add_image(IMAGE)
    return engine


@pytest.fixture
def heads(engine: MemoryEngine) -> FakeHeads:
    return FakeHeads(engine)


@pytest.fixture
def dep(engine: MemoryEngine, heads: FakeHeads) -> Iterator[Deployment]:
    with memory_deployment(engine, heads) as dep:
        yield dep
    assert engine.list_containers(L.for_deployment(dep.name)) == []
    assert engine.list_networks(L.for_deployment(dep.name)) == []


def workers(engine: MemoryEngine, dep: Deployment) -> list[Any]:
    return sorted((c for c in engine.list_containers(L.for_deployment(dep.name))
                   if c.labels[L.ROLE] == "worker"), key=lambda c: c.name)


def hashes(engine: MemoryEngine, dep: Deployment) -> set[str]:
    return {c.labels[L.SPEC_HASH] for c in workers(engine, dep)}


def at_head(heads: FakeHeads, dep: Deployment) -> list[str]:
    return sorted(w.worker_id for w in heads.current(dep.name).workers.values())


# -- start --------------------------------------------------------------------------------
def test_start_registers_every_worker_and_close_removes_everything(
        dep: Deployment, engine: MemoryEngine, heads: FakeHeads) -> None:
    names = [c.name for c in workers(engine, dep)]
    assert len(names) == 2 and at_head(heads, dep) == names
    assert dep.is_ready and dep.num_pods == 3
    assert [ns.name for ns in dep.all_args] == [f"{dep.name}-head", *names]


def test_a_pod_that_never_serves_fails_the_start_and_leaves_nothing(
        engine: MemoryEngine, heads: FakeHeads) -> None:
    dep = memory_deployment(engine, heads, timeout_ready=0.5)
    engine.faults.never_healthy(f"{dep.name}-s0-r1-*")
    with pytest.raises(Exception, match=f"{dep.name}-s0-r1") as info:
        dep.start()
    assert type(info.value).__name__ in ("HealthCheckTimeout", "PodStartError")
    assert engine.list_containers(L.managed()) == []
    assert engine.list_networks(L.managed()) == []


# -- rolling update -------------------------------------------------------------------------
def test_rolling_update_replaces_every_replica_start_first_and_drained(
        dep: Deployment, engine: MemoryEngine, heads: FakeHeads) -> None:
    old = hashes(engine, dep)
    events: list[ProgressEvent] = []
    dep.rolling_update_sync(uses_with={"tag": "v2"}, on_progress=events.append)
    assert hashes(engine, dep).isdisjoint(old) and len(hashes(engine, dep)) == 1
    assert dep.spec.uses_with == {"tag": "v2"}
    book = heads.current(dep.name)
    # zero steps skipped: 2 starts, 2 adds, 2 drains, 2 stops, in that order per replica
    kinds = [e.kind for e in events if e.pod]
    assert kinds.count("added") == 2 and kinds.count("draining") == 2
    assert kinds.count("stopped") == 2
    assert events[-1].kind == "done" and events[-1].done == events[-1].total == 4
    # never below the replica count: a drain or removal always left 2 ready in the shard
    assert book.ready_left and min(left for _, left in book.ready_left) >= 2
    assert at_head(heads, dep) == [c.name for c in workers(engine, dep)]


def test_uses_with_is_merged_on_every_path_and_replaced_on_request(
        dep: Deployment) -> None:
    dep.rolling_update_sync(uses_with={"a": 1, "b": 2})
    dep.rolling_update_sync(uses_with={"b": 3})
    assert dep.spec.uses_with == {"a": 1, "b": 3}
    dep.rolling_update_sync(uses_with={"a": None})
    assert dep.spec.uses_with == {"b": 3}
    dep.rolling_update_sync(uses_with={"c": 4}, replace_uses_with=True)
    assert dep.spec.uses_with == {"c": 4}


def test_a_broken_new_version_rolls_back_and_keeps_serving(
        dep: Deployment, engine: MemoryEngine, heads: FakeHeads) -> None:
    old = hashes(engine, dep)
    before = dep.spec
    engine.faults.exit_after_start(f"{dep.name}-s0-r1-g2", code=3, logs="ImportError: boom")
    with pytest.raises(RolloutError) as info:
        dep.rolling_update_sync(uses_with={"tag": "broken"},
                                policy=UpdatePolicy(failure_action="rollback"))
    assert info.value.rolled_back and "ImportError: boom" in str(info.value.failed) + str(
        info.value.__cause__.log_tail if info.value.__cause__ else "")
    assert dep.spec == before and hashes(engine, dep) == old
    assert len(workers(engine, dep)) == 2
    assert min(left for _, left in heads.current(dep.name).ready_left) >= 2
    assert at_head(heads, dep) == [c.name for c in workers(engine, dep)]


def test_bad_update_input_changes_nothing(dep: Deployment, engine: MemoryEngine) -> None:
    names = [c.name for c in workers(engine, dep)]
    with pytest.raises(SpecError, match="replicas"):
        dep.scale_sync(0)
    with pytest.raises(SpecError, match="image"):
        dep.rolling_update_sync(image="missing:tag")
    assert [c.name for c in workers(engine, dep)] == names


def test_a_second_concurrent_update_is_refused(dep: Deployment) -> None:
    dep._lock.acquire(RolloutInProgress("test holds it"))
    try:
        with pytest.raises(RolloutInProgress):
            dep.scale_sync(3)
        assert dep.heal(0) == []  # heal skips a tick instead
    finally:
        dep._lock.release()


def test_an_update_waits_for_another_process_s_heal_then_runs(
        dep: Deployment, engine: MemoryEngine) -> None:
    """The supervisor heals in its own process: an update that meets its heal waits for
    it (bounded) instead of being refused; an update in the way is refused at once."""
    from orchestrator.control.lock import HEAL, UPDATE, DeploymentLock

    supervisor = DeploymentLock(dep.name)  # another process's lock on the same file
    assert supervisor.try_acquire(UPDATE)
    try:
        with pytest.raises(RolloutInProgress, match=r"\(update by process \d+\)"):
            dep.scale_sync(3)
    finally:
        supervisor.release()
    assert supervisor.try_acquire(HEAL)
    scaled = threading.Thread(target=dep.scale_sync, args=(3,))
    scaled.start()
    scaled.join(0.3)
    assert scaled.is_alive() and len(workers(engine, dep)) == 2  # waiting, not refused
    supervisor.release()
    scaled.join()
    assert len(workers(engine, dep)) == 3


# -- scale -----------------------------------------------------------------------------
def test_scale_up_then_down_removes_outdated_replicas_first(
        dep: Deployment, engine: MemoryEngine, heads: FakeHeads) -> None:
    dep.scale_sync(4)
    assert len(workers(engine, dep)) == 4 and len(at_head(heads, dep)) == 4
    # an update cut short: one replica runs another spec
    stale = workers(engine, dep)[0].name
    dep.state.pods[stale] = dataclass_replace(dep.state.pods[stale], spec_hash="old")
    assert dep.outdated() == [stale]
    dep.scale_sync(1)
    left = [c.name for c in workers(engine, dep)]
    assert len(left) == 1 and stale not in left
    assert at_head(heads, dep) == left and dep.spec.replicas == 1


def test_a_failed_scale_up_keeps_the_old_count(
        dep: Deployment, engine: MemoryEngine, heads: FakeHeads) -> None:
    engine.faults.exit_after_start(f"{dep.name}-s0-r3-*", code=1)
    with pytest.raises(RolloutError) as info:
        dep.scale_sync(4)
    assert info.value.rolled_back
    assert len(workers(engine, dep)) == 2 and len(at_head(heads, dep)) == 2
    assert dep.spec.replicas == 2


# -- converge: what a killed process left behind ----------------------------------------------
def test_a_cut_short_update_is_finished_by_the_next_one(
        dep: Deployment, engine: MemoryEngine, heads: FakeHeads) -> None:
    """A process killed mid-update left: slot 0 replaced but its old replica still
    draining at the head; slot 1's replacement started but never added. The next update
    (from another process) removes both leftovers, then rolls everything out."""
    old0, _old1 = (c.name for c in workers(engine, dep))
    ctx = PodContext(owner=dep.state.owner, token=dep.state.token)
    spec = dep.spec.evolve(uses_with={"tag": "v2"})
    new0, orphan = (executor_pod(spec, ctx, role="worker", uses=spec.uses, shard=0,
                                 replica=slot, generation=7) for slot in (0, 1))
    engine.run_container(new0.container)
    engine.run_container(orphan.container)
    control = heads.connect(dep.control().address, "t")
    control.add_worker(0, new0.address, new0.name)
    control.drain_worker(0, f"{old0}:50051", 1.0)

    other = Deployment.attach(dep.name, engine=engine, probe=EngineProbe(engine),
                              connect=heads.connect)
    events: list[ProgressEvent] = []
    other.rolling_update_sync(uses_with={"tag": "v3"}, on_progress=events.append)
    removed = {e.pod for e in events if e.message.startswith("removed")}
    assert removed == {old0, orphan.name}
    assert other.spec.uses_with == {"tag": "v3"} and other.spec.replicas == 2
    assert len(workers(engine, dep)) == 2
    assert hashes(engine, dep) == {other.spec.worker_hash()}
    assert at_head(heads, dep) == [c.name for c in workers(engine, dep)]
    other.close()  # detached: leaves it running
    assert workers(engine, dep)


# -- heal ----------------------------------------------------------------------------------
def test_heal_replaces_a_removed_worker(
        dep: Deployment, engine: MemoryEngine, heads: FakeHeads) -> None:
    gone = workers(engine, dep)[0].name
    engine.remove_container(gone, force=True)
    events: list[ProgressEvent] = []
    assert dep.heal(0, on_progress=events.append) == [gone]
    names = [c.name for c in workers(engine, dep)]
    assert len(names) == 2 and gone not in names
    assert at_head(heads, dep) == names
    assert dep.heal(0) == []  # nothing left to do


def test_heal_waits_for_unhealthy_for_before_replacing(
        dep: Deployment, engine: MemoryEngine) -> None:
    sick = workers(engine, dep)[1].name
    engine.stop_container(sick, grace=0)
    assert dep.heal(3600) == []  # sick, but not for long enough
    assert sick in [c.name for c in workers(engine, dep)]
    assert dep.heal(0) == [sick]


def test_heal_recreates_a_head_that_is_gone_and_registers_the_workers(
        dep: Deployment, engine: MemoryEngine, heads: FakeHeads) -> None:
    names = [c.name for c in workers(engine, dep)]
    engine.remove_container(f"{dep.name}-head", force=True)
    events: list[ProgressEvent] = []
    assert dep.heal(0, on_progress=events.append) == []
    assert any(e.pod == f"{dep.name}-head" and "recreated" in e.message for e in events)
    assert [c.name for c in workers(engine, dep)] == names  # no worker replaced
    assert at_head(heads, dep) == names  # registered with the new head


def test_heal_takes_over_what_another_handle_scaled(
        dep: Deployment, engine: MemoryEngine, heads: FakeHeads) -> None:
    other = Deployment.attach(dep.name, engine=engine, probe=EngineProbe(engine),
                              connect=heads.connect)
    other.scale_sync(3)
    assert dep.heal(0) == []  # nothing sick: the third replica is not a stranger
    assert dep.spec.replicas == 3 and len(dep.state.workers()) == 3
    other.close()


# -- one execution model ----------------------------------------------------------------------
def test_async_update_and_scale_never_call_the_engine_on_the_event_loop_thread(
        heads: FakeHeads) -> None:
    recording = RecordingEngine(heads.engine)
    dep = memory_deployment(recording, heads)
    with dep:
        recording.threads.clear()
        loop_thread: list[int] = []

        async def main() -> None:
            loop_thread.append(threading.get_ident())
            await dep.rolling_update(uses_with={"tag": "v2"})
            await dep.scale(3)
            await dep.scale(1)

        asyncio.run(main())
        calls = recording.threads
        assert len(calls) > 20  # the operations did reach the engine
        on_loop = [name for name, thread in calls if thread == loop_thread[0]]
        assert on_loop == []
        assert dep.spec.replicas == 1


def test_heal_works_from_a_running_event_loop(dep: Deployment, engine: MemoryEngine) -> None:
    gone = workers(engine, dep)[0].name
    engine.remove_container(gone, force=True)

    async def main() -> list[str]:
        return await asyncio.to_thread(dep.heal, 0)

    assert asyncio.run(main()) == [gone]


def test_the_spec_is_validated_once_on_the_way_to_a_rollout(
        dep: Deployment, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    original = DeploymentSpec.from_fields.__func__  # type: ignore[attr-defined]

    def counting(cls: type[DeploymentSpec], **raw: Any) -> DeploymentSpec:
        calls.append(1)
        return original(cls, **raw)  # type: ignore[no-any-return]

    monkeypatch.setattr(DeploymentSpec, "from_fields", classmethod(counting))
    dep.rolling_update_sync(uses_with={"tag": "v2"})
    assert len(calls) == 1


def dataclass_replace(obj: Any, **changes: Any) -> Any:
    from dataclasses import replace

    return replace(obj, **changes)


# -- close ----------------------------------------------------------------------------------
class _StopWatcher:
    """An engine proxy: a worker's stop waits (at most `patience` s) for the head's stop to
    begin, and records whether it did, i.e. whether the head and the workers were stopped
    at the same time."""

    def __init__(self, inner: MemoryEngine, patience: float = 1.0) -> None:
        self.inner = inner
        self.patience = patience
        self.head_stopping = threading.Event()
        self.overlapped: list[bool] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def stop_container(self, name: str, **kwargs: Any) -> None:
        if name.endswith("-head"):
            self.head_stopping.set()
        else:
            self.overlapped.append(self.head_stopping.wait(self.patience))
        self.inner.stop_container(name, **kwargs)


def test_close_stops_every_pod_at_once_under_the_lock(
        engine: MemoryEngine, heads: FakeHeads) -> None:
    watcher = _StopWatcher(engine)
    dep = memory_deployment(watcher, heads).start()
    dep.close()
    assert watcher.overlapped == [True, True]  # the head did not wait for the workers
    assert engine.list_containers(L.for_deployment(dep.name)) == []
    assert not dep._lock.held  # taken for the teardown, and given back


def test_close_stops_the_head_last_while_another_process_holds_the_lock(
        engine: MemoryEngine, heads: FakeHeads) -> None:
    from orchestrator.control.lock import DeploymentLock

    watcher = _StopWatcher(engine, patience=0.3)
    dep = memory_deployment(watcher, heads).start()
    other = DeploymentLock(dep.name)  # another process's heal or update, under way
    other.acquire(RolloutInProgress("the other process"))
    try:
        dep.close()
    finally:
        other.release()
    # a heal there must never see the head gone while workers run: workers first
    assert watcher.overlapped == [False, False]
    assert engine.list_containers(L.for_deployment(dep.name)) == []
