"""The Docker adapter: `ContainerEngine` on a real Docker engine.

This is the only module in the project that imports `docker`. It speaks the
SDK's low-level `APIClient` (plain dicts, one HTTP call per method), and every
docker-py / requests exception crosses into the project's own hierarchy at one
choke point, `_translate`, chained with `raise ... from ...`.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, cast

import docker
import docker.errors
import docker.types
import requests.exceptions
from docker.utils import parse_repository_tag

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
)

_Subject = Literal["image", "container", "network", "engine", "volume"]

_HOW_TO_FIX = (
    "start a Docker engine (e.g. `sudo systemctl start docker`, or `sudo dockerd &`) "
    "or point DOCKER_HOST at a running one (e.g. DOCKER_HOST=unix:///var/run/docker.sock)"
)
_PORT_RE = re.compile(
    r"(?:Bind for|listen tcp\d?)\s+\S*:(\d+)(?:\s+failed)?:\s*"
    r"(?:port is already allocated|bind: address already in use)"
)
_PORT_TAKEN = ("port is already allocated", "address already in use")
_BUILD_TAIL_LINES = 30
_HEALTH_STATES = ("starting", "healthy", "unhealthy")
_DEFAULT_HOST = "unix:///var/run/docker.sock"
# Keys Docker puts into a container event's attributes next to the labels.
_EVENT_NON_LABELS = frozenset({"name", "image", "exitCode", "signal", "execID", "execDuration"})


class DockerEngine:
    """`ContainerEngine` on a Docker engine reached through docker-py.

    Use `DockerEngine.from_env()` to honour DOCKER_HOST, DOCKER_TLS_VERIFY and
    DOCKER_CERT_PATH exactly as `docker.from_env` does, or pass a ready
    `docker.DockerClient` (tests point one at a bogus socket).
    """

    def __init__(self, client: docker.DockerClient, *, where: str | None = None) -> None:
        """Wrap `client`; `where` is the DOCKER_HOST it talks to, for error messages."""
        self._client = client
        self._api = client.api
        self._where = where or os.environ.get("DOCKER_HOST", _DEFAULT_HOST)
        self._socket = _unix_socket_path(self._where)
        self._log_driver: str | None = None  # the engine's default, asked once

    @classmethod
    def from_env(
        cls,
        environment: Mapping[str, str] | None = None,
        *,
        timeout: int = 60,
        version: str | None = None,
    ) -> DockerEngine:
        """Connect like `docker.from_env`.

        `version=None` negotiates the API version, which contacts the engine
        at once; pass e.g. "1.41" to defer the first contact to the first call.

        Raises:
            EngineUnavailable: no engine answers at DOCKER_HOST / the default socket.
            EngineError: the environment is malformed (e.g. bad TLS settings).
        """
        env = dict(environment) if environment is not None else None
        where = (env if env is not None else os.environ).get("DOCKER_HOST", _DEFAULT_HOST)
        if version is None:
            _check_socket(_unix_socket_path(where), where)
        with _translate("engine", where, where=where):
            client = docker.from_env(environment=env, timeout=timeout, version=version or "auto")
        return cls(client, where=where)

    @property
    def where(self) -> str:
        """The engine address (DOCKER_HOST) this adapter talks to."""
        return self._where

    def ping(self) -> None:
        """Raises `EngineUnavailable` unless the engine answers."""
        with self._call("engine", self.where):
            self._api.ping()

    def engine_id(self) -> str:
        """Docker's `Info.ID`. Raises `EngineUnavailable`."""
        with self._call("engine", self.where):
            return str(self._api.info()["ID"])

    def close(self) -> None:
        self._client.close()

    def gpu_devices(self) -> list[str]:
        """The engine's NVIDIA GPUs, as device ids ("0", "1", ...): `ORCHESTRATOR_GPUS`
        (comma-separated ids) when set, for an engine on another host; else, for an engine
        on this host (a unix socket), the /dev/nvidia<N> device files. Empty: no GPU (no
        machine of this project has one).

        Why not `docker info`: its Runtimes list `nvidia` only with the legacy runtime, and
        `--gpus` works without it; the device files are what the NVIDIA hook hands over."""
        override = os.environ.get("ORCHESTRATOR_GPUS", "").strip()
        if override:
            return [d.strip() for d in override.split(",") if d.strip()]
        if self._socket is None:
            return []
        return _nvidia_devices(Path("/dev"))

    @contextmanager
    def _call(self, subject: _Subject, name: str) -> Iterator[None]:
        # docker-py leaks the socket of a failed unix connect (a ResourceWarning),
        # so a missing socket file is reported before any connection attempt.
        _check_socket(self._socket, self._where)
        with _translate(subject, name, where=self._where):
            yield

    # -- images ---------------------------------------------------------------------
    def image_exists(self, ref: str) -> bool:
        """Whether the image is present locally. Raises `EngineUnavailable`."""
        try:
            self._inspect_image(ref)
        except ImageNotFound:
            return False
        return True

    def image_labels(self, ref: str) -> Mapping[str, str]:
        """Labels of a local image. Raises `ImageNotFound`, `EngineUnavailable`."""
        config = self._inspect_image(ref).get("Config") or {}
        return dict(config.get("Labels") or {})

    def image_id(self, ref: str) -> str:
        """The id (sha256:...) of a local image. Raises `ImageNotFound`."""
        return str(self._inspect_image(ref)["Id"])

    def _inspect_image(self, ref: str) -> dict[str, Any]:
        with self._call("image", ref):
            return cast(dict[str, Any], self._api.inspect_image(ref))  # type: ignore[no-untyped-call]

    def pull_image(self, ref: str) -> None:
        """Pull `ref` (tag `latest` when none is given).

        Raises:
            ImageNotFound: no reachable registry has the image (the engine's reason is kept).
            EngineUnavailable: the engine does not answer.
        """
        repo, tag = parse_repository_tag(ref)
        with self._call("image", ref):
            try:
                stream = self._api.pull(repo, tag=tag or "latest", stream=True, decode=True)
                for chunk in stream:
                    if "error" in chunk:
                        raise ImageNotFound(
                            f"cannot pull image {ref!r}: {chunk['error']}", image=ref
                        )
            except docker.errors.APIError as exc:
                # Any registry-side failure (no such repo, no network) means the
                # image is not obtainable from here.
                raise ImageNotFound(
                    f"cannot pull image {ref!r}: {exc.explanation or exc}", image=ref
                ) from exc

    def build_image(
        self,
        context: Path,
        *,
        tag: str,
        dockerfile: str = "Dockerfile",
        labels: Mapping[str, str] | None = None,
        buildargs: Mapping[str, str] | None = None,
    ) -> str:
        """Build an image from `context` and return its id.

        Raises:
            ImageBuildError: the build failed; carries the last lines of the build log.
            EngineUnavailable: the engine does not answer.
        """
        if not (context / dockerfile).is_file():
            raise ImageBuildError(f"no {dockerfile} in build context {context}")
        log: list[str] = []
        image_id = ""
        with self._call("image", tag):
            try:
                stream = self._api.build(
                    path=str(context),
                    tag=tag,
                    dockerfile=dockerfile,
                    labels=dict(labels or {}),
                    buildargs=dict(buildargs or {}),
                    rm=True,
                    forcerm=True,
                    decode=True,
                )
                failed = False
                # Read the stream to its end even after an error: leaving it half-read
                # leaks the engine connection (a ResourceWarning under pytest).
                for chunk in stream:
                    error, found = _consume_build_chunk(chunk, log)
                    failed = failed or error
                    image_id = found or image_id
                if failed:
                    raise ImageBuildError(f"building {tag!r} failed", log_tail=_tail(log))
            except docker.errors.APIError as exc:
                log.append(str(exc.explanation or exc))
                raise ImageBuildError(
                    f"building {tag!r} failed", log_tail=_tail(log)
                ) from exc
        return image_id or self.image_id(tag)

    def import_image(self, tarball: Path, *, tag: str, changes: tuple[str, ...] = ()) -> str:
        """`docker import` a root filesystem tarball as `tag`; return the image id.

        Raises:
            ImageBuildError: the tarball is missing or the engine rejected it.
            EngineUnavailable: the engine does not answer.
        """
        if not tarball.is_file():
            raise ImageBuildError(f"cannot import {tarball}: no such file")
        repo, image_tag = parse_repository_tag(tag)
        with self._call("image", tag):
            try:
                out = self._api.import_image_from_file(
                    str(tarball), repository=repo, tag=image_tag or "latest",
                    changes=list(changes) or None,
                )
            except docker.errors.APIError as exc:
                raise ImageBuildError(
                    f"importing {tarball} as {tag!r} failed",
                    log_tail=str(exc.explanation or exc),
                ) from exc
        error = _import_error(out)
        if error:
            raise ImageBuildError(f"importing {tarball} as {tag!r} failed", log_tail=error)
        return self.image_id(tag)

    def tag_image(self, ref: str, tag: str) -> None:
        """Give image `ref` the extra name `tag`. Raises `ImageNotFound`."""
        repo, image_tag = parse_repository_tag(tag)
        with self._call("image", ref):
            self._api.tag(ref, repo, image_tag or "latest", force=True)

    def image_tags(self, labels: Mapping[str, str]) -> list[str]:
        """`repository:tag` of every local image whose labels match, sorted."""
        with self._call("image", "*"):
            rows = self._api.images(filters={"label": _label_filter(labels)})
        tags = {t for row in rows for t in (row.get("RepoTags") or []) if t != "<none>:<none>"}
        return sorted(tags)

    def remove_image(self, ref: str, *, force: bool = False) -> None:
        """Remove a local image (or one of its tags). Missing images are ignored.

        Raises:
            ResourceConflict: a container still uses it (and `force` is False).
        """
        with self._call("image", ref):
            try:
                self._api.remove_image(ref, force=force)
            except docker.errors.NotFound:
                return

    # -- networks -------------------------------------------------------------------
    def create_network(self, name: str, *, labels: Mapping[str, str]) -> NetworkInfo:
        """Create a bridge network.

        Raises:
            ResourceConflict: a network with this name exists.
            EngineUnavailable: the engine does not answer.
        """
        with self._call("network", name):
            created = self._api.create_network(
                name, driver="bridge", labels=dict(labels), check_duplicate=True
            )
        return NetworkInfo(id=str(created["Id"]), name=name, labels=dict(labels))

    def remove_network(self, name_or_id: str) -> None:
        """Remove a managed network; a missing one is ignored.

        Raises:
            NotManaged: the network lacks `orchestrator.managed=true`.
            ResourceConflict: containers are still attached.
        """
        with self._call("network", name_or_id):
            try:
                net = self._api.inspect_network(name_or_id)
                _require_managed("network", name_or_id, net.get("Labels"))
                for cid in net.get("Containers") or {}:
                    try:
                        labels = self._api.inspect_container(cid)["Config"].get("Labels")
                    except docker.errors.NotFound:
                        continue
                    if (labels or {}).get(MANAGED_LABEL) != "true":
                        self._api.disconnect_container_from_network(cid, net["Id"], force=True)
                self._api.remove_network(net["Id"])
            except docker.errors.NotFound:
                return

    def connect_network(self, network: str, container: str) -> None:
        """Attach a running container (managed or not) to a managed network.

        Raises:
            NotManaged: the network lacks `orchestrator.managed=true`.
            ResourceNotFound: no such network or container.
        """
        with self._call("network", network):
            net = self._api.inspect_network(network)
            _require_managed("network", network, net.get("Labels"))
            attached = self._api.inspect_container(container)["NetworkSettings"]["Networks"]
            if net["Name"] in (attached or {}):
                return
            self._api.connect_container_to_network(container, net["Id"])

    def list_networks(self, labels: Mapping[str, str]) -> list[NetworkInfo]:
        """Networks whose labels match all of `labels`. Raises `EngineUnavailable`."""
        with self._call("network", "*"):
            nets = self._api.networks(filters={"label": _label_filter(labels)})
        return sorted(
            (_network_info(n) for n in nets if _matches(n.get("Labels"), labels)),
            key=lambda n: n.name,
        )

    # -- volumes (records: the rollout history) -------------------------------------
    def create_volume(self, name: str, *, labels: Mapping[str, str]) -> VolumeInfo:
        """Create an empty local volume. Raises `EngineUnavailable`."""
        with self._call("volume", name):
            self._api.create_volume(name=name, driver="local", labels=dict(labels))
        return VolumeInfo(name=name, labels=dict(labels))

    def list_volumes(self, labels: Mapping[str, str]) -> list[VolumeInfo]:
        """Volumes whose labels match all of `labels`. Raises `EngineUnavailable`."""
        with self._call("volume", "*"):
            found = self._api.volumes(filters={"label": _label_filter(labels)})
        rows = (found or {}).get("Volumes") or []
        return sorted((VolumeInfo(name=str(v["Name"]), labels=dict(v.get("Labels") or {}))
                       for v in rows if _matches(v.get("Labels"), labels)),
                      key=lambda v: v.name)

    def remove_volume(self, name: str) -> None:
        """Remove a managed volume; a missing one is ignored.

        Raises:
            NotManaged: the volume lacks `orchestrator.managed=true`.
        """
        with self._call("volume", name):
            try:
                _require_managed("volume", name, self._api.inspect_volume(name).get("Labels"))
                self._api.remove_volume(name)
            except docker.errors.NotFound:
                return

    # -- containers -----------------------------------------------------------------
    def run_container(self, spec: ContainerSpec) -> ContainerInfo:
        """Create and start a container; a created one that fails to start is removed.

        Raises:
            ImageNotFound: the image is not local (we never pull implicitly).
            ResourceConflict: the name is taken.
            PortAllocated: a requested host port is already bound.
            EngineError: any other refusal by the engine.
        """
        with self._call("container", spec.name):
            created = self._api.create_container(**self._create_kwargs(spec))
        cid = str(created["Id"])
        try:
            with self._call("container", spec.name):
                self._api.start(cid)
        except EngineError:
            self._discard(cid)
            raise
        return self.inspect_container(cid)

    def _discard(self, cid: str) -> None:
        """Best-effort removal of a container we just created (no orphans)."""
        try:
            with self._call("container", cid):
                self._api.remove_container(cid, force=True, v=True)
        except (ResourceNotFound, EngineError):
            pass

    def _create_kwargs(self, spec: ContainerSpec) -> dict[str, Any]:
        networking = None
        if spec.network:
            endpoint = self._api.create_endpoint_config(aliases=list(spec.aliases) or None)
            # The stub says EndpointConfig, the SDK wants {network: EndpointConfig}.
            networking = self._api.create_networking_config(
                {spec.network: endpoint}  # type: ignore[arg-type]
            )
        return {
            "image": spec.image,
            "name": spec.name,
            "command": list(spec.command) or None,
            "entrypoint": list(spec.entrypoint) if spec.entrypoint is not None else None,
            "environment": dict(spec.env),
            "labels": dict(spec.labels),
            "hostname": spec.hostname,
            "user": spec.user or "",
            "working_dir": spec.working_dir,
            "ports": [p.container_port for p in spec.ports] or None,  # tcp is implied
            "stop_signal": spec.stop_signal,
            "stop_timeout": spec.stop_timeout,
            "healthcheck": None if spec.image_healthcheck else {"test": ["NONE"]},
            "host_config": self._api.create_host_config(
                **_host_config(spec), log_config=self._log_config(spec)),
            "networking_config": networking,
        }

    def _log_config(self, spec: ContainerSpec) -> docker.types.LogConfig | None:
        """Rotation of the container's log, when the engine's default log driver writes
        files (json-file, local). Other drivers (journald, syslog, fluentd, ...) send the
        log elsewhere and take no size options: the engine's settings stay."""
        if spec.log_max_bytes is None:
            return None
        if self._log_driver is None:
            with self._call("engine", self.where):
                self._log_driver = str(self._api.info().get("LoggingDriver") or "")
        if self._log_driver not in ("json-file", "local"):
            return None
        return docker.types.LogConfig(type=self._log_driver, config={
            "max-size": str(spec.log_max_bytes), "max-file": str(spec.log_max_files)})

    def inspect_container(self, name_or_id: str) -> ContainerInfo:
        """A fresh snapshot. Raises `ResourceNotFound`, `EngineUnavailable`."""
        with self._call("container", name_or_id):
            return _container_info(self._api.inspect_container(name_or_id))

    def list_containers(self, labels: Mapping[str, str], *,
                        brief: bool = False) -> list[ContainerInfo]:
        """All containers (running or not) whose labels match, sorted by name; `brief`:
        from the listing alone (see the protocol), without an inspect per container."""
        with self._call("container", "*"):
            rows = self._api.containers(all=True, filters={"label": _label_filter(labels)})
        if brief:
            return sorted((_brief_info(row) for row in rows), key=lambda c: c.name)
        infos = []
        for row in rows:
            try:
                infos.append(self.inspect_container(str(row["Id"])))
            except ResourceNotFound:
                continue  # removed between the listing and the inspect
        return sorted(infos, key=lambda c: c.name)

    def logs(self, name_or_id: str, *, tail: int | None = None) -> str:
        """stdout and stderr, interleaved. Raises `ResourceNotFound`."""
        with self._call("container", name_or_id):
            raw = self._api.logs(
                name_or_id, stdout=True, stderr=True, tail="all" if tail is None else tail
            )
        return raw.decode("utf-8", "replace")

    def log_lines(self, name_or_id: str, *, tail: int | None = None,
                  since: datetime | None = None) -> list[LogLine]:
        """Lines with the engine's own timestamps. Raises `ResourceNotFound`."""
        with self._call("container", name_or_id):
            raw = self._api.logs(name_or_id, stdout=True, stderr=True, timestamps=True,
                                 tail="all" if tail is None else tail, since=_epoch(since))
        stamped = (_log_line(line) for line in raw.decode("utf-8", "replace").splitlines())
        return [line for line in stamped if line is not None]

    def follow_logs(self, name_or_id: str, *, tail: int | None = None,
                    since: datetime | None = None) -> Iterator[LogLine]:
        """Yield log lines until the container stops.

        Raises:
            ResourceNotFound: no such container.
        """
        with self._call("container", name_or_id):
            stream = self._api.logs(
                name_or_id, stdout=True, stderr=True, stream=True, follow=True,
                timestamps=True, tail="all" if tail is None else tail, since=_epoch(since),
            )
        return self._lines(name_or_id, stream)

    def _lines(self, name: str, stream: Any) -> Iterator[LogLine]:
        buffer = b""
        try:
            with self._call("container", name):
                for chunk in stream:
                    buffer += chunk
                    *lines, buffer = buffer.split(b"\n")
                    for raw in lines:
                        if (line := _log_line(raw.decode("utf-8", "replace"))) is not None:
                            yield line
            if buffer and (line := _log_line(buffer.decode("utf-8", "replace"))) is not None:
                yield line
        finally:
            stream.close()

    def wait_container(self, name_or_id: str, *, timeout: float | None = None) -> int:
        """Block until the container exits; return its exit code.

        Raises:
            ResourceNotFound: no such container.
            TimeoutError: it was still running after `timeout` seconds.
        """
        with self._call("container", name_or_id):
            try:
                wait_s = None if timeout is None else max(1, math.ceil(timeout))
                result = self._api.wait(name_or_id, timeout=wait_s)
            except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError) as exc:
                if timeout is None or not _is_timeout(exc):
                    raise
                raise TimeoutError(f"{name_or_id} still running after {timeout}s") from exc
        return int(result["StatusCode"])

    def stop_container(self, name_or_id: str, *, grace: float = 10.0) -> None:
        """SIGTERM, wait `grace` seconds, then SIGKILL. Missing containers are ignored.

        Raises:
            NotManaged: the container lacks `orchestrator.managed=true`.
        """
        cid = self._managed_container(name_or_id)
        if cid is None:
            return
        with self._call("container", name_or_id):
            try:
                # Docker's own stop does exactly TERM -> wait -> KILL, in whole seconds.
                self._api.stop(cid, timeout=max(0, math.ceil(grace)))
            except docker.errors.NotFound:
                return

    def kill_container(self, name_or_id: str, *, signal: str = "SIGKILL") -> None:
        """Send `signal`. Missing or already-stopped containers are ignored.

        Raises:
            NotManaged: the container lacks `orchestrator.managed=true`.
        """
        cid = self._managed_container(name_or_id)
        if cid is None:
            return
        with self._call("container", name_or_id):
            try:
                self._api.kill(cid, signal=signal)
            except docker.errors.APIError as exc:
                if exc.status_code not in (404, 409):  # gone, or not running
                    raise

    def update_container(
        self,
        name_or_id: str,
        *,
        restart_policy: RestartPolicy | None = None,
        max_retries: int = 0,
    ) -> None:
        """`docker update` of the restart policy of a managed container.

        Raises:
            NotManaged, ResourceNotFound.
        """
        cid = self._managed_container(name_or_id)
        if cid is None:
            raise ResourceNotFound(f"container {name_or_id} does not exist")
        if restart_policy is None:
            return
        policy: dict[str, Any] = {"Name": "" if restart_policy == "no" else restart_policy}
        if restart_policy == "on-failure":
            policy["MaximumRetryCount"] = max_retries
        with self._call("container", name_or_id):
            self._api.update_container(cid, restart_policy=cast(Any, policy))

    def remove_container(self, name_or_id: str, *, force: bool = True) -> None:
        """Remove a managed container; a missing one is ignored.

        Raises:
            NotManaged: the container lacks `orchestrator.managed=true`.
            ResourceConflict: it is running and `force` is False.
        """
        cid = self._managed_container(name_or_id)
        if cid is None:
            return
        with self._call("container", name_or_id):
            try:
                self._api.remove_container(cid, force=force, v=True)
            except docker.errors.NotFound:
                return
            except docker.errors.APIError as exc:
                if "already in progress" not in str(exc.explanation or ""):
                    raise

    def _managed_container(self, name_or_id: str) -> str | None:
        """The container's id, None if it is missing. Raises `NotManaged`."""
        with self._call("container", name_or_id):
            try:
                raw = self._api.inspect_container(name_or_id)
            except docker.errors.NotFound:
                return None
        _require_managed("container", name_or_id, (raw.get("Config") or {}).get("Labels"))
        return str(raw["Id"])

    # -- events ---------------------------------------------------------------------
    def events(
        self,
        *,
        labels: Mapping[str, str] | None = None,
        since: float | None = None,
        until: float | None = None,
    ) -> Iterator[EngineEvent]:
        """Container and network events. Blocks when `until` is None.

        Docker attaches labels to container events only, so a label filter
        passes container events (network events carry no labels).

        Raises:
            EngineUnavailable: the engine does not answer.
        """
        filters: dict[str, Any] = {"type": ["container", "network"]}
        if labels:
            filters["label"] = _label_filter(labels)
        with self._call("engine", self.where):
            stream = self._api.events(
                since=_docker_time(since), until=_docker_time(until), filters=filters,
                decode=True,
            )
        return self._event_stream(stream)

    def _event_stream(self, stream: Any) -> Iterator[EngineEvent]:
        try:
            with self._call("engine", self.where):
                for raw in stream:
                    yield _event(raw)
        finally:
            stream.close()

    # -- exec and stats ----------------------------------------------------------------
    def container_stats(self, name_or_id: str) -> ContainerStats:
        """One `docker stats --no-stream` sample: the engine measures CPU over about a
        second, so this blocks that long. Raises `ResourceNotFound`."""
        with self._call("container", name_or_id):
            raw = self._api.stats(name_or_id, stream=False)
        return _stats(raw)

    def exec_container(self, name_or_id: str, cmd: Sequence[str], *,
                       tty: bool = False) -> ExecResult:
        """`docker exec` (never interactive: no stdin), output collected.

        Raises:
            NotManaged, ResourceNotFound, ResourceConflict: the container does not run.
        """
        cid = self._managed_container(name_or_id)
        if cid is None:
            raise ResourceNotFound(f"container {name_or_id!r} not found")
        with self._call("container", name_or_id):
            exec_id = self._api.exec_create(cid, list(cmd), stdout=True, stderr=True,
                                            tty=tty)["Id"]
            out = self._api.exec_start(exec_id, tty=tty)
            code = self._api.exec_inspect(exec_id).get("ExitCode")
        text = out.decode("utf-8", "replace") if isinstance(out, bytes) else str(out)
        status = int(code) if code is not None else -1
        if status == 126 and "executable file not found" in text:
            status = 127  # not found, as a shell (and the docker CLI) says
        return ExecResult(status, text)


