"""The public Deployment API: a head plus shards x replicas of one executor, on Docker.

    with Deployment(uses="executors/echo.py:Echo", replicas=3, shards=2, polling="ALL") as dep:
        docs = dep.post("/echo", docs=[{"text": "hi"}])

Leaving the block (normally, on an exception, or on Ctrl-C) removes every
container and the network. Labels on the engine are the source of truth, so a
later process can find the deployment again (`Deployment.attach(name)`).

This module is the facade: it keeps the seed's names and behaviour and delegates. The
deployment's live state has one owner (`state.DeploymentState`); the doers in
`control/` (lifecycle, rollout, healer, lock, head link) change it; `pod_args` builds
the Namespace views.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import enum
import functools
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, Self

from orchestrator import labels as L
from orchestrator import pod_args as views
from orchestrator.actuator import Actuator
from orchestrator.control import history
from orchestrator.control.background import HEAL_POLL, BackgroundHealer, HealReport
from orchestrator.control.healer import Healer, Replacement, busy
from orchestrator.control.lifecycle import Lifecycle, engine_gpus
from orchestrator.control.link import Connect, HeadControlLike, HeadLink, grpc_connect
from orchestrator.control.lock import DeploymentLock
from orchestrator.control.rollout import Rollout, check_images
from orchestrator.engine.base import ContainerEngine
from orchestrator.errors import (
    DeploymentNotFound,
    OrchestratorError,
    PodStartError,
    ResourceNotFound,
    RolloutError,
    ServiceUnavailable,
    SpecError,
)
from orchestrator.health import GrpcHealthProbe, HealthProbe
from orchestrator.planning.history import Revision, undo_changes, undo_target
from orchestrator.planning.hosts import Placement
from orchestrator.planning.pods import PodPlan
from orchestrator.ports import PortReservation
from orchestrator.ports import reserve as reserve_port
from orchestrator.progress import ProgressCallback
from orchestrator.spec import CONTAINER_PORT, DeploymentSpec, UpdatePolicy, validate_name
from orchestrator.state import DeploymentState
from orchestrator.tls import TLS_FIELDS

if TYPE_CHECKING:
    from orchestrator.client import Client
    from orchestrator.reload import Reloader, ReloadReport


class DeploymentRoleType(enum.Enum):
    """What a deployment is for, as in Jina."""

    DEPLOYMENT = "deployment"
    GATEWAY = "gateway"


class BaseDeployment(ExitStack):
    """An immutable set of pods with one stable gRPC address: the head."""

    role: DeploymentRoleType = DeploymentRoleType.DEPLOYMENT

    def __enter__(self) -> Self:
        super().__enter__()
        try:
            self.start()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Literal[False]:
        try:
            self._teardown()
        finally:
            super().__exit__(exc_type, exc, tb)
        return False

    def close(self) -> None:
        """Tear every pod down and unwind anything else entered on this stack."""
        self.__exit__(None, None, None)

    # The members every deployment offers (implemented below).
    def start(self) -> Self:
        raise NotImplementedError

    def _teardown(self) -> None:
        raise NotImplementedError

    def join(self) -> None:
        raise NotImplementedError

    async def rolling_update(self, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError

    async def scale(self, replicas: int, *, policy: UpdatePolicy | None = None,
                    on_progress: ProgressCallback | None = None) -> None:
        raise NotImplementedError

    @property
    def name(self) -> str:
        raise NotImplementedError

    @property
    def head_host(self) -> str:
        raise NotImplementedError

    @property
    def head_port(self) -> int:
        raise NotImplementedError

    @property
    def head_args(self) -> argparse.Namespace:
        raise NotImplementedError

    @property
    def deployments(self) -> list[dict[str, Any]]:
        raise NotImplementedError


def _raw_fields(args: argparse.Namespace | Mapping[str, Any] | None,
                kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """`args` speaks Jina's option names and units (a Namespace from Jina's parser, or a
    dict with its names: see orchestrator/jina.py); keyword arguments are our own fields
    and win over `args`."""
    from orchestrator.jina import fields_from_jina

    if args is None:
        raw: dict[str, Any] = {}
    elif isinstance(args, argparse.Namespace | Mapping):
        raw = fields_from_jina(args)
    else:
        raise SpecError(f"must be an argparse.Namespace or a dict, not {type(args).__name__}",
                        field="args")
    raw.update(kwargs)
    return raw


def merge_uses_with(current: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """`uses_with` changes on every path (`rolling_update(uses_with=...)`, `rollout --set`,
    a YAML `up`): merged into the keys that run, as `kubectl set` and Compose overrides do;
    a key given as None is removed. To replace the whole mapping, pass `uses_with` in
    `rolling_update(**changes)` with `replace_uses_with=True`."""
    merged = {**current, **changes}
    return {k: v for k, v in merged.items() if v is not None}


@dataclass
class _Parts:
    """The collaborators of one engine connection: made on first use, dropped with it."""

    act: Actuator
    head: HeadLink
    life: Lifecycle
    healer: Healer


class Deployment(BaseDeployment):
    """A head plus `shards x replicas` workers (and optional uses_before / uses_after pods),
    every pod a Docker container on the deployment's own network.

    `args`: an argparse Namespace or a dict with Jina's option names and units (a
    Namespace from Jina's parser, `timeout_ready` in milliseconds, ...): see
    orchestrator/jina.py; an option with no meaning here is refused by name. Keyword
    arguments are our own fields, in our units, and win over `args`. `needs`: names of the
    deployments this one follows (the `needs` attribute).

    `engine`: a ContainerEngine (default: Docker from the environment); `probe`: the
    readiness probe (default: gRPC health); `connect`: how to reach the head's control
    service, (address, token) -> client (default: gRPC; tests pass a fake); `target`:
    "docker" (one host) or "swarm" (a Docker Swarm whose manager DOCKER_HOST names; see
    orchestrator.engine.docker_engine_swarm), when no `engine` is given.

    Raises (construction): SpecError naming the field at fault.
    """

    def __init__(
        self,
        args: argparse.Namespace | Mapping[str, Any] | None = None,
        needs: str | set[str] | frozenset[str] | list[str] | None = None,
        *,
        engine: ContainerEngine | None = None,
        probe: HealthProbe | None = None,
        base_dir: Path | None = None,
        reaper: bool | None = None,
        connect: Connect | None = None,
        supervised: bool = False,
        target: str | None = None,
        **kwargs: Any,
    ) -> None:
        raw = _raw_fields(args, kwargs)
        self._target: str | None = target
        if needs is not None:
            raw["needs"] = sorted(needs) if not isinstance(needs, str) else needs
        spec = DeploymentSpec.from_fields(base_dir=base_dir, **raw)
        # head_port is known from construction, as in Jina: a free port is reserved now
        # and published at start (see orchestrator/ports.py)
        reservation = None if spec.port is not None or spec.external \
            else reserve_port(spec.host)
        if reservation is not None:
            spec = dataclasses.replace(spec, port=reservation.port)
        state = DeploymentState(spec=spec)
        if supervised:  # `up --detach`: its labels ask the supervisor to heal it
            state.ctx = replace(state.ctx, supervised=True)
        self._setup(state, engine, probe, reaper, connect)
        self._reservation: PortReservation | None = reservation

    def _setup(self, state: DeploymentState, engine: ContainerEngine | None,
               probe: HealthProbe | None, reaper: bool | None, connect: Connect | None
               ) -> None:
        super().__init__()
        self.state = state
        self._engine = engine
        self._owns_engine = engine is None  # an engine we opened is ours to close
        self._target = getattr(self, "_target", None)
        if engine is None and self._target is not None:
            from orchestrator.engine.targets import chosen_target

            if chosen_target(self._target) == "swarm" and reaper is None:
                reaper = False  # the reaper watches one host's engine (see docs)
        # Crash safety: by default when the engine comes from the environment, a reaper
        # process removes the deployment if this process dies without closing it.
        self._want_reaper = engine is None if reaper is None else reaper
        self._probe = probe or GrpcHealthProbe()
        # a head serving TLS: this process's own calls to it speak TLS (see orchestrator.tls)
        own_tls = state.spec.own_tls()
        self._head_probe = None if own_tls is None or probe is not None \
            else GrpcHealthProbe(tls=own_tls)
        self._connect = connect or (grpc_connect if own_tls is None
                                    else functools.partial(grpc_connect, tls=own_tls))
        self._lock = DeploymentLock(state.name)
        self._parts_: _Parts | None = None
        self._client: Client | None = None
        self._detached = False
        self._healer: BackgroundHealer | None = None
        self._reservation = None  # __init__ sets it after (attach never reserves)
        self._starting: _Starting | None = None
        self._reloader: Reloader | None = None
        self.pod_args: dict[str, Any] = {}
        self.update_pod_args()

    # -- collaborators --------------------------------------------------------------
    @property
    def engine(self) -> ContainerEngine:
        if self._engine is None:
            from orchestrator.engine.targets import engine_for

            self._engine = engine_for(self._target)
        return self._engine

    def _parts(self) -> _Parts:
        if self._parts_ is None:
            act = Actuator(self.engine, self.state.network, self._probe,
                           head_probe=self._head_probe)
            head = HeadLink(self.state, act, self._connect)
            life = Lifecycle(self.state, act, head, self._lock, want_reaper=self._want_reaper)
            healer = Healer(self.state, act, head, self._lock, self._rebuild)
            self._parts_ = _Parts(act, head, life, healer)
            if self.state.started and self.spec.gpus is not None and not self.state.ctx.gpus:
                # an attached handle: replacements get their slot's devices (heal)
                with contextlib.suppress(OrchestratorError):
                    self.state.set_gpus(engine_gpus(self.engine, self.spec))
        return self._parts_

    def _rebuild(self) -> DeploymentState:
        containers = self.engine.list_containers(L.for_deployment(self.name))
        return DeploymentState.from_labels(self.name, containers)

    @property
    def spec(self) -> DeploymentSpec:
        """The spec that runs (after an update: the new one)."""
        return self.state.spec

    @property
    def network(self) -> str:
        return self.state.network

    # -- properties -----------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.state.name

    @property
    def is_sandbox(self) -> bool:
        return False

    @property
    def external(self) -> bool:
        return self.spec.external

    @property
    def tls_enabled(self) -> bool:
        """Jina's name: whether the head serves TLS (the spec's tls_cert and tls_key)."""
        return self.spec.tls_cert is not None

    @property
    def protocol(self) -> str | list[str]:
        """What the head's port serves, as Jina reports it: one name, or a list of them
        ('grpc', 'http'; 'grpcs', 'https' over TLS). gRPC is served in every case."""
        suffix = "s" if self.tls_enabled else ""
        names = [f"{name}{suffix}" for name in self.spec.protocols]
        return names[0] if len(names) == 1 else names

    @property
    def host(self) -> str:
        return self.spec.host

    @property
    def port(self) -> int | None:
        """The head port published on the host: given, or reserved at construction (see
        orchestrator/ports.py), or, for a handle rebuilt from labels, the published one."""
        if self.spec.external:
            return self.spec.port
        head = self.state.head_info()
        if head and CONTAINER_PORT in head.ports:
            return head.ports[CONTAINER_PORT][1]
        return self.spec.port

    def _head_inside(self) -> str | None:
        return None if self._parts_ is None else self._parts_.life.head_inside()

    @property
    def head_host(self) -> str:
        """Where this process reaches the head: the published host address, or, from inside
        a container of the engine, the head's address on the deployment network."""
        inside = self._head_inside()
        if inside is not None:
            return inside
        head = self.state.head_info()
        if head is not None and head.node and CONTAINER_PORT in head.ports:
            return head.ports[CONTAINER_PORT][0]  # Swarm: the node the head publishes on
        host = self.spec.host
        return "127.0.0.1" if host in ("0.0.0.0", "") else host

    @property
    def head_port(self) -> int:
        if self._head_inside() is not None:
            return CONTAINER_PORT
        port = self.port
        if port is None:
            raise OrchestratorError(f"deployment {self.name} is not started: no head port yet")
        return port

    @property
    def address(self) -> str:
        return f"{self.head_host}:{self.head_port}"

    @property
    def deployments(self) -> list[dict[str, Any]]:
        return [{"name": self.name, "head_host": self.head_host, "head_port": self.port,
                 "needs": sorted(self.spec.needs)}]

    @property
    def needs(self) -> set[str]:
        """Names of the deployments this one follows (a copy: assign to change it)."""
        return set(self.spec.needs)

    @needs.setter
    def needs(self, value: str | set[str] | frozenset[str] | list[str] | None) -> None:
        items = [] if value is None else [value] if isinstance(value, str) else list(value)
        names = frozenset(validate_name(v, field_name="needs") for v in items)
        self.state.commit(dataclasses.replace(self.spec, needs=names), self.state.generation)

    @property
    def num_pods(self) -> int:
        """How many of this deployment's containers are running right now."""
        if self.spec.external:
            return 0
        pods = self.engine.list_containers(L.for_deployment(self.name))
        return sum(1 for p in pods if p.running)

    @property
    def is_ready(self) -> bool:
        """True only when every pod of every shard is running and serving."""
        if self.spec.external:
            return self._probe.serving(f"{self.head_host}:{self.head_port}")
        if not self.state.started:
            return False
        parts = self._parts()
        try:
            for plan in self.state.planned():
                info = self.engine.inspect_container(plan.name)
                ok = parts.life.head_up(info) if plan.role == "head" \
                    else parts.act.serving(info)
                if not (info.running and ok):
                    return False
            head = self.engine.inspect_container(self.state.head_name)
        except (ResourceNotFound, PodStartError):
            return False
        return parts.act.serving(head)

    # -- pod arguments (Namespaces are views, built from the spec) ------------------
    def update_pod_args(self) -> None:
        """Rebuild every pod's argument Namespace from the spec and the running pods."""
        self.pod_args = views.build(self.state)

    def update_worker_pod_args(self) -> None:
        """Rebuild only the workers' Namespaces, grouped by shard, in replica order."""
        self.pod_args["pods"] = views.workers(self.state)

    @property
    def head_args(self) -> argparse.Namespace:
        ns = self.pod_args["head"]
        assert isinstance(ns, argparse.Namespace)
        return ns

    @property
    def uses_before_args(self) -> argparse.Namespace | None:
        return self.pod_args["uses_before"]  # type: ignore[no-any-return]

    @property
    def uses_after_args(self) -> argparse.Namespace | None:
        return self.pod_args["uses_after"]  # type: ignore[no-any-return]

    @property
    def first_pod_args(self) -> argparse.Namespace:
        """Arguments of the first replica of the first shard."""
        first: argparse.Namespace = self.pod_args["pods"][0][0]
        return first

    @property
    def all_args(self) -> list[argparse.Namespace]:
        """Every pod's Namespace: head, uses_before, uses_after, then workers."""
        return views.all_args(self.pod_args)

    @staticmethod
    def get_worker_host(
        pod_args: argparse.Namespace, pod: Placement, head_pod: Placement,
        orchestrator: Placement | None = None,
    ) -> str:
        """The host the head must dial to reach the worker described by `pod_args`/`pod`.

        `pod_args.host`/`pod_args.port` override the placement's host and port when set.
        """
        return views.get_worker_address(pod_args, pod, head_pod, orchestrator)[0]

    @staticmethod
    def get_worker_address(
        pod_args: argparse.Namespace, pod: Placement, head_pod: Placement,
        orchestrator: Placement | None = None,
    ) -> tuple[str, int]:
        return views.get_worker_address(pod_args, pod, head_pod, orchestrator)

    # -- lifecycle --------------------------------------------------------------------
    def start(self) -> Self:
        """Create every pod concurrently and block until all serve (see wait_start_success).

        With `noblock_on_start`, return once every pod's container is created (with
        `max_starting`, once the first batch is): `wait_start_success()` then waits, and
        `is_ready` says whether it is done.

        Raises:
            SpecError: bad input found at start (missing image, port taken, name in use,
                GPUs asked for on an engine without them).
            PodStartError: a pod exited; names it with its exit code and last log lines.
            HealthCheckTimeout: a pod never reported SERVING within `timeout_ready`.
            EngineUnavailable: no Docker engine answers.
        """
        if self.state.started:
            return self
        if self.spec.external:
            self.state.started = True
            return self
        if self.spec.noblock_on_start:
            return self._start_noblock()
        try:
            self._start_blocking()
        except SpecError as exc:
            if exc.field != "port" or self._reservation is None:
                raise
            # The reserved port was taken by another publisher after all (Docker's own
            # allocator, or an engine on another host): let Docker pick a free one.
            self._forget_reserved_port()
            self._start_blocking()
        self._after_ready()
        return self

    def _start_blocking(self) -> None:
        try:
            self._parts().life.launch()
            self._release_port()
            self.wait_start_success()
        except BaseException:
            self._teardown()
            raise
        finally:
            self._lock.release()

    def _release_port(self) -> None:
        if self._reservation is not None:
            self._reservation.release()

    def _forget_reserved_port(self) -> None:
        self._reservation = None
        self.state.commit(dataclasses.replace(self.spec, port=None), self.state.generation)
        self.update_pod_args()

    def _start_noblock(self) -> Self:
        try:
            self._parts().life.launch()
        except BaseException:
            self._teardown()
            self._lock.release()
            raise
        self._release_port()
        starting = _Starting(expected=min(len(self.state.planned()),
                                          self.spec.max_starting or 1 << 30))
        life = self._parts().life
        starting.thread = threading.Thread(target=starting.run, args=(life.bring_up,),
                                           name=f"start-{self.name}", daemon=True)
        self._starting = starting
        starting.thread.start()
        starting.created.wait()
        return self

    def wait_start_success(self) -> None:
        """Block until every pod serves and every worker is registered at the head.

        On failure everything is removed before the error is raised (the same errors as
        `start`). After a `noblock_on_start` start this is where the start is waited for.
        """
        if self.spec.external:
            return
        if self._starting is not None:
            self._finish_noblock(self._starting)
            return
        if self.state.infos:
            return
        try:
            self._parts().life.bring_up()
        except BaseException:
            self._teardown()
            raise
        self.update_pod_args()

    def _finish_noblock(self, starting: _Starting) -> None:
        try:
            starting.join()
            self._starting = None
            if starting.error is not None:
                raise starting.error
            self.update_pod_args()
        except BaseException:
            starting.join()  # Ctrl-C while waiting: let the start end before removing
            self._starting = None
            self._teardown()
            raise
        finally:
            self._lock.release()
        self._after_ready()

    def _after_ready(self) -> None:
        if self.spec.heal_after:
            self.start_healing()
        if self.spec.reload:
            self.watch()

    def watch(self, on_report: Callable[[ReloadReport], None] | None = None,
              **options: Any) -> Reloader:
        """Live reload (what `reload=True` and `orchestrator up --watch` start): when the
        executor's file, its folder, or a path of `watch` changes, every worker is replaced
        by the usual zero-downtime rolling update, after a debounce. Code that does not
        compile is kept out (the error is reported with file and line, nothing changes);
        code that fails to import or start is rolled back by the update, and the old
        replicas keep serving. Reports go to `on_report` (default: printed on stderr).
        Idempotent: a second call returns the running watcher (with this `on_report`).
        `options`: `poll` and `debounce`, in seconds.

        Raises:
            SpecError: naming `reload`: nothing to watch (an executor installed in the
                image or a docker:// image, and no `watch` paths).
        """
        from orchestrator.reload import Reloader, print_report

        if self._reloader is None or not self._reloader.alive:
            self._reloader = Reloader(self, on_report or print_report, **options)
            self._reloader.start()
        elif on_report is not None:
            self._reloader.on_report = on_report
        return self._reloader

    def stop_watching(self) -> None:
        """Stop live reload (also done on close)."""
        reloader, self._reloader = self._reloader, None
        if reloader is not None:
            reloader.stop()

    def control(self, head_info: Any = None) -> HeadControlLike:
        """The head's control client (one channel, kept open)."""
        return self._parts().head.get(head_info)

    def activate(self) -> None:
        """Register every worker with the head (idempotent)."""
        self._parts().life.activate()

    def _teardown(self) -> None:
        """Stop and remove every pod and the network. Idempotent, label-based."""
        self.stop_healing()
        self.stop_watching()
        starting, self._starting = self._starting, None
        if starting is not None:  # closed before wait_start_success: let the start end
            starting.join()
            self._lock.release()
        self._release_port()
        if self._client is not None:
            self._client.close()
            self._client = None
        parts, self._parts_ = self._parts_, None
        if parts is not None:
            parts.head.close()
        self._probe.close()
        if self._head_probe is not None:
            self._head_probe.close()
        if self.spec.external or self._engine is None:
            self.state.started = False
            return
        parts = parts or self._parts()
        self._parts_ = None
        if self._detached:
            parts.life.stop_reaper("detach")
        else:
            parts.life.teardown()
        if self._owns_engine:
            self._engine.close()
            self._engine = None

    def detach(self) -> None:
        """Leave the deployment running when this object is closed (`up --detach`)."""
        self._detached = True
        if self._parts_ is not None:
            self._parts_.life.stop_reaper("detach")

    @classmethod
    def attach(cls, name: str, *, engine: ContainerEngine | None = None,
               probe: HealthProbe | None = None, connect: Connect | None = None,
               target: str | None = None) -> Deployment:
        """A handle on a running deployment, rebuilt from the labels on the engine.

        Works from any process, also after the one that started it was killed. The
        handle is detached: closing it leaves the deployment running.

        Raises:
            DeploymentNotFound: listing the deployments that do run.
            EngineUnavailable: no engine answers.
        """
        owns = engine is None
        if engine is None:
            from orchestrator.engine.targets import engine_for

            engine = engine_for(target)
        try:
            try:
                state = DeploymentState.from_labels(
                    name, engine.list_containers(L.for_deployment(name)))
            except DeploymentNotFound:
                raise DeploymentNotFound(name, running_deployments(engine)) from None
            dep = cls.__new__(cls)
            dep._setup(state, engine, probe, False, connect)
        except BaseException:
            if owns:
                engine.close()
            raise
        dep._owns_engine = owns
        dep._detached = True
        dep._parts().life.join_if_possible()
        dep.update_pod_args()
        return dep

    def join(self) -> None:
        """Block until every pod of the deployment has exited."""
        for info in self.engine.list_containers(L.for_deployment(self.name)):
            with contextlib.suppress(ResourceNotFound):
                self.engine.wait_container(info.id)

    # -- requests ---------------------------------------------------------------------
    def client(self) -> Client:
        if self._client is None:
            from orchestrator.client import Client

            self._client = Client(self.head_host, self.head_port,
                                  tls=self.spec.own_tls() or False)
        return self._client

    def post(self, endpoint: str, docs: list[dict[str, Any]] | None = None,
             parameters: dict[str, Any] | None = None, **kwargs: Any) -> list[dict[str, Any]]:
        """Send a request through the head and return the resulting docs."""
        try:
            result: list[dict[str, Any]] = self.client().post(
                endpoint, docs=docs, parameters=parameters, **kwargs
            )
        except ServiceUnavailable:
            self._follow_head()
            raise
        return result

    def _follow_head(self) -> None:
        """Look at the head container again (after a request it did not answer). If it
        restarted in its container (a crash under the restart policy), Docker published
        it on a new free host port unless `port` was given: the next request goes there.
        A failed request is not retried here: it may have reached a worker first."""
        if self.spec.external or not self.state.started:
            return
        with contextlib.suppress(OrchestratorError):
            before = self.port
            self._parts().head.follow(self.engine.inspect_container(self.state.head_name))
            if self.port != before and self._client is not None:
                self._client.close()
                self._client = None

    # -- updates ----------------------------------------------------------------------
    def _begin(self) -> None:
        """Take the lock for an update, scale or converge. Blocking (a file lock)."""
        if not self.state.started or self.spec.external:
            raise RolloutError(f"deployment {self.name} is not running (or is external)")
        with self._healer_paused():
            self._lock.acquire(busy(self.name))

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
        self._begin()
        try:
            changed = self._parts().healer.converge_locked(on_progress)
            history.settle_revisions(self._history(), self.state)
            return changed
        finally:
            self._lock.release()
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

    async def _rollout(self, target_of: Callable[[DeploymentSpec], DeploymentSpec],
                       policy: UpdatePolicy | None, on_progress: ProgressCallback | None, *,
                       replace_all: bool, cause: str = "") -> Revision | None:
        """Validate once, then under the lock: converge, check the image, roll out. Every
        blocking step (file lock, engine, head) runs in a thread, never on the loop. An
        update that replaces every replica is a revision of the rollout history (`cause`
        prefixes what changed); returns it."""
        target = target_of(self.spec)  # invalid fields: a SpecError before anything happens
        same_tls(self.spec, target)
        parts = self._parts()

        def prepare() -> tuple[DeploymentSpec, Revision | None]:
            self._begin()
            try:
                before = self.spec
                parts.healer.converge_locked(on_progress)
                # another process's update was taken over: the change applies to its spec
                wanted = target if self.spec is before else target_of(self.spec)
                check_images(parts.act, wanted)
                history.settle_revisions(self._history(), self.state)
                revision = history.begin_revision(self._history(), self.state, wanted, cause) \
                    if replace_all else None
                return wanted, revision
                self.state.set_gpus(engine_gpus(self.engine, wanted))
                return wanted
            except BaseException:
                self._lock.release()
                raise

        wanted, revision = await asyncio.to_thread(prepare)
        try:
            await Rollout(self.state, parts.act, parts.head, wanted, policy or wanted.policy,
                          on_progress or (lambda _e: None), replace_all=replace_all).run()
        except BaseException as exc:
            if revision is not None:
                await asyncio.to_thread(history.end_revision, self._history(), revision, exc)
            raise
        else:
            if revision is not None:
                revision = await asyncio.to_thread(history.end_revision, self._history(),
                                                   revision, None)
        finally:
            await asyncio.to_thread(self._lock.release)
            self.update_pod_args()
        return revision

    def rolling_update_sync(self, *args: Any, **kwargs: Any) -> None:
        """Blocking `rolling_update`, for callers without an event loop."""
        asyncio.run(self.rolling_update(*args, **kwargs))

    # -- rollout history (kubectl's `rollout history`, `undo`, `restart`) ---------------
    def _history(self) -> history.RevisionStore:
        return history.RevisionStore(self.engine, self.name, self.state.owner)

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
        return self._history().view(self._live_state())

    def _live_state(self) -> DeploymentState:
        """The deployment as its labels show it now (this handle's, while no head runs)."""
        if not self.state.started or self.spec.external:
            raise RolloutError(f"deployment {self.name} is not running (or is external)")
        try:
            return self._rebuild()
        except DeploymentNotFound:
            return self.state

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
        live = await asyncio.to_thread(self._live_state)
        revisions = await asyncio.to_thread(self._history().view, live)
        target = undo_target(revisions, live.spec.worker_hash(), to_revision)
        changes = undo_changes(target.fields)
        if all(p.spec_hash == target.spec_hash for p in live.workers()) and \
                self.spec.evolve(**changes) == self.spec:
            return None
        return await self._rollout(lambda spec: spec.evolve(**changes), policy, on_progress,
                                   replace_all=True, cause=f"undo to revision {target.number}")

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

    def scale_sync(self, replicas: int, **kwargs: Any) -> None:
        """Blocking `scale`, for callers without an event loop."""
        asyncio.run(self.scale(replicas, **kwargs))

    def heal(self, unhealthy_for: float = 30.0,
             on_progress: ProgressCallback | None = None,
             on_replaced: Callable[[Replacement], None] | None = None) -> list[str]:
        """Replace the worker replicas that have been sick for `unhealthy_for` seconds: the
        head routes around them (health check failing, or not answering) or their container
        is not running (it exited for good, or was removed behind our back). Replacement is
        start-first, like a rolling update of just those replicas.

        One call looks once and remembers since when each replica has been sick;
        `orchestrator up` in the foreground calls it every second. It holds the same lock as
        an update or scale, and first takes over what another process changed (its spec and
        pods, from the labels), so it never replaces replicas another process retired.
        Returns the names of the replaced pods (none while another update or scale runs).
        Like an update or scale, it first finishes what an interrupted one left behind
        (see `converge`). A head whose container has stayed stopped or gone for
        `unhealthy_for` seconds is recreated first (its workers are not replaced), then a
        uses_before / uses_after pod in the same state. Blocking: from async code, use
        `await asyncio.to_thread(dep.heal, ...)` (it also works on a loop's thread, but
        blocks that loop while it runs).

        Every pod replaced or recreated goes to `on_replaced` (pod, reason, how long it was
        sick), is counted in the head's metrics and in its labels (`ps`: REPLACED).

        Raises:
            RolloutError: a replacement failed (it was undone; the sick replica remains).
            EngineUnavailable, RequestError: the engine or the head does not answer.
        """
        if self._lock.held or not self.state.started or self.spec.external:
            return []
        try:
            with self._healer_paused():  # one heal at a time in this process
                return self._parts().healer.heal(unhealthy_for, on_progress, on_replaced)
        finally:
            self.update_pod_args()

    # -- healing in the background ------------------------------------------------------
    def start_healing(self, heal_after: float | None = None, *, poll: float = HEAL_POLL,
                      on_report: Callable[[HealReport], None] | None = None
                      ) -> BackgroundHealer | None:
        """Heal this deployment from a daemon thread, every `poll` seconds, with `heal`'s
        logic and lock, until it is closed (or `stop_healing`). A started deployment does
        this by itself when its `heal_after` is set (the default: 30 s); call it on an
        attached handle to heal a deployment another process started.

        `heal_after`: seconds (None: the spec's; 0: stop healing). `on_report` receives
        what the healer did (`HealReport`), from its thread; every replacement is also
        logged on the `orchestrator.healing` logger. Calling it again while it heals
        changes `heal_after` and adds the listener. Returns the healer (None: off).
        """
        after = self.spec.heal_after if heal_after is None else heal_after
        if not after or after <= 0 or not self.state.started or self.spec.external:
            self.stop_healing()
            return None
        healer = self._healer
        if healer is None or not healer.running:
            healer = BackgroundHealer(self, after, poll=poll, abort=self._parts().act.abort)
            self._healer = healer.start()
        healer.heal_after = after
        if on_report is not None:
            healer.listen(on_report)
        return healer

    def stop_healing(self) -> None:
        """Stop the background healer (if any); a replacement under way is aborted and its
        new pod removed. Waits only for the step under way (an engine or head call)."""
        healer, self._healer = self._healer, None
        if healer is not None and healer.stop() and self._parts_ is not None:
            # its step has ended: later starts of this handle (a foreground heal loop, an
            # update, a healer started again) must not find the abort still raised
            self._parts_.act.abort.clear()

    @property
    def healer(self) -> BackgroundHealer | None:
        """The background healer while it runs (its `replaced` lists what it did)."""
        return self._healer

    @contextlib.contextmanager
    def _healer_paused(self) -> Iterator[None]:
        healer = self._healer
        if healer is None:
            yield
            return
        with healer.paused():
            yield


