"""`MemoryEngine`: a stateful, deterministic `ContainerEngine` with fault injection.

It is a real implementation of the protocol, not a mock: containers, networks,
images, labels, logs, events, host ports and names all live in memory, and the
same contract suite runs against it and against Docker.

What a container "does" comes from a tiny model of its command, enough for
tests to script realistic pods without Docker:

- `sh -c "<script>"` runs statements separated by `;`, `&&` or newlines:
  `echo WORDS`, `sleep N`, `exit N`, `trap 'exit N' TERM`; anything else is a
  long-running server. Without an `exit` the script ends with code 0.
- any other command (a server, the pod runtime) runs until stopped.
- PID-1 semantics as in Docker: SIGTERM is ignored unless trapped, so `stop`
  ends with 137 (killed after the grace period) unless a trap exits first.

Time comes from an injectable `Clock`. With `FakeClock` nothing ever really
sleeps: waiting advances the fake time. Faults (`engine.faults`) override the
model per container name or image (shell-style patterns).
"""

from __future__ import annotations

import fnmatch
import hashlib
import shlex
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol, TypeVar

from orchestrator.engine.base import (
    MANAGED_LABEL,
    ContainerInfo,
    ContainerSpec,
    ContainerStats,
    ContainerStatus,
    EngineEvent,
    ExecResult,
    HealthStatus,
    LogLine,
    NetworkInfo,
    RestartPolicy,
    VolumeInfo,
)
from orchestrator.errors import (
    EngineError,
    EngineUnavailable,
    ImageBuildError,
    ImageNotFound,
    NotManaged,
    PortAllocated,
    ResourceConflict,
    ResourceNotFound,
    SpecError,
)

SIGNALS = {"SIGHUP": 1, "SIGINT": 2, "SIGQUIT": 3, "SIGKILL": 9, "SIGUSR1": 10, "SIGTERM": 15}
_T = TypeVar("_T")
_FOREVER = float("inf")
_POLL = 0.02  # real-time poll of the blocking readers (follow_logs, events, wait)
_FIRST_HOST_PORT = 32768  # Docker's ephemeral range starts here too


# -- time ---------------------------------------------------------------------------