def _stats(raw: Mapping[str, Any]) -> ContainerStats:
    """CPU % and memory without the page cache, computed as the docker CLI does."""
    cpu, pre = raw.get("cpu_stats") or {}, raw.get("precpu_stats") or {}
    usage, pre_usage = cpu.get("cpu_usage") or {}, pre.get("cpu_usage") or {}
    cpu_delta = usage.get("total_usage", 0) - pre_usage.get("total_usage", 0)
    system_delta = cpu.get("system_cpu_usage", 0) - pre.get("system_cpu_usage", 0)
    cores = cpu.get("online_cpus") or len(usage.get("percpu_usage") or ()) or 1
    percent = cpu_delta / system_delta * cores * 100.0 \
        if system_delta > 0 and cpu_delta > 0 else 0.0
    memory = raw.get("memory_stats") or {}
    detail = memory.get("stats") or {}
    used = int(memory.get("usage", 0))
    # cgroup v2 reports inactive_file, v1 total_inactive_file: page cache, not in use
    cache = int(detail.get("inactive_file", detail.get("total_inactive_file", 0)))
    return ContainerStats(cpu_percent=round(percent, 2),
                          memory_bytes=used - cache if cache < used else used,
                          memory_limit_bytes=int(memory.get("limit", 0)))


# -- the choke point ----------------------------------------------------------------


