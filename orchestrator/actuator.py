"""Runs pod plans against an engine and a health probe: where planning meets I/O.

Pods start concurrently (optionally at most N at a time), each created, started and
waited on until it serves. Any failure stops the others at once; when no thread can
still create a container, the pods of that batch are removed and the first error is
re-raised.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace

from orchestrator import labels as L
from orchestrator.engine.base import ContainerEngine, ContainerInfo
from orchestrator.errors import (
    EngineError,
    ImageNotFound,
    OrchestratorError,
    PodStartError,
    PortAllocated,
    ResourceConflict,
    ResourceNotFound,
    SpecError,
)
from orchestrator.health import GrpcHealthProbe, HealthProbe, container_address, wait_ready
from orchestrator.planning.pods import PodPlan
from orchestrator.spec import CONTAINER_PORT

Ready = Callable[[PodPlan, ContainerInfo], bool]


class _Aborted(OrchestratorError):
    """Internal: another pod of the batch failed, stop waiting for this one."""


@dataclass
class Actuator:
    """Pod-level operations on one deployment network."""

    engine: ContainerEngine
    network: str
    probe: HealthProbe = field(default_factory=GrpcHealthProbe)
    max_parallel: int = 16
    abort: threading.Event = field(default_factory=threading.Event)
    """Set when the deployment closes: a start under way (a heal's) gives up at its next
    readiness poll and removes what it created."""
    head_probe: HealthProbe | None = None  # a head serving TLS is probed over TLS

    def address(self, info: ContainerInfo) -> str:
        """host:port at which this process reaches a pod (its IP on the network)."""
        addr = container_address(info, self.network, CONTAINER_PORT)
        if addr is None:
            raise PodStartError(f"pod {info.name} has no address on network {self.network}",
                                pod=info.name)
        return addr

    def address_of(self, info: ContainerInfo) -> str | None:
        return container_address(info, self.network, CONTAINER_PORT)

    def serving(self, info: ContainerInfo, service: str = "") -> bool:
        return self.probe_of(info).serving(self.address(info), service)

    def answers(self, info: ContainerInfo) -> bool:
        """The pod's server is up (it answers health checks), serving or not."""
        return self.probe_of(info).answers(self.address(info))

    def probe_of(self, info: ContainerInfo) -> HealthProbe:
        """The head's own probe for the head (TLS), the shared one for every other pod."""
        if self.head_probe is not None and info.labels.get(L.ROLE) == "head":
            return self.head_probe
        return self.probe

    def check_images(self, images: Iterable[tuple[str, str]]) -> None:
        """Make sure every image is present (pulling if possible) before creating anything.

        Raises:
            SpecError: naming the field whose image is missing.
        """
        for field_name, image in images:
            if self.engine.image_exists(image):
                continue
            try:
                self.engine.pull_image(image)
            except ImageNotFound as exc:
                hint = ""
                if field_name == "image":
                    hint = " (build it with `orchestrator images build` or scripts/setup)"
                raise SpecError(f"image {image!r} is not available locally and cannot be "
                                f"pulled{hint}", field=field_name) from exc

    def start(
        self, plans: Sequence[PodPlan], ready: Ready, *, timeout: float,
        max_starting: int | None = None, on_created: Callable[[PodPlan], None] | None = None,
    ) -> dict[str, ContainerInfo]:
        """Create, start and wait for every pod concurrently, at most `max_starting` at a
        time (a staggered start: the next pod starts when one is ready). `on_created` is
        called (from a worker thread) as each container is created and started.

        On any failure every pod of `plans` is removed, once no thread can still create
        one, before the first error is raised.

        Raises:
            PodStartError, HealthCheckTimeout, SpecError (port or name taken), EngineError.
        """
        if not plans:
            return {}
        abort = threading.Event()
        gate = threading.Semaphore(max_starting or len(plans))

        def bring_up(plan: PodPlan) -> ContainerInfo | BaseException:
            def check(info: ContainerInfo) -> bool:
                if abort.is_set() or self.abort.is_set():
                    raise _Aborted(plan.name)
                return ready(plan, info)

            with gate:
                if abort.is_set() or self.abort.is_set():
                    return _Aborted(plan.name)
                launched = self._launch(plan)
                if isinstance(launched, BaseException):
                    abort.set()
                    return launched
                if on_created is not None:
                    on_created(plan)
                try:
                    info = wait_ready(self.engine, plan.name, check, timeout=timeout)
                    if plan.container.restart_policy != "no":  # ready: restarts from now on
                        self.engine.update_container(
                            plan.name, restart_policy=plan.container.restart_policy,
                            max_retries=plan.container.restart_max_retries)
                    return info
                except BaseException as exc:
                    abort.set()
                    return exc

        with ThreadPoolExecutor(min(self.max_parallel, len(plans)),
                                thread_name_prefix="pod-start") as pool:
            try:
                results = list(pool.map(bring_up, plans))
            except BaseException:  # Ctrl-C while starting: stop every waiter at once
                abort.set()
                raise
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            self.remove([p.name for p in plans], grace=0)
            first = next((f for f in failures if not isinstance(f, _Aborted)), failures[0])
            raise first
        return {plan.name: info for plan, info in zip(plans, results, strict=True)
                if isinstance(info, ContainerInfo)}

    def _launch(self, plan: PodPlan) -> ContainerInfo | BaseException:
        # Start with no restart policy, so a crash at start-up is reported at once with
        # its exit code instead of disappearing into a restart loop.
        spec = replace(plan.container, restart_policy="no", restart_max_retries=0)
        try:
            return self.engine.run_container(spec)
        except PortAllocated as exc:
            return SpecError(f"{exc}; choose another port or leave it unset for a free one",
                             field="port")
        except ResourceConflict as exc:
            return SpecError(
                f"a container named {plan.name!r} already exists ({exc}); is another "
                f"deployment with this name running? Remove it with `orchestrator down`",
                field="name",
            )
        except ImageNotFound as exc:
            return SpecError(f"image {exc.image!r} not found", field="image")
        except EngineError as exc:
            return PodStartError(f"pod {plan.name} could not be created: {exc}", pod=plan.name)

    def stop(self, name: str, *, grace: float) -> None:
        """SIGTERM, grace, SIGKILL, then remove. Missing containers are fine."""
        with contextlib.suppress(ResourceNotFound):
            self.engine.stop_container(name, grace=grace)
        self.engine.remove_container(name, force=True)

    def remove(self, names: Sequence[str], *, grace: float) -> None:
        """Stop and remove several containers concurrently, `max_parallel` at a time: more
        concurrent removals on one network make Docker 20.10 lose count of its endpoints
        now and then (the network then refuses removal, "has active endpoints", until
        dockerd restarts), and buy no time on an engine that serializes them anyway."""
        if not names:
            return
        with ThreadPoolExecutor(min(self.max_parallel, len(names)),
                                thread_name_prefix="pod-stop") as pool:
            list(pool.map(lambda n: self.stop(n, grace=grace), names))

    def remove_in_order(self, first: Sequence[str], last: Sequence[str], *,
                        grace: float) -> None:
        """Stop and remove `first`, then `last`, each group all at once (a teardown: the
        workers first, the head last). `last` gets its SIGTERM only once every container
        of `first` has exited; the removals of `first` overlap the stop of `last`, so the
        order costs one more stop, not a stop and a removal. Every container is tried; the
        first error is raised at the end."""
        names = [*first, *last]
        if not names:
            return
        with ThreadPoolExecutor(len(names), thread_name_prefix="pod-stop") as pool:
            halts = [pool.submit(self._halt, n, grace) for n in first]
            errors = [f.exception() for f in halts]
            rest = [pool.submit(self.engine.remove_container, n, force=True) for n in first]
            rest += [pool.submit(self.stop, n, grace=grace) for n in last]
            errors += [f.exception() for f in rest]
        first_error = next((e for e in errors if e is not None), None)
        if first_error is not None:
            raise first_error

    def _halt(self, name: str, grace: float) -> None:
        with contextlib.suppress(ResourceNotFound):
            self.engine.stop_container(name, grace=grace)
