"""Heal and converge: the thin executor of planning.heal's decisions.

A tick reads the world (one brief engine listing, one call to the head, probes of the
uses pods), asks planning.heal what to do, and does it: recreate a head or a uses pod
that stayed down, finish what an interrupted update or scale left behind, replace the
worker replicas that stayed sick (start-first, like a rolling update of just those).
While nothing changes, a tick costs one engine call and one call to the head.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial

from orchestrator import labels as L
from orchestrator.actuator import Actuator
from orchestrator.control.link import HeadLink
from orchestrator.control.lock import HEAL, UPDATE, DeploymentLock, Holder
from orchestrator.control.rollout import Rollout, run_blocking
from orchestrator.errors import (
    OrchestratorError,
    ResourceNotFound,
    RolloutInProgress,
    SpecError,
)
from orchestrator.model import ContainerInfo
from orchestrator.planning import heal as plan
from orchestrator.planning import names
from orchestrator.planning.pods import (
    PodPlan,
    executor_pod,
    head_pod,
    replaced_labels,
    with_labels,
)
from orchestrator.progress import EventKind, ProgressCallback, ProgressEvent
from orchestrator.spec import CONTAINER_PORT
from orchestrator.state import DeploymentState, plan_from_labels

Rebuild = Callable[[], DeploymentState]
"""A fresh state of the same deployment, rebuilt from the labels on the engine."""


@dataclass(frozen=True)
class Replacement:
    """One pod the healer replaced (a worker) or recreated (the head, a uses pod)."""

    deployment: str
    pod: str
    role: str
    reason: str
    """Why: 'container gone', 'container exited, exit code 137', 'failing health
    checks', ..."""
    sick_for: float
    """Seconds from when the healer first saw it sick or down to its replacement."""
    successor: str = ""
    """The pod that took its place (the same name for a recreated head or uses pod)."""

    def line(self) -> str:
        """The log line: pod, reason and how long it had been sick."""
        to = f" by {self.successor}" if self.successor and self.successor != self.pod else ""
        return (f"{self.deployment}: replaced {self.role} {self.pod}{to} ({self.reason}; "
                f"sick for {self.sick_for:.1f}s)")


def busy(name: str, holder: Holder | None = None) -> RolloutInProgress:
    """The refusal of a second taker of `name`'s lock, naming the holder when known."""
    by = f" ({holder})" if holder is not None else ""
    return RolloutInProgress(
        f"deployment {name} is already being updated or scaled{by}; a second update "
        "is refused, not queued: retry when the first one has finished",
        failed="refused: another rollout is running")


FULL_LOOK_EVERY = 10
"""Of the looks at a healthy deployment, every this-many-th lists its containers; the
others only ask the head (see `Healer._looks_well`)."""