@contextmanager
def _translate(subject: _Subject, name: str, *, where: str) -> Iterator[None]:
    """Map docker-py / requests exceptions to the project's errors.

    Raises:
        EngineUnavailable, ImageNotFound, ResourceNotFound, PortAllocated,
        ResourceConflict, EngineError: see `_api_error`.
    """
    try:
        yield
    except docker.errors.APIError as exc:
        raise _api_error(exc, subject, name) from exc
    except requests.exceptions.ConnectionError as exc:
        if _is_timeout(exc):
            raise
        raise _unavailable(where, exc) from exc
    except requests.exceptions.Timeout:
        raise  # callers with a deadline handle their own timeouts
    except docker.errors.DockerException as exc:
        # from_env wraps a failed version negotiation in a bare DockerException.
        if "Error while fetching server API version" in str(exc):
            raise _unavailable(where, exc) from exc
        raise EngineError(f"docker: {exc}") from exc


def _unix_socket_path(where: str) -> str | None:
    return where.removeprefix("unix://") if where.startswith("unix://") else None


def _check_socket(socket_path: str | None, where: str) -> None:
    """Raises `EngineUnavailable` when the engine's unix socket does not exist."""
    if socket_path is not None and not os.path.exists(socket_path):
        raise _unavailable(where, FileNotFoundError(socket_path))


