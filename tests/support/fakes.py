"""Test doubles for running a whole Deployment on the in-memory engine, without Docker:
a health probe that reads the fake engine, and a fake head control service.

The fake head keeps one worker registry per head container (a recreated head starts
empty, as a real head in a new container does) and derives each worker's routing state
from the fake engine: ready while its container runs and is healthy, unhealthy
otherwise, draining once drained. It records every call and checks, on each drain and
removal, how many ready replicas the shard keeps: the zero-downtime invariant.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from orchestrator import labels as L
from orchestrator.engine.memory import MemoryEngine
from orchestrator.errors import ServiceUnavailable
from orchestrator.model import ContainerInfo, WorkerStatus

if TYPE_CHECKING:
    from orchestrator.deployment import Deployment

IMAGE = "orchestrator-runtime:test"
"""The image every in-memory deployment runs (`memory_deployment`)."""


def memory_deployment(engine: Any, heads: FakeHeads, **fields: Any) -> Deployment:
    """A Deployment (not started) of `pkg.mod:Exec` x 2 on `engine` (a MemoryEngine, or a
    proxy of one), its heads faked by `heads`, readiness read from the fake engine, and no
    reaper; `fields` override or add Deployment arguments."""
    from orchestrator.deployment import Deployment

    fields.setdefault("name", f"m{uuid.uuid4().hex[:8]}")
    fields.setdefault("uses", "pkg.mod:Exec")
    fields.setdefault("replicas", 2)
    fields.setdefault("image", IMAGE)
    fields.setdefault("probe", EngineProbe(heads.engine))
    return Deployment(engine=engine, connect=heads.connect, reaper=False, **fields)


class EngineProbe:
    """Readiness as the fake engine reports it: the pod at that address is healthy."""

    def __init__(self, engine: MemoryEngine) -> None:
        self.engine = engine

    def _pod(self, address: str) -> ContainerInfo | None:
        ip = address.rsplit(":", 1)[0]
        pods = self.engine.list_containers(L.managed())
        return next((c for c in pods if ip in c.ip_addresses.values() or c.name == ip), None)

    def serving(self, address: str, service: str = "") -> bool:
        pod = self._pod(address)
        return pod is not None and pod.running and pod.health == "healthy"

    def answers(self, address: str) -> bool:
        pod = self._pod(address)
        return pod is not None and pod.running

    def close_address(self, address: str) -> None:
        """Nothing cached."""

    def close(self) -> None:
        """Nothing cached."""


@dataclass
class Registered:
    shard: int
    address: str
    worker_id: str
    drained: bool = False


@dataclass
class HeadBook:
    """One head container's worker list, and what was done to it."""

    workers: dict[tuple[int, str], Registered] = field(default_factory=dict)
    calls: list[tuple[str, str]] = field(default_factory=list)
    # (shard, ready replicas left in it) at every drain and removal
    ready_left: list[tuple[int, int]] = field(default_factory=list)
    # (pod, role, reason) the healer told it about (its replacement counter)
    replaced: list[tuple[str, str, str]] = field(default_factory=list)


class FakeHeads:
    """Every fake head of one MemoryEngine; `connect` is Deployment's `connect=`."""

    def __init__(self, engine: MemoryEngine) -> None:
        self.engine = engine
        self.books: dict[str, HeadBook] = {}  # head container id -> its book
        self.lock = threading.Lock()

    def connect(self, address: str, token: str) -> FakeHeadControl:
        return FakeHeadControl(self, address, token)

    def head_at(self, address: str) -> ContainerInfo:
        ip = address.rsplit(":", 1)[0]
        for info in self.engine.list_containers({L.ROLE: "head"}):
            if ip in info.ip_addresses.values() and info.running:
                return info
        raise ServiceUnavailable(f"{address}: no head answers")

    def book(self, address: str) -> HeadBook:
        head = self.head_at(address)
        with self.lock:
            return self.books.setdefault(head.id, HeadBook())

    def current(self, deployment: str) -> HeadBook:
        """The book of the deployment's running head."""
        heads = [c for c in self.engine.list_containers(L.for_deployment(deployment))
                 if c.labels.get(L.ROLE) == "head" and c.running]
        assert len(heads) == 1, heads
        return self.books.setdefault(heads[0].id, HeadBook())

    def state_of(self, worker: Registered) -> str:
        if worker.drained:
            return "draining"
        name = worker.address.rsplit(":", 1)[0]
        info = next((c for c in self.engine.list_containers(L.managed()) if c.name == name),
                    None)
        ok = info is not None and info.running and info.health == "healthy"
        return "ready" if ok else "unhealthy"

    def ready_in(self, book: HeadBook, shard: int) -> int:
        return sum(1 for w in book.workers.values()
                   if w.shard == shard and self.state_of(w) == "ready")


class FakeHeadControl:
    """A control client of one fake head (HeadControlLike)."""

    def __init__(self, heads: FakeHeads, address: str, token: str) -> None:
        self.heads = heads
        self.address = address
        self.token = token
        self.closed = False

    def _book(self, call: str, detail: str = "") -> HeadBook:
        assert not self.closed, "a closed control client was used"
        book = self.heads.book(self.address)
        book.calls.append((call, detail))
        return book

    def add_worker(self, shard: int, address: str, worker_id: str = "") -> None:
        book = self._book("add", worker_id)
        book.workers[(shard, address)] = Registered(shard, address, worker_id)

    def remove_worker(self, shard: int, address: str) -> None:
        book = self._book("remove", address)
        gone = book.workers.pop((shard, address), None)
        if gone is not None and not gone.drained:
            book.ready_left.append((shard, self.heads.ready_in(book, shard)))

    def drain_worker(self, shard: int, address: str, timeout: float) -> bool:
        book = self._book("drain", address)
        book.workers[(shard, address)].drained = True
        book.ready_left.append((shard, self.heads.ready_in(book, shard)))
        return True

    def list_workers(self) -> list[WorkerStatus]:
        book = self._book("list")
        return sorted((WorkerStatus(w.shard, w.address, w.worker_id, self.heads.state_of(w))
                       for w in book.workers.values()), key=lambda w: (w.shard, w.address))

    def note_replaced(self, pod: str, role: str, reason: str) -> None:
        assert not self.closed, "a closed control client was used"
        self.heads.book(self.address).replaced.append((pod, role, reason))

    def close(self) -> None:
        self.closed = True


class RecordingEngine:
    """A MemoryEngine proxy that records the thread of every engine call."""

    def __init__(self, inner: MemoryEngine) -> None:
        self.inner = inner
        self.threads: list[tuple[str, int]] = []

    def __getattr__(self, name: str) -> Any:
        value = getattr(self.inner, name)
        if not callable(value) or name.startswith("_"):
            return value

        def recorded(*args: Any, **kwargs: Any) -> Any:
            self.threads.append((name, threading.get_ident()))
            return value(*args, **kwargs)

        return recorded


def events_of(kinds: Sequence[str], events: Sequence[Any]) -> list[Any]:
    return [e for e in events if e.kind in kinds]


def by_label(infos: Sequence[ContainerInfo], key: str) -> Mapping[str, list[str]]:
    out: dict[str, list[str]] = {}
    for info in infos:
        out.setdefault(info.labels.get(key, ""), []).append(info.name)
    return out


Factory = Callable[..., Any]
