"""The background healer of a started Deployment, and the supervisor's loop, on the
in-memory engine with fake heads: healing by default, what a replacement reports (log
line, reason, how long it was sick, labels, the head's counter), what a healthy tick
costs, that close() stops it and aborts a replacement under way, and that an update of
the same process is never refused because its healer held the lock."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator import labels as L
from orchestrator import supervisor as sv
from orchestrator.cli.supervise import systemd_unit
from orchestrator.control.background import HealReport, heal_poll
from orchestrator.control.healer import FULL_LOOK_EVERY
from orchestrator.control.lock import DeploymentLock
from orchestrator.deployment import Deployment
from orchestrator.engine.base import ContainerSpec
from orchestrator.engine.memory import MemoryEngine
from orchestrator.errors import SpecError
from orchestrator.spec import DeploymentSpec
from tests.support.fakes import EngineProbe, FakeHeads, RecordingEngine, memory_deployment
from tests.support.waiting import wait_until

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
    with memory_deployment(engine, heads, heal_after=0.3) as dep:
        yield dep
    assert engine.list_containers(L.for_deployment(dep.name)) == []


def workers(engine: MemoryEngine, dep: Deployment) -> list[str]:
    return sorted(c.name for c in engine.list_containers(L.for_deployment(dep.name))
                  if c.labels[L.ROLE] == "worker")


# -- the field ----------------------------------------------------------------------------
@pytest.mark.parametrize(("given", "expected"), [
    ({}, 30.0), ({"heal_after": 2}, 2.0), ({"heal_after": 0}, None),
    ({"heal_after": None}, None), ({"heal_after": 0.5}, 0.5)])
def test_heal_after_defaults_to_30_and_zero_or_none_turn_it_off(
        given: dict[str, Any], expected: float | None) -> None:
    spec = DeploymentSpec.from_fields(name="x", uses="pkg.mod:Exec", **given)
    assert spec.heal_after == expected
    assert DeploymentSpec.from_fields(**spec.to_fields()).heal_after == expected  # labels


@pytest.mark.parametrize("bad", [-1, "soon", float("inf"), True])
def test_a_bad_heal_after_names_the_field(bad: object) -> None:
    with pytest.raises(SpecError, match="heal_after"):
        DeploymentSpec.from_fields(name="x", uses="pkg.mod:Exec", heal_after=bad)


# -- healing by default -----------------------------------------------------------------
def test_a_started_deployment_heals_by_itself(
        dep: Deployment, engine: MemoryEngine, heads: FakeHeads,
        caplog: pytest.LogCaptureFixture) -> None:
    assert dep.healer is not None and dep.healer.running
    gone = workers(engine, dep)[0]
    caplog.set_level(logging.WARNING, logger="orchestrator.healing")
    engine.remove_container(gone, force=True)
    wait_until(lambda: len(workers(engine, dep)) == 2 and gone not in workers(engine, dep),
               what="the removed worker replaced")
    wait_until(lambda: bool(dep.healer and dep.healer.replaced), what="the replacement noted")
    assert dep.healer is not None
    (event,) = dep.healer.replaced
    assert (event.pod, event.role, event.reason) == (gone, "worker", "container gone")
    assert event.sick_for >= 0.3  # heal_after: never sooner
    assert event.successor in workers(engine, dep)
    # the successor carries the count and the reason; the head counted it
    info = engine.inspect_container(event.successor)
    assert info.labels[L.REPLACED] == "1" and info.labels[L.REPLACED_REASON] == "container gone"
    assert heads.current(dep.name).replaced == [(gone, "worker", "gone")]
    # and one log line with pod, reason and how long it was sick
    lines = [r.getMessage() for r in caplog.records if gone in r.getMessage()]
    assert len(lines) == 1 and "container gone" in lines[0] and "sick for" in lines[0]


def test_a_stopped_worker_is_replaced_and_the_count_carries_over(
        dep: Deployment, engine: MemoryEngine) -> None:
    first = workers(engine, dep)[1]
    engine.stop_container(first, grace=0)
    wait_until(lambda: first not in workers(engine, dep), what="first replacement")
    assert dep.healer is not None
    wait_until(lambda: len(dep.healer.replaced) == 1 if dep.healer else False)
    second = dep.healer.replaced[0].successor
    assert dep.healer.replaced[0].reason.startswith("container exited")
    engine.remove_container(second, force=True)
    wait_until(lambda: len(dep.healer.replaced) == 2 if dep.healer else False,
               what="second replacement")
    third = dep.healer.replaced[1].successor
    assert engine.inspect_container(third).labels[L.REPLACED] == "2"


def test_the_head_is_recreated_and_reported(dep: Deployment, engine: MemoryEngine) -> None:
    names = workers(engine, dep)
    engine.remove_container(f"{dep.name}-head", force=True)
    assert dep.healer is not None
    wait_until(lambda: bool(dep.healer and dep.healer.replaced), what="the head recreated")
    (event,) = dep.healer.replaced
    assert (event.pod, event.role) == (f"{dep.name}-head", "head")
    assert workers(engine, dep) == names  # no worker replaced
    assert engine.inspect_container(event.pod).labels[L.REPLACED] == "1"


@pytest.mark.parametrize("off", [0, None])
def test_heal_after_off_starts_no_healer(engine: MemoryEngine, heads: FakeHeads,
                                         off: float | None) -> None:
    with memory_deployment(engine, heads, heal_after=off) as dep:
        assert dep.healer is None
        assert dep.start_healing() is None  # the spec says off
        assert dep.start_healing(5) is not None  # asked for by hand


def test_listeners_get_reports(dep: Deployment, engine: MemoryEngine) -> None:
    reports: list[HealReport] = []
    assert dep.start_healing(on_report=reports.append) is dep.healer  # the same one
    gone = workers(engine, dep)[0]
    engine.remove_container(gone, force=True)
    wait_until(lambda: any(r.kind == "replaced" for r in reports))
    replaced = [r for r in reports if r.kind == "replaced"]
    assert replaced[0].pods == (gone,) and replaced[0].replacements[0].pod == gone


# -- cost and locking ---------------------------------------------------------------------
def test_healthy_looks_list_once_in_ten_and_take_no_lock(
        heads: FakeHeads, monkeypatch: pytest.MonkeyPatch) -> None:
    recording = RecordingEngine(heads.engine)
    with memory_deployment(recording, heads, heal_after=None) as dep:
        taken: list[str] = []
        original = DeploymentLock.acquire

        def counting(lock: DeploymentLock, busy: Any) -> None:
            taken.append(lock.path)
            original(lock, busy)

        monkeypatch.setattr(DeploymentLock, "acquire", counting)
        recording.threads.clear()
        book = heads.current(dep.name)
        lists_before = sum(1 for c in book.calls if c[0] == "list")
        for _ in range(FULL_LOOK_EVERY):
            assert dep.heal(0) == []
        # the first look lists (a full one); the next ones ask only the head
        assert [name for name, _ in recording.threads] == ["list_containers"]
        assert taken == []
        assert sum(1 for c in book.calls if c[0] == "list") - lists_before == FULL_LOOK_EVERY


def test_an_update_is_never_refused_because_its_own_healer_holds_the_lock(
        engine: MemoryEngine, heads: FakeHeads) -> None:
    with memory_deployment(engine, heads, heal_after=3600) as dep:
        sick = workers(engine, dep)[0]
        engine.stop_container(sick, grace=0)  # every tick now looks under the lock
        dep.start_healing(poll=0.001)
        for replicas in (3, 2, 3):
            dep.scale_sync(replicas)  # RolloutInProgress would fail the test
        assert dep.spec.replicas == 3


def test_close_stops_the_healer_and_aborts_a_replacement_under_way(
        engine: MemoryEngine, heads: FakeHeads) -> None:
    dep = memory_deployment(engine, heads, heal_after=0.2, timeout_ready=120)
    dep.start()
    healer = dep.healer
    assert healer is not None
    first = workers(engine, dep)[0]
    engine.faults.never_healthy(f"{dep.name}-s0-r*-g2")  # its replacement never serves
    engine.remove_container(first, force=True)
    wait_until(lambda: any(n.endswith("-g2") for n in workers(engine, dep)),
               what="the replacement under way")
    began = time.monotonic()
    dep.close()
    took = time.monotonic() - began
    assert not healer.running
    assert took < 60  # far from the 120 s the replacement would have waited
    assert engine.list_containers(L.for_deployment(dep.name)) == []
    assert engine.list_networks(L.for_deployment(dep.name)) == []


# -- the supervisor -------------------------------------------------------------------------
def test_state_dir_and_engine_key() -> None:
    assert sv.state_dir({sv.STATE_DIR_ENV: "/x"}) == Path("/x")
    assert sv.state_dir({"XDG_STATE_HOME": "/s", "HOME": "/h"}) == Path("/s/orchestrator")
    assert sv.state_dir({"HOME": "/h"}) == Path("/h/.local/state/orchestrator")
    assert sv.engine_key({}) == "default"
    one, two = sv.engine_key({"DOCKER_HOST": "tcp://a:1"}), sv.engine_key(
        {"DOCKER_HOST": "tcp://b:1"})
    assert one != two and one.isalnum()
    paths = sv.Paths.for_engine({sv.STATE_DIR_ENV: "/x"})
    assert (paths.lock.name, paths.pid.name, paths.log.name) == (
        "supervisor-default.lock", "supervisor-default.pid", "supervisor-default.log")


def test_status_trusts_the_lock_not_the_pid_file(tmp_path: Path) -> None:
    paths = sv.Paths.for_engine({sv.STATE_DIR_ENV: str(tmp_path)})
    assert not sv.status(paths).running and not sv.status(paths).stale
    paths.pid.write_text('{"pid": 999999, "stay": false}')  # a killed one's leftover
    now = sv.status(paths)
    assert not now.running and now.stale and now.pid == 999999


def test_the_supervisor_heals_what_asks_for_it_and_leaves_when_none_is_left(
        engine: MemoryEngine, heads: FakeHeads, tmp_path: Path) -> None:
    mine = memory_deployment(engine, heads, heal_after=0.2, supervised=True)
    # another deployment's pod, not supervised: its own process heals it
    engine.run_container(ContainerSpec(name="other-head", image=IMAGE, labels={
        **L.for_deployment("other"), L.ROLE: "head"}))
    mine.start()
    mine.detach()
    mine.close()  # up -d: the CLI has gone
    attached: list[str] = []

    def attach(name: str) -> Deployment:
        attached.append(name)
        return Deployment.attach(name, engine=engine, probe=EngineProbe(engine),
                                 connect=heads.connect)

    paths = sv.Paths.for_engine({sv.STATE_DIR_ENV: str(tmp_path)})
    sup = sv.Supervisor(paths, engine=engine, attach=attach, scan=0.05)
    runner = threading.Thread(target=sup.run)
    runner.start()
    try:
        wait_until(lambda: sv.status(paths).running, what="the supervisor holds its lock")
        wait_until(lambda: mine.name in sup.watched)
        assert attached == [mine.name]
        gone = next(c.name for c in engine.list_containers(L.for_deployment(mine.name))
                if c.labels[L.ROLE] == "worker")
        engine.remove_container(gone, force=True)
        wait_until(lambda: len([c for c in engine.list_containers(L.for_deployment(mine.name))
                                if c.labels[L.ROLE] == "worker" and c.running]) == 2
                   and gone not in [c.name for c in engine.list_containers(L.managed())],
                   what="the supervisor replaced the worker")
        from orchestrator.apply import remove
        remove(engine, [mine.name], grace=0)  # down of the last supervised one
        runner.join(30)
        assert not runner.is_alive()  # it left by itself
        assert not sv.status(paths).running and not paths.pid.exists()
    finally:
        sup.stop.set()
        runner.join(30)


def test_systemd_unit_starts_after_the_engine_and_shares_the_state_dir() -> None:
    unit = systemd_unit({sv.STATE_DIR_ENV: "/srv/state", "DOCKER_HOST": "unix:///d.sock"},
                        user="ops", python="/opt/venv/bin/python")
    lines = unit.splitlines()
    assert "After=docker.service network-online.target" in lines
    assert "User=ops" in lines
    assert f"Environment={sv.STATE_DIR_ENV}=/srv/state" in lines
    assert "Environment=DOCKER_HOST=unix:///d.sock" in lines
    assert "ExecStart=/opt/venv/bin/python -m orchestrator.supervisor --stay" in lines
    assert "WantedBy=multi-user.target" in lines and "Restart=on-failure" in lines


def test_the_heads_replacement_counter_is_bounded_and_rendered() -> None:
    from orchestrator.runtime.metrics import RequestStats, render
    from orchestrator.runtime.pool import Pool

    stats = RequestStats()
    stats.note_replaced("worker", "stopped")
    stats.note_replaced("worker", "stopped")
    stats.note_replaced("head", "gone")
    for i in range(100):  # a misbehaving caller cannot grow the label set without bound
        stats.note_replaced("worker", f"r{i}")
    assert len(stats.replaced) == 64
    text = render("d-head", Pool(1), stats, True).decode()
    assert 'orchestrator_replacements_total{head="d-head",reason="stopped",role="worker"} 2.0' \
        in text
    assert 'orchestrator_replacements_total{head="d-head",reason="gone",role="head"} 1.0' in text


def test_after_stop_healing_the_handle_still_replaces_pods(
        dep: Deployment, engine: MemoryEngine) -> None:
    # A foreground heal loop (`up --heal-after`) stops the background healer and heals
    # with the same handle: the healer's abort must not outlive it.
    dep.stop_healing()
    assert dep.healer is None
    gone = workers(engine, dep)[0]
    engine.remove_container(gone, force=True)
    replaced = dep.heal(0)
    assert replaced == [gone]
    assert gone not in workers(engine, dep) and len(workers(engine, dep)) == 2


@pytest.mark.parametrize(("heal_after", "poll", "expected"), [
    (30.0, 1.0, 3.0),    # the default: a look every 3 s
    (2.0, 1.0, 1.0),     # never more often than `poll`
    (0.5, 0.1, 0.1),
    (600.0, 1.0, 5.0),   # never less often than SLOWEST_POLL
    (0.0, 1.0, 1.0),     # healing off: the loop only waits, at `poll`
])
def test_a_look_every_tenth_of_heal_after_within_bounds(heal_after: float, poll: float,
                                                         expected: float) -> None:
    assert heal_poll(heal_after, poll) == pytest.approx(expected)