def _unavailable(where: str, exc: BaseException) -> EngineUnavailable:
    return EngineUnavailable(
        f"no Docker engine answers at {where}: {_HOW_TO_FIX} ({type(exc).__name__})"
    )


def _api_error(exc: docker.errors.APIError, subject: _Subject, name: str) -> EngineError:
    text = str(exc.explanation or exc)
    if "No such image" in text or (subject == "image" and exc.status_code == 404):
        return ImageNotFound(
            f"image {name!r} is not available locally ({text}); build or import it first",
            image=_image_in(text) or name,
        )
    if exc.status_code == 404:
        return ResourceNotFound(f"{subject} {name!r} not found: {text}")
    if any(marker in text for marker in _PORT_TAKEN):
        match = _PORT_RE.search(text)
        port = int(match.group(1)) if match else None
        return PortAllocated(
            f"host port {port if port else '?'} is already allocated; "
            f"free it or let the engine choose one (host_port=None): {text}",
            port=port,
        )
    if exc.status_code == 409 or "active endpoints" in text:
        return ResourceConflict(f"{subject} {name!r} conflicts: {text}")
    return EngineError(f"docker refused ({exc.status_code}) for {subject} {name!r}: {text}")


def _image_in(text: str) -> str | None:
    match = re.search(r"No such image: (\S+)", text)
    return match.group(1) if match else None


