"""The head's replica table: who is routable, and which replica gets the next request.

Picking is least-outstanding-requests with round-robin tie breaking, so sequential
traffic rotates evenly and concurrent traffic avoids busy replicas. All methods run on
the head's event loop (no locks needed).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import Enum
from typing import Any


class State(Enum):
    """Routing state of one replica."""

    READY = "ready"
    UNHEALTHY = "unhealthy"
    DRAINING = "draining"


ReplicaKey = tuple[int, str]


@dataclass(eq=False)
class Replica:
    """One worker replica and its counters. `channel` is owned (closed on removal)."""

    shard: int
    address: str
    worker_id: str
    channel: Any  # grpc.aio.Channel (kept Any so this module stays grpc-free)
    call: Callable[..., Any]  # raw-bytes unary callable bound to `channel`
    state: State = State.UNHEALTHY
    outstanding: int = 0
    served: int = 0
    failed: int = 0
    idle: asyncio.Event = field(default_factory=asyncio.Event)
    misses: int = 0  # consecutive health checks that timed out
    link: Any = None  # the head's relay connection to this replica (opened on demand)

    def __post_init__(self) -> None:
        self.idle.set()

    @property
    def key(self) -> ReplicaKey:
        """(shard, address): unique within a head."""
        return (self.shard, self.address)

    def begin(self) -> None:
        """Count a request as in flight."""
        self.outstanding += 1
        self.idle.clear()

    def end(self, ok: bool | None) -> None:
        """Count a request as finished: served, failed, or (None) given up by its client,
        which says nothing about the replica."""
        self.outstanding -= 1
        if ok:
            self.served += 1
        elif ok is not None:
            self.failed += 1
        if self.outstanding == 0:
            self.idle.set()


class Pool:
    """Replicas by shard, plus the picking policy."""

    def __init__(self, shards: int) -> None:
        self.shards = shards
        self._by_shard: list[list[Replica]] = [[] for _ in range(shards)]
        self._all: list[Replica] = []
        self._rr = [0] * shards
        self._rr_any = 0

    def __iter__(self) -> Iterator[Replica]:
        return iter(list(self._all))

    def get(self, shard: int, address: str) -> Replica | None:
        """The replica at (shard, address), if registered."""
        if not 0 <= shard < self.shards:
            return None
        return next((r for r in self._by_shard[shard] if r.address == address), None)

    def add(self, replica: Replica) -> None:
        """Register a replica (the caller checked that its key is new)."""
        self._by_shard[replica.shard].append(replica)
        self._all = [r for rs in self._by_shard for r in rs]

    def remove(self, replica: Replica) -> None:
        """Unregister a replica; it gets no new requests."""
        self._by_shard[replica.shard].remove(replica)
        self._all = [r for rs in self._by_shard for r in rs]

    def serving(self) -> bool:
        """True while every shard has at least one READY replica."""
        return all(any(r.state is State.READY for r in rs) for rs in self._by_shard)

    def pick(self, shard: int, exclude: set[ReplicaKey]) -> Replica | None:
        """Least-outstanding READY replica of `shard` not in `exclude`."""
        start = self._rr[shard]
        self._rr[shard] = start + 1
        return _least_loaded(self._by_shard[shard], start, exclude)

    def pick_any(self, exclude: set[ReplicaKey]) -> Replica | None:
        """Least-outstanding READY replica of any shard not in `exclude`."""
        start = self._rr_any
        self._rr_any = start + 1
        return _least_loaded(self._all, start, exclude)


def _least_loaded(replicas: list[Replica], start: int, exclude: set[ReplicaKey]) -> Replica | None:
    best: Replica | None = None
    n = len(replicas)
    for i in range(n):
        r = replicas[(start + i) % n]
        if r.state is not State.READY or (exclude and r.key in exclude):
            continue
        if best is None or r.outstanding < best.outstanding:
            best = r
            if best.outstanding == 0:
                break  # nobody beats an idle replica; keeps rotation fair
    return best


def due_for_check(replicas: list[Replica], turn: int, share: int) -> tuple[list[Replica], int]:
    """The replicas a head's health poll checks this round, and the next `turn`.

    Every replica that is not READY is checked every round (an unhealthy one comes back
    as soon as it answers), and `share` of the READY ones, in turn: with N READY replicas
    each is checked every round while N <= share, and every N / share rounds beyond. A
    head in front of many idle replicas then spends a bounded CPU on health checks; a
    READY replica that stops serving is still taken out by the first request it fails.
    DRAINING replicas are not checked (the head already routes around them)."""
    live = [r for r in replicas if r.state is not State.DRAINING]
    ready = [r for r in live if r.state is State.READY]
    if len(ready) <= share:
        return live, 0
    start = turn % len(ready)
    picked = {id(r) for r in (ready + ready)[start:start + share]}
    return [r for r in live if r.state is not State.READY or id(r) in picked], start + share
