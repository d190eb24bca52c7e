"""The head's health poll at scale (pool.due_for_check): bounded checks per round of READY
replicas, every replica still checked in turn, unhealthy ones every round."""

from __future__ import annotations

from collections import Counter

import pytest

from orchestrator.runtime.pool import Replica, State, due_for_check


def replicas(n: int, state: State = State.READY) -> list[Replica]:
    return [Replica(0, f"w{i}:50051", f"w{i}", None, lambda *a: None, state=state)
            for i in range(n)]


def test_few_replicas_are_all_checked_every_round() -> None:
    pool = replicas(8)
    for turn in range(3):
        picked, turn = due_for_check(pool, turn, share=8)
        assert picked == pool and turn == 0


@pytest.mark.parametrize("n, share", [(64, 8), (65, 8), (9, 8), (100, 7)])
def test_many_ready_replicas_take_turns_and_every_one_is_checked(n: int, share: int) -> None:
    pool = replicas(n)
    seen: Counter[str] = Counter()
    turn = 0
    rounds = -(-n // share)  # ceil: enough rounds for everyone to come up once
    for _ in range(rounds):
        picked, turn = due_for_check(pool, turn, share)
        assert len(picked) == share
        seen.update(r.address for r in picked)
    assert set(seen) == {r.address for r in pool}
    assert max(seen.values()) <= 2


def test_unhealthy_replicas_are_checked_every_round_and_draining_never() -> None:
    pool = replicas(64)
    pool[3].state = State.UNHEALTHY
    pool[5].state = State.DRAINING
    turn = 0
    for _ in range(10):
        picked, turn = due_for_check(pool, turn, share=8)
        assert pool[3] in picked and pool[5] not in picked
        assert sum(1 for r in picked if r.state is State.READY) == 8