class Healer:
    """Heal and converge one deployment. Keeps the since-when tables between ticks."""

    def __init__(self, state: DeploymentState, actuator: Actuator, head: HeadLink,
                 lock: DeploymentLock, rebuild: Rebuild,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.state = state
        self.act = actuator
        self.head = head
        self.lock = lock
        self.rebuild = rebuild
        self.clock = clock
        self.sick_since: dict[str, float] = {}  # worker pod -> first seen sick
        self.down_since: dict[str, float] = {}  # head / uses pod -> first seen down
        self.replaced: list[Replacement] = []  # what the heal under way replaced
        self.quick_looks = FULL_LOOK_EVERY  # since the last full look (the first is full)
        self.probed: dict[str, bool] = {}  # this look's probes of uses pods, by container id

    # -- converge ---------------------------------------------------------------------
    def converge(self, on_progress: ProgressCallback | None = None) -> list[str]:
        """Finish what an interrupted update or scale left behind (under the lock).

        Raises:
            RolloutInProgress: another update or scale is running.
        """
        self.lock.acquire(partial(busy, self.state.name), UPDATE)
        try:
            return self.converge_locked(on_progress)
        finally:
            self.lock.release()

    def converge_locked(self, on_progress: ProgressCallback | None) -> list[str]:
        changed, _ = self._converge_listed(on_progress, self._listing(brief=False))
        return changed

    def _converge_listed(self, on_progress: ProgressCallback | None,
                         containers: list[ContainerInfo]
                         ) -> tuple[list[str], dict[str, str] | None]:
        """Converge from `containers` (listed just now). Also returns the head's routing
        states (worker id -> state; None: the head is not running, or something changed
        and they are stale)."""
        head = next((c for c in containers if c.labels.get(L.ROLE) == "head"), None)
        if head is None or not head.running:
            return [], None
        self.head.follow(head)
        control = self.head.get()
        at_head = {w.worker_id: w for w in control.list_workers()}
        candidates = plan.forgotten_candidates(containers, at_head)
        before = [n for n in candidates if self._started_before(n, head, containers)]
        todo = plan.converge_plan(containers, at_head, before)
        for seen in todo.undrain:
            control.remove_worker(seen.shard, seen.address)
        self.act.remove(list(todo.debris), grace=self.state.spec.stop_grace)
        by_name = {c.name: c for c in containers}
        for name in todo.forgotten:
            pod = plan_from_labels(by_name[name])
            assert pod.shard is not None
            control.add_worker(pod.shard, pod.address, pod.name)
        if not todo:
            return [], {w: s.state for w, s in at_head.items()}
        self.take_over({w.worker_id for w in control.list_workers()})
        self._report_converge(on_progress, todo, by_name)
        return sorted(todo.debris + todo.forgotten), None

    def _started_before(self, name: str, head: ContainerInfo,
                        containers: list[ContainerInfo]) -> bool:
        """Did worker `name` start before the head's current run began? A brief listing
        holds no start time: inspect then."""
        worker = next(c for c in containers if c.name == name)
        if worker.started_at is None:
            worker = self._inspected(name) or worker
        if head.started_at is None:
            head = self._inspected(head.name) or head
        return worker.started_at is not None and head.started_at is not None \
            and worker.started_at < head.started_at

    def _report_converge(self, on_progress: ProgressCallback | None, todo: plan.ConvergePlan,
                         by_name: dict[str, ContainerInfo]) -> None:
        if on_progress is None:
            return
        done: tuple[tuple[EventKind, tuple[str, ...], str], ...] = (
            ("stopped", todo.debris, "removed: left behind by an interrupted update or scale"),
            ("added", todo.forgotten, "re-registered at the head, which had lost it"))
        for kind, pods, message in done:
            for name in pods:
                pod = plan_from_labels(by_name[name])
                on_progress(ProgressEvent(
                    kind=kind, deployment=self.state.name, done=0, total=0, shard=pod.shard,
                    replica=pod.replica, pod=name, message=message))

    def take_over(self, at_head: set[str]) -> None:
        """Another process changed the deployment: take its spec and pods from the labels."""
        self.state.take_over(self.rebuild(), at_head)

    # -- heal -------------------------------------------------------------------------
    def heal(self, unhealthy_for: float, on_progress: ProgressCallback | None = None,
             on_replaced: Callable[[Replacement], None] | None = None) -> list[str]:
        """One look (see Deployment.heal). Returns the replaced worker pods; [] while
        another update or scale holds the lock. Every pod replaced or recreated (workers,
        head, uses pods) goes to `on_replaced`, is counted at the head (its metrics) and
        carries the count and the reason in its labels.

        A healthy deployment costs one engine listing and one call to the head, and no
        lock: the lock is taken only when something looks sick, and everything is then
        read again under it.
        """
        self.replaced = []
        self.probed = {}
        if self._looks_well():
            self.sick_since.clear()
            self.down_since.clear()
            return []
        try:
            self.lock.acquire(busy(self.state.name), HEAL)
        except RolloutInProgress:
            return []
        try:
            due = self._heal_locked(unhealthy_for, on_progress)
        finally:
            self.lock.release()
            self.state.healing.clear()
        for name in due:
            self.sick_since.pop(name, None)
        for event in self.replaced:
            self._tell_head(event)
            if on_replaced is not None:
                on_replaced(event)
        return due

    def _looks_well(self) -> bool:
        """The lock-free first look: is everything plainly well? Most looks only ask the
        head (`_quick_look`); every FULL_LOOK_EVERY-th one lists the containers too
        (planning.heal.all_well, plus a probe of each running uses pod, which the head
        does not check)."""
        if self.quick_looks < FULL_LOOK_EVERY - 1 and self._quick_look():
            self.quick_looks += 1
            return True
        self.quick_looks = 0
        try:
            containers = self._listing()
            head = next((c for c in containers if c.name == self.state.head_name), None)
            if head is None or not head.running:
                return False
            self.head.follow(head)
            at_head = {w.worker_id: w.state for w in self.head.get().list_workers()}
        except OrchestratorError:
            return False  # the careful look under the lock says what is wrong
        uses = self._uses_names()
        if not plan.all_well(self.state.worker_names(), containers, at_head,
                             self.state.head_name, uses):
            return False
        by_name = {c.name: c for c in containers}
        return all(self._serving(by_name[name]) for name in uses)

    def _quick_look(self) -> bool:
        """Well by the head's word alone (planning.heal.well_at_head), and every uses pod
        serving: no engine call. A worker whose container stops, exits or is removed drops
        its connection, and the head routes around it at once, so what the head says is
        current; what it cannot see (a leftover container of a cut-short update) waits for
        the next full look. Anything not plainly well: False, and a full look follows."""
        uses = [self.state.infos.get(name) for name in self._uses_names()]
        if any(info is None for info in uses):
            return False
        try:
            at_head = {w.worker_id: w.state for w in self.head.get().list_workers()}
        except OrchestratorError:
            return False
        return plan.well_at_head(self.state.worker_names(), at_head) and \
            all(info is not None and self._serving(info) for info in uses)

    def _serving(self, info: ContainerInfo) -> bool:
        """A uses pod probed once per look, whichever of the quick, full and careful looks
        asks (a hung pod costs the probe's whole timeout each time). Keyed by container
        id: a pod recreated since is a new container, probed anew."""
        if info.id not in self.probed:
            self.probed[info.id] = self.act.serving(info)
        return self.probed[info.id]

    def _tell_head(self, event: Replacement) -> None:
        """Count the replacement in the head's metrics (a head that does not answer, or
        an older one without the call, only misses a count)."""
        with contextlib.suppress(OrchestratorError):
            self.head.get().note_replaced(event.pod, event.role,
                                          plan.reason_kind(event.reason))

    def _heal_locked(self, unhealthy_for: float, on_progress: ProgressCallback | None
                     ) -> list[str]:
        containers = self._listing()
        verdict = self._head_alive(unhealthy_for, on_progress, containers)
        if verdict == "down":
            return []
        if verdict == "recreate":
            containers = self._listing()
        if self._uses_alive(unhealthy_for, on_progress, containers):
            containers = self._listing()
        changed, at_head = self._converge_listed(on_progress, containers)
        if changed:
            containers, at_head = self._listing(), None
        due, at_head = self._sick(unhealthy_for, containers, at_head)
        if not due:
            return []
        now = self.clock()
        # a brief listing has no exit code: inspect the stopped ones (only these, only now)
        seen = [(self._inspected(c.name) or c) if c.name in due and not c.running else c
                for c in containers]
        why = {name: plan.why_sick(name, seen, at_head) for name in due}
        pods = {name: self.state.pods[name] for name in due}
        for name, pod in pods.items():
            assert pod.shard is not None and pod.replica is not None
            self.state.healing[(pod.shard, pod.replica)] = why[name]
        # No drain: what a hung replica holds will not finish. Stopping it drops the
        # connection, and the head retries those requests on the healthy replicas.
        spec = self.state.spec
        policy = replace(spec.policy, drain_timeout=0.0)
        run_blocking(Rollout(self.state, self.act, self.head, spec, policy,
                             on_progress or (lambda _e: None), replace_all=False,
                             replace_pods=frozenset(due)))
        for name, pod in pods.items():
            self.replaced.append(Replacement(
                self.state.name, name, "worker", why[name],
                now - self.sick_since.get(name, now) + 0.0, self._successor(pod)))
        return list(due)

    def _successor(self, pod: PodPlan) -> str:
        """The pod that now runs in `pod`'s slot."""
        same = [p for p in self.state.workers(pod.shard)
                if p.replica == pod.replica and p.name != pod.name]
        return max(same, key=lambda p: p.generation).name if same else ""

    def _head_alive(self, unhealthy_for: float, on_progress: ProgressCallback | None,
                    containers: list[ContainerInfo]) -> plan.HeadVerdict:
        """A head stopped or gone for `unhealthy_for` seconds is recreated under the same
        name, token and port; its running workers are registered with it by converge."""
        verdict, self.down_since = plan.head_verdict(
            containers, self.state.head_name, self.down_since, self.clock(), unhealthy_for)
        if verdict == "recreate":
            self.head.close()
            was = next((c for c in containers if c.name == self.state.head_name), None)
            info = self._recreate_head(was, on_progress)
            self.head.follow(info)
        return verdict

    def _recreate_head(self, was: ContainerInfo | None,
                       on_progress: ProgressCallback | None) -> ContainerInfo:
        """The head again, on the host port it had (its clients keep their address);
        on a new free port only when that one was taken meanwhile."""
        spec = self.state.spec
        known = self.state.head_info()
        port = spec.port or (known.ports[CONTAINER_PORT][1]
                             if known is not None and CONTAINER_PORT in known.ports else None)
        if port is not None and port != spec.port:
            try:
                return self._recreate(head_pod(replace(spec, port=port), self.state.ctx),
                                      self._head_answers, was, on_progress)
            except SpecError:  # the port went to someone else: any free one
                pass
        return self._recreate(head_pod(spec, self.state.ctx), self._head_answers, was,
                              on_progress)

    def _head_answers(self, _plan: PodPlan, info: ContainerInfo) -> bool:
        if not self.act.answers(info):
            return False
        try:
            self.head.get(info).list_workers()
        except OrchestratorError:
            return False
        return True

    def _uses_names(self) -> dict[str, str]:
        spec = self.state.spec
        return {names.uses_name(spec.name, role): role
                for role, uses in (("uses_before", spec.uses_before),
                                   ("uses_after", spec.uses_after)) if uses is not None}

    def _uses_alive(self, unhealthy_for: float, on_progress: ProgressCallback | None,
                    containers: list[ContainerInfo]) -> bool:
        """Recreate a uses_before / uses_after pod that stayed stopped, gone or silent
        (probed from here: the head does not check these pods). True when one was."""
        uses = self._uses_names()
        by_name = {c.name: c for c in containers}
        serving = {n: self._serving(by_name[n]) for n in plan.uses_to_probe(containers, uses)}
        due, self.down_since = plan.uses_to_recreate(
            containers, uses, serving, self.down_since, self.clock(), unhealthy_for)
        spec = self.state.spec
        for name in due:
            role = uses[name]
            ref = spec.uses_before if role == "uses_before" else spec.uses_after
            assert ref is not None
            pod = executor_pod(spec, self.state.ctx, role=role, uses=ref)
            self._recreate(pod, lambda _p, i: self.act.serving(i), by_name.get(name),
                           on_progress)
        return bool(due)

    def _recreate(self, pod: PodPlan, ready: Callable[[PodPlan, ContainerInfo], bool],
                  was: ContainerInfo | None, on_progress: ProgressCallback | None
                  ) -> ContainerInfo:
        """Replace the container of `pod` with a fresh one of the same name and spec."""
        was = None if was is None else self._inspected(pod.name)  # for its exit code
        reason = recreated(self.state.name, pod.name, was).message.removeprefix(
            "recreated: ")
        known = self.state.pods.get(pod.name)
        before = was.labels if was is not None else \
            known.container.labels if known is not None else {}
        pod = with_labels(pod, replaced_labels(before, reason))
        sick_for = self.clock() - self.down_since.get(pod.name, self.clock())
        self.act.remove([pod.name], grace=0)
        info = self.act.start([pod], ready, timeout=self.state.spec.timeout_ready)[pod.name]
        self.state.add_pod(pod, info)
        self.down_since.pop(pod.name, None)
        self.replaced.append(Replacement(self.state.name, pod.name, pod.role, reason,
                                         sick_for, pod.name))
        if on_progress is not None:
            on_progress(recreated(self.state.name, pod.name, was))
        return info

    def _sick(self, unhealthy_for: float, containers: list[ContainerInfo],
              at_head: dict[str, str] | None) -> tuple[tuple[str, ...], dict[str, str]]:
        if at_head is None:
            at_head = {w.worker_id: w.state for w in self.head.get().list_workers()}
        if set(at_head) != self.state.worker_names():
            self.take_over(set(at_head))
        report = plan.sick_workers(self.state.worker_names(), containers, at_head,
                                   self.sick_since, self.clock(), unhealthy_for)
        self.sick_since = report.since
        return report.due, at_head

    # -- engine reads -----------------------------------------------------------------
    def _listing(self, brief: bool = True) -> list[ContainerInfo]:
        return self.act.engine.list_containers(L.for_deployment(self.state.name), brief=brief)

    def _inspected(self, name: str) -> ContainerInfo | None:
        try:
            return self.act.engine.inspect_container(name)
        except ResourceNotFound:
            return None


def recreated(deployment: str, pod: str, was: ContainerInfo | None) -> ProgressEvent:
    """What heal reports when it recreated `pod`; `was`: its container before (None: gone)."""
    why = ("its container was gone" if was is None else
           "it did not answer health checks" if was.running else
           f"its container had stopped ({was.status}, exit code {was.exit_code})")
    return ProgressEvent(kind="added", deployment=deployment, done=0, total=0, pod=pod,
                         message=f"recreated: {why}")
