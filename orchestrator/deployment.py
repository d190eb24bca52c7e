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
import contextlib
import dataclasses
import enum
import functools
from collections.abc import Mapping
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, Self

from orchestrator import labels as L
from orchestrator.actuator import Actuator
from orchestrator.control.healer import Healer
from orchestrator.control.lifecycle import Lifecycle, engine_gpus
from orchestrator.control.link import Connect, HeadControlLike, HeadLink, grpc_connect
from orchestrator.control.lock import DeploymentLock
from orchestrator.control.starting import Starting
from orchestrator.control.updates import Updates, merge_uses_with, same_tls
from orchestrator.engine.base import ContainerEngine
from orchestrator.errors import (
    DeploymentNotFound,
    OrchestratorError,
    PodStartError,
    ResourceNotFound,
    SpecError,
)
from orchestrator.facade.background import BackgroundApi
from orchestrator.facade.handle import Parts
from orchestrator.facade.requests import RequestsApi
from orchestrator.facade.updates import UpdatesApi
from orchestrator.facade.views import PodArgsViews
from orchestrator.health import GrpcHealthProbe, HealthProbe
from orchestrator.jina import spec_fields
from orchestrator.ports import PortReservation
from orchestrator.ports import reserve as reserve_port
from orchestrator.progress import ProgressCallback
from orchestrator.spec import DeploymentSpec, UpdatePolicy, validate_name
from orchestrator.state import DeploymentState

if TYPE_CHECKING:
    from orchestrator.client import Client
    from orchestrator.control.background import BackgroundHealer
    from orchestrator.reload import Reloader

__all__ = ["BaseDeployment", "Deployment", "DeploymentRoleType", "merge_uses_with",
           "running_deployments", "same_tls"]


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


class Deployment(PodArgsViews, RequestsApi, UpdatesApi, BackgroundApi, BaseDeployment):
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
        raw = spec_fields(args, kwargs)
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
        self._parts_: Parts | None = None
        self._client: Client | None = None
        self._detached = False
        self._healer: BackgroundHealer | None = None
        self._reservation = None  # __init__ sets it after (attach never reserves)
        self._starting: Starting | None = None
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

    def _parts(self) -> Parts:
        if self._parts_ is None:
            act = Actuator(self.engine, self.state.network, self._probe,
                           head_probe=self._head_probe)
            head = HeadLink(self.state, act, self._connect)
            life = Lifecycle(self.state, act, head, self._lock, want_reaper=self._want_reaper)
            healer = Healer(self.state, act, head, self._lock, self._rebuild)
            updates = Updates(self.state, act, head, healer, self._lock, self._healer_paused,
                              self._rebuild)
            self._parts_ = Parts(act, head, life, healer, updates)
            if self.state.started and self.spec.gpus is not None and not self.state.ctx.gpus:
                # an attached handle: replacements get their slot's devices (heal)
                with contextlib.suppress(OrchestratorError):
                    self.state.set_gpus(engine_gpus(self.engine, self.spec))
        return self._parts_

    def _rebuild(self) -> DeploymentState:
        containers = self.engine.list_containers(L.for_deployment(self.name))
        return DeploymentState.from_labels(self.name, containers)

    @property
    def network(self) -> str:
        return self.state.network

    # -- properties -----------------------------------------------------------------
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
        expected = min(len(self.state.planned()), self.spec.max_starting or 1 << 30)
        self._starting = Starting(expected)  # set first: a Ctrl-C in launch joins it
        self._starting.launch(self._parts().life.bring_up, self.name)
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

    def _finish_noblock(self, starting: Starting) -> None:
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

    def control(self, head_info: Any = None) -> HeadControlLike:
        """The head's control client (one channel, kept open). The head container is
        looked at first: a head that the engine restarted after a crash may have a new
        address on the network, and the channel is then re-aimed."""
        if head_info is None:
            self._follow_head()
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


def running_deployments(engine: ContainerEngine) -> list[str]:
    """Names of the deployments that have containers on the engine."""
    return sorted({c.labels[L.DEPLOYMENT] for c in engine.list_containers(L.managed())
                   if L.DEPLOYMENT in c.labels})

