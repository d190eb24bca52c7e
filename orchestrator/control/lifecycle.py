"""Start, register and tear down one deployment's pods: where a start's plan meets the
engine. Takes the deployment's state, the actuator, the head's control link and the lock;
never the `Deployment` facade.

start: validate -> lock -> images -> network -> create and start every pod concurrently ->
wait until each serves -> register the workers at the head -> ready. Any failure removes
everything already created before the error is raised (the facade calls `teardown`).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from orchestrator import labels as L
from orchestrator.actuator import Actuator
from orchestrator.control.link import HeadLink
from orchestrator.control.lock import START, STOP, DeploymentLock
from orchestrator.engine.base import ContainerEngine, VolumeEngine, gpu_devices
from orchestrator.errors import (
    OrchestratorError,
    ResourceConflict,
    ResourceNotFound,
    SpecError,
)
from orchestrator.health import wait_ready
from orchestrator.model import ContainerInfo
from orchestrator.placement import own_container
from orchestrator.planning.gpus import check_available
from orchestrator.planning.pods import PodPlan
from orchestrator.reaper import ReaperHandle
from orchestrator.spec import DeploymentSpec
from orchestrator.state import DeploymentState
from orchestrator.tls import exposure_warning

log = logging.getLogger("orchestrator.deployment")


class Lifecycle:
    """The start and the end of one deployment's pods."""

    def __init__(self, state: DeploymentState, actuator: Actuator, head: HeadLink,
                 lock: DeploymentLock, *, want_reaper: bool) -> None:
        self.state = state
        self.act = actuator
        self.head = head
        self.lock = lock
        self.want_reaper = want_reaper
        self.reaper: ReaperHandle | None = None
        self.joined = False  # this process's own container joined the deployment network

    # -- start ----------------------------------------------------------------------
    def launch(self) -> None:
        """Everything before the pods: checks, lock, images, reaper, network. Holds the
        lock until `release` (a start holds it until its workers are registered, so a heal
        in another process never takes them for debris).

        Raises:
            SpecError: name in use, image missing. EngineUnavailable: no engine.
        """
        engine, name = self.act.engine, self.state.name
        engine.ping()
        existing = engine.list_containers(L.for_deployment(name))
        if existing:
            raise SpecError(
                f"a deployment named {name!r} is already running "
                f"({len(existing)} containers); pick another name or remove it with "
                f"`orchestrator down {name}`", field="name")
        self.state.set_gpus(engine_gpus(engine, self.state.spec))
        self.lock.acquire(SpecError(f"another process is starting or updating a deployment "
                                    f"named {name!r}", field="name"), START)
        self.act.check_images(self._images())
        for stale in engine.list_networks(L.for_deployment(name)):
            engine.remove_network(stale.id)
        self._start_reaper()
        engine.create_network(self.state.network,
                              labels={**L.for_deployment(name), L.OWNER: self.state.owner})
        self.join_network()
        self.state.plan_start()
        spec = self.state.spec
        if (warning := exposure_warning(name, spec.host, spec.tls)) is not None:
            log.warning("%s", warning)

    def _images(self) -> list[tuple[str, str]]:
        spec = self.state.spec
        images = [("image", spec.image)]
        for field_name, uses in (("uses", spec.uses), ("uses_before", spec.uses_before),
                                 ("uses_after", spec.uses_after)):
            if uses is not None and uses.kind == "docker":
                images.append((field_name, uses.image))
        return images

    def bring_up(self, on_created: Callable[[PodPlan], None] | None = None) -> None:
        """Start every planned pod, register the workers, wait for the head to serve.
        `on_created`: called as each pod's container is created (noblock_on_start).

        Raises:
            PodStartError, HealthCheckTimeout, SpecError (port or name taken), EngineError.
        """
        spec = self.state.spec
        infos = self.act.start(self.state.planned(), self.pod_ready,
                               timeout=spec.timeout_ready, max_starting=spec.max_starting,
                               on_created=on_created)
        self.state.started_pods(infos)
        self.activate()
        wait_ready(self.act.engine, self.state.head_name, self.act.serving,
                   timeout=spec.timeout_ready)

    def pod_ready(self, plan: PodPlan, info: ContainerInfo) -> bool:
        return self.head_up(info) if plan.role == "head" else self.act.serving(info)

    def head_up(self, info: ContainerInfo) -> bool:
        """The head is up when it answers health checks (it reports NOT_SERVING until its
        workers are registered) and its control service accepts our token."""
        if not self.act.answers(info):
            return False
        try:
            self.head.get(info).list_workers()
        except OrchestratorError:
            return False
        return True

    def activate(self) -> None:
        """Register every worker with the head (idempotent), up to 8 calls at once: each
        waits for the head's first health check of that worker."""
        control = self.head.get()
        known = {(w.shard, w.address) for w in control.list_workers()}
        todo = [p for p in self.state.workers()
                if p.shard is not None and (p.shard, p.address) not in known]
        if not todo:
            return
        with ThreadPoolExecutor(min(8, len(todo)), thread_name_prefix="register") as pool:
            list(pool.map(lambda p: control.add_worker(p.shard, p.address, p.name), todo))

    # -- end ------------------------------------------------------------------------
    def teardown(self) -> None:
        """Stop and remove what this owner created, then the network. Only this owner's: a
        second Deployment refused the same name must never tear down the one that runs.

        Every pod at once (`Actuator.max_parallel` at a time), under the deployment's lock
        (a heal in any process is refused meanwhile, and afterwards finds nothing to heal).
        When another process holds the lock (its heal or update is under way), workers
        first and the head last: a heal must never see a head gone while workers run, or
        it would bring it back."""
        self.head.close()
        mine = {**L.for_deployment(self.state.name), L.OWNER: self.state.owner}
        live = self.act.engine.list_containers(mine, brief=True)  # names and labels only
        heads = [c.name for c in live if c.labels.get(L.ROLE) == "head"]
        grace = self.state.spec.stop_grace
        took = self.lock.try_acquire(STOP)  # False when held, by this process or another
        try:
            if self.lock.held:
                self.act.remove([c.name for c in live], grace=grace)
            else:
                self.act.remove_in_order([c.name for c in live if c.name not in heads], heads,
                                         grace=grace)
        finally:
            if took:
                self.lock.release()
        for net in self.act.engine.list_networks(mine):
            remove_network(self.act.engine, net.id)
        if isinstance(self.act.engine, VolumeEngine):  # the rollout history's records
            for volume in self.act.engine.list_volumes(mine):
                self.act.engine.remove_volume(volume.name)
        self.stop_reaper("done")
        self.state.clear()

    # -- crash safety ---------------------------------------------------------------
    def _start_reaper(self) -> None:
        """Spawn the reaper (see orchestrator/reaper.py) before the first container."""
        if self.want_reaper and self.reaper is None:
            self.reaper = ReaperHandle.spawn(self.state.name, self.state.owner)

    def stop_reaper(self, goodbye: str) -> None:
        reaper, self.reaper = self.reaper, None
        if reaper is not None:
            reaper.goodbye(goodbye)

    # -- an orchestrating process inside a container --------------------------------
    def join_network(self) -> None:
        """From inside a container of the engine (a CI job with the Docker socket, a dev
        container), neither the head's port published on the host's 127.0.0.1 nor pod
        addresses on another bridge network are reachable: attach our own container to
        the deployment's network. Removing the network detaches it again."""
        me = own_container(self.act.engine)
        if me is None:
            return
        if self.state.network not in me.ip_addresses:
            self.act.engine.connect_network(self.state.network, me.id)
        self.joined = True

    def join_if_possible(self) -> None:
        with contextlib.suppress(ResourceNotFound):  # a half-removed one has no network
            self.join_network()

    def head_inside(self) -> str | None:
        """The head's address on the deployment network, when this process joined it."""
        if not self.joined:
            return None
        head = self.state.head_info()
        return None if head is None else head.ip_addresses.get(self.state.network)


def remove_network(engine: ContainerEngine, network: str, patience: float = 5.0) -> None:
    """Remove a network whose containers were just removed. Docker 20.10 may still count
    their endpoints for a moment after many removals at once ("has active endpoints"):
    retry for `patience` seconds before giving up.

    Raises:
        ResourceConflict: containers are still attached after `patience` seconds.
    """
    deadline = time.monotonic() + patience
    while True:
        try:
            engine.remove_network(network)
            return
        except ResourceConflict:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.05)


def engine_gpus(engine: ContainerEngine, spec: DeploymentSpec) -> tuple[str, ...]:
    """The engine's GPU devices when `spec` asks for GPUs (else none asked: empty).

    Raises:
        SpecError: naming `gpus`: the engine has no GPU, too few, or not the ids given.
    """
    if spec.gpus is None:
        return ()
    available = gpu_devices(engine)
    check_available(spec.gpus, available, str(getattr(engine, "where", "this engine")))
    return tuple(available)
