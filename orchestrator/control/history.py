"""The rollout history of one deployment, kept on the engine.

Each revision is a record: an empty Docker volume, never mounted, whose labels hold the
deployment's name, the owner, the revision's number and the revision itself as compact
JSON (`planning.history.Revision`: the whole resolved spec, its worker hash, when, what
changed, the outcome). It is the way kubectl keeps old ReplicaSets: objects on the engine
beside the pods, so any process on any machine that reaches the engine reads the same
history, and nothing in it depends on a container. A head that is killed, removed and
recreated by heal, or a CLI killed in the middle of an update, loses none of it.

Why volumes, not labels of the head or the head's memory: a container's labels cannot
change after it is created, and a failed update (rolled back before any replica was
replaced) creates no container that could carry its record; the head's memory is lost
with its container. A volume costs no process, no address and no port, is listed by
label in one call, and `down` removes it with the rest (`engine.cleanup`).

A record is never changed in place (labels cannot be): a new writing is a new volume,
then the older ones of that revision are removed. A reader takes the newest writing of
each revision, so a process killed between the two steps leaves nothing wrong. The last
`KEEP` (10) revisions are kept.

Writes happen under the deployment's lock (an update's); reads need no lock.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import replace

from orchestrator import labels as L
from orchestrator.engine.base import ContainerEngine, VolumeEngine, VolumeInfo
from orchestrator.errors import EngineError, RolloutError
from orchestrator.planning.history import (
    KEEP,
    Outcome,
    Revision,
    beyond_limit,
    describe,
    newest,
    next_number,
    settle,
)
from orchestrator.spec import DeploymentSpec
from orchestrator.state import DeploymentState


def process_alive(pid: int) -> bool:
    """Whether a process with this pid runs on this host."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists; it is someone else's
    return True


class RevisionStore:
    """Reads and writes the revision records of the deployment `name`."""

    def __init__(self, engine: ContainerEngine, name: str, owner: str, *,
                 clock: Callable[[], float] = time.time,
                 alive: Callable[[int], bool] = process_alive) -> None:
        self.engine = engine
        self.name = name
        self.owner = owner
        self._clock = clock
        self._alive = alive
        self.host = socket.gethostname()
        self.pid = os.getpid()

    @property
    def available(self) -> bool:
        """False on an engine without volumes: deployments run, no history is kept."""
        return isinstance(self.engine, VolumeEngine)

    def _volumes(self) -> VolumeEngine:
        engine = self.engine
        if not isinstance(engine, VolumeEngine):
            raise EngineError(f"this engine ({type(engine).__name__}) keeps no volumes, so "
                              "no rollout history")
        return engine

    # -- reading ----------------------------------------------------------------------
    def _records(self) -> list[tuple[VolumeInfo, Revision]]:
        wanted = {L.MANAGED: "true", L.DEPLOYMENT: self.name}
        out: list[tuple[VolumeInfo, Revision]] = []
        for volume in self._volumes().list_volumes(wanted):
            rev = Revision.from_label(volume.labels.get(L.RECORD, ""))
            if rev is not None:
                out.append((volume, rev))
        return out

    def stored(self) -> list[Revision]:
        """The recorded revisions, oldest first, as written."""
        return newest(rev for _v, rev in self._records())

    def view(self, state: DeploymentState) -> list[Revision]:
        """The history as it stands (`state`: rebuilt from the labels just now): the stored
        revisions with the outcome of a dead process's update settled from what runs, or,
        before the first update, revision 1 as it runs."""
        stored = self.stored() if self.available else []
        if not stored:
            return [self.first(state)]
        workers = _workers(state)
        return [settle(rev, alive=self._is_alive(rev), workers=workers) for rev in stored]

    def _is_alive(self, rev: Revision) -> bool | None:
        if rev.host != self.host:
            return None  # another machine: its process cannot be asked
        return rev.pid == self.pid or self._alive(rev.pid)

    def first(self, state: DeploymentState) -> Revision:
        """Revision 1 of a deployment with no record yet: the spec it runs, since its
        oldest worker started."""
        workers = [i for i in state.infos.values() if i.labels.get(L.ROLE) == "worker"]
        started = [i.started_at.timestamp() for i in workers if i.started_at is not None]
        generations = [p.generation for p in state.workers()]
        return Revision(number=1, at=min(started, default=0.0), change="created",
                        spec_hash=state.spec.worker_hash(),
                        generation=min(generations, default=0),
                        fields=state.spec.to_fields(), outcome="rolled out",
                        host=self.host, pid=0, written=0)

    # -- writing (under the deployment's lock) ------------------------------------------
    def begin(self, state: DeploymentState, target: DeploymentSpec, change: str,
              generation: int) -> Revision:
        """Record a new revision, ``in progress``, before its first replica is replaced
        (revision 1 first, when nothing was recorded yet). A revision another process left
        ``in progress`` is settled first.

        Raises:
            EngineUnavailable, EngineError: the engine refused the record.
        """
        stored = self.settle_stale(state)
        if not stored:
            stored = [self.write(self.first(state))]
        rev = Revision(number=next_number(stored), at=self._clock(), change=change,
                       spec_hash=target.worker_hash(), generation=generation,
                       fields=target.to_fields(), host=self.host, pid=self.pid)
        written = self.write(rev)
        self._prune()
        return written

    def finish(self, rev: Revision, outcome: Outcome, note: str = "") -> Revision:
        """Record how the revision ended. Never raises: the update's own result matters
        more; a record left ``in progress`` is settled from what runs later."""
        done = rev.finished(outcome, note, written=0)
        with contextlib.suppress(EngineError):
            return self.write(done)
        return done

    def settle_stale(self, state: DeploymentState) -> list[Revision]:
        """Record the outcome of the revisions whose process died mid-update; returns the
        stored revisions."""
        stored = self.stored()
        workers = _workers(state)
        out: list[Revision] = []
        for rev in stored:
            settled = settle(rev, alive=self._is_alive(rev), workers=workers)
            out.append(self.write(settled) if settled is not rev else rev)
        return out

    def write(self, rev: Revision) -> Revision:
        """Store a writing of `rev` (a new volume), then drop its older writings."""
        engine = self._volumes()
        stamped = replace(rev, written=time.time_ns())
        volume = f"{self.name}.rev{rev.number}.{uuid.uuid4().hex[:8]}"
        engine.create_volume(volume, labels={
            L.MANAGED: "true", L.DEPLOYMENT: self.name, L.OWNER: self.owner,
            L.REVISION: str(rev.number), L.RECORD: stamped.to_label()})
        for old, kept in self._records():
            if kept.number == rev.number and old.name != volume:
                with contextlib.suppress(EngineError):
                    engine.remove_volume(old.name)
        return stamped

    def _prune(self) -> None:
        dropped = {r.number for r in beyond_limit([r for _v, r in self._records()], KEEP)}
        for volume, rev in self._records():
            if rev.number in dropped:
                with contextlib.suppress(EngineError):
                    self._volumes().remove_volume(volume.name)


