"""Frozen, validated specs: what a Deployment is and how it is updated.

Everything here is a value. Construction validates and raises `SpecError`
naming the field at fault, so nothing downstream ever sees a bad spec.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

from orchestrator.errors import SpecError
from orchestrator.planning.gpus import GpuRequest, parse_gpus
from orchestrator.tls import TLS_FIELDS, ClientTLS, own_server_name, tls_fields

DEFAULT_RUNTIME_IMAGE = "orchestrator-runtime:latest"
CONTAINER_PORT = 50051
"""Every pod's gRPC server listens on this port inside its own container."""

NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
MAX_NAME = 40
POLLING_MODES = ("ANY", "ALL")
RESTART_POLICIES = ("no", "on-failure", "always", "unless-stopped")
PROTOCOLS = ("grpc", "http")
_MEMORY_RE = re.compile(r"^(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?$", re.IGNORECASE)
_MEMORY_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
DEFAULT_LOG_MAX_SIZE = 10 * 1024**2  # as Kamal's default: a busy pod cannot fill the disk
DEFAULT_LOG_MAX_FILES = 3
DEFAULT_HEAL_AFTER = 30.0
"""Seconds a replica may stay sick or gone before it is replaced (see docs/healing.md)."""


def validate_name(name: object, *, field_name: str = "name") -> str:
    """Return `name` if it is a DNS-safe deployment name, else raise `SpecError`."""
    if not isinstance(name, str) or not name:
        raise SpecError("must be a non-empty string", field=field_name)
    if len(name) > MAX_NAME or not NAME_RE.match(name):
        raise SpecError(
            f"{name!r} is not a valid name: use at most {MAX_NAME} lowercase letters, digits "
            "and '-', starting and ending with a letter or digit",
            field=field_name,
        )
    return name


def parse_size(value: object, *, field_name: str) -> int:
    """'512m', '1g', '1GiB', '64k' or a byte count -> bytes (> 0)."""
    if isinstance(value, bool):
        raise SpecError("must be a size such as '512m' or a byte count", field=field_name)
    if isinstance(value, int):
        number, unit = float(value), ""
    elif isinstance(value, str) and (m := _MEMORY_RE.match(value.strip())):
        number, unit = float(m.group(1)), m.group(2).lower()
    else:
        raise SpecError(f"{value!r} is not a size such as '512m' or '1g'", field=field_name)
    size = int(number * _MEMORY_UNITS[unit])
    if size <= 0:
        raise SpecError(f"{value!r} is not a positive size", field=field_name)
    return size


def parse_memory(value: object, *, field_name: str = "memory") -> int | None:
    """'512m', '1g', '1GiB' or a byte count -> bytes."""
    if value is None:
        return None
    size = parse_size(value, field_name=field_name)
    if size < 6 * 1024**2:
        raise SpecError(f"{value!r} is below Docker's 6 MiB minimum", field=field_name)
    return size


REQUIRED: Any = MISSING
"""A field without a default (`_field(REQUIRED, ...)`)."""


def _field(default: Any, doc: str, *, schema: Mapping[str, Any] | None = None,
           **constraints: Any) -> Any:
    """A dataclass field that also carries its documentation and its input's JSON Schema
    (`schema` in full, or `constraints` added to the type read from the annotation), from
    which `orchestrator.schema` builds the file format's schema. A callable default is a
    default factory."""
    meta = {"doc": doc, "schema": dict(schema) if schema is not None else None,
            "constraints": constraints}
    if callable(default):
        return field(default_factory=default, metadata=meta)
    return field(default=default, metadata=meta)


def _any_case(words: tuple[str, ...]) -> str:
    """A regex accepting `words` in any letter case (JSON Schema regexes have no flags)."""
    def chars(word: str) -> str:
        return "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else re.escape(c)
                       for c in word)
    return "^(" + "|".join(chars(w) for w in words) + ")$"


_CONSTRAINT = r"^node\.[A-Za-z0-9_.-]+\s*(==|!=)\s*\S+$"
"""A Swarm placement constraint: node.ATTRIBUTE==VALUE or !=VALUE."""


