"""Updates of one running deployment: rolling update, scale, converge, undo and restart.

Every one runs the same way, under the deployment's lock: finish what an interrupted
update left behind (converge), take over what another process changed, check the image
and the GPUs, record a revision of the rollout history (an update that replaces every
replica), then run the `Rollout`. The spec is validated once, before anything happens.
Every blocking step (the file lock, the engine, the head) runs in a thread, never on the
caller's event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from functools import partial
from typing import Any

from orchestrator.actuator import Actuator
from orchestrator.control import history
from orchestrator.control.healer import Healer, busy
from orchestrator.control.lifecycle import engine_gpus
from orchestrator.control.link import HeadLink
from orchestrator.control.lock import HEAL, HEAL_WAIT, UPDATE, DeploymentLock
from orchestrator.control.rollout import Rollout, check_images
from orchestrator.errors import DeploymentNotFound, RolloutError, SpecError
from orchestrator.planning.history import Revision, undo_changes, undo_target
from orchestrator.progress import ProgressCallback
from orchestrator.spec import DeploymentSpec, UpdatePolicy
from orchestrator.state import DeploymentState
from orchestrator.tls import TLS_FIELDS

Target = Callable[[DeploymentSpec], DeploymentSpec]
"""The spec an update wants, from the spec that runs (applied again after a take-over)."""


def merge_uses_with(current: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """`uses_with` changes on every path (`rolling_update(uses_with=...)`, `rollout --set`,
    a YAML `up`): merged into the keys that run, as `kubectl set` and Compose overrides do;
    a key given as None is removed. To replace the whole mapping, pass `uses_with` in
    `rolling_update(**changes)` with `replace_uses_with=True`."""
    merged = {**current, **changes}
    return {k: v for k, v in merged.items() if v is not None}


def same_tls(current: DeploymentSpec, target: DeploymentSpec) -> None:
    """Raises SpecError when an update would change a TLS field: they shape the head, which
    an update keeps (tear the deployment down and start it again)."""
    for name in TLS_FIELDS:
        if getattr(current, name) != getattr(target, name):
            raise SpecError("the head's TLS cannot change on a running deployment (an update "
                            "replaces workers, not the head); stop it and start it again",
                            field=name)


class Updates:
    """The updates of one deployment, given its state and collaborators.

    `paused`: a context in which this process's background healer does not heal (taking
    the lock must not wait behind it); `rebuild`: the state as the engine's labels show it.
    """

    def __init__(self, state: DeploymentState, act: Actuator, head: HeadLink, healer: Healer,
                 lock: DeploymentLock, paused: Callable[[], AbstractContextManager[None]],
                 rebuild: Callable[[], DeploymentState]) -> None:
        self.state = state
        self.act = act
        self.head = head
        self.healer = healer
        self.lock = lock
        self.paused = paused
        self.rebuild = rebuild

    def begin(self) -> None:
        """Take the lock for an update, scale or converge. Blocking (a file lock)."""
        if not self.state.started or self.state.spec.external:
            raise RolloutError(f"deployment {self.state.name} is not running (or is external)")
        with self.paused():
            self.lock.acquire(partial(busy, self.state.name), UPDATE, behind=(HEAL,),
                              wait=HEAL_WAIT)

    def store(self) -> history.RevisionStore:
        return history.RevisionStore(self.act.engine, self.state.name, self.state.owner)

    def converge(self, on_progress: ProgressCallback | None) -> list[str]:
        """See `Deployment.converge`."""
        self.begin()
        try:
            changed = self.healer.converge_locked(on_progress)
            history.settle_revisions(self.store(), self.state)
            return changed
        finally:
            self.lock.release()

    async def run(self, target_of: Target, policy: UpdatePolicy | None,
                  on_progress: ProgressCallback | None, *, replace_all: bool,
                  cause: str = "") -> Revision | None:
        """Validate once, then under the lock: converge, check the image and GPUs, roll
        out. An update that replaces every replica is a revision of the rollout history
        (`cause` prefixes what changed); returns it."""
        target = target_of(self.state.spec)  # invalid fields: SpecError, nothing happened
        same_tls(self.state.spec, target)
        wanted, revision = await asyncio.to_thread(self._prepare, target_of, target,
                                                   on_progress, replace_all, cause)
        try:
            await Rollout(self.state, self.act, self.head, wanted, policy or wanted.policy,
                          on_progress or (lambda _e: None), replace_all=replace_all).run()
        except BaseException as exc:
            if revision is not None:
                await asyncio.to_thread(history.end_revision, self.store(), revision, exc)
            raise
        else:
            if revision is not None:
                revision = await asyncio.to_thread(history.end_revision, self.store(),
                                                   revision, None)
        finally:
            await asyncio.to_thread(self.lock.release)
        return revision

    def _prepare(self, target_of: Target, target: DeploymentSpec,
                 on_progress: ProgressCallback | None, replace_all: bool, cause: str
                 ) -> tuple[DeploymentSpec, Revision | None]:
        self.begin()
        try:
            before = self.state.spec
            self.healer.converge_locked(on_progress)
            # another process's update was taken over: the change applies to its spec
            wanted = target if self.state.spec is before else target_of(self.state.spec)
            check_images(self.act, wanted)
            self.state.set_gpus(engine_gpus(self.act.engine, wanted))
            store = self.store()
            history.settle_revisions(store, self.state)
            revision = history.begin_revision(store, self.state, wanted, cause) \
                if replace_all else None
            return wanted, revision
        except BaseException:
            self.lock.release()
            raise

    def live_state(self) -> DeploymentState:
        """The deployment as its labels show it now (this handle's, while no head runs)."""
        if not self.state.started or self.state.spec.external:
            raise RolloutError(f"deployment {self.state.name} is not running (or is external)")
        try:
            return self.rebuild()
        except DeploymentNotFound:
            return self.state

    def history(self) -> list[Revision]:
        """See `Deployment.rollout_history`."""
        return self.store().view(self.live_state())

    async def undo(self, to_revision: int | None, policy: UpdatePolicy | None,
                   on_progress: ProgressCallback | None) -> Revision | None:
        """See `Deployment.undo`."""
        live = await asyncio.to_thread(self.live_state)
        revisions = await asyncio.to_thread(self.store().view, live)
        target = undo_target(revisions, live.spec.worker_hash(), to_revision)
        changes = undo_changes(target.fields)
        spec = self.state.spec
        if all(p.spec_hash == target.spec_hash for p in live.workers()) and \
                spec.evolve(**changes) == spec:
            return None
        return await self.run(lambda s: s.evolve(**changes), policy, on_progress,
                              replace_all=True, cause=f"undo to revision {target.number}")