def _workers(state: DeploymentState) -> list[tuple[str, int]]:
    return [(p.spec_hash, p.generation) for p in state.workers()]


# -- around one rolling update (Deployment._rollout) ----------------------------------------


def begin_revision(store: RevisionStore, state: DeploymentState, target: DeploymentSpec,
                   cause: str = "") -> Revision | None:
    """Record the update from `state.spec` to `target` as a new revision, ``in progress``;
    None on an engine that keeps no history. `cause` ('restart', 'undo to revision 2')
    comes before what changed. Call it under the lock, just before the `Rollout` (its
    replicas get `state.next_generation()`).

    Raises:
        EngineUnavailable, EngineError: the engine refused the record (nothing changed).
    """
    if not store.available:
        return None
    change = describe(state.spec.to_fields(), target.to_fields())
    if cause:
        change = cause if change == "no change" else f"{cause}: {change}"
    elif change == "no change":
        change = "same spec, every replica replaced"
    return store.begin(state, target, change, state.next_generation())


def settle_revisions(store: RevisionStore, state: DeploymentState) -> None:
    """Record the outcome of updates whose process died (under the lock of an update,
    scale or converge); a no-op on an engine that keeps no history. Never raises."""
    if store.available:
        with contextlib.suppress(EngineError):
            store.settle_stale(state)


def end_revision(store: RevisionStore, rev: Revision, error: BaseException | None
                 ) -> Revision:
    """Record how the update ended: `error` None, or what the rollout raised."""
    if error is None:
        return store.finish(rev, "rolled out")
    if isinstance(error, RolloutError):
        failed = error.failed or str(error)
        if error.rolled_back:
            return store.finish(rev, "rolled back", failed)
        return store.finish(rev, "cut short", str(error))
    if isinstance(error, Exception):
        return store.finish(rev, "cut short", f"{type(error).__name__}: {error}")
    return store.finish(rev, "cut short", "interrupted")