def _is_timeout(exc: BaseException) -> bool:
    return isinstance(exc, requests.exceptions.Timeout) or "timed out" in str(exc)


# -- pure helpers: dicts in, project values out ----------------------------------------


def _host_config(spec: ContainerSpec) -> dict[str, Any]:
    config: dict[str, Any] = {
        "port_bindings": {
            f"{p.container_port}/tcp": (p.host_ip, p.host_port) for p in spec.ports
        },
        "mounts": [
            docker.types.Mount(m.target, m.source, type="bind", read_only=m.read_only)
            for m in spec.mounts
        ],
        "cap_drop": list(spec.cap_drop) or None,
        "security_opt": list(spec.security_opt) or None,
        "extra_hosts": dict(spec.extra_hosts) or None,
        "network_mode": spec.network,
    }
    if spec.cpus is not None:
        config["nano_cpus"] = int(spec.cpus * 1e9)
    if spec.memory_bytes is not None:
        config["mem_limit"] = spec.memory_bytes
    if spec.cpu_shares is not None:
        config["cpu_shares"] = spec.cpu_shares
    if spec.gpu_ids:  # these devices only (a replica's own, see planning.gpus)
        config["device_requests"] = [
            docker.types.DeviceRequest(device_ids=list(spec.gpu_ids), capabilities=[["gpu"]])
        ]
    elif spec.gpus is not None:
        config["device_requests"] = [
            docker.types.DeviceRequest(count=spec.gpus, capabilities=[["gpu"]])
        ]
    if spec.restart_policy != "no":
        policy: dict[str, Any] = {"Name": spec.restart_policy}
        if spec.restart_policy == "on-failure":
            policy["MaximumRetryCount"] = spec.restart_max_retries
        config["restart_policy"] = policy
    return config