def _size(minimum: int) -> dict[str, Any]:
    """'512m', '1g', '1GiB' or a byte count (the text form's minimum is checked by the
    loader alone)."""
    text = r"^\s*\d+(\.\d+)?\s*[kKmMgGtT]?[iI]?[bB]?\s*$"
    return {"anyOf": [{"type": "integer", "minimum": minimum},
                      {"type": "string", "pattern": text}]}


_NAME = {"type": "string", "pattern": NAME_RE.pattern, "maxLength": MAX_NAME}
_USES = {"type": "string", "pattern": r"^(docker://\S+|.+:[A-Za-z_][A-Za-z0-9_]*)$"}
_POLLING_MODE = {"type": "string", "pattern": _any_case(POLLING_MODES)}
_PATH = {"type": "string", "minLength": 1}
_TIMEOUT_MS = {"anyOf": [{"type": "integer", "minimum": 1}, {"const": -1}]}


@dataclass(frozen=True)
class UsesRef:
    """A parsed `uses`: a docker image, an installed class, or a local file."""

    kind: Literal["docker", "module", "file"]
    image: str = ""
    module: str = ""
    path: str = ""  # absolute host path of the .py file
    cls: str = ""

    @classmethod
    def parse(cls, value: object, *, field_name: str, base_dir: Path | None = None) -> UsesRef:
        """Raises: SpecError when the form is wrong or a local file is missing."""
        if not isinstance(value, str) or not value.strip():
            raise SpecError("must be 'docker://image:tag', 'pkg.module:Class' or "
                            "'path/to/file.py:Class'", field=field_name)
        value = value.strip()
        if value.startswith("docker://"):
            image = value.removeprefix("docker://")
            if not image or any(c.isspace() for c in image):
                raise SpecError(f"{value!r} names no image", field=field_name)
            return cls(kind="docker", image=image)
        target, sep, klass = value.rpartition(":")
        if not sep or not target or not klass.isidentifier():
            raise SpecError(
                f"{value!r}: expected 'pkg.module:Class', 'path/to/file.py:Class' or "
                "'docker://image:tag'",
                field=field_name,
            )
        if target.endswith(".py"):
            path = Path(target)
            if not path.is_absolute():
                path = (base_dir or Path.cwd()) / path
            if not path.is_file():
                raise SpecError(f"file {str(path)!r} does not exist", field=field_name)
            return cls(kind="file", path=str(path.resolve()), cls=klass)
        if not all(part.isidentifier() for part in target.split(".")):
            raise SpecError(f"{target!r} is not a module path", field=field_name)
        return cls(kind="module", module=target, cls=klass)

    def __str__(self) -> str:
        if self.kind == "docker":
            return f"docker://{self.image}"
        if self.kind == "file":
            return f"{self.path}:{self.cls}"
        return f"{self.module}:{self.cls}"


@dataclass(frozen=True)
class VolumeSpec:
    """`host:container[:ro|rw]` bind mount for worker pods."""

    source: str
    target: str
    read_only: bool = False

    @classmethod
    def parse(cls, value: object, *, field_name: str) -> VolumeSpec:
        if not isinstance(value, str):
            raise SpecError("must be 'host_path:container_path[:ro|rw]'", field=field_name)
        parts = value.split(":")
        if len(parts) not in (2, 3) or not parts[0] or not parts[1].startswith("/"):
            raise SpecError(
                f"{value!r} is not 'host_path:/container/path[:ro|rw]'", field=field_name
            )
        mode = parts[2] if len(parts) == 3 else "rw"
        if mode not in ("ro", "rw"):
            raise SpecError(f"mode {mode!r} must be 'ro' or 'rw'", field=field_name)
        source = str(Path(parts[0]).expanduser().resolve())
        return cls(source=source, target=parts[1], read_only=mode == "ro")


