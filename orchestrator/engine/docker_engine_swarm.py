"""`ContainerEngine` on a Docker Swarm, through the manager's services API.

Each pod is a one-replica service named like the pod, with `endpoint_mode: dnsrr` on the
deployment's overlay network (this kernel has no IPVS, so no VIPs nor ingress mesh): other
pods reach it by its name, exactly as on one host. The engine protocol keeps its container
vocabulary; here a "container" is that service and its current task:

- `inspect_container` / `list_containers`: the service and its newest task (state, exit
  code, node, published ports); `ContainerInfo.node` names the node the task runs on;
- `run_container`: create the service (Swarm schedules it; the caller polls readiness);
- `stop_container`: scale the service to 0 and wait until its task has stopped (Swarm sends
  SIGTERM, waits the stop grace the service was created with, then SIGKILL);
- `remove_container`: wait until Swarm has deleted the service's tasks (removing a service
  meanwhile crashes a Docker 20.10 manager), remove the service and the configs only it used;
- logs: the service's logs, gathered by the manager from whichever node ran the task.

What differs from one host, and why:

- This process is outside the overlay network, so every pod publishes its port in host mode
  on its node (a free port the node picks): readiness is probed at node-address:port. The
  head is published on the manager this engine talks to (`head_node`, by default the node
  of the manager), also in host mode. Host mode binds every interface of the node: Swarm
  has no per-address publishing.
- Bind mounts do not cross nodes: the executor files a pod mounts at /opt/uses are shipped
  as Swarm configs (content-addressed, labelled with the deployment, removed with the last
  service that uses them). Other bind mounts stay bind mounts and must exist on each node.
- Swarm restarts a pod's task itself (condition any, also when its node is lost):
  `update_container` cannot change a service's restart policy without replacing the task,
  so it is a no-op, and `restart_count` counts the tasks that failed.
- A task that failed before its container ran (`starting container failed`, exit code 128:
  an overlay address still held, a host port taken meanwhile; known Swarm races) is
  Swarm's to retry: the first `START_FAILURES_FORGIVEN` of a pod do not count (the pod
  reads as still starting); the next one does, and a start fails with its error.
- No equivalent through the manager, so these raise `EngineError`: `exec_container`,
  `container_stats`, `kill_container` (Swarm has no signal API), `connect_network`.
- Images are local to each node: no registry is assumed, so every node must already have
  the runtime image (scripts/swarm-cluster loads it on each node). The image methods act on
  the manager's own engine.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, cast

import docker
import docker.errors
import docker.types

from orchestrator.engine.base import (
    MANAGED_LABEL,
    ContainerInfo,
    ContainerSpec,
    ContainerStats,
    ContainerStatus,
    EngineEvent,
    ExecResult,
    LogLine,
    NetworkInfo,
    PortBinding,
    RestartPolicy,
)
from orchestrator.engine.docker_engine import (
    DockerEngine,
    _check_socket,
    _docker_time,
    _label_filter,
    _log_line,
    _parse_time,
    _require_managed,
    _translate,
    _unix_socket_path,
)
from orchestrator.errors import EngineError, EngineUnavailable, ResourceNotFound

USES_MOUNT = "/opt/uses"  # where a pod mounts its executor files (planning.pods.USES_MOUNT)
POD_PORT = 50051  # every pod's gRPC port (spec.CONTAINER_PORT)
CONFIG_MAX_BYTES = 500 * 1024  # Swarm's limit for one config
CONFIG_SUFFIXES = (".py", ".yml", ".yaml", ".json", ".txt", ".toml", ".cfg")
ROLE_LABEL = "orchestrator.role"
_RESTART_DELAY_NS = 1_000_000_000
_STOP_SLACK = 30.0  # beyond the stop grace, how long a stopping task may take
_NETWORK_GONE_WAIT = 60.0  # tasks leave the overlay a moment after their service goes
_MANAGER_RETRIES = 8
_PASSING = ("context deadline exceeded", "code = Unavailable", "rpc error: code = Canceled")
_RUNNING = "running"
_FAILED = ("failed", "rejected")
_ENDED = ("complete", "failed", "rejected", "shutdown", "orphaned", "remove")
_NEVER_RAN = "starting container failed"
START_FAILURES_FORGIVEN = 2
_STATUS: dict[str, ContainerStatus] = {
    "running": "running", "complete": "exited", "failed": "exited", "rejected": "exited",
    "shutdown": "exited", "orphaned": "exited", "remove": "removing",
}


@dataclass(frozen=True)
class _Node:
    id: str
    hostname: str
    addr: str


class SwarmEngine(DockerEngine):
    """`ContainerEngine` on a Swarm manager: one one-replica service per pod.

    `SwarmEngine.from_env()` honours DOCKER_HOST as `DockerEngine.from_env` does; it must
    point at a manager of an active swarm. `head_node`: the node (id or hostname) the head
    is pinned to and published on; by default the manager itself.
    """

    def __init__(self, client: docker.DockerClient, *, where: str | None = None,
                 head_node: str | None = None) -> None:
        super().__init__(client, where=where)
        # The SDK's services, tasks and configs calls are untyped: plain dicts in and out.
        self._sapi: Any = _Retrying(client.api)
        self._head_node = head_node
        self._nodes: dict[str, _Node] = {}

    @classmethod
    def from_env(cls, environment: Mapping[str, str] | None = None, *, timeout: int = 60,
                 version: str | None = None) -> SwarmEngine:
        """Connect to the manager at DOCKER_HOST.

        Raises:
            EngineUnavailable: no engine answers, or it is not a manager of a swarm.
        """
        env = dict(environment) if environment is not None else None
        where = (env if env is not None else os.environ).get(
            "DOCKER_HOST", "unix:///var/run/docker.sock")
        _check_socket(_unix_socket_path(where), where)
        with _translate("engine", where, where=where):
            client = docker.from_env(environment=env, timeout=timeout, version=version or "auto")
        engine = cls(client, where=where)
        try:
            engine.ping()
        except BaseException:
            engine.close()
            raise
        return engine

    def ping(self) -> None:
        """Raises `EngineUnavailable` unless a manager of an active swarm answers."""
        with self._call("engine", self.where):
            swarm = self._sapi.info().get("Swarm") or {}
        if swarm.get("LocalNodeState") != "active" or not swarm.get("ControlAvailable"):
            raise EngineUnavailable(
                f"the Docker engine at {self.where} is not a manager of an active swarm "
                f"(swarm state {swarm.get('LocalNodeState')!r}); point DOCKER_HOST at a "
                "manager, or run `docker swarm init` there")

    def engine_id(self) -> str:
        """The swarm's cluster id: the same from every manager."""
        with self._call("engine", self.where):
            swarm = self._sapi.info().get("Swarm") or {}
        return str((swarm.get("Cluster") or {}).get("ID") or swarm.get("NodeID"))

    # -- nodes ----------------------------------------------------------------------
    def nodes(self) -> list[tuple[str, str, str]]:
        """(id, hostname, address) of every node, sorted by hostname."""
        self._refresh_nodes()
        return sorted(((n.id, n.hostname, n.addr) for n in self._nodes.values()),
                      key=lambda n: n[1])

    def _refresh_nodes(self) -> None:
        with self._call("engine", self.where):
            rows = self._sapi.nodes()
        nodes = {}
        for row in rows:
            addr = str((row.get("Status") or {}).get("Addr") or "")
            manager = str((row.get("ManagerStatus") or {}).get("Addr") or "")
            if addr in ("", "0.0.0.0") and manager:  # a manager may report 0.0.0.0
                addr = manager.rpartition(":")[0]
            hostname = str((row.get("Description") or {}).get("Hostname") or row["ID"])
            nodes[str(row["ID"])] = _Node(str(row["ID"]), hostname, addr)
        self._nodes = nodes

    def _node(self, node_id: str) -> _Node | None:
        if node_id and node_id not in self._nodes:
            self._refresh_nodes()
        return self._nodes.get(node_id)

    def _head_node_id(self) -> str:
        if self._head_node is None:
            with self._call("engine", self.where):
                return str((self._sapi.info().get("Swarm") or {}).get("NodeID"))
        self._refresh_nodes()
        for node in self._nodes.values():
            if self._head_node in (node.id, node.hostname):
                return node.id
        raise EngineError(f"no swarm node named {self._head_node!r} for the head")

    # -- networks -------------------------------------------------------------------
    def create_network(self, name: str, *, labels: Mapping[str, str]) -> NetworkInfo:
        """Create an overlay network. Raises `ResourceConflict` if the name is taken."""
        with self._call("network", name):
            created = self._sapi.create_network(name, driver="overlay", labels=dict(labels),
                                               check_duplicate=True)
        return NetworkInfo(id=str(created["Id"]), name=name, labels=dict(labels))

    def remove_network(self, name_or_id: str) -> None:
        """Remove a managed overlay network, waiting for the tasks of removed services to
        leave it. Missing networks are ignored.

        Raises:
            NotManaged: the network lacks `orchestrator.managed=true`.
            ResourceConflict: still in use after a minute.
        """
        deadline = time.monotonic() + _NETWORK_GONE_WAIT
        while True:
            with self._call("network", name_or_id):
                try:
                    net = self._sapi.inspect_network(name_or_id)
                except docker.errors.NotFound:
                    return
            _require_managed("network", name_or_id, net.get("Labels"))
            try:
                with self._call("network", name_or_id):
                    self._sapi.remove_network(net["Id"])
                return
            except ResourceNotFound:
                return
            except EngineError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def connect_network(self, network: str, container: str) -> None:
        """No Swarm equivalent for a process outside the swarm. Raises `EngineError`."""
        raise EngineError("a process outside the swarm cannot join its overlay network")

    # -- pods as services -------------------------------------------------------------
    def run_container(self, spec: ContainerSpec) -> ContainerInfo:
        """Create the pod's service; Swarm schedules its task. Returns at once.

        Raises:
            ResourceConflict: a service with this name exists. EngineError: refused.
        """
        configs = self._ship_configs(spec)
        task = self._task_template(spec, configs)
        endpoint = {"Mode": "dnsrr", "Ports": [
            {"Protocol": "tcp", "TargetPort": p.container_port, "PublishMode": "host",
             **({"PublishedPort": p.host_port} if p.host_port else {})}
            for p in self._published(spec)]}
        with self._call("container", spec.name):
            created = self._sapi.create_service(
                task, name=spec.name, labels=dict(spec.labels),
                mode=docker.types.ServiceMode("replicated", replicas=1),
                endpoint_spec=cast(Any, endpoint))
        return ContainerInfo(id=str(created["ID"]), name=spec.name, image=spec.image,
                             labels=dict(spec.labels), status="created",
                             env=dict(spec.env))

    def _published(self, spec: ContainerSpec) -> list[Any]:
        """The head's ports as given; every other pod publishes its gRPC port on a free
        node port, so that this process (outside the overlay) can probe it."""
        if spec.ports:
            return list(spec.ports)
        return [PortBinding(POD_PORT, "0.0.0.0", None)]

    def _task_template(self, spec: ContainerSpec, configs: list[Any]) -> Any:
        mounts = [docker.types.Mount(m.target, m.source, type="bind", read_only=m.read_only)
                  for m in spec.mounts if m.target != USES_MOUNT]
        container = docker.types.ContainerSpec(
            spec.image,
            command=list(spec.entrypoint) if spec.entrypoint is not None else None,
            args=list(spec.command) or None,
            hostname=spec.hostname, env=dict(spec.env), workdir=spec.working_dir,
            user=spec.user, labels=dict(spec.labels), mounts=mounts or None,
            stop_grace_period=int((spec.stop_timeout if spec.stop_timeout is not None
                                   else 10) * 1e9),
            stop_signal=spec.stop_signal, configs=configs or None,
            # The orchestrator probes readiness itself; Swarm would hold a task out of DNS
            # until the image's slow HEALTHCHECK passed.
            healthcheck=docker.types.Healthcheck(test=["NONE"]),
            hosts=dict(spec.extra_hosts) or None,
            cap_drop=list(spec.cap_drop) or None,
        )
        resources = None
        if spec.cpus is not None or spec.memory_bytes is not None:
            resources = docker.types.Resources(
                cpu_limit=int(spec.cpus * 1e9) if spec.cpus else None,
                mem_limit=spec.memory_bytes)
        constraints = list(spec.constraints)
        if spec.labels.get(ROLE_LABEL) == "head":
            constraints.append(f"node.id=={self._head_node_id()}")
        log_driver = None
        if spec.log_max_bytes is not None:
            log_driver = docker.types.DriverConfig("json-file", {
                "max-size": str(spec.log_max_bytes), "max-file": str(spec.log_max_files)})
        return docker.types.TaskTemplate(
            container, resources=resources,
            restart_policy=docker.types.RestartPolicy(
                condition="any", delay=_RESTART_DELAY_NS, max_attempts=0),
            placement=docker.types.Placement(constraints=constraints or None),
            log_driver=log_driver,
            networks=[docker.types.NetworkAttachmentConfig(
                spec.network, aliases=list(spec.aliases))] if spec.network else None,
        )

    def _ship_configs(self, spec: ContainerSpec) -> list[Any]:
        """The files of the executor directory mounted at /opt/uses, as Swarm configs."""
        refs = []
        for mount in spec.mounts:
            if mount.target != USES_MOUNT:
                continue
            for path in sorted(Path(mount.source).iterdir()):
                if not path.is_file() or path.suffix not in CONFIG_SUFFIXES \
                        or path.stat().st_size > CONFIG_MAX_BYTES:
                    continue
                config_id, name = self._config(spec, path.read_bytes())
                uid, _, gid = (spec.user or "0:0").partition(":")
                refs.append(docker.types.ConfigReference(
                    config_id, name, filename=f"{USES_MOUNT}/{path.name}",
                    uid=uid, gid=gid or uid, mode=0o444))
        return refs

    def _config(self, spec: ContainerSpec, data: bytes) -> tuple[str, str]:
        """A content-addressed config (configs cannot change): created once, reused."""
        deployment = spec.labels.get("orchestrator.deployment", "pod")
        name = f"{deployment}-{hashlib.sha256(data).hexdigest()[:16]}"
        labels = {k: v for k, v in spec.labels.items()
                  if k in (MANAGED_LABEL, "orchestrator.deployment")}
        with self._call("container", name):
            found = self._sapi.configs(filters={"name": name})
            for row in found:
                if row["Spec"]["Name"] == name:
                    return str(row["ID"]), name
            try:
                created = self._sapi.create_config(name, data, labels=labels)
            except docker.errors.APIError as exc:
                if exc.status_code != 409:  # made meanwhile by a pod started alongside
                    raise
                row = self._sapi.configs(filters={"name": name})[0]
                return str(row["ID"]), name
        return str(created["ID"]), name

    def inspect_container(self, name_or_id: str) -> ContainerInfo:
        """The pod's service and newest task. Raises `ResourceNotFound`."""
        with self._call("container", name_or_id):
            service = self._sapi.inspect_service(name_or_id)
            tasks = self._sapi.tasks(filters={"service": service["ID"]})
        return self._info(service, tasks)

    def list_containers(self, labels: Mapping[str, str], *,
                        brief: bool = False) -> list[ContainerInfo]:
        """Every pod service whose labels match, sorted by name (one call for the services,
        one for their tasks)."""
        with self._call("container", "*"):
            services = self._sapi.services(filters={"label": _label_filter(labels)})
            tasks = self._sapi.tasks(filters={"service": [s["ID"] for s in services]}) \
                if services else []
        by_service: dict[str, list[dict[str, Any]]] = {}
        for task in tasks:
            by_service.setdefault(str(task.get("ServiceID")), []).append(task)
        infos = [self._info(s, by_service.get(str(s["ID"]), [])) for s in services]
        return sorted(infos, key=lambda c: c.name)

    def _info(self, service: Mapping[str, Any], tasks: list[dict[str, Any]]) -> ContainerInfo:
        spec = service.get("Spec") or {}
        container = (spec.get("TaskTemplate") or {}).get("ContainerSpec") or {}
        tasks = _forgiven(tasks)
        task = _current(tasks)
        status: ContainerStatus = "created"
        exit_code = None
        node_name, ports, started = "", {}, None
        if task is not None:
            state = str((task.get("Status") or {}).get("State", ""))
            status = _STATUS.get(state, "created")
            failed = [t for t in tasks if _state(t) in _FAILED]
            if status == "exited":
                exit_code = _exit_code(task)
            elif failed:  # crash-looping: Swarm's next task is on its way
                exit_code = _exit_code(max(failed, key=lambda t: str(t.get("CreatedAt"))))
            node = self._node(str(task.get("NodeID") or ""))
            node_name = node.hostname if node else ""
            if node is not None and status == "running":
                ports = {int(p["TargetPort"]): (node.addr, int(p["PublishedPort"]))
                         for p in ((task.get("Status") or {}).get("PortStatus") or {})
                         .get("Ports") or [] if p.get("PublishedPort")}
            started = _parse_time(str((task.get("Status") or {}).get("Timestamp", "")))
        image = str(container.get("Image", "")).split("@", 1)[0]
        return ContainerInfo(
            id=str(service["ID"]),
            name=str(spec.get("Name", "")),
            image=image,
            labels=dict(spec.get("Labels") or {}),
            status=status,
            exit_code=exit_code,
            ports=ports,
            started_at=started if status == "running" else None,
            hostname=str(container.get("Hostname", "")),
            restart_count=sum(1 for t in tasks if _state(t) in _FAILED)
            - (1 if task is not None and _state(task) in _FAILED else 0),
            env=dict(item.split("=", 1) for item in (container.get("Env") or [])
                     if "=" in item),
            node=node_name,
        )

    def wait_container(self, name_or_id: str, *, timeout: float | None = None) -> int:
        """Block until the pod's task has ended; return its exit code.

        Raises:
            ResourceNotFound: no such service. TimeoutError: still running after `timeout`.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            info = self.inspect_container(name_or_id)
            if info.status == "exited":
                return info.exit_code if info.exit_code is not None else -1
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"{name_or_id} still running after {timeout}s")
            time.sleep(0.2)

    def stop_container(self, name_or_id: str, *, grace: float = 10.0) -> None:
        """Scale the service to 0 and wait for its task to stop (Swarm's SIGTERM, the
        service's stop grace, SIGKILL). Missing services are ignored.

        Raises:
            NotManaged: the service lacks `orchestrator.managed=true`.
        """
        service = self._managed_service(name_or_id)
        if service is None:
            return
        self._scale(service, 0)
        deadline = time.monotonic() + grace + _STOP_SLACK
        while time.monotonic() < deadline:
            with self._call("container", name_or_id):
                try:
                    tasks = self._sapi.tasks(filters={"service": service["ID"]})
                except docker.errors.NotFound:
                    return
            if all(_state(t) in _ENDED or _state(t) in ("new", "pending") for t in tasks):
                return
            time.sleep(0.2)

    def _wait_tasks_gone(self, service: Mapping[str, Any]) -> None:
        """Scale to 0 and wait until Swarm's task reaper has deleted the service's tasks.

        Removing a service while the reaper deletes its tasks crashes the manager of Docker
        20.10 (swarmkit's SetServiceTasksRemove dereferences a task deleted meanwhile: a nil
        pointer panic, seen here during rollouts under load). A service with no task left
        is removed safely. Bounded: past the deadline it is removed anyway.
        """
        replicas = ((service["Spec"].get("Mode") or {}).get("Replicated") or {}).get(
            "Replicas", 1)
        if replicas:
            self._scale(service, 0)
        grace = (service["Spec"]["TaskTemplate"].get("ContainerSpec") or {}).get(
            "StopGracePeriod", 10 * 10**9) / 1e9
        deadline = time.monotonic() + grace + _STOP_SLACK
        while time.monotonic() < deadline:
            with self._call("container", str(service["Spec"]["Name"])):
                try:
                    if not self._sapi.tasks(filters={"service": service["ID"]}):
                        return
                except docker.errors.NotFound:
                    return
            time.sleep(0.2)

    def _scale(self, service: Mapping[str, Any], replicas: int) -> None:
        for _ in range(5):  # another writer may bump the version between read and write
            spec = service["Spec"]
            try:
                with self._call("container", str(spec["Name"])):
                    self._sapi.update_service(
                        service["ID"], service["Version"]["Index"],
                        task_template=spec["TaskTemplate"], name=spec["Name"],
                        labels=spec.get("Labels"),
                        mode=docker.types.ServiceMode("replicated", replicas=replicas),
                        networks=spec.get("Networks"),
                        endpoint_spec=cast(Any, spec.get("EndpointSpec")))
                return
            except EngineError as exc:
                if "out of sequence" not in str(exc):
                    raise
                with self._call("container", str(spec["Name"])):
                    service = self._sapi.inspect_service(service["ID"])

    def kill_container(self, name_or_id: str, *, signal: str = "SIGKILL") -> None:
        """Swarm has no signal API. Raises `EngineError`."""
        raise EngineError(f"cannot send {signal} to {name_or_id}: Swarm has no signal API; "
                          "use stop (SIGTERM, grace, SIGKILL) instead")

    def update_container(self, name_or_id: str, *, restart_policy: RestartPolicy | None = None,
                         max_retries: int = 0) -> None:
        """A no-op: Swarm always restarts a pod's task (a changed restart policy would
        replace the running task). Raises `NotManaged`, `ResourceNotFound`."""
        if self._managed_service(name_or_id) is None:
            raise ResourceNotFound(f"service {name_or_id} does not exist")

    def remove_container(self, name_or_id: str, *, force: bool = True) -> None:
        """Remove the pod's service, then the configs no other service uses. Missing
        services are ignored. Raises `NotManaged`."""
        service = self._managed_service(name_or_id)
        if service is None:
            return
        self._wait_tasks_gone(service)
        with self._call("container", name_or_id):
            try:
                self._sapi.remove_service(service["ID"])
            except docker.errors.NotFound:
                return
        container = service["Spec"]["TaskTemplate"].get("ContainerSpec") or {}
        for ref in container.get("Configs") or []:
            try:
                with self._call("container", str(ref.get("ConfigName"))):
                    self._sapi.remove_config(ref["ConfigID"])
            except EngineError:
                continue  # still in use by another pod of the deployment, or gone

    def _managed_service(self, name_or_id: str) -> dict[str, Any] | None:
        with self._call("container", name_or_id):
            try:
                service = cast(dict[str, Any], self._sapi.inspect_service(name_or_id))
            except docker.errors.NotFound:
                return None
        _require_managed("service", name_or_id, service["Spec"].get("Labels"))
        return service

    # -- logs -----------------------------------------------------------------------
    def logs(self, name_or_id: str, *, tail: int | None = None) -> str:
        """The service's logs, and why its task failed if it did. Raises
        `ResourceNotFound`."""
        try:
            lines = [line.text for line in self.log_lines(name_or_id, tail=tail)]
        except ResourceNotFound:
            raise
        except EngineError:  # a task that never started may have no log to stream
            lines = []
        errors = self._task_errors(name_or_id)
        return "\n".join(lines + errors) + ("\n" if lines or errors else "")

    def _task_errors(self, name_or_id: str) -> list[str]:
        """Why the current task failed, else why the newest failed one did (Swarm has
        already started the next one: the error is the one worth reading)."""
        with self._call("container", name_or_id):
            tasks = self._sapi.tasks(filters={"service": name_or_id})
        current = _current(tasks)
        candidates = [current] if current is not None else []
        if current is None or _state(current) != _RUNNING:  # running: the rest is history
            candidates += sorted((t for t in tasks if _state(t) in _FAILED),
                                 key=lambda t: str(t.get("CreatedAt", "")), reverse=True)
        for task in candidates:
            if _err(task):
                return [f"[swarm] task {_state(task)}: {_err(task)}"]
        return []

    def log_lines(self, name_or_id: str, *, tail: int | None = None,
                  since: datetime | None = None) -> list[LogLine]:
        """Lines with the engine's timestamps. Raises `ResourceNotFound`."""
        return list(self._log_stream(name_or_id, tail=tail, since=since, follow=False))

    def follow_logs(self, name_or_id: str, *, tail: int | None = None,
                    since: datetime | None = None) -> Iterator[LogLine]:
        """Yield log lines as they come, until the service is removed."""
        return self._log_stream(name_or_id, tail=tail, since=since, follow=True)

    def _log_stream(self, name: str, *, tail: int | None, since: datetime | None,
                    follow: bool) -> Iterator[LogLine]:
        with self._call("container", name):
            stream = self._sapi.service_logs(
                name, stdout=True, stderr=True, timestamps=True, follow=follow,
                tail="all" if tail is None else tail,
                since=0 if since is None else int(since.timestamp()), is_tty=False)
        return self._service_lines(name, stream, since)

    def _service_lines(self, name: str, stream: Any,
                       since: datetime | None) -> Iterator[LogLine]:
        buffer = b""
        with self._call("container", name):
            for chunk in stream:
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for raw in lines:
                    line = _log_line(raw.decode("utf-8", "replace"))
                    if line is not None and (since is None or line.time >= since):
                        yield line
        if buffer and (line := _log_line(buffer.decode("utf-8", "replace"))) is not None:
            yield line

    # -- what the manager cannot do ---------------------------------------------------
    def events(self, *, labels: Mapping[str, str] | None = None, since: float | None = None,
               until: float | None = None) -> Iterator[EngineEvent]:
        """Service events (create, update, remove), filtered by label. Blocks when `until`
        is None."""
        filters: dict[str, Any] = {"type": ["service"]}
        if labels:
            filters["label"] = _label_filter(labels)
        with self._call("engine", self.where):
            stream = self._sapi.events(since=_docker_time(since), until=_docker_time(until),
                                      filters=filters, decode=True)
        return self._service_events(stream)

    def _service_events(self, stream: Any) -> Iterator[EngineEvent]:
        try:
            with self._call("engine", self.where):
                for raw in stream:
                    actor = raw.get("Actor") or {}
                    attrs = dict(actor.get("Attributes") or {})
                    yield EngineEvent(type="container", action=str(raw.get("Action", "")),
                                      id=str(actor.get("ID", "")), name=attrs.get("name", ""),
                                      labels={}, time=float(raw.get("time", 0)))
        finally:
            stream.close()

    def container_stats(self, name_or_id: str) -> ContainerStats:
        """Not available through a manager. Raises `EngineError`."""
        raise EngineError("resource use of a Swarm task is only known to its node's engine")

    def exec_container(self, name_or_id: str, cmd: Sequence[str], *,
                       tty: bool = False) -> ExecResult:
        """Not available through a manager. Raises `EngineError`."""
        raise EngineError("exec into a Swarm task needs its node's engine "
                          "(`docker -H NODE exec`)")