def _container_info(raw: Mapping[str, Any]) -> ContainerInfo:
    state = raw.get("State") or {}
    config = raw.get("Config") or {}
    settings = raw.get("NetworkSettings") or {}
    status = cast(ContainerStatus, state.get("Status", "dead"))
    health = (state.get("Health") or {}).get("Status")
    return ContainerInfo(
        id=str(raw["Id"]),
        name=str(raw.get("Name", "")).lstrip("/"),
        image=str(config.get("Image", "")),
        labels=dict(config.get("Labels") or {}),
        status=status,
        # A crash-looping container (restart policy) is "restarting" or running again
        # with RestartCount > 0; its last exit code is what explains the crash.
        exit_code=int(state.get("ExitCode", 0))
        if status in ("exited", "dead", "restarting") or int(raw.get("RestartCount", 0)) > 0
        else None,
        health=cast(HealthStatus, health) if health in _HEALTH_STATES else None,
        ip_addresses=_addresses(settings),
        ports=_published_ports(settings.get("Ports") or {}),
        started_at=_parse_time(str(state.get("StartedAt", ""))),
        hostname=str(config.get("Hostname", "")),
        restart_count=int(raw.get("RestartCount", 0)),
        oom_killed=bool(state.get("OOMKilled", False)),
        env=dict(
            item.split("=", 1) for item in (config.get("Env") or []) if "=" in item
        ),
    )


