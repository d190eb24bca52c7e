"""Rolling-update and scale plans for one shard: pure functions of values.

A shard is a list of replicas, each in a slot and either current (runs the
target spec) or outdated. `plan_shard` returns the steps that take it to
`target` current replicas and no outdated ones, under an `UpdatePolicy`:

- `Start(slots)`: start new current replicas in these slots, concurrently;
  each must become healthy before it is added to the head.
- `Retire(replicas)`: drain each at the head, stop it, remove it.

Invariants (checked by Hypothesis in tests/unit): the number of running
replicas never exceeds `max(len(current), target) + max_surge`; the number of
ready replicas never drops below `min(len(current), target) - max_unavailable`;
the plan always ends at exactly `target` current replicas.

The same planner does rollbacks: mark the replicas already replaced as
outdated, and plan again towards the previous spec.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from orchestrator.spec import UpdatePolicy


@dataclass(frozen=True, order=True)
class Replica:
    """One worker replica of a shard."""

    slot: int
    generation: int = 0
    outdated: bool = False


@dataclass(frozen=True)
class Start:
    """Start current replicas in these slots, concurrently, then add them to the head."""

    slots: tuple[int, ...]


@dataclass(frozen=True)
class Retire:
    """Drain these replicas at the head, then stop and remove them."""

    replicas: tuple[Replica, ...]


Step = Start | Retire


class PlanError(ValueError):
    """The policy allows no progress (a programming error: policies are validated)."""


def retire_order(replicas: Sequence[Replica]) -> list[Replica]:
    """Which replicas go first: outdated ones (oldest first, in slot order), then the
    newest current ones (highest generation, then highest slot)."""

    def key(r: Replica) -> tuple[int, int, int]:
        if r.outdated:
            return (0, r.generation, r.slot)
        return (1, -r.generation, -r.slot)

    return sorted(replicas, key=key)


def plan_shard(current: Sequence[Replica], target: int, policy: UpdatePolicy) -> list[Step]:
    """Steps that take `current` to `target` current replicas.

    Raises:
        PlanError: if the policy can make no progress (surge and unavailable both 0).
    """
    if target < 0:
        raise PlanError("target must be >= 0")
    old = retire_order([r for r in current if r.outdated])
    fresh = [r for r in current if not r.outdated]
    max_total = max(len(current), target) + policy.max_surge
    min_ready = max(0, min(len(current), target) - policy.max_unavailable)
    # Slots freed by outdated replicas are reused first, in the order they retire.
    reusable = [r.slot for r in old]
    steps: list[Step] = []
    while old or len(fresh) != target:
        progressed = False
        for kind in _order(policy):
            if kind == "start":
                count = min(target - len(fresh), max_total - len(old) - len(fresh))
                if count > 0:
                    slots = _pick_slots(count, reusable, old, fresh)
                    fresh += [Replica(slot=s) for s in slots]
                    steps.append(Start(tuple(slots)))
                    progressed = True
            else:
                budget = len(old) + len(fresh) - min_ready
                drop_old = old[: max(0, min(len(old), budget))]
                excess = max(0, len(fresh) - target)
                drop_new = retire_order(fresh)[: max(0, min(excess, budget - len(drop_old)))]
                if drop_old or drop_new:
                    old = old[len(drop_old):]
                    fresh = [r for r in fresh if r not in drop_new]
                    steps.append(Retire(tuple(drop_old + drop_new)))
                    progressed = True
        if not progressed:
            raise PlanError(f"policy {policy!r} allows no progress from {current!r}")
    return steps


def _order(policy: UpdatePolicy) -> tuple[str, str]:
    return ("start", "retire") if policy.order == "start-first" else ("retire", "start")


def _pick_slots(
    count: int, reusable: list[int], old: list[Replica], fresh: list[Replica]
) -> list[int]:
    taken = {r.slot for r in fresh}
    slots: list[int] = []
    while reusable and len(slots) < count:
        slot = reusable.pop(0)
        if slot not in taken:
            slots.append(slot)
            taken.add(slot)
    in_use = taken | {r.slot for r in old}
    candidate = 0
    while len(slots) < count:
        if candidate not in in_use:
            slots.append(candidate)
            in_use.add(candidate)
        candidate += 1
    return slots