class _Retrying:
    """The SDK's API client, with the manager's passing refusals retried: a manager that is
    busy (raft, a node just lost or back) answers 500 'context deadline exceeded' or
    'Unavailable' for a moment. Anything else goes through at once."""

    def __init__(self, api: Any) -> None:
        self._api = api

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._api, name)
        if not callable(method):
            return method

        def call(*args: Any, **kwargs: Any) -> Any:
            for attempt in range(_MANAGER_RETRIES):
                try:
                    return method(*args, **kwargs)
                except docker.errors.APIError as exc:
                    text = str(exc.explanation or exc)
                    passing = exc.status_code in (500, 503) and any(
                        mark in text for mark in _PASSING)
                    if not passing or attempt == _MANAGER_RETRIES - 1:
                        raise
                    time.sleep(0.5 * (attempt + 1))
            raise AssertionError("unreachable")

        return call


def _state(task: Mapping[str, Any]) -> str:
    return str((task.get("Status") or {}).get("State", ""))


def _err(task: Mapping[str, Any]) -> str:
    """Why Swarm says the task failed ("" when it does not)."""
    return str((task.get("Status") or {}).get("Err") or "")


def _forgiven(tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The tasks, less the oldest `START_FAILURES_FORGIVEN` that failed before their
    container ran: Swarm retries those, and the pod is still starting."""
    never_ran = sorted((t for t in tasks
                        if _state(t) == "failed" and _err(t).startswith(_NEVER_RAN)),
                       key=lambda t: str(t.get("CreatedAt", "")))
    forgiven = {id(t) for t in never_ran[:START_FAILURES_FORGIVEN]}
    return [t for t in tasks if id(t) not in forgiven]


def _current(tasks: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The task that stands for the pod now: the newest one meant to run, else the
    newest."""
    if not tasks:
        return None
    ordered = sorted(tasks, key=lambda t: str(t.get("CreatedAt", "")))
    wanted = [t for t in ordered if t.get("DesiredState") == _RUNNING]
    return (wanted or ordered)[-1]


def _exit_code(task: Mapping[str, Any]) -> int:
    status = task.get("Status") or {}
    code = (status.get("ContainerStatus") or {}).get("ExitCode")
    if code is not None and (code or _state(task) != "rejected"):
        return int(code)
    return 0 if _state(task) in ("complete", "shutdown") else -1