def _brief_info(row: Mapping[str, Any]) -> ContainerInfo:
    """A container as the engine's listing shows it (GET /containers/json)."""
    settings = row.get("NetworkSettings") or {}
    ports: dict[int, tuple[str, int]] = {}
    for p in row.get("Ports") or []:  # IPv4 comes first; an IPv6 twin repeats the port
        if p.get("Type") == "tcp" and p.get("PublicPort") and p["PrivatePort"] not in ports:
            ports[int(p["PrivatePort"])] = (str(p.get("IP", "")), int(p["PublicPort"]))
    return ContainerInfo(
        id=str(row["Id"]),
        name=str((row.get("Names") or ["/"])[0]).lstrip("/"),
        image=str(row.get("Image", "")),
        labels=dict(row.get("Labels") or {}),
        status=cast(ContainerStatus, row.get("State", "dead")),
        ip_addresses=_addresses(settings),
        ports=ports,
    )


def _addresses(settings: Mapping[str, Any]) -> dict[str, str]:
    """Network name -> IP, from `NetworkSettings` (an inspect's or a listing's)."""
    return {net: str(ep["IPAddress"]) for net, ep in (settings.get("Networks") or {}).items()
            if ep.get("IPAddress")}


def _published_ports(ports: Mapping[str, Any]) -> dict[int, tuple[str, int]]:
    out: dict[int, tuple[str, int]] = {}
    for key, bindings in ports.items():
        port, _, proto = key.partition("/")
        if proto != "tcp" or not bindings:
            continue
        first = bindings[0]  # IPv4 comes first; an IPv6 twin repeats the port
        out[int(port)] = (str(first.get("HostIp", "")), int(first["HostPort"]))
    return out


