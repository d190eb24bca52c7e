"""Rollout and scale plans: table-driven cases plus Hypothesis invariants."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.errors import SpecError
from orchestrator.planning.rollout import Replica, Retire, Start, plan_shard, retire_order
from orchestrator.spec import UpdatePolicy

START_FIRST = UpdatePolicy()
STOP_FIRST = UpdatePolicy(order="stop-first", max_surge=0, max_unavailable=1)


def olds(n: int) -> list[Replica]:
    return [Replica(slot=i, generation=1, outdated=True) for i in range(n)]


def fresh(n: int) -> list[Replica]:
    return [Replica(slot=i, generation=1) for i in range(n)]


def test_start_first_update_replaces_one_at_a_time_in_place() -> None:
    steps = plan_shard(olds(3), 3, START_FIRST)
    assert steps == [
        Start((0,)), Retire((olds(3)[0],)),
        Start((1,)), Retire((olds(3)[1],)),
        Start((2,)), Retire((olds(3)[2],)),
    ]


def test_stop_first_update_retires_before_starting() -> None:
    steps = plan_shard(olds(2), 2, STOP_FIRST)
    assert steps == [Retire((olds(2)[0],)), Start((0,)), Retire((olds(2)[1],)), Start((1,))]


def test_scale_up_starts_all_new_replicas_in_one_concurrent_step() -> None:
    assert plan_shard(fresh(2), 5, START_FIRST) == [Start((2, 3, 4))]


def test_scale_down_retires_the_newest_first() -> None:
    current = [Replica(slot=i, generation=g) for i, g in [(0, 1), (1, 2), (2, 2), (3, 1)]]
    [step] = plan_shard(current, 1, START_FIRST)
    assert isinstance(step, Retire)
    assert [r.slot for r in step.replicas] == [2, 1, 3]


def test_scale_down_retires_outdated_replicas_first() -> None:
    current = [Replica(0, 2), Replica(1, 1, outdated=True), Replica(2, 2)]
    [step] = plan_shard(current, 2, START_FIRST)
    assert step == Retire((Replica(1, 1, outdated=True),))


def test_nothing_to_do_gives_an_empty_plan() -> None:
    assert plan_shard(fresh(3), 3, START_FIRST) == []


def test_retire_order_puts_outdated_first_then_newest() -> None:
    rs = [Replica(0, 1), Replica(1, 3), Replica(2, 1, outdated=True)]
    assert retire_order(rs) == [Replica(2, 1, outdated=True), Replica(1, 3), Replica(0, 1)]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"max_surge": 0, "max_unavailable": 0}, "policy"),
        ({"max_surge": -1}, "policy.max_surge"),
        ({"order": "sideways"}, "policy.order"),
        ({"order": "stop-first"}, "policy.max_unavailable"),
        ({"failure_action": "panic"}, "policy.failure_action"),
        ({"monitor": -1.0}, "policy.monitor"),
        ({"shard_parallelism": 0}, "policy.shard_parallelism"),
    ],
)
def test_invalid_policies_name_their_field(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(SpecError) as info:
        UpdatePolicy(**kwargs)  # type: ignore[arg-type]
    assert info.value.field == field


policies = st.builds(
    lambda surge, unavailable, stop_first: UpdatePolicy(
        max_surge=surge,
        max_unavailable=unavailable,
        order="stop-first" if stop_first and unavailable else "start-first",
    ),
    surge=st.integers(1, 4),
    unavailable=st.integers(0, 3),
    stop_first=st.booleans(),
) | st.builds(
    lambda unavailable: UpdatePolicy(max_surge=0, max_unavailable=unavailable, order="stop-first"),
    unavailable=st.integers(1, 3),
)

shards = st.lists(
    st.tuples(st.integers(1, 5), st.booleans()), max_size=8, unique_by=lambda t: id(t)
).map(lambda items: [Replica(slot=i, generation=g, outdated=o) for i, (g, o) in enumerate(items)])


@given(current=shards, target=st.integers(1, 8), policy=policies)
def test_plans_respect_surge_and_availability_and_converge(
    current: list[Replica], target: int, policy: UpdatePolicy
) -> None:
    steps = plan_shard(current, target, policy)
    ceiling = max(len(current), target) + policy.max_surge
    floor = max(0, min(len(current), target) - policy.max_unavailable)
    running = {(r.slot, r.generation, r.outdated): r for r in current}
    ready = len(running)
    for step in steps:
        if isinstance(step, Start):
            # While new replicas start, they are running but not yet ready.
            assert len(running) + len(step.slots) <= ceiling
            assert ready >= floor
            for slot in step.slots:
                running[(slot, -1, False)] = Replica(slot=slot, generation=-1)
            ready = len(running)
        else:
            for replica in step.replicas:
                key = (replica.slot, replica.generation, replica.outdated)
                assert key in running, "retires only replicas that run"
                del running[key]
            ready = len(running)
            assert ready >= floor
    assert len(running) == target
    assert not any(r.outdated for r in running.values())
    slots = [r.slot for r in running.values()]
    assert len(set(slots)) == len(slots), "every final replica has its own slot"
