"""Updates of a running deployment: rolling update, scale, converge, and kubectl's
`rollout history`, `undo` and `restart`. Each delegates to `control.updates.Updates`."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from orchestrator.control.updates import Target, merge_uses_with
from orchestrator.facade.handle import Handle
from orchestrator.planning.history import Revision
from orchestrator.progress import ProgressCallback
from orchestrator.spec import DeploymentSpec, UpdatePolicy


class UpdatesApi(Handle):
    """Zero-downtime changes of the worker replicas, and the rollout history."""

    def converge(self, on_progress: ProgressCallback | None = None) -> list[str]:
        """Finish what an update or scale left behind when its process was killed.

        A process killed mid-rollout (`kill -9`, a CI job's timeout, a lost SSH session)
        can leave: a new replica created or started but never added to the head; an old
        one the head was draining, or had already removed, whose container was never
        stopped or removed. Under the same lock as an update or scale, this removes the
        worker containers the head does not route to, finishes retiring the replicas the
        head lists as draining, and, when the head lists no worker at all because it
        restarted without its saved list, registers again the ones that were running
        before it restarted. Every rolling update, scale and heal does this first;
        `orchestrator up` does it before it compares the file with what runs.

        Returns the names of the pods removed or registered again, each also reported to
        `on_progress` with a message.

        Raises:
            RolloutInProgress: another update or scale is running.
            EngineUnavailable, RequestError: the engine or the head does not answer.
        """
        try:
            return self._parts().updates.converge(on_progress)
        finally:
            self.update_pod_args()

    def outdated(self) -> list[str]:
        """Worker pods that do not run the deployment's spec: an update was cut short or
        paused. A `scale` to the same count replaces exactly these."""
        return self.state.outdated()

    async def rolling_update(
        self,
        uses_with: Mapping[str, Any] | None = None,
        *,
        uses: str | None = None,
        env: Mapping[str, str] | None = None,
        policy: UpdatePolicy | None = None,
        on_progress: ProgressCallback | None = None,
        replace_uses_with: bool = False,
        **changes: Any,
    ) -> None:
        """Replace every worker replica, one batch at a time, with zero failed requests.

        `uses_with` is merged into the keys that run (a key set to None is removed), as
        `orchestrator rollout --set` does; `replace_uses_with=True` replaces the mapping.

        Raises:
            SpecError: the new fields are invalid (nothing was changed).
            RolloutInProgress: another update or scale is running.
            RolloutError: a new replica failed; what was done and whether it rolled back.
        """
        if uses is not None:
            changes["uses"] = uses
        if env is not None:
            changes["env"] = dict(env)

        def target(spec: DeploymentSpec) -> DeploymentSpec:
            wanted = dict(changes)
            if uses_with is not None:
                wanted["uses_with"] = dict(uses_with) if replace_uses_with \
                    else merge_uses_with(spec.uses_with, uses_with)
            return spec.evolve(**wanted)

        await self._rollout(target, policy, on_progress, replace_all=True)

    async def scale(
        self, replicas: int, *, policy: UpdatePolicy | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> None:
        """Change the replica count of every shard; removed replicas are drained first.

        Raises:
            SpecError: `replicas < 1`.
            RolloutInProgress, RolloutError: as for `rolling_update`.
        """
        await self._rollout(lambda spec: spec.with_replicas(replicas), policy, on_progress,
                            replace_all=False)

    async def _rollout(self, target_of: Target, policy: UpdatePolicy | None,
                       on_progress: ProgressCallback | None, *, replace_all: bool,
                       cause: str = "") -> Revision | None:
        try:
            return await self._parts().updates.run(target_of, policy, on_progress,
                                                    replace_all=replace_all, cause=cause)
        finally:
            self.update_pod_args()

    def rolling_update_sync(self, *args: Any, **kwargs: Any) -> None:
        """Blocking `rolling_update`, for callers without an event loop."""
        asyncio.run(self.rolling_update(*args, **kwargs))

    def scale_sync(self, replicas: int, **kwargs: Any) -> None:
        """Blocking `scale`, for callers without an event loop."""
        asyncio.run(self.scale(replicas, **kwargs))

    def rollout_history(self) -> list[Revision]:
        """The last 10 revisions, oldest first: each rolling update that replaced every
        replica (an update of the spec, a `restart`, an `undo`), with when it began, what
        changed and its outcome (``rolled out``, ``rolled back``, ``cut short``, or ``in
        progress``). Read from the engine, so any process sees the same history. Blocking
        (engine calls): from async code, `await asyncio.to_thread(dep.rollout_history)`.

        Raises:
            RolloutError: the deployment is not started (or is external).
            EngineUnavailable: the engine does not answer.
        """
        return self._parts().updates.history()

    async def undo(self, to_revision: int | None = None, *,
                   policy: UpdatePolicy | None = None,
                   on_progress: ProgressCallback | None = None) -> Revision | None:
        """Roll back to an earlier revision's spec through a normal rolling update (zero
        failed requests): `to_revision`, or by default the rolled-out revision before the
        one that runs. The replica count stays as it is, and so do the fields that shape
        the head. The rollback is itself a new revision, which is returned; None when the
        deployment already runs that spec (nothing is replaced).

        Raises:
            SpecError: `to_revision` is not in the history.
            RolloutError: no earlier revision; or the rollback failed (see rolling_update).
            RolloutInProgress: another update or scale is running.
        """
        try:
            return await self._parts().updates.undo(to_revision, policy, on_progress)
        finally:
            self.update_pod_args()

    async def restart(self, *, policy: UpdatePolicy | None = None,
                      on_progress: ProgressCallback | None = None) -> Revision | None:
        """Replace every worker replica with a new one of the same spec, as a rolling update
        (zero failed requests), like `kubectl rollout restart`. A new revision; returned.

        Raises:
            RolloutInProgress, RolloutError: as for `rolling_update`.
        """
        return await self._rollout(lambda spec: spec, policy, on_progress, replace_all=True,
                                   cause="restart")

    def undo_sync(self, to_revision: int | None = None, **kwargs: Any) -> Revision | None:
        """Blocking `undo`, for callers without an event loop."""
        return asyncio.run(self.undo(to_revision, **kwargs))

    def restart_sync(self, **kwargs: Any) -> Revision | None:
        """Blocking `restart`, for callers without an event loop."""
        return asyncio.run(self.restart(**kwargs))