def same_tls(current: DeploymentSpec, target: DeploymentSpec) -> None:
    """Raises SpecError when an update would change a TLS field: they shape the head, which
    an update keeps (tear the deployment down and start it again)."""
    for name in TLS_FIELDS:
        if getattr(current, name) != getattr(target, name):
            raise SpecError("the head's TLS cannot change on a running deployment (an update "
                            "replaces workers, not the head); stop it and start it again",
                            field=name)


class _Starting:
    """A `noblock_on_start` start running in a thread: `created` is set once `expected`
    containers exist (or the start ended), `error` is what it raised."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.count = 0
        self.created = threading.Event()
        self.error: BaseException | None = None
        self.thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def one_created(self, _plan: PodPlan) -> None:
        with self._lock:
            self.count += 1
            if self.count >= self.expected:
                self.created.set()

    def run(self, bring_up: Callable[[Callable[[PodPlan], None]], None]) -> None:
        try:
            bring_up(self.one_created)
        except BaseException as exc:  # handed to wait_start_success
            self.error = exc
        finally:
            self.created.set()

    def join(self) -> None:
        if self.thread is not None:
            self.thread.join()


def running_deployments(engine: ContainerEngine) -> list[str]:
    """Names of the deployments that have containers on the engine."""
    return sorted({c.labels[L.DEPLOYMENT] for c in engine.list_containers(L.managed())
                   if L.DEPLOYMENT in c.labels})

