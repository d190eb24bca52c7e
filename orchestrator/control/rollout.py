"""Executes rollout and scale plans on a running deployment.

Per replica, start-first: start the new container -> wait until it serves (and
keeps serving for `policy.monitor`) -> add it to the head -> drain the old
replica at the head (no new requests, in-flight ones finish) -> stop it
(SIGTERM, grace, kill) -> remove it. The plan itself comes from the pure
`planning.rollout.plan_shard`; this module only carries it out and undoes it
when a new replica fails. It works on the deployment's state, the actuator and the
head's control link; it never sees the `Deployment` facade.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from orchestrator.actuator import Actuator
from orchestrator.control.link import HeadLink
from orchestrator.errors import OrchestratorError, PodStartError, RolloutError
from orchestrator.model import ContainerInfo
from orchestrator.planning.pods import PodPlan
from orchestrator.planning.rollout import Replica, Start, Step, plan_shard
from orchestrator.progress import EventKind, ProgressEvent
from orchestrator.spec import DeploymentSpec, UpdatePolicy
from orchestrator.state import DeploymentState

MONITOR_POLL = 0.2


class Rollout:
    """One rolling update or scale of one deployment."""

    def __init__(
        self,
        state: DeploymentState,
        actuator: Actuator,
        head: HeadLink,
        target: DeploymentSpec,
        policy: UpdatePolicy,
        on_progress: Callable[[ProgressEvent], None],
        *,
        replace_all: bool,
        replace_pods: frozenset[str] = frozenset(),
    ) -> None:
        self.state = state
        self.act = actuator
        self.head = head
        self.old_spec = state.spec
        self.target = target
        self.policy = policy
        self.on_progress = on_progress
        self.replace_all = replace_all
        self.replace_pods = replace_pods  # heal: these replicas count as outdated
        # replacements of the same slot need a new generation: it is part of the pod name
        self.generation = state.next_generation() if replace_all or replace_pods \
            else state.generation
        self.done: list[str] = []
        self.started: list[PodPlan] = []  # new replicas added by this operation
        self.failed = False
        self.count = 0
        self.total = 0
        self._reaper = ThreadPoolExecutor(4, thread_name_prefix="pod-retire")
        self._stopping: list[Future[None]] = []

    # -- planning -------------------------------------------------------------------
    def _replicas(self, shard: int, spec: DeploymentSpec, everything_old: bool
                  ) -> dict[Replica, PodPlan]:
        wanted = spec.worker_hash()
        out: dict[Replica, PodPlan] = {}
        for pod in self.state.workers(shard):
            assert pod.replica is not None
            outdated = everything_old or pod.spec_hash != wanted or pod.name in self.replace_pods
            out[Replica(pod.replica, pod.generation, outdated)] = pod
        return out

    def _plan(self, spec: DeploymentSpec, everything_old: bool) -> dict[int, list[Step]]:
        return {
            shard: plan_shard(list(self._replicas(shard, spec, everything_old)), spec.replicas,
                              self.policy)
            for shard in range(spec.shards)
        }

    # -- running --------------------------------------------------------------------
    async def run(self) -> None:
        """Raises: RolloutError saying what was done, what failed, and whether it rolled back."""
        try:
            await self._run()
        finally:
            await asyncio.to_thread(self._reaper.shutdown, wait=True)
        for future in self._stopping:
            future.result()  # a container that could not be removed is an error
        self._emit("done", message="rollout complete")

    async def _run(self) -> None:
        plans = self._plan(self.target, self.replace_all)
        self.total = sum(_weight(s) for steps in plans.values() for s in steps)
        self._emit("plan", message=f"{self.total} replica steps")
        try:
            await self._run_shards(plans, self.target, self.generation)
        except OrchestratorError as exc:
            await self._recover(exc)
            raise AssertionError("unreachable") from exc  # _recover always raises
        self.state.commit(self.target, self.generation)

    async def _run_shards(self, plans: dict[int, list[Step]], spec: DeploymentSpec,
                          generation: int) -> None:
        gate = asyncio.Semaphore(self.policy.shard_parallelism)

        async def one(shard: int) -> None:
            async with gate:
                await self._run_shard(shard, plans[shard], spec, generation)

        results = await asyncio.gather(*(one(s) for s in plans), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def _run_shard(self, shard: int, steps: list[Step], spec: DeploymentSpec,
                         generation: int) -> None:
        for step in steps:
            if self.failed:
                return  # another shard failed: stop so it can be undone
            replicas = self._replicas(shard, spec, False)
            try:
                if isinstance(step, Start):
                    new = [self.state.worker_plan(spec, shard, slot, generation)
                           for slot in step.slots]
                    await _whole_step(self._start_batch, shard, new)
                else:
                    old = [self._find(shard, r, replicas) for r in step.replicas]
                    await _whole_step(self._retire_batch, old)
            except BaseException:
                self.failed = True
                raise

    def _find(self, shard: int, replica: Replica, replicas: dict[Replica, PodPlan]) -> PodPlan:
        for key, pod in replicas.items():
            if key.slot == replica.slot and key.generation == replica.generation:
                return pod
        raise RolloutError(f"replica {replica.slot} of shard {shard} vanished during the update")

    def _start_batch(self, shard: int, plans: list[PodPlan]) -> None:
        act = self.act
        for plan in plans:
            self._emit("starting", plan)
        infos = act.start(plans, lambda _p, info: act.serving(info),
                          timeout=self.target.timeout_ready,
                          max_starting=self.target.max_starting)
        try:
            self._monitor(plans, infos)
            control = self.head.get()
            for plan in plans:
                assert plan.shard is not None
                control.add_worker(plan.shard, plan.address, plan.name)
                self.state.add_pod(plan, infos[plan.name])
                self.started.append(plan)
                self.done.append(f"started {plan.name}")
                self._emit("added", plan, advance=True)
        except BaseException:
            for plan in plans:
                if plan.name not in self.state.pods:
                    act.stop(plan.name, grace=0)
            raise

    def _monitor(self, plans: list[PodPlan], infos: dict[str, ContainerInfo]) -> None:
        """New replicas must keep serving for `policy.monitor` seconds."""
        act = self.act
        deadline = time.monotonic() + self.policy.monitor
        while True:
            for plan in plans:
                info = act.engine.inspect_container(plan.name)
                if not info.running or info.restart_count > 0 or not act.serving(info):
                    raise PodStartError(
                        f"pod {plan.name} stopped serving during the {self.policy.monitor:g}s "
                        f"monitor window (status {info.status}, exit code {info.exit_code})",
                        pod=plan.name, exit_code=info.exit_code,
                    )
            if time.monotonic() >= deadline:
                return
            time.sleep(min(MONITOR_POLL, max(0.0, deadline - time.monotonic())))

    def _retire_batch(self, plans: list[PodPlan]) -> None:
        control = self.head.get()
        act = self.act
        for plan in plans:
            assert plan.shard is not None
            self._emit("draining", plan)
            control.drain_worker(plan.shard, plan.address, self.policy.drain_timeout)
        for plan in plans:
            assert plan.shard is not None
            control.remove_worker(plan.shard, plan.address)
        # Drained and deregistered, the old replicas take no traffic: they stop (SIGTERM,
        # grace, kill) in the background while the next batch starts. Like Kubernetes'
        # terminating pods, they no longer count towards max_surge.
        for plan in plans:
            info = self.state.drop_pod(plan.name)
            if info is not None and (address := act.address_of(info)):
                act.probe.close_address(address)
            self.done.append(f"retired {plan.name}")
        self._stopping.append(self._reaper.submit(self._stop_batch, plans))

    def _stop_batch(self, plans: list[PodPlan]) -> None:
        self.act.remove([p.name for p in plans], grace=self.policy.stop_grace)
        for plan in plans:
            self._emit("stopped", plan, advance=True)

    # -- failure --------------------------------------------------------------------
    async def _recover(self, exc: OrchestratorError) -> None:
        failed = str(exc)
        self._emit("failed", message=failed)
        what = "rolling update" if self.replace_all else "heal" if self.replace_pods \
            else "scale"
        if self.policy.failure_action == "pause":
            raise RolloutError(
                f"{what} of {self.state.name} paused after a failure: {failed}",
                done=self.done, failed=failed, rolled_back=False,
            ) from exc
        self.failed = False
        try:
            if self.replace_all:
                await self._roll_back()
            else:
                await asyncio.to_thread(self._retire_batch, list(self.started))
        except OrchestratorError as undo:
            raise RolloutError(
                f"{what} of {self.state.name} failed ({failed}) and undoing it failed too "
                f"({undo}); the deployment may run mixed versions",
                done=self.done, failed=failed, rolled_back=False,
            ) from exc
        undone = "rolled back to the previous spec" if self.replace_all \
            else f"the {len(self.started)} new replicas were removed"
        raise RolloutError(
            f"{what} of {self.state.name} failed and was undone ({undone}): {failed}",
            done=self.done, failed=failed, rolled_back=True,
        ) from exc

    async def _roll_back(self) -> None:
        """Replace every replica that already runs the new spec with the old spec."""
        self._emit("rollback", message="rolling back replaced replicas")
        generation = self.state.next_generation()
        plans = self._plan(self.old_spec, everything_old=False)
        self.total += sum(_weight(s) for steps in plans.values() for s in steps)
        await self._run_shards(plans, self.old_spec, generation)
        self.state.set_generation(generation)

    def _emit(self, kind: EventKind, plan: PodPlan | None = None, *, advance: bool = False,
              message: str = "") -> None:
        if advance:
            self.count += 1
        event = ProgressEvent(
            kind=kind, deployment=self.state.name, done=self.count, total=self.total,
            shard=plan.shard if plan else None, replica=plan.replica if plan else None,
            pod=plan.name if plan else "", message=message,
        )
        with contextlib.suppress(Exception):  # a progress bar must never break a rollout
            self.on_progress(event)


async def _whole_step(work: Callable[..., None], *args: Any) -> None:
    """Run one blocking step in a thread. Cancelled (the first Ctrl-C), it still lets the
    step under way end before the cancellation goes on: a thread cannot be stopped, and
    the rollout lock must not be released while one still changes the deployment."""
    future = asyncio.ensure_future(asyncio.to_thread(work, *args))
    try:
        await asyncio.shield(future)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await future
        raise


def _weight(step: Step) -> int:
    return len(step.slots) if isinstance(step, Start) else len(step.replicas)


def check_images(act: Actuator, spec: DeploymentSpec) -> None:
    """The image the new workers run must be there (pulled if possible) before anything
    changes. Blocking: run it in a thread from async code.

    Raises:
        SpecError: naming `uses` or `image`.
    """
    act.check_images([("uses", spec.uses.image)] if spec.uses.kind == "docker"
                     else [("image", spec.image)])


def run_blocking(rollout: Rollout) -> None:
    """Run a rollout from synchronous code (heal): on a new event loop, in this thread, or
    in a helper thread when this thread already runs a loop (asyncio.run would refuse)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(rollout.run())
        return
    with ThreadPoolExecutor(1, thread_name_prefix="heal-rollout") as pool:
        pool.submit(asyncio.run, rollout.run()).result()