class Clock(Protocol):
    """Where the fake engine gets its time; `sleep` is how it waits."""

    def now(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...


class RealClock:
    """Wall-clock time and real sleeps."""

    def now(self) -> float:
        return time.time()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


class FakeClock:
    """Manual time: `sleep` and `advance` move it forward instantly."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._now = start
        self._lock = threading.Lock()

    def now(self) -> float:
        return self._now

    def sleep(self, seconds: float) -> None:
        self.advance(seconds)

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += max(0.0, seconds)


# -- faults -------------------------------------------------------------------------


@dataclass(frozen=True)
class _ExitFault:
    code: int
    logs: str
    after: float


@dataclass
class Faults:
    """Fault injection for `MemoryEngine`; patterns match a container name or image."""

    engine_down: bool = False
    _exits: list[tuple[str, _ExitFault]] = field(default_factory=list)
    _never_healthy: list[tuple[str, HealthStatus]] = field(default_factory=list)
    _slow: list[tuple[str, float]] = field(default_factory=list)
    _create: list[tuple[str, EngineError]] = field(default_factory=list)
    _build: list[tuple[str, str]] = field(default_factory=list)

    def exit_after_start(
        self, pattern: str, *, code: int = 1, logs: str = "", after: float = 0.0
    ) -> None:
        """Matching containers print `logs` and exit with `code`, `after` seconds after start."""
        self._exits.append((pattern, _ExitFault(code, logs, after)))

    def never_healthy(self, pattern: str, *, status: HealthStatus = "unhealthy") -> None:
        """Matching containers run but report `status` forever instead of healthy."""
        self._never_healthy.append((pattern, status))

    def slow_start(self, pattern: str, seconds: float) -> None:
        """Matching containers report health `starting` for `seconds` after start."""
        self._slow.append((pattern, seconds))

    def create_failure(self, pattern: str, error: EngineError | None = None) -> None:
        """`run_container` of a matching spec raises `error` and creates nothing."""
        self._create.append((pattern, error or EngineError(f"injected create failure: {pattern}")))

    def build_failure(self, tag_pattern: str, log: str = "injected build failure") -> None:
        """`build_image` of a matching tag raises `ImageBuildError` with `log`."""
        self._build.append((tag_pattern, log))

    def clear(self) -> None:
        """Remove every fault (engine_down included)."""
        self.engine_down = False
        for faults in (self._exits, self._never_healthy, self._slow, self._create, self._build):
            faults.clear()

    def exit_for(self, spec: ContainerSpec) -> _ExitFault | None:
        return _first(self._exits, spec)

    def unhealthy_for(self, spec: ContainerSpec) -> HealthStatus | None:
        return _first(self._never_healthy, spec)

    def slow_for(self, spec: ContainerSpec) -> float:
        return _first(self._slow, spec) or 0.0

    def create_error_for(self, spec: ContainerSpec) -> EngineError | None:
        return _first(self._create, spec)

    def build_log_for(self, tag: str) -> str | None:
        return next((log for pat, log in self._build if fnmatch.fnmatchcase(tag, pat)), None)


def _first(rules: list[tuple[str, _T]], spec: ContainerSpec) -> _T | None:
    for pattern, value in rules:
        if fnmatch.fnmatchcase(spec.name, pattern) or fnmatch.fnmatchcase(spec.image, pattern):
            return value
    return None


# -- the program model --------------------------------------------------------------


@dataclass(frozen=True)
class _Program:
    """What a container does, laid out in time relative to its start."""

    lines: tuple[tuple[float, str], ...]  # (seconds after start, log line)
    exit_at: float  # seconds after start; inf: runs until stopped
    exit_code: int
    term_exit: int | None  # exit code when SIGTERM is trapped, else None (ignored)


def _program(spec: ContainerSpec, faults: Faults) -> _Program:
    fault = faults.exit_for(spec)
    if fault is not None:
        lines = tuple((fault.after, line) for line in fault.logs.splitlines())
        return _Program(lines, fault.after, fault.code, None)
    argv = list(spec.entrypoint or ()) + list(spec.command)
    if len(argv) == 3 and argv[0] in ("sh", "/bin/sh") and argv[1] == "-c":
        return _script(argv[2])
    if argv and argv[0] in ("sleep", "/bin/sleep") and len(argv) == 2:
        return _script(f"sleep {argv[1]}")
    return _Program((), _FOREVER, 0, None)


def _script(script: str) -> _Program:
    elapsed, lines, term_exit = 0.0, [], None
    for statement in _statements(script):
        words = shlex.split(statement)
        if not words:
            continue
        verb, args = words[0], words[1:]
        if verb == "echo":
            lines.append((elapsed, " ".join(args)))
        elif verb == "sleep":
            elapsed += _seconds(args[0] if args else "0")
        elif verb == "exit":
            return _Program(tuple(lines), elapsed, int(args[0]) if args else 0, term_exit)
        elif verb == "trap" and len(args) == 2 and args[1] in ("TERM", "SIGTERM"):
            term_exit = int(args[0].split()[1]) if args[0].startswith("exit ") else 0
        else:
            return _Program(tuple(lines), _FOREVER, 0, term_exit)  # a server: runs on
    return _Program(tuple(lines), elapsed, 0, term_exit)


def _statements(script: str) -> list[str]:
    return [part.strip() for chunk in script.splitlines() for part in
            chunk.replace("&&", ";").split(";")]


def _seconds(text: str) -> float:
    return _FOREVER if text in ("inf", "infinity") else float(text)


# -- state --------------------------------------------------------------------------


@dataclass
class _Container:
    id: str
    spec: ContainerSpec
    program: _Program
    health_override: HealthStatus | None
    healthy_after: float
    started: float
    ip: dict[str, str]
    ports: dict[int, tuple[str, int]]
    status: ContainerStatus = "running"
    exit_code: int | None = None
    ended: float | None = None
    node: str = ""
    extra_logs: list[tuple[float, str]] = field(default_factory=list)


@dataclass(frozen=True)
class _Image:
    id: str
    labels: Mapping[str, str]


class MemoryEngine:
    """An in-memory `ContainerEngine` with fault injection (`engine.faults`).

    Health: a running container reports `healthy` (after a `slow_start`
    delay, or never with `never_healthy`); set `default_health=None` to mimic
    an image without HEALTHCHECK. Restart policies are recorded, not enacted.

    `nodes`: pretend to be an engine of several nodes (as Swarm is): each container goes to
    the node with the fewest running containers among those its `constraints` allow
    (`node.hostname==NAME` or `!=NAME`), and reports it in `ContainerInfo.node`. Without
    nodes, constraints are ignored, as on one Docker host.
    """

    def __init__(
        self,
        *,
        clock: Clock | None = None,
        default_health: HealthStatus | None = "healthy",
        images: Mapping[str, Mapping[str, str]] | None = None,
        nodes: Sequence[str] = (),
    ) -> None:
        self.nodes = tuple(nodes)
        self.clock: Clock = clock or RealClock()
        self.faults = Faults()
        self.default_health = default_health
        self.registry: dict[str, Mapping[str, str]] = {}  # what pull_image can fetch
        self._lock = threading.RLock()
        self._containers: dict[str, _Container] = {}
        self._networks: dict[str, NetworkInfo] = {}
        self._volumes: dict[str, VolumeInfo] = {}
        self._images: dict[str, _Image] = {}
        self._events: list[EngineEvent] = []
        self._serial = 0
        self._engine_id = f"memory-engine-{uuid.uuid4().hex[:12]}"  # one engine, one id
        self.gpus: list[str] = []  # fake GPU device ids (`gpu_devices`)
        for ref, labels in (images or {}).items():
            self.add_image(ref, labels)

    # -- helpers -------------------------------------------------------------------
    def _up(self) -> None:
        if self.faults.engine_down:
            raise EngineUnavailable(
                "no engine answers (MemoryEngine.faults.engine_down is set): "
                "start a Docker engine or point DOCKER_HOST at one"
            )

    def _new_id(self, seed: str) -> str:
        self._serial += 1
        return hashlib.sha256(f"{self._serial}:{seed}".encode()).hexdigest()

    def _emit(self, kind: str, action: str, obj_id: str, name: str,
              labels: Mapping[str, str], exit_code: int | None = None) -> None:
        self._events.append(EngineEvent(
            type=kind, action=action, id=obj_id, name=name, labels=dict(labels),
            time=self.clock.now(), exit_code=exit_code,
        ))

    def add_image(self, ref: str, labels: Mapping[str, str] | None = None) -> str:
        """Make `ref` a local image (test setup); returns its id."""
        with self._lock:
            image = _Image("sha256:" + self._new_id(ref), dict(labels or {}))
            self._images[_normal(ref)] = image
            return image.id

    # -- engine ----------------------------------------------------------------------
    def ping(self) -> None:
        """Raises `EngineUnavailable` when `faults.engine_down` is set."""
        self._up()

    def container_spec(self, name_or_id: str) -> ContainerSpec:
        """The spec a container was created with (what a test checks: GPU requests, env)."""
        with self._lock:
            return self._get(name_or_id).spec

    def gpu_devices(self) -> list[str]:
        """The fake GPUs set in `self.gpus`."""
        self._up()
        return list(self.gpus)

    def engine_id(self) -> str:
        self._up()
        return self._engine_id

    def close(self) -> None:
        """Nothing to release; the state stays readable."""

    # -- images ----------------------------------------------------------------------
    def image_exists(self, ref: str) -> bool:
        self._up()
        return _normal(ref) in self._images or ref in {i.id for i in self._images.values()}

    def _image(self, ref: str) -> _Image:
        self._up()
        image = self._images.get(_normal(ref))
        if image is None:
            image = next((i for i in self._images.values() if i.id == ref), None)
        if image is None:
            raise ImageNotFound(
                f"image {ref!r} is not available locally; build or import it first", image=ref
            )
        return image

    def image_labels(self, ref: str) -> Mapping[str, str]:
        """Raises `ImageNotFound`."""
        return dict(self._image(ref).labels)

    def pull_image(self, ref: str) -> None:
        """Fetch from `self.registry`. Raises `ImageNotFound` when it is not there."""
        self._up()
        if _normal(ref) not in {_normal(r) for r in self.registry}:
            raise ImageNotFound(f"cannot pull image {ref!r}: no registry has it", image=ref)
        labels = next(v for r, v in self.registry.items() if _normal(r) == _normal(ref))
        self.add_image(ref, labels)

    def build_image(
        self,
        context: Path,
        *,
        tag: str,
        dockerfile: str = "Dockerfile",
        labels: Mapping[str, str] | None = None,
        buildargs: Mapping[str, str] | None = None,
    ) -> str:
        """Check the Dockerfile and its base image, then record the image.

        Raises:
            ImageBuildError: no Dockerfile, an unknown base image, or an injected failure.
        """
        self._up()
        path = context / dockerfile
        if not path.is_file():
            raise ImageBuildError(f"no {dockerfile} in build context {context}")
        text = path.read_text()
        base = _from_image(text)
        if base and not self.image_exists(base):
            raise ImageBuildError(
                f"building {tag!r} failed",
                log_tail=f"Step 1 : FROM {base}\npull access denied for {base}",
            )
        failure = self.faults.build_log_for(tag)
        if failure is not None:
            raise ImageBuildError(f"building {tag!r} failed", log_tail=failure)
        inherited = dict(self._image(base).labels) if base else {}
        return self.add_image(tag, {**inherited, **_dockerfile_labels(text), **(labels or {})})

    def import_image(self, tarball: Path, *, tag: str, changes: tuple[str, ...] = ()) -> str:
        """Raises `ImageBuildError` when the tarball is missing."""
        self._up()
        if not tarball.is_file():
            raise ImageBuildError(f"cannot import {tarball}: no such file")
        return self.add_image(tag, _dockerfile_labels("\n".join(changes)))

    def tag_image(self, ref: str, tag: str) -> None:
        """Raises `ImageNotFound`."""
        image = self._image(ref)
        with self._lock:
            self._images[_normal(tag)] = image

    def image_tags(self, labels: Mapping[str, str]) -> list[str]:
        """Tags of the local images whose labels match, sorted."""
        self._up()
        with self._lock:
            return sorted(ref for ref, image in self._images.items()
                          if all(image.labels.get(k) == v for k, v in labels.items()))

    def remove_image(self, ref: str, *, force: bool = False) -> None:
        """Untag `ref`; missing images are ignored.

        Raises:
            ResourceConflict: a container uses it and `force` is False.
        """
        self._up()
        with self._lock:
            image = self._images.get(_normal(ref))
            if image is None:
                return
            users = [c.spec.name for c in self._containers.values()
                     if self._images.get(_normal(c.spec.image)) == image]
            if users and not force:
                raise ResourceConflict(f"image {ref!r} is used by containers {users}")
            del self._images[_normal(ref)]

    # -- networks --------------------------------------------------------------------
    def create_network(self, name: str, *, labels: Mapping[str, str]) -> NetworkInfo:
        """Raises `ResourceConflict` when the name is taken."""
        self._up()
        with self._lock:
            if name in self._networks:
                raise ResourceConflict(f"network {name!r} conflicts: network with name {name} "
                                       "already exists")
            net = NetworkInfo(id=self._new_id(name), name=name, labels=dict(labels))
            self._networks[name] = net
            self._emit("network", "create", net.id, name, {})  # Docker omits labels here
            return net

    def _network(self, name_or_id: str) -> NetworkInfo | None:
        if name_or_id in self._networks:
            return self._networks[name_or_id]
        return next((n for n in self._networks.values() if n.id.startswith(name_or_id)), None)

    def remove_network(self, name_or_id: str) -> None:
        """Raises `NotManaged`, or `ResourceConflict` while containers are attached."""
        self._up()
        with self._lock:
            net = self._network(name_or_id)
            if net is None:
                return
            _require_managed("network", name_or_id, net.labels)
            for c in self._live():
                if net.name in c.ip and c.spec.labels.get(MANAGED_LABEL) != "true":
                    del c.ip[net.name]  # an orchestrating process's own container
            attached = [c.spec.name for c in self._live() if net.name in c.ip]
            if attached:
                raise ResourceConflict(
                    f"network {net.name!r} has active endpoints: {', '.join(attached)}"
                )
            del self._networks[net.name]
            self._emit("network", "destroy", net.id, net.name, {})

    def connect_network(self, network: str, container: str) -> None:
        """Raises `NotManaged` (the network) or `ResourceNotFound`."""
        self._up()
        c = self._get(container)
        with self._lock:
            net = self._network(network)
            if net is None:
                raise ResourceNotFound(f"network {network!r} not found")
            _require_managed("network", network, net.labels)
            if net.name not in c.ip:
                c.ip.update(self._assign_ip(replace(c.spec, network=net.name)))

    def list_networks(self, labels: Mapping[str, str]) -> list[NetworkInfo]:
        self._up()
        with self._lock:
            return sorted((n for n in self._networks.values() if _matches(n.labels, labels)),
                          key=lambda n: n.name)

    # -- volumes (records: the rollout history) ----------------------------------------
    def create_volume(self, name: str, *, labels: Mapping[str, str]) -> VolumeInfo:
        """An existing name is handed back unchanged, as Docker does."""
        self._up()
        with self._lock:
            return self._volumes.setdefault(name, VolumeInfo(name=name, labels=dict(labels)))

    def list_volumes(self, labels: Mapping[str, str]) -> list[VolumeInfo]:
        self._up()
        with self._lock:
            return sorted((v for v in self._volumes.values() if _matches(v.labels, labels)),
                          key=lambda v: v.name)

    def remove_volume(self, name: str) -> None:
        """Raises `NotManaged`."""
        self._up()
        with self._lock:
            volume = self._volumes.get(name)
            if volume is None:
                return
            _require_managed("volume", name, volume.labels)
            del self._volumes[name]

    # -- containers ------------------------------------------------------------------
    def run_container(self, spec: ContainerSpec) -> ContainerInfo:
        """Raises `ImageNotFound`, `ResourceConflict`, `PortAllocated`, `ResourceNotFound`
        (unknown network) or an injected `EngineError`; a failed start leaves nothing."""
        self._up()
        with self._lock:
            self._check_runnable(spec)
            now = self.clock.now()
            cid = self._new_id(spec.name)
            self._emit("container", "create", cid, spec.name, spec.labels)
            container = _Container(
                id=cid, spec=spec, program=_program(spec, self.faults),
                health_override=self.faults.unhealthy_for(spec),
                healthy_after=now + self.faults.slow_for(spec), started=now,
                ip=self._assign_ip(spec), ports=self._assign_ports(spec),
                node=self._place(spec),
            )
            self._containers[cid] = container
            self._emit("container", "start", cid, spec.name, spec.labels)
            return self._info(container)

    def _place(self, spec: ContainerSpec) -> str:
        """The allowed node with the fewest running containers ("" without nodes).

        Raises:
            EngineError: no node satisfies the constraints (Swarm would leave the task
                pending).
        """
        if not self.nodes:
            return ""
        allowed = [n for n in self.nodes if all(_satisfies(n, c) for c in spec.constraints)]
        if not allowed:
            raise EngineError(f"no node satisfies {list(spec.constraints)} for {spec.name}")
        load = {n: sum(1 for c in self._live() if c.node == n) for n in allowed}
        return min(allowed, key=lambda n: (load[n], self.nodes.index(n)))

    def _check_runnable(self, spec: ContainerSpec) -> None:
        error = self.faults.create_error_for(spec)
        if error is not None:
            raise error
        self._image(spec.image)
        if any(c.spec.name == spec.name for c in self._containers.values()):
            raise ResourceConflict(
                f"container {spec.name!r} conflicts: the name is already in use"
            )
        if spec.network and spec.network not in (*self._networks, "host", "bridge"):
            raise ResourceNotFound(f"network {spec.network!r} not found")
        self._check_ports(spec)

    def _check_ports(self, spec: ContainerSpec) -> None:
        taken = {(ip, port) for c in self._live() for ip, port in c.ports.values()}
        for binding in spec.ports:
            port = binding.host_port
            if port is None:
                continue
            clash = any(p == port and (ip == binding.host_ip or "0.0.0.0" in (ip, binding.host_ip))
                        for ip, p in taken)
            if clash:
                raise PortAllocated(
                    f"host port {port} is already allocated; free it or let the engine "
                    "choose one (host_port=None)",
                    port=port,
                )

    def _assign_ports(self, spec: ContainerSpec) -> dict[int, tuple[str, int]]:
        used = {p for c in self._live() for _, p in c.ports.values()}
        ports: dict[int, tuple[str, int]] = {}
        next_port = _FIRST_HOST_PORT
        for binding in spec.ports:
            port = binding.host_port
            if port is None:
                while next_port in used:
                    next_port += 1
                port = next_port
            used.add(port)
            ports[binding.container_port] = (binding.host_ip, port)
        return ports

    def _assign_ip(self, spec: ContainerSpec) -> dict[str, str]:
        if spec.network == "host":
            return {}  # host networking: no address of its own, as Docker reports it
        network = spec.network or "bridge"
        index = sorted([*self._networks, "bridge"]).index(network) + 17
        host = 2 + sum(1 for c in self._containers.values() if network in c.ip)
        return {network: f"172.{index % 256}.{host // 256}.{host % 256}"}

    def _live(self) -> list[_Container]:
        for c in self._containers.values():
            self._refresh(c)
        return [c for c in self._containers.values() if c.status == "running"]

    def _refresh(self, c: _Container) -> None:
        """Apply the program's scheduled exit once the clock passes it."""
        if c.status == "running" and self.clock.now() >= c.started + c.program.exit_at:
            self._end(c, c.program.exit_code, at=c.started + c.program.exit_at)

    def _end(self, c: _Container, code: int, *, at: float | None = None) -> None:
        c.status, c.exit_code = "exited", code
        c.ended = self.clock.now() if at is None else at
        c.ports, c.ip = {}, {}  # Docker clears both when a container stops
        self._emit("container", "die", c.id, c.spec.name, c.spec.labels, exit_code=code)

    def _find(self, name_or_id: str) -> _Container | None:
        with self._lock:
            for c in self._containers.values():
                if c.spec.name == name_or_id or c.id.startswith(name_or_id):
                    self._refresh(c)
                    return c
            return None

    def _get(self, name_or_id: str) -> _Container:
        self._up()
        c = self._find(name_or_id)
        if c is None:
            raise ResourceNotFound(f"container {name_or_id!r} not found")
        return c

    def _info(self, c: _Container) -> ContainerInfo:
        self._refresh(c)
        return ContainerInfo(
            id=c.id, name=c.spec.name, image=c.spec.image, labels=dict(c.spec.labels),
            status=c.status, exit_code=c.exit_code, health=self._health(c),
            ip_addresses=dict(c.ip), ports=dict(c.ports),
            started_at=datetime.fromtimestamp(c.started, UTC),
            hostname=c.spec.hostname or c.id[:12], env=dict(c.spec.env), node=c.node,
        )

    def _health(self, c: _Container) -> HealthStatus | None:
        if c.status != "running":
            return None
        if c.health_override is not None:
            return c.health_override
        if self.default_health is None:
            return None
        return "starting" if self.clock.now() < c.healthy_after else self.default_health

    def inspect_container(self, name_or_id: str) -> ContainerInfo:
        """Raises `ResourceNotFound`."""
        with self._lock:
            return self._info(self._get(name_or_id))

    def list_containers(self, labels: Mapping[str, str], *,
                        brief: bool = False) -> list[ContainerInfo]:
        """`brief` changes nothing here: every field is at hand."""
        self._up()
        with self._lock:
            return sorted((self._info(c) for c in self._containers.values()
                           if _matches(c.spec.labels, labels)), key=lambda c: c.name)

    def _timed_lines(self, c: _Container) -> list[tuple[float, str]]:
        horizon = c.ended if c.ended is not None else self.clock.now()
        timed = [(c.started + t, line) for t, line in c.program.lines] + c.extra_logs
        return [(at, line) for at, line in sorted(timed, key=lambda x: x[0]) if at <= horizon]

    def _visible_lines(self, c: _Container) -> list[str]:
        return [line for _, line in self._timed_lines(c)]

    def log_lines(self, name_or_id: str, *, tail: int | None = None,
                  since: datetime | None = None) -> list[LogLine]:
        """Raises `ResourceNotFound`."""
        with self._lock:
            timed = _after(self._timed_lines(self._get(name_or_id)), since)
        timed = timed[-tail:] if tail else ([] if tail == 0 else timed)
        return [LogLine(datetime.fromtimestamp(at, UTC), line) for at, line in timed]

    def logs(self, name_or_id: str, *, tail: int | None = None) -> str:
        """Raises `ResourceNotFound`."""
        with self._lock:
            lines = self._visible_lines(self._get(name_or_id))
        lines = lines[-tail:] if tail else ([] if tail == 0 else lines)
        return "".join(line + "\n" for line in lines)

    def follow_logs(self, name_or_id: str, *, tail: int | None = None,
                    since: datetime | None = None) -> Iterator[LogLine]:
        """Raises `ResourceNotFound` (at once, not on first iteration)."""
        c = self._get(name_or_id)
        with self._lock:
            seen = len(_after(self._timed_lines(c), since))
        start = max(0, seen - tail) if tail is not None else 0
        return self._follow(c, start, since)

    def _follow(self, c: _Container, start: int, since: datetime | None) -> Iterator[LogLine]:
        sent = start
        while True:
            with self._lock:
                self._refresh(c)
                timed, running = _after(self._timed_lines(c), since), c.status == "running"
            for at, line in timed[sent:]:
                yield LogLine(datetime.fromtimestamp(at, UTC), line)
            sent = len(timed)
            if not running:
                return
            self.clock.sleep(self._step(c))

    def _step(self, c: _Container) -> float:
        """How long a blocked reader waits: to the next scheduled change, or a short poll."""
        now = self.clock.now()
        upcoming = [c.started + t for t, _ in c.program.lines] + [c.started + c.program.exit_at]
        later = [t - now for t in upcoming if t > now]
        if isinstance(self.clock, RealClock):
            return min([_POLL, *later])  # other threads may change state meanwhile
        return min(later) if later else _POLL  # fake time: jump to the next change

    def append_log(self, name_or_id: str, line: str) -> None:
        """Test hook: the container writes `line` now."""
        with self._lock:
            c = self._get(name_or_id)
            c.extra_logs.append((self.clock.now(), line))

    def wait_container(self, name_or_id: str, *, timeout: float | None = None) -> int:
        """Raises `ResourceNotFound`, or `TimeoutError` when it is still running at the deadline."""
        c = self._get(name_or_id)
        deadline = None if timeout is None else self.clock.now() + timeout
        while True:
            with self._lock:
                self._refresh(c)
                if c.exit_code is not None:
                    return c.exit_code
            now = self.clock.now()
            if deadline is not None and now >= deadline:
                raise TimeoutError(f"{name_or_id} still running after {timeout}s")
            step = self._step(c)
            self.clock.sleep(step if deadline is None else min(step, deadline - now))

    def stop_container(self, name_or_id: str, *, grace: float = 10.0) -> None:
        """TERM (ignored unless trapped, as for PID 1), then KILL. Raises `NotManaged`."""
        with self._lock:
            c = self._managed(name_or_id)
            if c is None or c.status != "running":
                return
            self._emit("container", "kill", c.id, c.spec.name, c.spec.labels)
            trapped = c.program.term_exit
            self._end(c, trapped if trapped is not None else 128 + SIGNALS["SIGKILL"])
            self._emit("container", "stop", c.id, c.spec.name, c.spec.labels)

    def kill_container(self, name_or_id: str, *, signal: str = "SIGKILL") -> None:
        """Raises `NotManaged`; unknown signals raise `EngineError`."""
        number = SIGNALS.get(signal.upper() if signal.upper().startswith("SIG")
                             else "SIG" + signal.upper())
        if number is None:
            raise EngineError(f"invalid signal: {signal}")
        with self._lock:
            c = self._managed(name_or_id)
            if c is None or c.status != "running":
                return
            self._emit("container", "kill", c.id, c.spec.name, c.spec.labels)
            if number == SIGNALS["SIGKILL"]:
                self._end(c, 128 + number)
            elif number == SIGNALS["SIGTERM"] and c.program.term_exit is not None:
                self._end(c, c.program.term_exit)

    def update_container(
        self,
        name_or_id: str,
        *,
        restart_policy: RestartPolicy | None = None,
        max_retries: int = 0,
    ) -> None:
        """Recorded on the container's spec (not enacted). Raises `NotManaged`."""
        with self._lock:
            c = self._managed(name_or_id)
            if c is None:
                raise ResourceNotFound(f"container {name_or_id} does not exist")
            if restart_policy is not None:
                c.spec = replace(c.spec, restart_policy=restart_policy,
                                 restart_max_retries=max_retries)

    def remove_container(self, name_or_id: str, *, force: bool = True) -> None:
        """Raises `NotManaged`, or `ResourceConflict` for a running one without `force`."""
        with self._lock:
            c = self._managed(name_or_id)
            if c is None:
                return
            if c.status == "running":
                if not force:
                    raise ResourceConflict(f"container {c.spec.name!r} is running; stop it "
                                           "first or remove with force")
                self._emit("container", "kill", c.id, c.spec.name, c.spec.labels)
                self._end(c, 128 + SIGNALS["SIGKILL"])
            del self._containers[c.id]
            self._emit("container", "destroy", c.id, c.spec.name, c.spec.labels)

    def _managed(self, name_or_id: str) -> _Container | None:
        self._up()
        c = self._find(name_or_id)
        if c is not None:
            _require_managed("container", name_or_id, c.spec.labels)
        return c

    def add_unmanaged_container(self, name: str, image: str) -> str:
        """Test hook: a running container that some other tool created (no managed label)."""
        with self._lock:
            self._image(image)
            cid = self._new_id(name)
            self._containers[cid] = _Container(
                id=cid, spec=ContainerSpec(name=name, image=image), program=_script("sleep inf"),
                health_override=None, healthy_after=self.clock.now(), started=self.clock.now(),
                ip={}, ports={},
            )
            return cid

    def add_unmanaged_network(self, name: str) -> str:
        """Test hook: a network some other tool created (no managed label)."""
        with self._lock:
            net = NetworkInfo(id=self._new_id(name), name=name, labels={})
            self._networks[name] = net
            return net.id

    # -- events ----------------------------------------------------------------------
    def events(
        self,
        *,
        labels: Mapping[str, str] | None = None,
        since: float | None = None,
        until: float | None = None,
    ) -> Iterator[EngineEvent]:
        """Recorded events in order; follows new ones when `until` is None."""
        self._up()
        return self._event_stream(labels or {}, since, until)

    def _event_stream(
        self, labels: Mapping[str, str], since: float | None, until: float | None
    ) -> Iterator[EngineEvent]:
        sent = 0
        while True:
            with self._lock:
                self._live()  # scheduled exits become `die` events
                batch, sent = self._events[sent:], len(self._events)
            for event in batch:
                if until is not None and event.time > until:
                    return
                if (since is None or event.time >= since) and _matches(event.labels, labels):
                    yield event
            if until is not None and self.clock.now() > until:
                return
            self.clock.sleep(_POLL)

    # -- exec and stats ----------------------------------------------------------------
    HOST_MEMORY = 8 * 1024**3  # the "host memory" a container without a limit reports
    DEFAULT_MEMORY = 8 * 1024**2  # what a running container uses unless `set_usage` says

    def container_stats(self, name_or_id: str) -> ContainerStats:
        """Raises `ResourceNotFound`. A running container uses what `set_usage` gave it
        (default: no CPU, `DEFAULT_MEMORY`); a stopped one reports all zeros, as Docker."""
        with self._lock:
            c = self._get(name_or_id)
            if c.status != "running":
                return ContainerStats(0.0, 0, 0)
            cpu, memory = self._usage_table().get(c.id, (0.0, self.DEFAULT_MEMORY))
            return ContainerStats(cpu, memory, c.spec.memory_bytes or self.HOST_MEMORY)

    def set_usage(self, name_or_id: str, *, cpu_percent: float, memory_bytes: int) -> None:
        """Test hook: what `container_stats` reports for a container from now on."""
        with self._lock:
            self._usage_table()[self._get(name_or_id).id] = (cpu_percent, memory_bytes)

    def _usage_table(self) -> dict[str, tuple[float, int]]:
        if not hasattr(self, "_usage"):
            self._usage: dict[str, tuple[float, int]] = {}
        return self._usage

    def exec_container(self, name_or_id: str, cmd: Sequence[str], *,
                       tty: bool = False) -> ExecResult:
        """Runs `cmd` through the program model: `echo`, `exit N`, `sh -c SCRIPT` of
        those (sleeps take no time); any other command is not found (exit 127).

        Raises:
            NotManaged, ResourceNotFound, ResourceConflict: the container does not run.
        """
        with self._lock:
            c = self._managed(name_or_id)
            if c is None:
                raise ResourceNotFound(f"container {name_or_id!r} not found")
            if c.status != "running":
                raise ResourceConflict(f"container {name_or_id!r} is not running")
        argv = list(cmd)
        script = argv[2] if len(argv) == 3 and argv[0] in ("sh", "/bin/sh") \
            and argv[1] == "-c" else shlex.join(argv)
        program = _script(script)
        lines = [line for _, line in program.lines]
        code = program.exit_code
        if program.exit_at == _FOREVER:  # a verb the model does not know
            lines.append(f"sh: {shlex.split(script)[0] if script.strip() else ''}: not found")
            code = 127
        end = "\r\n" if tty else "\n"
        return ExecResult(code, "".join(line + end for line in lines))


# -- pure helpers -------------------------------------------------------------------


def _normal(ref: str) -> str:
    """`name` and `name:latest` are the same image."""
    last = ref.rsplit("/", 1)[-1]
    return ref if ":" in last or "@" in last else ref + ":latest"


def _matches(have: Mapping[str, str], want: Mapping[str, str]) -> bool:
    return all(have.get(k) == v for k, v in want.items())


def _require_managed(kind: str, name: str, labels: Mapping[str, str]) -> None:
    if labels.get(MANAGED_LABEL) != "true":
        raise NotManaged(
            f"refusing to touch {kind} {name!r}: it lacks the label {MANAGED_LABEL}=true, "
            "so this project did not create it"
        )


def _from_image(dockerfile: str) -> str | None:
    for line in dockerfile.splitlines():
        words = line.split()
        if words and words[0].upper() == "FROM" and len(words) > 1:
            image = words[1]
            return None if "$" in image or image == "scratch" else image
    return None


def _dockerfile_labels(text: str) -> dict[str, str]:
    labels: dict[str, str] = {}
    for line in text.splitlines():
        if not line.lstrip().upper().startswith("LABEL"):
            continue  # other lines may end in a `\` continuation that shlex rejects
        words = shlex.split(line)
        if words and words[0].upper() == "LABEL":
            for pair in words[1:]:
                key, _, value = pair.partition("=")
                labels[key] = value
    return labels


def _after(timed: list[tuple[float, str]], since: datetime | None) -> list[tuple[float, str]]:
    """The lines written at or after `since` (all of them for None), compared at the
    microsecond resolution of the times `log_lines` reports."""
    if since is None:
        return timed
    return [(at, line) for at, line in timed if datetime.fromtimestamp(at, UTC) >= since]


def _satisfies(node: str, constraint: str) -> bool:
    """`node.hostname==NAME` / `!=NAME` (the fake knows nodes by name only).

    Raises:
        SpecError: any other constraint.
    """
    for op, wanted in (("==", True), ("!=", False)):
        key, found, value = constraint.partition(op)
        if found and key.strip() == "node.hostname":
            return (node == value.strip()) is wanted
    raise SpecError(f"the in-memory engine understands only node.hostname==/!= "
                    f"constraints, not {constraint!r}", field="constraints")