def _epoch(when: datetime | None) -> float | None:
    """The SDK's `since`: seconds since the epoch (fractions are kept)."""
    return None if when is None else when.timestamp()


def _log_line(stamped: str) -> LogLine | None:
    """One line the engine gave with `timestamps=True` ('<RFC 3339> text')."""
    stamp, _, text = stamped.partition(" ")
    when = _parse_time(stamp)
    return None if when is None else LogLine(when, text)


def _parse_time(text: str) -> datetime | None:
    """Docker's RFC 3339 with nanoseconds -> aware datetime; the zero time -> None."""
    if not text or text.startswith("0001-01-01"):
        return None
    match = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)$", text)
    if not match:
        return None
    whole, frac, zone = match.groups()
    micro = (frac or ".0")[:7].ljust(7, "0")
    return datetime.fromisoformat(f"{whole}{micro}{'+00:00' if zone == 'Z' else zone}")


def _network_info(raw: Mapping[str, Any]) -> NetworkInfo:
    return NetworkInfo(
        id=str(raw["Id"]), name=str(raw["Name"]), labels=dict(raw.get("Labels") or {})
    )


def _event(raw: Mapping[str, Any]) -> EngineEvent:
    actor = raw.get("Actor") or {}
    attrs: dict[str, str] = dict(actor.get("Attributes") or {})
    kind = str(raw.get("Type", ""))
    labels = (
        {k: v for k, v in attrs.items() if k not in _EVENT_NON_LABELS}
        if kind == "container"
        else {}
    )
    exit_code = attrs.get("exitCode")
    return EngineEvent(
        type=kind,
        action=str(raw.get("Action", "")),
        id=str(actor.get("ID", "")),
        name=attrs.get("name", ""),
        labels=labels,
        time=int(raw.get("timeNano", 0)) / 1e9 or float(raw.get("time", 0)),
        exit_code=int(exit_code) if exit_code is not None else None,
    )


def _docker_time(value: float | None) -> Any:
    # Docker parses "seconds.nanoseconds"; docker-py passes a string through untouched
    # (its stub says int, which would cut events off at whole seconds).
    return None if value is None else f"{value:.9f}"


def _label_filter(labels: Mapping[str, str]) -> list[str]:
    return [f"{k}={v}" for k, v in sorted(labels.items())]


def _matches(have: Mapping[str, str] | None, want: Mapping[str, str]) -> bool:
    have = have or {}
    return all(have.get(k) == v for k, v in want.items())


def _require_managed(kind: str, name: str, labels: Mapping[str, str] | None) -> None:
    if (labels or {}).get(MANAGED_LABEL) != "true":
        raise NotManaged(
            f"refusing to touch {kind} {name!r}: it lacks the label {MANAGED_LABEL}=true, "
            "so this project did not create it"
        )


def _consume_build_chunk(chunk: Mapping[str, Any], log: list[str]) -> tuple[bool, str]:
    """Record one build stream message; return (failed, image id if it carries one)."""
    if "error" in chunk:
        log.append(str(chunk["error"]))
        return True, ""
    text = chunk.get("stream") or chunk.get("status") or ""
    log.extend(line for line in str(text).splitlines() if line.strip())
    aux = chunk.get("aux") or {}
    return False, str(aux.get("ID", "")) if isinstance(aux, dict) else ""


def _tail(log: list[str]) -> str:
    return "\n".join(log[-_BUILD_TAIL_LINES:])


def _import_error(out: Any) -> str:
    """docker import answers with JSON lines; an `error` key means it failed."""
    for line in str(out).splitlines():
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        if isinstance(msg, dict) and "error" in msg:
            return str(msg["error"])
    return ""


def _nvidia_devices(dev: Path) -> list[str]:
    """'/dev/nvidia0', '/dev/nvidia1' -> ['0', '1'] (not nvidiactl, nvidia-uvm, ...)."""
    found = [p.name.removeprefix("nvidia") for p in dev.glob("nvidia*")]
    return sorted((n for n in found if n.isdigit()), key=int)