@dataclass(frozen=True, kw_only=True)
class UpdatePolicy:
    """How a rolling update or scale proceeds. Validated on construction.

    The default is start-first, one at a time: a new replica starts and must be
    healthy (and stay healthy for `monitor` seconds) before an old one is drained
    and stopped, so capacity never dips.
    """

    max_surge: int = _field(1, "replicas started above the count during an update",
                            minimum=0)
    max_unavailable: int = _field(0, "replicas that may be missing during an update",
                                  minimum=0)
    order: Literal["start-first", "stop-first"] = _field(
        "start-first", "start the new replica before stopping the old one, or after")
    monitor: float = _field(0.0, "seconds a new replica must stay healthy", minimum=0)
    failure_action: Literal["rollback", "pause"] = _field(
        "rollback", "what a failed update does")
    drain_timeout: float = _field(30.0, "seconds a drained replica's in-flight calls get",
                                  minimum=0)
    stop_grace: float = _field(10.0, "SIGTERM-to-SIGKILL grace of a replaced replica",
                               minimum=0)
    shard_parallelism: int = _field(1, "shards updated at the same time", minimum=1)

    def __post_init__(self) -> None:
        for name in ("max_surge", "max_unavailable", "shard_parallelism"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise SpecError("must be an integer >= 0", field=f"policy.{name}")
        if self.shard_parallelism < 1:
            raise SpecError("must be >= 1", field="policy.shard_parallelism")
        if self.max_surge == 0 and self.max_unavailable == 0:
            raise SpecError(
                "max_surge and max_unavailable cannot both be 0: the update could never "
                "make progress",
                field="policy",
            )
        if self.order not in ("start-first", "stop-first"):
            raise SpecError(f"{self.order!r}: use 'start-first' or 'stop-first'",
                            field="policy.order")
        if self.order == "start-first" and self.max_surge == 0:
            raise SpecError("start-first needs max_surge >= 1", field="policy.max_surge")
        if self.order == "stop-first" and self.max_unavailable == 0:
            raise SpecError("stop-first needs max_unavailable >= 1",
                            field="policy.max_unavailable")
        if self.failure_action not in ("rollback", "pause"):
            raise SpecError(f"{self.failure_action!r}: use 'rollback' or 'pause'",
                            field="policy.failure_action")
        for name in ("monitor", "drain_timeout", "stop_grace"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or isinstance(value, bool) or value < 0 \
                    or not math.isfinite(value):
                raise SpecError("must be a number of seconds >= 0", field=f"policy.{name}")


def _polling(value: object) -> str | Mapping[str, str]:
    if isinstance(value, str):
        mode = value.upper()
        if mode not in POLLING_MODES:
            raise SpecError(f"{value!r} is not a polling mode; use ANY or ALL", field="polling")
        return mode
    if isinstance(value, Mapping):
        out: dict[str, str] = {}
        for endpoint, mode in value.items():
            if not isinstance(endpoint, str) or not isinstance(mode, str) \
                    or mode.upper() not in POLLING_MODES:
                raise SpecError(f"{endpoint!r}: {mode!r} is not ANY or ALL",
                                field=f"polling.{endpoint}")
            out[endpoint] = mode.upper()
        return out
    raise SpecError("must be 'ANY', 'ALL' or a map of endpoint to mode", field="polling")


def _positive_int(value: object, field_name: str, minimum: int = 1) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise SpecError(f"must be an integer >= {minimum}, got {value!r}", field=field_name)
    return value


def _port(value: object, field_name: str) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not 0 < value < 65536:
        raise SpecError(f"must be a TCP port 1..65535, got {value!r}", field=field_name)
    return value


def _str_map(value: object, field_name: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise SpecError("must be a mapping of names to values", field=field_name)
    out: dict[str, str] = {}
    for key, item in value.items():
        if not isinstance(key, str) or not key:
            raise SpecError(f"key {key!r} must be a non-empty string", field=field_name)
        out[key] = item if isinstance(item, str) else json.dumps(item)
    return out


@dataclass(frozen=True, kw_only=True)
class DeploymentSpec:
    """A validated Deployment. Build it with `DeploymentSpec.from_fields(**fields)`."""

    name: str = _field(REQUIRED, "DNS-safe: lowercase letters, digits, '-'",
                       type="string", pattern=NAME_RE.pattern, maxLength=MAX_NAME)
    uses: UsesRef = _field(  # noqa: RUF009
        REQUIRED, "'file.py:Class' (relative to the YAML file), 'pkg.module:Class' or "
        "'docker://image:tag'", schema=_USES)
    uses_with: Mapping[str, Any] = _field(dict, "the executor's __init__ keyword arguments",
                                          type="object")
    replicas: int = _field(1, "worker replicas per shard", minimum=1)
    shards: int = _field(1, "shards; the head fans out to them by polling", minimum=1)
    polling: str | Mapping[str, str] = _field(
        "ANY", "ANY or ALL, or a map of endpoint to ANY or ALL",
        schema={"anyOf": [_POLLING_MODE, {"type": "object",
                                           "additionalProperties": _POLLING_MODE}]})
    uses_before: UsesRef | None = _field(  # noqa: RUF009
        None, "executor run before the shards", schema=_USES)
    uses_after: UsesRef | None = _field(  # noqa: RUF009
        None, "executor merging the shards' results", schema=_USES)
    port: int | None = _field(None, "head port published on host (default: the engine "
                              "picks one)", minimum=1, maximum=65535)
    host: str = _field("127.0.0.1", "host address the head port binds to",
                       type="string", pattern=r"^\S+$")
    env: Mapping[str, str] = _field(dict, "environment of the worker pods",
                                    type="object", propertyNames={"minLength": 1})
    volumes: tuple[VolumeSpec, ...] = _field(
        (), "'host:/container[:ro|rw]' bind mounts; a relative host path is relative to "
        "the YAML file", schema={"type": "array", "items": {
            "type": "string", "pattern": r"^[^:]+:/[^:]*(:(ro|rw))?$"}})
    timeout_ready: float = _field(60.0, "start deadline per pod, seconds",
                                  exclusiveMinimum=0)
    external: bool = _field(False, "an already running service at host:port")
    protocol: str | tuple[str, ...] = _field(
        "grpc", "protocols of the head's port: 'grpc', 'http' (Jina's HTTP interface), or a "
        "list of them; gRPC is always served too", schema={"anyOf": [
            {"type": "string", "pattern": _any_case(PROTOCOLS)},
            {"type": "array", "items": {"type": "string", "pattern": _any_case(PROTOCOLS)},
             "minItems": 1}]})
    image: str = _field(DEFAULT_RUNTIME_IMAGE, "runtime image of file and module executors",
                        type="string", pattern=r"^\S+$")
    cpus: float | None = _field(None, "CPU limit per pod", exclusiveMinimum=0, maximum=1024)
    memory: int | None = _field(None, "memory limit per pod: '512m', '1g' or bytes "
                                "(at least 6 MiB)", schema=_size(6 * 1024**2))
    gpus: GpuRequest | None = _field(  # noqa: RUF009
        None, "GPUs per replica: 'all', a count (each replica its own devices), device "
        "ids ('device=0,1' or a list), or one id list per replica slot; "
        "env CUDA_VISIBLE_DEVICES=RR assigns them round robin, as Jina does",
        schema={"anyOf": [{"type": "integer", "minimum": 0}, {"const": "all"},
                          {"type": "string", "pattern": r"^\s*(device=)?[^=]+$"},
                          {"type": "array", "minItems": 1, "items": {"anyOf": [
                              {"type": ["string", "integer"]},
                              {"type": "array", "minItems": 1,
                               "items": {"type": ["string", "integer"]}}]}}]})
    restart_policy: str = _field("on-failure", "applied once a pod is ready",
                                 enum=list(RESTART_POLICIES))
    health_interval: float = _field(0.5, "seconds between the head's probes of a worker",
                                    exclusiveMinimum=0)
    stop_grace: float = _field(10.0, "SIGTERM-to-SIGKILL grace, seconds", minimum=0)
    log_max_size: int | None = _field(
        DEFAULT_LOG_MAX_SIZE, "each pod's log rotates at this size ('10m', bytes); null: "
        "the engine's own log settings", schema=_size(1))
    log_max_files: int = _field(DEFAULT_LOG_MAX_FILES, "rotated log files kept per pod",
                                minimum=1)
    max_starting: int | None = _field(None, "staggered start: pods starting at a time",
                                      minimum=1)
    needs: frozenset[str] = _field(frozenset, "names of deployments this one follows",
                                   schema={"anyOf": [_NAME, {"type": "array",
                                                             "items": _NAME}]})
    policy: UpdatePolicy = _field(  # noqa: RUF009
        UpdatePolicy, "rolling update and scale policy", schema={"$ref": "#/$defs/policy"})
    heal_after: float | None = _field(
        DEFAULT_HEAL_AFTER, "replace a replica (or recreate the head) that stayed sick or "
        "gone this many seconds; 0 or null: never", schema={"anyOf": [
            {"type": "number", "minimum": 0}, {"type": "null"}]})
    tls_cert: str | None = _field(None, "PEM certificate chain the head serves TLS with "
                                  "(ALPN h2, /metrics too); needs tls_key", schema=_PATH)
    tls_key: str | None = _field(None, "the head certificate's PEM private key, mounted "
                                 "read-only into the head (never in its environment)",
                                 schema=_PATH)
    tls_client_ca: str | None = _field(None, "mutual TLS: the head requires client "
                                       "certificates signed by this CA (PEM)", schema=_PATH)
    tls_ca: str | None = _field(None, "CA (PEM) this process trusts for its own calls to the "
                                "head (readiness, control, post); default: the system's "
                                "roots", schema=_PATH)
    tls_client_cert: str | None = _field(None, "with tls_client_ca: the client certificate "
                                         "this process presents to its head", schema=_PATH)
    tls_client_key: str | None = _field(None, "the client certificate's PEM private key",
                                        schema=_PATH)
    timeout_send: int | Mapping[str, int | None] | None = _field(
        None, "milliseconds the head waits for one worker's answer before it tries another "
        "replica (then DEADLINE_EXCEEDED), or a map of endpoint to milliseconds ('*': the "
        "others); null or -1: no limit", schema={"anyOf": [
            _TIMEOUT_MS, {"type": "null"},
            {"type": "object", "additionalProperties": {"anyOf": [_TIMEOUT_MS,
                                                                  {"type": "null"}]}}]})
    noblock_on_start: bool = _field(
        False, "start() returns once the pods are created; wait_start_success() waits "
        "until they serve (Jina's noblock_on_start)")
    reload: bool = _field(False, "live reload: a change to the executor's file (or a "
                          "watched path) replaces the workers by a zero-downtime rollout")
    watch: tuple[str, ...] = _field(
        (), "live reload: more files or directories to watch (relative to the YAML file)",
        schema={"type": "array", "items": {"type": "string", "minLength": 1}})
    constraints: tuple[str, ...] = _field(
        (), "on a Swarm (target swarm): the nodes the worker pods may run on, as Swarm "
        "placement constraints ('node.labels.zone==a', 'node.hostname!=n1'); one host "
        "ignores them", schema={"type": "array", "items": {
            "type": "string", "pattern": _CONSTRAINT}})

    @classmethod
    def from_fields(cls, *, base_dir: Path | None = None, **raw: Any) -> DeploymentSpec:
        """Validate raw user fields (kwargs, a dict, parsed YAML).

        Raises:
            SpecError: naming the first field at fault.
        """
        known = {f.name for f in fields(cls)} | {"sandbox", "workspace"}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise SpecError(f"unknown field(s): {', '.join(unknown)}", field=unknown[0])
        if raw.pop("sandbox", False):
            raise SpecError("sandbox deployments are not supported; run it locally",
                            field="sandbox")
        raw.pop("workspace", None)
        external = bool(raw.get("external", False))
        name = validate_name(raw.get("name"))
        uses_raw = raw.get("uses")
        if uses_raw is None and external:
            uses_raw = "docker://external"
        uses = UsesRef.parse(uses_raw, field_name="uses", base_dir=base_dir)
        env = _str_map(raw.get("env"), "env")
        spec = cls(
            name=name,
            uses=uses,
            uses_with=_uses_with(raw.get("uses_with")),
            replicas=_positive_int(raw.get("replicas", 1), "replicas"),
            shards=_positive_int(raw.get("shards", 1), "shards"),
            polling=_polling(raw.get("polling", "ANY")),
            uses_before=_optional_uses(raw.get("uses_before"), "uses_before", base_dir),
            uses_after=_optional_uses(raw.get("uses_after"), "uses_after", base_dir),
            port=_port(raw.get("port"), "port"),
            host=_host(raw.get("host", "127.0.0.1")),
            env=env,
            volumes=tuple(
                VolumeSpec.parse(v, field_name=f"volumes[{i}]")
                for i, v in enumerate(_list(raw.get("volumes"), "volumes"))
            ),
            timeout_ready=_seconds(raw.get("timeout_ready", 60.0), "timeout_ready"),
            external=external,
            protocol=_protocol(raw.get("protocol", "grpc")),
            image=_image(raw.get("image", DEFAULT_RUNTIME_IMAGE)),
            cpus=_cpus(raw.get("cpus")),
            memory=parse_memory(raw.get("memory")),
            gpus=_gpus(raw.get("gpus"), env),
            restart_policy=_restart(raw.get("restart_policy", "on-failure")),
            health_interval=_seconds(raw.get("health_interval", 0.5), "health_interval"),
            stop_grace=_seconds(raw.get("stop_grace", 10.0), "stop_grace", zero_ok=True),
            log_max_size=None if (size := raw.get("log_max_size", DEFAULT_LOG_MAX_SIZE)) is None
            else parse_size(size, field_name="log_max_size"),
            log_max_files=_positive_int(raw.get("log_max_files", DEFAULT_LOG_MAX_FILES),
                                        "log_max_files"),
            max_starting=None if raw.get("max_starting") is None
            else _positive_int(raw.get("max_starting"), "max_starting"),
            needs=_needs(raw.get("needs")),
            policy=_policy(raw.get("policy")),
            heal_after=_heal_after(raw.get("heal_after", DEFAULT_HEAL_AFTER)),
            **tls_fields(raw, base_dir),
            timeout_send=_timeout_send(raw.get("timeout_send")),
            noblock_on_start=_flag(raw.get("noblock_on_start", False), "noblock_on_start"),
            reload=_flag(raw.get("reload", False), "reload"),
            watch=_watch(raw.get("watch"), base_dir),
            constraints=_constraints(raw.get("constraints")),
        )
        if spec.reload and not spec.watch and "file" not in {
                u.kind for u in (spec.uses, spec.uses_before, spec.uses_after) if u}:
            raise SpecError("live reload needs a local executor file (uses: file.py:Class) "
                            "or paths to watch (watch: [...]): an executor installed in "
                            "the image or a docker:// image has nothing here to watch",
                            field="reload")
        if external and spec.port is None:
            raise SpecError("an external deployment needs the port of the running service",
                            field="port")
        return spec

    def worker_hash(self) -> str:
        """A short hash of everything that makes a worker what it is."""
        material: dict[str, Any] = {
            "uses": str(self.uses),
            "uses_with": self.uses_with,
            "env": dict(self.env),
            "image": self.image,
            "volumes": [asdict(v) for v in self.volumes],
            "cpus": self.cpus,
            "memory": self.memory,
            "gpus": self.gpus,
        }
        if self.constraints:  # only when set: older specs keep their hash
            material["constraints"] = list(self.constraints)
        blob = json.dumps(material, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:12]

    def to_fields(self) -> dict[str, Any]:
        """A JSON-able dict of user fields that `from_fields` accepts back."""
        out: dict[str, Any] = {
            "name": self.name,
            "uses": str(self.uses),
            "uses_with": dict(self.uses_with),
            "replicas": self.replicas,
            "shards": self.shards,
            "polling": self.polling if isinstance(self.polling, str) else dict(self.polling),
            "host": self.host,
            "env": dict(self.env),
            "volumes": [
                f"{v.source}:{v.target}:{'ro' if v.read_only else 'rw'}" for v in self.volumes
            ],
            "timeout_ready": self.timeout_ready,
            "external": self.external,
            "protocol": self.protocol,
            "image": self.image,
            "restart_policy": self.restart_policy,
            "health_interval": self.health_interval,
            "stop_grace": self.stop_grace,
            "log_max_size": self.log_max_size,
            "log_max_files": self.log_max_files,
            "needs": sorted(self.needs),
            "policy": asdict(self.policy),
        }
        out["heal_after"] = self.heal_after
        for key in ("port", "cpus", "memory", "max_starting", *TLS_FIELDS):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        if isinstance(self.protocol, tuple):
            out["protocol"] = list(self.protocol)
        if self.timeout_send is not None:
            out["timeout_send"] = (self.timeout_send if isinstance(self.timeout_send, int)
                                   else dict(self.timeout_send))
        if self.gpus is not None and self.gpus.to_field() is not None:
            out["gpus"] = self.gpus.to_field()
        for key in ("noblock_on_start", "reload"):
            if getattr(self, key):
                out[key] = True
        if self.watch:
            out["watch"] = list(self.watch)
        if self.constraints:
            out["constraints"] = list(self.constraints)
        if self.uses_before:
            out["uses_before"] = str(self.uses_before)
        if self.uses_after:
            out["uses_after"] = str(self.uses_after)
        return out

    def evolve(self, **changes: Any) -> DeploymentSpec:
        """A copy with some fields changed, validated again."""
        merged = {**self.to_fields(), **changes}
        return DeploymentSpec.from_fields(**merged)

    @property
    def tls(self) -> bool:
        """The head serves TLS (tls_cert and tls_key are set)."""
        return self.tls_cert is not None

    def own_tls(self) -> ClientTLS | None:
        """How this process reaches its own head (None: in clear): `tls_ca` and, for mutual
        TLS, `tls_client_cert`; the name checked is the head certificate's own."""
        if self.tls_cert is None:
            return None
        return ClientTLS(ca=self.tls_ca, cert=self.tls_client_cert, key=self.tls_client_key,
                         server_name=own_server_name(self.tls_cert))

    def with_replicas(self, replicas: int) -> DeploymentSpec:
        return replace(self, replicas=_positive_int(replicas, "replicas"))

    @property
    def protocols(self) -> tuple[str, ...]:
        """The protocols asked for, as a tuple ('grpc' is served whatever it says)."""
        return (self.protocol,) if isinstance(self.protocol, str) else self.protocol


def _uses_with(value: object) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise SpecError("must be a mapping of argument names to values", field="uses_with")
    try:
        json.dumps(value)
    except (TypeError, ValueError) as exc:
        raise SpecError(f"values must be JSON-serialisable: {exc}", field="uses_with") from exc
    return dict(value)


def _optional_uses(value: object, field_name: str, base_dir: Path | None) -> UsesRef | None:
    if value is None:
        return None
    return UsesRef.parse(value, field_name=field_name, base_dir=base_dir)


def _list(value: object, field_name: str) -> list[object]:
    if value is None:
        return []
    if not isinstance(value, list | tuple):
        raise SpecError("must be a list", field=field_name)
    return list(value)


def _host(value: object) -> str:
    if not isinstance(value, str) or not value or any(c.isspace() for c in value):
        raise SpecError(f"must be a host address such as 127.0.0.1, got {value!r}", field="host")
    return value


def _seconds(value: object, field_name: str, *, zero_ok: bool = False) -> float:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or (value < 0 if zero_ok else value <= 0):  # type: ignore[operator]
        bound = ">= 0" if zero_ok else "> 0"
        raise SpecError(f"must be a number of seconds {bound}, got {value!r}", field=field_name)
    return float(value)  # type: ignore[arg-type]


def _protocol(value: object) -> str | tuple[str, ...]:
    """One protocol stays a name; a list becomes a tuple without repeats (Jina's shapes)."""
    items = list(value) if isinstance(value, list | tuple) else [value]
    if not items:
        raise SpecError("needs at least one of 'grpc', 'http'", field="protocol")
    names: list[str] = []
    for item in items:
        if not isinstance(item, str) or item.lower() not in PROTOCOLS:
            hint = (" (TLS is set on its own; the protocol stays 'grpc' or 'http')"
                    if isinstance(item, str) and item.lower() in ("https", "grpcs") else "")
            raise SpecError(f"{item!r} is not supported: use 'grpc', 'http' or a list of "
                            f"them{hint}", field="protocol")
        if item.lower() not in names:
            names.append(item.lower())
    return names[0] if len(names) == 1 else tuple(names)


def _timeout_send(value: object) -> int | dict[str, int | None] | None:
    """Milliseconds (Jina's unit), -1 or None for no limit, or a map per endpoint."""
    if isinstance(value, Mapping):
        out: dict[str, int | None] = {}
        for endpoint, ms in value.items():
            if not isinstance(endpoint, str) or not endpoint:
                raise SpecError(f"{endpoint!r} is not an endpoint such as '/slow' or '*'",
                                field="timeout_send")
            out[endpoint] = _millis(ms, f"timeout_send.{endpoint}")
        return out
    return _millis(value, "timeout_send")


def _millis(value: object, field_name: str) -> int | None:
    if value is None or value == -1:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise SpecError(f"must be a whole number of milliseconds >= 1 (or -1: no limit), "
                        f"got {value!r}", field=field_name)
    return value


def _image(value: object) -> str:
    if not isinstance(value, str) or not value or any(c.isspace() for c in value):
        raise SpecError(f"{value!r} is not an image reference", field="image")
    return value


def _cpus(value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 1024:
        raise SpecError(f"must be a positive number of CPUs, got {value!r}", field="cpus")
    return float(value)


def _gpus(value: object, env: Mapping[str, str]) -> GpuRequest | None:
    if value == -1:  # the fixed form of "all" (to_fields before GPU ids existed)
        raise SpecError("must be 'all', a GPU count or device ids, got -1", field="gpus")
    return parse_gpus(value, env)


def _flag(value: object, field_name: str) -> bool:
    if not isinstance(value, bool):
        raise SpecError(f"must be true or false, got {value!r}", field=field_name)
    return value


def _constraints(value: object) -> tuple[str, ...]:
    """Swarm placement constraints: 'node.ATTRIBUTE==VALUE' or '!='."""
    items = _list(value, "constraints")
    for i, item in enumerate(items):
        if not isinstance(item, str) or not re.match(_CONSTRAINT, item):
            raise SpecError(f"must be a Swarm placement constraint such as "
                            f"'node.labels.zone==a' or 'node.hostname!=n1', got {item!r}",
                            field=f"constraints[{i}]")
    return tuple(str(item).strip() for item in items)


def _watch(value: object, base_dir: Path | None) -> tuple[str, ...]:
    out: list[str] = []
    for i, item in enumerate(_list(value, "watch")):
        if not isinstance(item, str) or not item.strip():
            raise SpecError("must be a file or directory path", field=f"watch[{i}]")
        # not required to exist: the spec travels in labels to other processes and hosts
        path = Path(item).expanduser()
        path = path if path.is_absolute() else (base_dir or Path.cwd()) / path
        out.append(str(path.resolve()))
    return tuple(out)


def _restart(value: object) -> str:
    if value not in RESTART_POLICIES:
        raise SpecError(f"{value!r}: use one of {', '.join(RESTART_POLICIES)}",
                        field="restart_policy")
    return str(value)


def _needs(value: object) -> frozenset[str]:
    if value is None:
        return frozenset()
    items = [value] if isinstance(value, str) else _list(value, "needs")
    return frozenset(validate_name(v, field_name="needs") for v in items)


def _policy(value: object) -> UpdatePolicy:
    if value is None:
        return UpdatePolicy()
    if isinstance(value, UpdatePolicy):
        return value
    if not isinstance(value, Mapping):
        raise SpecError("must be a mapping of update-policy fields", field="policy")
    known = {f.name for f in fields(UpdatePolicy)}
    unknown = sorted(set(value) - known)
    if unknown:
        raise SpecError(f"unknown field(s): {', '.join(unknown)}", field=f"policy.{unknown[0]}")
    try:
        return UpdatePolicy(**value)
    except TypeError as exc:
        raise SpecError(str(exc), field="policy") from exc


def _heal_after(value: object) -> float | None:
    """Seconds (> 0) or None: 0, None and false turn healing off."""
    if value is None or value is False or value == 0:
        return None
    return _seconds(value, "heal_after")
