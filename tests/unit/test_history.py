"""Rollout history, undo and restart: the pure bookkeeping (planning.history), the records
on the in-memory engine (control.history), the Deployment API and the CLI's parsing.

The same operations run on the real engine, under load, in
tests/integration/test_history.py.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

from orchestrator import labels as L
from orchestrator.cli import build_parser
from orchestrator.cli.base import UsageError
from orchestrator.cli.history import format_history
from orchestrator.cli.rollout import _action
from orchestrator.control.history import RevisionStore, process_alive
from orchestrator.deployment import Deployment
from orchestrator.engine.cleanup import list_owned, remove_owned
from orchestrator.engine.memory import MemoryEngine
from orchestrator.errors import RolloutError, SpecError
from orchestrator.planning.history import (
    KEEP,
    Revision,
    beyond_limit,
    current,
    describe,
    newest,
    settle,
    undo_changes,
    undo_target,
)
from orchestrator.spec import UpdatePolicy
from tests.support.fakes import EngineProbe, FakeHeads, memory_deployment

IMAGE = "orchestrator-runtime:test"
DEAD_PID = 2**22 + 12345  # above Linux's pid_max default: no such process


def rev(number: int, outcome: Any = "rolled out", spec_hash: str = "", written: int = 0,
        **kw: Any) -> Revision:
    return Revision(number=number, at=1.0, change=f"c{number}",
                    spec_hash=spec_hash or f"h{number}", generation=number,
                    outcome=outcome, written=written, **kw)


# -- pure bookkeeping --------------------------------------------------------------------


def test_a_revision_round_trips_through_its_label_and_garbage_reads_as_none() -> None:
    one = rev(3, "rolled back", fields={"uses_with": {"a": 1}}, note="boom", pid=7)
    assert Revision.from_label(one.to_label()) == one
    for text in ("", "{", "[]", '{"number": 1}', one.to_label().replace("rolled back", "x")):
        assert Revision.from_label(text) is None


def test_newest_keeps_the_last_writing_of_each_revision_in_number_order() -> None:
    revs = [rev(2, "in progress", written=5), rev(1), rev(2, "rolled out", written=9),
            rev(2, "cut short", written=7)]
    assert [(r.number, r.outcome) for r in newest(revs)] == [(1, "rolled out"),
                                                              (2, "rolled out")]


def test_only_the_last_ten_are_kept() -> None:
    revs = [rev(n) for n in range(1, 14)]
    assert [r.number for r in beyond_limit(revs)] == [1, 2, 3]
    assert beyond_limit(revs[:KEEP]) == []


@pytest.mark.parametrize(
    ("outcome", "alive", "workers", "expected"),
    [
        ("in progress", True, [("h5", 5)], "in progress"),      # still running
        ("in progress", None, [("h4", 4)], "in progress"),      # another host: unknown
        ("in progress", False, [("h5", 5), ("h4", 4)], "cut short"),  # half replaced
        ("in progress", False, [("h4", 4), ("h4", 4)], "cut short"),  # none replaced
        ("in progress", False, [("h5", 5), ("h5", 6)], "rolled out"),  # all replaced
        ("in progress", False, [], "cut short"),
        ("rolled back", False, [("h4", 4)], "rolled back"),     # settled already
    ],
)
def test_settle_an_update_whose_process_is_gone(outcome: Any, alive: bool | None,
                                                workers: list[tuple[str, int]],
                                                expected: str) -> None:
    assert settle(rev(5, outcome), alive=alive, workers=workers).outcome == expected


def test_settle_tells_a_cut_short_restart_by_generation() -> None:
    """A restart keeps the spec hash: only the generation shows which replicas are new."""
    restart = rev(5, "in progress", spec_hash="same")
    half = settle(restart, alive=False, workers=[("same", 5), ("same", 3)])
    assert half.outcome == "cut short" and "pid" in half.note


def test_undo_goes_to_the_rolled_out_revision_before_the_running_one() -> None:
    revs = [rev(1), rev(2), rev(3, "rolled back"), rev(4, "cut short")]
    assert current(revs, "h4") == revs[3]
    assert undo_target(revs, "h4").number == 2  # 3 never ran
    assert undo_target(revs, "h2").number == 1
    assert current(revs, "h3") is None  # a rolled-back spec does not run
    assert undo_target(revs, "h3", to_revision=3).number == 3  # asked for: allowed
    # a restart (same hash as the one before) is skipped: it would change nothing
    same = [rev(1), rev(2, spec_hash="h"), rev(3, spec_hash="h")]
    assert undo_target(same, "h").number == 1


@pytest.mark.parametrize(("revs", "running", "to", "error", "match"), [
    ([rev(1)], "h1", None, RolloutError, "no earlier revision"),
    ([rev(1), rev(2, "rolled back")], "h1", None, RolloutError, "no earlier revision"),
    ([rev(4), rev(5)], "h5", 2, SpecError, r"revision 2 is not in the history \(kept: 4, 5\)"),
])
def test_undo_refuses_with_a_clear_error(revs: list[Revision], running: str, to: int | None,
                                         error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        undo_target(revs, running, to)


def test_undo_keeps_the_replica_count_and_the_fields_that_shape_the_head() -> None:
    changes = undo_changes({"name": "a", "replicas": 3, "port": 5000, "shards": 2,
                            "image": "img:1", "uses_with": {"t": 1}, "env": {}})
    assert changes == {"image": "img:1", "uses_with": {"t": 1}, "env": {}}


@pytest.mark.parametrize(("before", "after", "text"), [
    ({"image": "a:1"}, {"image": "a:2"}, "image: a:1 -> a:2"),
    ({"uses_with": {"tag": "v1"}}, {"uses_with": {"tag": "v2", "n": 3}},
     "uses_with.n: 3; uses_with.tag: v1 -> v2"),
    ({"uses_with": {"tag": "v1"}}, {"uses_with": {}}, "uses_with.tag removed"),
    ({"uses_with": {"api_key": "s1"}}, {"uses_with": {"api_key": "s2"}},
     "uses_with.api_key changed"),
    ({"env": {"MODE": "a"}}, {"env": {"MODE": "b", "NEW": "x"}}, "env.MODE changed; env.NEW set"),
    ({"replicas": 1, "image": "x"}, {"replicas": 5, "image": "x"}, "no change"),
    ({"uses": "/a/very/long/path/to/the/project/executors/echo.py:Echo"},
     {"uses": "docker://app:2"},
     "uses: /a/very/long/path/...cutors/echo.py:Echo -> docker://app:2"),
])
def test_describe_says_what_changed_without_secrets(before: dict[str, Any],
                                                    after: dict[str, Any], text: str) -> None:
    assert describe(before, after) == text


def test_process_alive() -> None:
    assert process_alive(os.getpid()) and not process_alive(DEAD_PID)
    assert not process_alive(0)


# -- on the in-memory engine -----------------------------------------------------------------


@pytest.fixture
def engine() -> MemoryEngine:
    engine = MemoryEngine()
    engine.add_image(IMAGE)
    engine.add_image("orchestrator-runtime:other")
    return engine


@pytest.fixture
def heads(engine: MemoryEngine) -> FakeHeads:
    return FakeHeads(engine)


@pytest.fixture
def dep(engine: MemoryEngine, heads: FakeHeads) -> Iterator[Deployment]:
    with memory_deployment(engine, heads) as dep:
        yield dep
    assert not list_owned(engine, dep.name), "close leaves no container, network or record"


def outcomes(dep: Deployment) -> list[tuple[int, str, str]]:
    return [(r.number, r.change, r.outcome) for r in dep.rollout_history()]


def worker_hashes(engine: MemoryEngine, dep: Deployment) -> set[str]:
    return {c.labels[L.SPEC_HASH] for c in engine.list_containers(L.for_deployment(dep.name))
            if c.labels[L.ROLE] == "worker"}


def test_a_new_deployment_has_revision_one_and_no_record(
        dep: Deployment, engine: MemoryEngine) -> None:
    assert outcomes(dep) == [(1, "created", "rolled out")]
    assert engine.list_volumes(L.managed()) == []  # nothing written until an update


def test_updates_undo_and_restart_are_revisions(dep: Deployment, engine: MemoryEngine) -> None:
    v1 = dep.spec.worker_hash()
    dep.rolling_update_sync(uses_with={"tag": "v2"})
    dep.rolling_update_sync(image="orchestrator-runtime:other")
    dep.scale_sync(3)  # not a revision
    assert outcomes(dep) == [
        (1, "created", "rolled out"),
        (2, "uses_with.tag: v2", "rolled out"),
        (3, f"image: {IMAGE} -> orchestrator-runtime:other", "rolled out"),
    ]
    undone = dep.undo_sync()
    assert undone is not None and undone.number == 4
    assert undone.change == f"undo to revision 2: image: orchestrator-runtime:other -> {IMAGE}"
    assert dep.spec.image == IMAGE and dep.spec.uses_with == {"tag": "v2"}
    assert dep.spec.replicas == 3  # kept, as kubectl's undo does
    dep.undo_sync(to_revision=1)
    assert dep.spec.uses_with == {} and worker_hashes(engine, dep) == {v1}
    gens = {p.generation for p in dep.state.workers()}
    restarted = dep.restart_sync()
    assert restarted is not None and restarted.change == "restart"
    assert {p.generation for p in dep.state.workers()}.isdisjoint(gens)  # all replaced
    assert worker_hashes(engine, dep) == {v1}
    assert [o[1:] for o in outcomes(dep)[-3:]] == [
        ("undo to revision 2: image: orchestrator-runtime:other -> " + IMAGE, "rolled out"),
        ("undo to revision 1: uses_with.tag removed", "rolled out"),
        ("restart", "rolled out")]
    assert dep.undo_sync(to_revision=6) is None  # it runs that spec already: nothing to do


def test_another_process_sees_the_same_history(dep: Deployment, engine: MemoryEngine,
                                               heads: FakeHeads) -> None:
    dep.rolling_update_sync(uses_with={"tag": "v2"})
    other = Deployment.attach(dep.name, engine=engine, probe=EngineProbe(engine),
                              connect=heads.connect)
    try:
        assert other.rollout_history() == dep.rollout_history()
        other.undo_sync()
        assert [r.change for r in dep.rollout_history()][-1] == \
            "undo to revision 1: uses_with.tag removed"
    finally:
        other.close()


def test_a_failed_update_is_recorded_as_rolled_back(dep: Deployment,
                                                    engine: MemoryEngine) -> None:
    """No container of the failed spec survives it: the record alone remembers it."""
    engine.faults.exit_after_start(f"{dep.name}-s0-*-g2", code=3, logs="ImportError: boom")
    with pytest.raises(RolloutError):
        dep.rolling_update_sync(uses_with={"tag": "broken"},
                                policy=UpdatePolicy(failure_action="rollback"))
    last = dep.rollout_history()[-1]
    assert (last.number, last.outcome) == (2, "rolled back") and "exit" in last.note
    with pytest.raises(RolloutError, match="no earlier revision"):
        dep.undo_sync()  # revision 1 runs; 2 never did


def test_a_paused_update_is_recorded_as_cut_short(dep: Deployment,
                                                  engine: MemoryEngine) -> None:
    engine.faults.exit_after_start(f"{dep.name}-s0-r1-g2", code=3)
    with pytest.raises(RolloutError):
        dep.rolling_update_sync(uses_with={"tag": "v2"},
                                policy=UpdatePolicy(failure_action="pause"))
    assert dep.rollout_history()[-1].outcome == "cut short"
    engine.faults.clear()
    dep.undo_sync()  # back to revision 1 from the mixed state
    assert dep.spec.uses_with == {} and not dep.outdated()


def test_an_update_whose_process_died_reads_cut_short_then_is_recorded_so(
        dep: Deployment, engine: MemoryEngine) -> None:
    """A process that wrote its revision and was killed before replacing every replica."""
    store = RevisionStore(engine, dep.name, dep.state.owner)
    store.pid = DEAD_PID
    target = dep.spec.evolve(uses_with={"tag": "v2"})
    store.begin(dep.state, target, "uses_with.tag: v2", dep.state.next_generation())
    assert store.stored()[-1].outcome == "in progress"  # as the dead process left it
    assert dep.rollout_history()[-1].outcome == "cut short"  # read: its process is gone
    dep.scale_sync(3)  # the next update, scale or converge records it
    assert [(r.number, r.outcome) for r in store.stored()] == [
        (1, "rolled out"), (2, "cut short")]
    dep.rolling_update_sync(uses_with={"tag": "v3"})
    assert [r.outcome for r in store.stored()] == ["rolled out", "cut short", "rolled out"]


def test_an_update_whose_process_died_after_the_last_replica_reads_rolled_out(
        dep: Deployment, engine: MemoryEngine) -> None:
    dep.rolling_update_sync(uses_with={"tag": "v2"})
    store = RevisionStore(engine, dep.name, dep.state.owner)
    last = store.stored()[-1]
    store.write(replace(last, outcome="in progress", pid=DEAD_PID))  # its end never written
    assert dep.rollout_history()[-1].outcome == "rolled out"


def test_the_history_survives_the_head_and_keeps_the_last_ten(
        dep: Deployment, engine: MemoryEngine) -> None:
    for n in range(11):
        dep.rolling_update_sync(uses_with={"n": n})
    before = dep.rollout_history()
    engine.remove_container(dep.state.head_name, force=True)
    assert dep.rollout_history() == before  # read with no head at all
    assert dep.heal(0) == []  # recreates the head (no worker replaced)
    assert engine.inspect_container(dep.state.head_name).running
    assert dep.rollout_history() == before
    assert [r.number for r in before] == list(range(3, 13))
    assert len(engine.list_volumes(L.for_deployment(dep.name))) == KEEP


def test_down_by_label_removes_the_records(engine: MemoryEngine, heads: FakeHeads) -> None:
    dep = memory_deployment(engine, heads)
    dep.start()
    dep.rolling_update_sync(uses_with={"tag": "v2"})
    dep.detach()
    dep.close()
    assert engine.list_volumes(L.for_deployment(dep.name))
    gone = remove_owned(engine, dep.name, grace=0)
    assert len(gone.volumes) == 2 and not list_owned(engine, dep.name)


class NoVolumes:
    """An engine without volumes: everything but `create_volume` and friends."""

    def __init__(self, inner: MemoryEngine) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        if "volume" in name:
            raise AttributeError(name)
        return getattr(self.inner, name)


def test_an_engine_without_volumes_runs_updates_and_keeps_no_history(
        engine: MemoryEngine, heads: FakeHeads) -> None:
    with memory_deployment(NoVolumes(engine), heads) as dep:
        dep.rolling_update_sync(uses_with={"tag": "v2"})
        assert [r.number for r in dep.rollout_history()] == [1]
        with pytest.raises(RolloutError, match="no earlier revision"):
            dep.undo_sync()


# -- the command line --------------------------------------------------------------------------


def parse(*words: str) -> argparse.Namespace:
    return build_parser(only={"rollout"}).parse_args(["rollout", *words])


@pytest.mark.parametrize(("words", "action", "name"), [
    (("web", "--set", "tag=v2"), "update", "web"),
    (("history", "web"), "history", "web"),
    (("undo", "web", "--to-revision", "3"), "undo", "web"),
    (("restart", "web"), "restart", "web"),
    (("history",), "update", "history"),  # a deployment may be called history
])
def test_rollout_actions_parse(words: tuple[str, ...], action: str, name: str) -> None:
    args = parse(*words)
    assert _action(args) == action and args.name == name


@pytest.mark.parametrize(("words", "match"), [
    (("rewind", "web"), "expected history, undo, restart"),
    (("restart", "web", "--set", "a=1"), "--image and --set belong"),
    (("history", "web", "--image", "x"), "--image and --set belong"),
    (("web", "--to-revision", "2"), "--to-revision belongs"),
])
def test_rollout_actions_refuse_mixed_options(words: tuple[str, ...], match: str) -> None:
    with pytest.raises(UsageError, match=match):
        _action(parse(*words))


def test_the_history_table() -> None:
    revs = [rev(1), rev(2, "rolled back", note="pod x exited (code 3)")]
    revs = [replace(r, at=0.0) for r in revs]
    text = format_history(revs, revs[0])
    assert text.splitlines() == [
        "REVISION  WHEN  OUTCOME      CHANGE  NOTE",
        "1*        -     rolled out   c1      -",
        "2         -     rolled back  c2      pod x exited (code 3)",
    ]
