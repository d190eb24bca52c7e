"""The public Deployment API: a head plus shards x replicas of one executor, on Docker.

    with Deployment(uses="executors/echo.py:Echo", replicas=3, shards=2, polling="ALL") as dep:
        docs = dep.post("/echo", docs=[{"text": "hi"}])

Leaving the block (normally, on an exception, or on Ctrl-C) removes every
container and the network. Labels on the engine are the source of truth, so a
later process can find the deployment again (`Deployment.attach(name)`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import enum
import fcntl
import json
import os
import secrets
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any, Literal, Self

from orchestrator.actuator import Actuator
from orchestrator.engine.base import ContainerEngine, ContainerInfo, ContainerSpec
from orchestrator.errors import (
    DeploymentNotFound,
    OrchestratorError,
    PodStartError,
    ResourceNotFound,
    RolloutError,
    RolloutInProgress,
    ServiceUnavailable,
    SpecError,
)
from orchestrator.health import GrpcHealthProbe, HealthProbe, wait_ready
from orchestrator.placement import own_container
from orchestrator.planning import labels as L
from orchestrator.planning import names
from orchestrator.planning.hosts import Placement, resolve_worker_address
from orchestrator.planning.pods import (
    TOKEN_ENV,
    PodContext,
    PodPlan,
    executor_pod,
    head_pod,
    initial_pods,
)
from orchestrator.progress import EventKind, ProgressCallback, ProgressEvent
from orchestrator.reaper import ReaperHandle
from orchestrator.spec import CONTAINER_PORT, DeploymentSpec, UpdatePolicy

if TYPE_CHECKING:
    from orchestrator.client import Client
    from orchestrator.control import HeadControl


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
    if args is None:
        raw: dict[str, Any] = {}
    elif isinstance(args, argparse.Namespace):
        raw = {k: v for k, v in vars(args).items() if v is not None}
    elif isinstance(args, Mapping):
        raw = dict(args)
    else:
        raise SpecError(f"must be an argparse.Namespace or a dict, not {type(args).__name__}",
                        field="args")
    raw.update(kwargs)
    return raw


class Deployment(BaseDeployment):
    """A head plus `shards x replicas` workers (and optional uses_before / uses_after pods),
    every pod a Docker container on the deployment's own network.

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
        **kwargs: Any,
    ) -> None:
        super().__init__()
        raw = _raw_fields(args, kwargs)
        if needs is not None:
            raw["needs"] = sorted(needs) if not isinstance(needs, str) else needs
        self.spec = DeploymentSpec.from_fields(base_dir=base_dir, **raw)
        self._engine = engine
        self._owns_engine = engine is None  # an engine we opened is ours to close
        # Crash safety: by default when the engine comes from the environment, a reaper
        # process removes the deployment if this process dies without closing it.
        self._want_reaper = engine is None if reaper is None else reaper
        self._reaper: ReaperHandle | None = None
        self._probe = probe or GrpcHealthProbe()
        self._ctx = PodContext(owner=uuid.uuid4().hex[:12], token=secrets.token_urlsafe(24))
        self._pods: dict[str, PodPlan] = {}
        self._infos: dict[str, ContainerInfo] = {}
        self._control: HeadControl | None = None
        self._client: Client | None = None
        self._rollout_busy = False
        self._started = False
        self._detached = False
        self._lock_file: IO[str] | None = None
        self._joined = False  # this process's own container joined the deployment network
        self._sick_since: dict[str, float] = {}  # worker pod -> when it was first seen sick
        # head, uses_before, uses_after -> when heal first saw it down
        self._down_since: dict[str, float] = {}
        self.pod_args: dict[str, Any] = {}
        self.update_pod_args()

    # -- engine plumbing ------------------------------------------------------------
    @property
    def engine(self) -> ContainerEngine:
        if self._engine is None:
            from orchestrator.engine.docker_engine import DockerEngine

            self._engine = DockerEngine.from_env()
        return self._engine

    @property
    def network(self) -> str:
        return names.network_name(self.spec.name)

    def _actuator(self) -> Actuator:
        return Actuator(self.engine, self.network, self._probe)

    # -- properties -----------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def is_sandbox(self) -> bool:
        return False

    @property
    def external(self) -> bool:
        return self.spec.external

    @property
    def protocol(self) -> str:
        return self.spec.protocol

    @property
    def host(self) -> str:
        return self.spec.host

    @property
    def port(self) -> int | None:
        """The head port published on the host (known once started, unless given)."""
        if self.spec.external:
            return self.spec.port
        head = self._infos.get(names.head_name(self.name))
        if head and CONTAINER_PORT in head.ports:
            return head.ports[CONTAINER_PORT][1]
        return self.spec.port

    @property
    def head_host(self) -> str:
        """Where this process reaches the head: the published host address, or, from inside
        a container of the engine, the head's address on the deployment network."""
        inside = self._head_inside()
        if inside is not None:
            return inside
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
        return [{
            "name": self.name,
            "head_host": self.head_host,
            "head_port": self.port,
            "needs": sorted(self.spec.needs),
        }]

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
        if not self._started:
            return False
        act = self._actuator()
        try:
            for name, plan in self._pods.items():
                info = self.engine.inspect_container(name)
                ok = self._head_up(info) if plan.role == "head" else act.serving(info)
                if not (info.running and ok):
                    return False
            head = self.engine.inspect_container(names.head_name(self.name))
        except (ResourceNotFound, PodStartError):
            return False
        return act.serving(head)

    # -- pod arguments (Namespaces are views, built from the spec) ------------------
    def _planned(self) -> list[PodPlan]:
        return list(self._pods.values()) if self._pods else initial_pods(self.spec, self._ctx)

    def update_pod_args(self) -> None:
        """Rebuild every pod's argument Namespace from the spec and the running pods."""
        plans = self._planned()
        by_role = {p.role: p for p in plans if p.role != "worker"}
        self.pod_args = {
            "head": self._ns(by_role.get("head")),
            "uses_before": self._ns(by_role.get("uses_before")),
            "uses_after": self._ns(by_role.get("uses_after")),
            "pods": {},
        }
        self.update_worker_pod_args()

    def update_worker_pod_args(self) -> None:
        """Rebuild only the workers' Namespaces, grouped by shard, in replica order."""
        workers = sorted((p for p in self._planned() if p.role == "worker"),
                         key=lambda p: (p.shard or 0, p.replica or 0))
        pods: dict[int, list[argparse.Namespace]] = {s: [] for s in range(self.spec.shards)}
        for plan in workers:
            ns = self._ns(plan)
            assert ns is not None and plan.shard is not None
            pods.setdefault(plan.shard, []).append(ns)
        self.pod_args["pods"] = pods

    def _ns(self, plan: PodPlan | None) -> argparse.Namespace | None:
        if plan is None:
            return None
        values = plan.args(self.spec)
        info = self._infos.get(plan.name)
        values["container_id"] = info.id if info else None
        return argparse.Namespace(**values)

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
        out = [self.head_args]
        out += [ns for ns in (self.uses_before_args, self.uses_after_args) if ns is not None]
        for shard in sorted(self.pod_args["pods"]):
            out += self.pod_args["pods"][shard]
        return out

    # -- host resolution ------------------------------------------------------------
    @staticmethod
    def get_worker_host(
        pod_args: argparse.Namespace, pod: Placement, head_pod: Placement,
        orchestrator: Placement | None = None,
    ) -> str:
        """The host the head must dial to reach the worker described by `pod_args`/`pod`.

        `pod_args.host`/`pod_args.port` override the placement's host and port when set.
        """
        return Deployment.get_worker_address(pod_args, pod, head_pod, orchestrator)[0]

    @staticmethod
    def get_worker_address(
        pod_args: argparse.Namespace, pod: Placement, head_pod: Placement,
        orchestrator: Placement | None = None,
    ) -> tuple[str, int]:
        host = getattr(pod_args, "host", None) or pod.host
        port = getattr(pod_args, "port", None) or pod.port
        if pod.containerized:
            host = pod.host  # a container's own name is not where the host reaches it
        return resolve_worker_address(replace(pod, host=host, port=port), head_pod,
                                      orchestrator)

    # -- lifecycle --------------------------------------------------------------------
    def start(self) -> Self:
        """Create every pod concurrently and block until all serve (see wait_start_success).

        Raises:
            SpecError: bad input found at start (missing image, port taken, name in use).
            PodStartError: a pod exited; names it with its exit code and last log lines.
            HealthCheckTimeout: a pod never reported SERVING within `timeout_ready`.
            EngineUnavailable: no Docker engine answers.
        """
        if self._started:
            return self
        if self.spec.external:
            self._started = True
            return self
        try:
            self._launch()
            self.wait_start_success()
        except BaseException:
            self._teardown()
            raise
        finally:
            self._end_rollout()
        return self

    def _launch(self) -> None:
        engine = self.engine
        engine.ping()
        existing = engine.list_containers(L.for_deployment(self.name))
        if existing:
            raise SpecError(
                f"a deployment named {self.name!r} is already running "
                f"({len(existing)} containers); pick another name or remove it with "
                f"`orchestrator down {self.name}`",
                field="name",
            )
        # A heal or update from another process (say a `heal` unit started next to `up -d`)
        # must not see workers that are not registered yet as debris: it waits for this.
        self._lock(SpecError(f"another process is starting or updating a deployment named "
                             f"{self.name!r}", field="name"))
        plans = initial_pods(self.spec, self._ctx)
        images = [("image", self.spec.image)]
        for field_name, uses in (("uses", self.spec.uses), ("uses_before", self.spec.uses_before),
                                 ("uses_after", self.spec.uses_after)):
            if uses is not None and uses.kind == "docker":
                images.append((field_name, uses.image))
        self._actuator().check_images(images)
        for stale in engine.list_networks(L.for_deployment(self.name)):
            engine.remove_network(stale.id)
        self._start_reaper()
        engine.create_network(
            self.network, labels={**L.for_deployment(self.name), L.OWNER: self._ctx.owner}
        )
        self._join_network()
        self._pods = {p.name: p for p in plans}
        self._started = True

    def wait_start_success(self) -> None:
        """Block until every pod serves and every worker is registered at the head.

        On failure everything is removed before the error is raised.
        """
        if self.spec.external or self._infos:
            return
        plans = list(self._pods.values())
        try:
            self._infos = self._actuator().start(
                plans, self._pod_ready, timeout=self.spec.timeout_ready,
                max_starting=self.spec.max_starting,
            )
            self.activate()
            head = names.head_name(self.name)
            act = self._actuator()
            wait_ready(self.engine, head, act.serving, timeout=self.spec.timeout_ready)
        except BaseException:
            self._teardown()
            raise
        self.update_pod_args()

    def _pod_ready(self, plan: PodPlan, info: ContainerInfo) -> bool:
        if plan.role == "head":
            return self._head_up(info)
        return self._actuator().serving(info)

    def _head_up(self, info: ContainerInfo) -> bool:
        """The head is up when it answers health checks (it reports NOT_SERVING until
        its workers are registered) and its control service accepts our token."""
        if not self._probe.answers(self._actuator().address(info)):
            return False
        try:
            self.control(info).list_workers()
        except OrchestratorError:
            return False
        return True

    def control(self, head_info: ContainerInfo | None = None) -> HeadControl:
        """The head's control client (one channel, kept open)."""
        if self._control is None:
            from orchestrator.control import HeadControl

            info = head_info or self.engine.inspect_container(names.head_name(self.name))
            address = self._actuator().address(info)
            self._control = HeadControl(address, self._ctx.token)
        return self._control

    def activate(self) -> None:
        """Register every worker with the head (idempotent)."""
        control = self.control()
        known = {(w.shard, w.address) for w in control.list_workers()}
        for plan in self._pods.values():
            if plan.role == "worker" and plan.shard is not None \
                    and (plan.shard, plan.address) not in known:
                control.add_worker(plan.shard, plan.address, plan.name)

    def _teardown(self) -> None:
        """Stop and remove every pod and the network. Idempotent, label-based."""
        if self._client is not None:
            self._client.close()
            self._client = None
        if self._control is not None:
            self._control.close()
            self._control = None
        self._probe.close()
        if self.spec.external or self._engine is None:
            self._started = False
            return
        if self._detached:
            self._stop_reaper("detach")
            if self._owns_engine:
                self._engine.close()
                self._engine = None
            return
        # Only what this instance owns: a second Deployment that was refused the
        # same name must never tear down the one already running.
        mine = {**L.for_deployment(self.name), L.OWNER: self._ctx.owner}
        live = self.engine.list_containers(mine)
        # workers first, the head last (see engine/cleanup.remove_owned)
        for heads in (False, True):
            self._actuator().remove([c.name for c in live
                                     if (c.labels.get(L.ROLE) == "head") is heads],
                                    grace=self.spec.stop_grace)
        for net in self.engine.list_networks(mine):
            self.engine.remove_network(net.id)
        self._stop_reaper("done")
        self._pods.clear()
        self._infos.clear()
        self._started = False
        if self._owns_engine:
            self._engine.close()
            self._engine = None

    # -- an orchestrating process inside a container ---------------------------------
    def _join_network(self) -> None:
        """From inside a container of the engine (a CI job with the Docker socket, a dev
        container), neither the head's port published on the host's 127.0.0.1 nor pod
        addresses on another bridge network are reachable: attach our own container to the
        deployment's network. Removing the network detaches it again."""
        me = own_container(self.engine)
        if me is None:
            return
        if self.network not in me.ip_addresses:
            self.engine.connect_network(self.network, me.id)
        self._joined = True

    def _head_inside(self) -> str | None:
        if not self._joined:
            return None
        head = self._infos.get(names.head_name(self.name))
        return None if head is None else head.ip_addresses.get(self.network)

    def detach(self) -> None:
        """Leave the deployment running when this object is closed (`up --detach`)."""
        self._detached = True
        self._stop_reaper("detach")

    def _start_reaper(self) -> None:
        """Spawn the reaper (see orchestrator/reaper.py) before the first container exists."""
        if self._want_reaper and self._reaper is None:
            self._reaper = ReaperHandle.spawn(self.name, self._ctx.owner)

    def _stop_reaper(self, goodbye: str) -> None:
        reaper, self._reaper = self._reaper, None
        if reaper is not None:
            reaper.goodbye(goodbye)

    @classmethod
    def attach(cls, name: str, *, engine: ContainerEngine | None = None,
               probe: HealthProbe | None = None) -> Deployment:
        """A handle on a running deployment, rebuilt from the labels on the engine.

        Works from any process, also after the one that started it was killed. The
        handle is detached: closing it leaves the deployment running.

        Raises:
            DeploymentNotFound: listing the deployments that do run.
            EngineUnavailable: no engine answers.
        """
        owns = engine is None
        if engine is None:
            from orchestrator.engine.docker_engine import DockerEngine

            engine = DockerEngine.from_env()
        try:
            dep = cls._from_labels(name, engine, probe)
        except BaseException:
            if owns:
                engine.close()
            raise
        dep._owns_engine = owns
        return dep

    @classmethod
    def _from_labels(cls, name: str, engine: ContainerEngine,
                     probe: HealthProbe | None) -> Deployment:
        containers = engine.list_containers(L.for_deployment(name))
        head = next((c for c in containers if c.labels.get(L.ROLE) == "head"), None)
        if head is None:
            raise DeploymentNotFound(name, running_deployments(engine))
        workers = [c for c in containers if c.labels.get(L.ROLE) == "worker"]
        newest = max(workers or [head], key=lambda c: int(c.labels.get(L.GENERATION, "0")))
        fields = json.loads(newest.labels[L.SPEC])
        # Replicas per shard = the slots in use: a replica replaced start-first shares its
        # slot with its replacement for a while, and an update stopped between the two
        # (Ctrl-C) must not read as a scale-up.
        per_shard = len({w.labels.get(L.REPLICA) for w in workers
                         if w.labels.get(L.SHARD) == "0"})
        fields["replicas"] = per_shard or fields.get("replicas", 1)
        if CONTAINER_PORT in head.ports:
            fields["port"] = head.ports[CONTAINER_PORT][1]
        dep = cls(fields, engine=engine, probe=probe)
        generation = max(int(c.labels.get(L.GENERATION, "0")) for c in containers)
        dep._ctx = PodContext(owner=head.labels.get(L.OWNER, ""),
                              token=head.env.get(TOKEN_ENV, ""), generation=generation)
        dep._pods = {c.name: _plan_from_labels(c) for c in containers}
        dep._infos = {c.name: c for c in containers}
        dep._started = True
        dep._detached = True
        with contextlib.suppress(ResourceNotFound):  # a half-removed one has no network
            dep._join_network()
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

            self._client = Client(self.head_host, self.head_port)
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
        """Look at the head container again (after a request it did not answer, and on
        every heal). If it restarted in its container (a crash under the restart policy),
        Docker published it on a new free host port unless `port` was given: the next
        request goes there. A failed request is not retried here: it may have reached a
        worker before the head died."""
        if self.spec.external or not self._started:
            return
        with contextlib.suppress(OrchestratorError):
            self._note_head(self.engine.inspect_container(names.head_name(self.name)))

    def _note_head(self, info: ContainerInfo) -> None:
        """Take the head container as the engine shows it now: a head restarted in its
        container can have a new host port and a new address on the network, so the
        cached request client and control channel go when theirs is out of date."""
        before = self.port
        self._infos[info.name] = info
        if self.port != before and self._client is not None:
            self._client.close()
            self._client = None
        if self._control is not None and \
                self._control.address != self._actuator().address_of(info):
            self._control.close()
            self._control = None

    # -- updates ----------------------------------------------------------------------
    def _begin_rollout(self) -> None:
        """Refuse a second concurrent update or scale, in this process or any other."""
        if not self._started or self.spec.external:
            raise RolloutError(f"deployment {self.name} is not running (or is external)")
        busy = RolloutInProgress(
            f"deployment {self.name} is already being updated or scaled; a second update "
            "is refused, not queued: retry when the first one has finished",
            failed="refused: another rollout is running")
        if self._rollout_busy:
            raise busy
        self._lock(busy)

    def _lock(self, busy: OrchestratorError) -> None:
        """Take this deployment's lock (a file lock: one holder per host), or raise `busy`.
        Held by a start until its workers are registered, and by every update, scale and
        heal; released by `_end_rollout`."""
        path = os.path.join(tempfile.gettempdir(), f"orchestrator-{self.name}.rollout.lock")
        handle = open(path, "a")  # noqa: SIM115 - held until _end_rollout
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise busy from None
        self._lock_file = handle
        self._rollout_busy = True

    def _end_rollout(self) -> None:
        self._rollout_busy = False
        if self._lock_file is not None:
            fcntl.flock(self._lock_file, fcntl.LOCK_UN)
            self._lock_file.close()
            self._lock_file = None

    async def rolling_update(
        self,
        uses_with: Mapping[str, Any] | None = None,
        *,
        uses: str | None = None,
        env: Mapping[str, str] | None = None,
        policy: UpdatePolicy | None = None,
        on_progress: ProgressCallback | None = None,
        **changes: Any,
    ) -> None:
        """Replace every worker replica, one batch at a time, with zero failed requests.

        Raises:
            SpecError: the new fields are invalid (nothing was changed).
            RolloutInProgress: another update or scale is running.
            RolloutError: a new replica failed; what was done and whether it rolled back.
        """
        if uses_with is not None:
            changes["uses_with"] = dict(uses_with)
        if uses is not None:
            changes["uses"] = uses
        if env is not None:
            changes["env"] = dict(env)
        self.spec.evolve(**changes)  # invalid fields: a SpecError before anything happens
        await self._rollout(lambda spec: spec.evolve(**changes), policy, on_progress,
                            replace_all=True)

    async def scale(
        self, replicas: int, *, policy: UpdatePolicy | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> None:
        """Change the replica count of every shard; removed replicas are drained first.

        Raises:
            SpecError: `replicas < 1`.
            RolloutInProgress, RolloutError: as for `rolling_update`.
        """
        self.spec.with_replicas(replicas)  # replicas < 1: a SpecError before anything happens
        await self._rollout(lambda spec: spec.with_replicas(replicas), policy, on_progress,
                            replace_all=False)

    def heal(self, unhealthy_for: float = 30.0,
             on_progress: ProgressCallback | None = None) -> list[str]:
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
        uses_before / uses_after pod in the same state.

        Raises:
            RolloutError: a replacement failed (it was undone; the sick replica remains).
            EngineUnavailable, RequestError: the engine or the head does not answer.
        """
        if self._rollout_busy or not self._started or self.spec.external:
            return []
        try:
            self._begin_rollout()
        except RolloutInProgress:
            return []
        try:
            # While nothing changes, a tick costs one engine call (a brief listing: no
            # inspect per container) and one ask of the head.
            containers = self._brief_listing()
            head = self._head_alive(unhealthy_for, on_progress, containers)
            if head == "down":
                return []
            if head == "recreated":
                containers = self._brief_listing()
            if self._uses_alive(unhealthy_for, on_progress, containers):
                containers = self._brief_listing()
            changed, at_head = self._converge_listed(on_progress, containers)
            if changed:
                containers = self._brief_listing()
                at_head = None
            due = self._sick(unhealthy_for, containers, at_head)
            if not due:
                return []
            # No drain: what a hung replica holds will not finish. Stopping it drops the
            # connection, and the head retries those requests on the healthy replicas.
            policy = replace(self.spec.policy, drain_timeout=0.0)
            asyncio.run(self._run_rollout(self.spec, policy, on_progress, replace_all=False,
                                          replace_pods=frozenset(due)))
        finally:
            self._end_rollout()
            self.update_pod_args()
        for name in due:
            self._sick_since.pop(name, None)
        return sorted(due)

    def _brief_listing(self) -> list[ContainerInfo]:
        return self.engine.list_containers(L.for_deployment(self.name), brief=True)

    def _inspected(self, name: str) -> ContainerInfo | None:
        """A fresh full snapshot of `name` (None: gone): what a brief listing leaves out."""
        try:
            return self.engine.inspect_container(name)
        except ResourceNotFound:
            return None

    def _head_alive(self, unhealthy_for: float, on_progress: ProgressCallback | None,
                    containers: list[ContainerInfo]) -> Literal["up", "down", "recreated"]:
        """Is the head running (or being restarted by the engine)? `containers`: the
        deployment's, listed just now. A head container that has stayed stopped or gone
        for `unhealthy_for` seconds (its restart retries used up, stopped or removed by
        hand) is recreated under the same name, token and port, as Swarm or Kubernetes
        would; the workers keep running and `converge` registers them with it. Only while
        a worker runs: a `down` removes the head last."""
        name = names.head_name(self.name)
        info = next((c for c in containers if c.name == name), None)  # None: removed
        up = info is not None and (info.running or info.status == "restarting")
        if not self._down_too_long(name, up or not _workers_run(containers), unhealthy_for):
            return "up" if up else "down"
        if self._control is not None:
            self._control.close()
            self._control = None
        self._note_head(self._recreate(head_pod(self.spec, self._ctx),
                                       lambda _p, i: self._head_up(i), info, on_progress))
        return "recreated"

    def _uses_alive(self, unhealthy_for: float, on_progress: ProgressCallback | None,
                    containers: list[ContainerInfo]) -> bool:
        """Recreate a uses_before / uses_after pod whose container has stayed stopped or
        gone, or has not answered its health check (probed from here: the head does not
        check these pods), for `unhealthy_for` seconds: every request goes through it, so
        nothing serves without it. Same name and spec: the head dials it by name and finds
        the new one. Only while a worker runs (a `down` removes the workers first). Returns
        True when one was recreated."""
        workers_run = _workers_run(containers)
        by_name = {c.name: c for c in containers}
        recreated = False
        for role, uses in (("uses_before", self.spec.uses_before),
                           ("uses_after", self.spec.uses_after)):
            if uses is None:
                continue
            name = names.uses_name(self.name, role)
            info = by_name.get(name)
            alive = not workers_run or (info is not None and (  # probed only if it matters
                info.status == "restarting" or (info.running and self._actuator().serving(info))))
            if self._down_too_long(name, alive, unhealthy_for):
                plan = executor_pod(self.spec, self._ctx, role=role, uses=uses)
                self._infos[name] = self._recreate(plan, self._pod_ready, info, on_progress)
                recreated = True
        return recreated

    def _down_too_long(self, name: str, alive: bool, unhealthy_for: float) -> bool:
        """Remember since when the pod `name` has been down; True once that has lasted
        `unhealthy_for` seconds."""
        if alive:
            self._down_since.pop(name, None)
            return False
        now = time.monotonic()
        return now - self._down_since.setdefault(name, now) >= unhealthy_for

    def _recreate(self, plan: PodPlan, ready: Callable[[PodPlan, ContainerInfo], bool],
                  was: ContainerInfo | None, on_progress: ProgressCallback | None
                  ) -> ContainerInfo:
        """Replace the container of `plan` (`was`: as listed, None: gone) with a fresh one
        of the same name and spec, ready; reported as a "recreated" event."""
        was = None if was is None else self._inspected(plan.name)  # its exit code
        act = self._actuator()
        act.remove([plan.name], grace=0)
        info = act.start([plan], ready, timeout=self.spec.timeout_ready)[plan.name]
        self._pods[plan.name] = plan
        self._down_since.pop(plan.name, None)
        if on_progress is not None:
            on_progress(_recreated(self.name, plan.name, was))
        return info

    def _sick(self, unhealthy_for: float, containers: list[ContainerInfo],
              at_head: dict[str, str] | None) -> list[str]:
        """Workers sick for `unhealthy_for` seconds now (remembering when each fell sick).
        `containers`: the deployment's, listed just now; `at_head`: worker id -> routing
        state, as the head listed them just now (None: ask it)."""
        if at_head is None:
            at_head = {w.worker_id: w.state for w in self.control().list_workers()}
        workers = {p.name for p in self._pods.values() if p.role == "worker"}
        if set(at_head) != workers:
            self._take_over(set(at_head))
            workers = {p.name for p in self._pods.values() if p.role == "worker"}
        running = {c.name for c in containers if c.running}
        now, due = time.monotonic(), []
        for name in sorted(workers):
            if name in running and at_head.get(name) != "unhealthy":
                self._sick_since.pop(name, None)
            elif now - self._sick_since.setdefault(name, now) >= unhealthy_for:
                due.append(name)
        for gone in set(self._sick_since) - workers:
            del self._sick_since[gone]
        return due

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
        self._begin_rollout()
        try:
            return self._converge(on_progress)
        finally:
            self._end_rollout()
            self.update_pod_args()

    def outdated(self) -> list[str]:
        """Worker pods that do not run the deployment's spec: an update was cut short or
        paused. A `scale` to the same count replaces exactly these."""
        wanted = self.spec.worker_hash()
        return sorted(p.name for p in self._pods.values()
                      if p.role == "worker" and p.spec_hash != wanted)

    def _converge(self, on_progress: ProgressCallback | None) -> list[str]:
        """`converge`, with the rollout lock held."""
        changed, _ = self._converge_listed(
            on_progress, self.engine.list_containers(L.for_deployment(self.name)))
        return changed

    def _converge_listed(self, on_progress: ProgressCallback | None,
                         containers: list[ContainerInfo]
                         ) -> tuple[list[str], dict[str, str] | None]:
        """`_converge` from `containers`, the deployment's listed just now. Also returns
        what the head listed (worker id -> routing state; None: the head is not running),
        which is still true when nothing changed."""
        head = next((c for c in containers if c.labels.get(L.ROLE) == "head"), None)
        if head is None or not head.running:
            return [], None
        self._note_head(head)
        control = self.control()
        at_head = {w.worker_id: w for w in control.list_workers()}
        states = {worker_id: w.state for worker_id, w in at_head.items()}
        debris: list[ContainerInfo] = []
        forgotten: list[ContainerInfo] = []
        for info in containers:
            if info.labels.get(L.ROLE) != "worker":
                continue
            seen = at_head.get(info.name)
            if seen is not None:
                if seen.state == "draining":  # its retirement was cut short
                    control.remove_worker(seen.shard, seen.address)
                    debris.append(info)
            elif info.running and not at_head and self._started_before_head(info, head):
                forgotten.append(info)  # the head restarted after it and lost its list
            else:
                debris.append(info)  # stopped, or started and never added
        self._actuator().remove([c.name for c in debris], grace=self.spec.stop_grace)
        for info in forgotten:
            plan = _plan_from_labels(info)
            assert plan.shard is not None
            control.add_worker(plan.shard, plan.address, plan.name)
        if not debris and not forgotten:
            return [], states
        self._take_over({w.worker_id for w in control.list_workers()})
        if on_progress is not None:
            done: tuple[tuple[EventKind, list[ContainerInfo], str], ...] = (
                ("stopped", debris, "removed: left behind by an interrupted update or scale"),
                ("added", forgotten, "re-registered at the head, which had lost it"))
            for kind, infos, message in done:
                for info in infos:
                    plan = _plan_from_labels(info)
                    on_progress(ProgressEvent(
                        kind=kind, deployment=self.name, done=0, total=0, shard=plan.shard,
                        replica=plan.replica, pod=info.name, message=message))
        return sorted(c.name for c in debris + forgotten), None

    def _started_before_head(self, worker: ContainerInfo, head: ContainerInfo) -> bool:
        """`_started_before`, inspecting what a brief listing gave without a start time."""
        if worker.started_at is None:
            worker = self._inspected(worker.name) or worker
        if head.started_at is None:
            head = self._inspected(head.name) or head
        return _started_before(worker, head)

    def _take_over(self, at_head: set[str]) -> None:
        """Another process updated or scaled the deployment: take its spec and pods from
        the labels (as `attach` does). Workers the head still lists but whose container is
        gone keep the plan this object knew them by, so they can be replaced."""
        fresh = Deployment._from_labels(self.name, self.engine, self._probe)
        kept = {n: p for n, p in self._pods.items()
                if p.role == "worker" and n in at_head and n not in fresh._pods}
        self.spec = fresh.spec
        self._pods = {**fresh._pods, **kept}
        self._infos = dict(fresh._infos)
        self._ctx = replace(self._ctx, generation=max(self._ctx.generation,
                                                      fresh._ctx.generation))

    async def _rollout(self, target: Callable[[DeploymentSpec], DeploymentSpec],
                       policy: UpdatePolicy | None, on_progress: ProgressCallback | None, *,
                       replace_all: bool) -> None:
        """Under the lock: converge, then roll out to `target` of the spec that runs."""
        self._begin_rollout()
        try:
            self._converge(on_progress)
            await self._run_rollout(target(self.spec), policy, on_progress,
                                    replace_all=replace_all)
        finally:
            self._end_rollout()
            self.update_pod_args()

    async def _run_rollout(self, new_spec: DeploymentSpec, policy: UpdatePolicy | None,
                           on_progress: ProgressCallback | None, *, replace_all: bool,
                           replace_pods: frozenset[str] = frozenset()) -> None:
        from orchestrator.rollout import Rollout

        self._actuator().check_images(
            [("uses", new_spec.uses.image)] if new_spec.uses.kind == "docker"
            else [("image", new_spec.image)]
        )
        rollout = Rollout(self, new_spec, policy or new_spec.policy,
                          on_progress or (lambda _e: None), replace_all=replace_all,
                          replace_pods=replace_pods)
        await rollout.run()

    def rolling_update_sync(self, *args: Any, **kwargs: Any) -> None:
        """Blocking `rolling_update`, for callers without an event loop."""
        asyncio.run(self.rolling_update(*args, **kwargs))

    def scale_sync(self, replicas: int, **kwargs: Any) -> None:
        """Blocking `scale`, for callers without an event loop."""
        asyncio.run(self.scale(replicas, **kwargs))

    # -- internals shared with the rollout -------------------------------------------
    def _worker_plan(self, spec: DeploymentSpec, shard: int, slot: int, generation: int
                     ) -> PodPlan:
        return executor_pod(spec, self._ctx, role="worker", uses=spec.uses, shard=shard,
                            replica=slot, generation=generation)

    def _next_generation(self) -> int:
        gens = [p.generation for p in self._pods.values()] + [self._ctx.generation]
        return max(gens) + 1


def _recreated(deployment: str, pod: str, was: ContainerInfo | None) -> ProgressEvent:
    """What heal reports when it recreated `pod`; `was`: its container before (None: gone)."""
    why = ("its container was gone" if was is None else
           "it did not answer health checks" if was.running else
           f"its container had stopped ({was.status}, exit code {was.exit_code})")
    return ProgressEvent(kind="added", deployment=deployment, done=0, total=0, pod=pod,
                         message=f"recreated: {why}")


def _workers_run(containers: list[ContainerInfo]) -> bool:
    return any(c.labels.get(L.ROLE) == "worker" and c.running for c in containers)


def _started_before(worker: ContainerInfo, head: ContainerInfo) -> bool:
    """Did `worker` (still running) start before the head's current run began?"""
    return worker.started_at is not None and head.started_at is not None \
        and worker.started_at < head.started_at


def running_deployments(engine: ContainerEngine) -> list[str]:
    """Names of the deployments that have containers on the engine."""
    return sorted({c.labels[L.DEPLOYMENT] for c in engine.list_containers(L.managed())
                   if L.DEPLOYMENT in c.labels})


def _plan_from_labels(info: ContainerInfo) -> PodPlan:
    """A pod as the engine describes it: identity from labels, the rest from inspect."""
    labels = info.labels

    def number(key: str) -> int | None:
        value = labels.get(key)
        return int(value) if value is not None and value.isdigit() else None

    return PodPlan(
        name=info.name,
        role=labels.get(L.ROLE, "worker"),
        shard=number(L.SHARD),
        replica=number(L.REPLICA),
        generation=number(L.GENERATION) or 0,
        spec_hash=labels.get(L.SPEC_HASH, ""),
        uses="",
        container=ContainerSpec(name=info.name, image=info.image, labels=dict(labels)),
    )
