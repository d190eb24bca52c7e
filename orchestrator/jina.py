"""Jina's option names, mapped to the fields of a `DeploymentSpec`. Pure.

One table, `JINA_OPTIONS`, serves both places where a Jina user brings Jina's names:
a ``jtype: Deployment`` file's ``with:`` block, and ``Deployment(args=...)`` given an
argparse Namespace or a dict built with Jina's option names. Each Jina option either
becomes one of our fields (converted where Jina's unit or shape differs: ``timeout_ready``
is milliseconds in Jina, seconds here), or is refused with the reason it has no meaning
here. A refused option is still accepted at a value that asks for nothing (Jina's own
default, or None), because a Namespace from Jina's parser carries every option; any other
value is a `SpecError` naming the option and the reason. Nothing is dropped silently.

Names that are not Jina's (``policy``, ``cpus``, ``memory``, ``image``, ...) pass through
unchanged; `DeploymentSpec.from_fields` validates them as usual.
"""

from __future__ import annotations

import argparse
import enum
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any

from orchestrator.errors import SpecError


def _same(value: Any) -> Any:
    return value


@dataclass(frozen=True)
class To:
    """The Jina option is our field `field`, after `convert`."""

    field: str
    convert: Callable[[Any], Any] = _same
    note: str = ""


@dataclass(frozen=True)
class Refuse:
    """The Jina option has no meaning here, for `reason`; values in `accepts` (Jina's
    defaults, which ask for nothing) are let through and have no effect."""

    reason: str
    accepts: tuple[object, ...] = field(default=())


@dataclass(frozen=True)
class Joined:
    """The option is read together with another one (`py_modules` with `uses`)."""

    note: str


def _single(name: str) -> Callable[[Any], Any]:
    """Jina takes some options as a list (`port`, `host`); one item is what we support."""
    def convert(value: Any) -> Any:
        if isinstance(value, list | tuple):
            if len(value) != 1:
                raise SpecError(f"{list(value)!r}: one value only (a Deployment here has "
                                "one head address)", field=name)
            return value[0]
        return value
    return convert


def _timeout_ready(value: Any) -> Any:
    """Jina counts milliseconds, -1 for forever; we count seconds and always have one."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return value  # the spec names the field and the expected type
    if value < 0:
        raise SpecError("-1 (wait forever) has no meaning here: a pod that never gets ready "
                        "must fail the start; give milliseconds", field="timeout_ready")
    return value / 1000


def _polling(value: Any) -> Any:
    """Jina also takes a per-endpoint map written as a JSON string."""
    if isinstance(value, str) and value.strip().startswith("{"):
        try:
            return json.loads(value)
        except json.JSONDecodeError as exc:
            raise SpecError(f"{value!r} is not a JSON map of endpoint to ANY or ALL",
                            field="polling") from exc
    return getattr(value, "name", value)  # Jina's PollingType enum


def _protocol(value: Any) -> Any:
    """Jina's protocol is a name, an enum or a list of them; one protocol reads as a name."""
    items = value if isinstance(value, list | tuple) else [value]
    names = [str(getattr(item, "name", item)).lower() for item in items]
    return names[0] if len(names) == 1 else names


def _gpus(value: Any) -> Any:
    """Jina's gpus is a string: 'all', a count, or 'device=ID,...'."""
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return value


def _volumes(value: Any) -> Any:
    """Jina mounts a bare host directory at /BASENAME in the container."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list | tuple):
        return value
    out: list[Any] = []
    for item in items:
        if isinstance(item, str) and ":" not in item and item:
            item = f"{item}:/{PurePath(item.rstrip('/')).name}"
        out.append(item)
    return out


ACCEPTS_ANY = object()
"""In `Refuse.accepts`: any value (an option Jina's parser always fills in, to no effect)."""
_LOGS = "pod logs are the containers' own output: read them with `orchestrator logs`"
_HTTP = ("an option of Jina's FastAPI gateway; this head serves its own HTTP interface "
         "(protocol: http) with fixed routes, beside gRPC and GET /metrics on its one port")
_TRACING = "no OpenTelemetry export: the head serves Prometheus metrics at GET /metrics"
_INTERNAL = ("set per pod by Jina's own parser; the orchestrator derives it from the spec")

JINA_OPTIONS: Mapping[str, To | Refuse | Joined] = {
    # -- what a Deployment is ---------------------------------------------------------------
    "name": To("name"),
    "uses": To("uses", note="'Class' with py_modules: [file.py], 'docker://image', "
                            "'file.py:Class', 'pkg.module:Class', or an inline "
                            "{jtype, with, py_modules} map"),
    "py_modules": Joined("read with uses / uses_before / uses_after: `uses: Echo` and "
                         "`py_modules: [echo.py]` is `echo.py:Echo`; one module"),
    "uses_with": To("uses_with"),
    "uses_before": To("uses_before"),
    "uses_after": To("uses_after"),
    "replicas": To("replicas"),
    "shards": To("shards"),
    "polling": To("polling", _polling),
    "port": To("port", _single("port")),
    "port_expose": To("port", _single("port_expose"), note="Jina's older name of port"),
    "port_in": To("port", _single("port_in"), note="Jina's older name of port"),
    "ports": To("port", _single("ports"), note="Jina's plural of port"),
    "host": To("host", _single("host"), note="the address the head's port binds to "
                                             "(Jina's default is 0.0.0.0)"),
    "env": To("env"),
    "volumes": To("volumes", _volumes),
    "gpus": To("gpus", _gpus),
    "timeout_ready": To("timeout_ready", _timeout_ready,
                        note="milliseconds in Jina, seconds in the spec"),
    "external": To("external"),
    "protocol": To("protocol", _protocol),
    "needs": To("needs"),
    "workspace": Refuse("each pod's files are its container's own: mount a directory with "
                        "volumes and pass its path in uses_with"),
    # -- the executor inside a worker --------------------------------------------------------
    "uses_metas": Refuse("executor metas are how Jina loads an executor; pass constructor "
                         "arguments with uses_with"),
    "uses_requests": Refuse("endpoints are bound by the executor's @requests decorators; "
                            "there is no remapping at run time"),
    "uses_dynamic_batching": Refuse("no dynamic batching: a worker serves each request as "
                                    "it arrives"),
    "output_array_type": Refuse("documents travel as JSON bytes, exactly as sent; there is "
                                "no array serialisation to choose"),
    "exit_on_exceptions": Refuse("a failing request fails alone; the head replaces a worker "
                                 "that exits", accepts=([],)),
    "no_reduce": Refuse("the head merges shard results itself; use uses_after to merge "
                        "your way", accepts=(False,)),
    "disable_reduce": Refuse("the head merges shard results itself; use uses_after to merge "
                             "your way", accepts=(False,)),
    "allow_concurrent": Refuse("a worker serves its requests concurrently already",
                               accepts=(False, True)),
    "install_requirements": Refuse("executors run in a runtime image built ahead of time; "
                                   "put requirements into the image", accepts=(False,)),
    "reload": To("reload", note="a changed executor file replaces the workers by a "
                               "zero-downtime rolling update (see docs/jina-parity.md)"),
    "force_update": Refuse("there is no Hub to update from", accepts=(False,)),
    "prefer_platform": Refuse("there is no Hub to pull from: images are built locally"),
    # -- containers ---------------------------------------------------------------------------
    "entrypoint": Refuse("the runtime image's entrypoint starts the worker; use a "
                         "docker:// executor for an image of your own"),
    "docker_kwargs": Refuse("container options are set by the orchestrator, with its "
                            "security defaults; use the spec's fields (cpus, memory, "
                            "volumes, env)"),
    "disable_auto_volume": Refuse("no volume is mounted automatically here",
                                  accepts=(False, True)),
    "env_from_secret": Refuse("Kubernetes secrets do not exist on a Docker engine; pass "
                              "values with env (and ${VAR} interpolation)"),
    "image_pull_secrets": Refuse("no registry is used: images are built locally"),
    "native": Refuse("every pod runs in its own container", accepts=(False,)),
    # -- networking, gateway, head --------------------------------------------------------------
    "timeout_ctrl": Refuse("control requests use the orchestrator's own deadlines",
                           accepts=(60,)),
    "timeout_send": To("timeout_send", note="milliseconds, as in Jina; -1 or None: no "
                       "limit; a map of endpoint to milliseconds also works"),
    "retries": Refuse("the head retries a failed call on another healthy replica by itself",
                      accepts=(-1,)),
    "compression": Refuse("head-to-worker calls are not compressed"),
    "grpc_server_options": Refuse("the gRPC server options of the pods are the runtime's own"),
    "grpc_metadata": Refuse("requests carry no extra gRPC metadata"),
    "tls": Refuse("Jina's tls flag carries no certificate: set tls_cert and tls_key "
                  "(docs/security.md)", accepts=(False,)),
    "grpc_channel_options": Refuse("the head's channels to its workers use the runtime's "
                                   "own options"),
    "grpc_server_kwargs": Refuse("the gRPC server options of the pods are the runtime's own"),
    "proxy": Refuse("the orchestrator talks to the engine and the head directly; proxy "
                    "variables are not read", accepts=(False,)),
    "expose_graphql_endpoint": Refuse(_HTTP, accepts=(False,)),
    "include_gateway": Refuse("the head is the one entry point: there is no separate "
                              "gateway", accepts=(True, False)),
    "noblock_on_start": To("noblock_on_start",
                           note="start() returns once the pods are created; "
                                "wait_start_success() waits"),
    "floating": Refuse("a Flow notion: there is no chaining of Deployments here",
                       accepts=(False,)),
    "when": Refuse("a Flow notion: every request reaches the executor"),
    "secrets": Refuse("no secret store: pass values with env (and ${VAR} interpolation)"),
    "stateful": Refuse("no RAFT state replication between replicas", accepts=(False,)),
    "peer_ports": Refuse("no RAFT state replication between replicas"),
    "raft_configuration": Refuse("no RAFT state replication between replicas"),
    "raft_bootstrap": Refuse("no RAFT state replication between replicas", accepts=(False,)),
    "provider": Refuse("no cloud provider integration (SageMaker, Azure ML)",
                       accepts=("NONE", "none")),
    "provider_endpoint": Refuse("no cloud provider integration (SageMaker, Azure ML)"),
    "title": Refuse(_HTTP),
    "description": Refuse(_HTTP),
    "cors": Refuse(_HTTP, accepts=(False,)),
    "no_debug_endpoints": Refuse(_HTTP, accepts=(False,)),
    "no_crud_endpoints": Refuse(_HTTP, accepts=(False,)),
    "expose_endpoints": Refuse(_HTTP),
    "uvicorn_kwargs": Refuse(_HTTP),
    "ssl_certfile": Refuse(_HTTP),
    "ssl_keyfile": Refuse(_HTTP),
    "prefetch": Refuse(_HTTP, accepts=(1000, 0)),
    # -- observability ----------------------------------------------------------------------------
    "monitoring": Refuse("the head always serves Prometheus metrics at GET /metrics on its "
                         "port", accepts=(False, True)),
    "port_monitoring": Refuse("metrics are served on the head's own port; a separate "
                              "metrics port cannot be set", accepts=(ACCEPTS_ANY,)),
    "tracing": Refuse(_TRACING, accepts=(False,)),
    "traces_exporter_host": Refuse(_TRACING),
    "traces_exporter_port": Refuse(_TRACING),
    "metrics": Refuse(_TRACING, accepts=(False,)),
    "metrics_exporter_host": Refuse(_TRACING),
    "metrics_exporter_port": Refuse(_TRACING),
    "log_config": Refuse(_LOGS, accepts=("default",)),
    "quiet": Refuse(_LOGS, accepts=(False,)),
    "quiet_error": Refuse(_LOGS, accepts=(False,)),
    # -- Jina's parser bookkeeping (hidden options, set per pod) ---------------------------------
    "workspace_id": Refuse(_INTERNAL, accepts=(ACCEPTS_ANY,)),
    "extra_search_paths": Refuse(_INTERNAL, accepts=([],)),
    "k8s_namespace": Refuse(_INTERNAL),
    "runtime_cls": Refuse(_INTERNAL, accepts=(ACCEPTS_ANY,)),
    "pod_role": Refuse(_INTERNAL, accepts=(ACCEPTS_ANY,)),
    "deployment_role": Refuse(_INTERNAL, accepts=(ACCEPTS_ANY,)),
    "shard_id": Refuse(_INTERNAL, accepts=(0,)),
    "replica_id": Refuse(_INTERNAL, accepts=(-1, 0)),
    "uses_before_address": Refuse(_INTERNAL),
    "uses_after_address": Refuse(_INTERNAL),
    "connection_list": Refuse(_INTERNAL),
}
"""Jina option name -> our field (`To`), a refusal (`Refuse`), or read with another (`Joined`).
"""

_HUB_PREFIXES = ("jinahub://", "jinahub+docker://", "jinahub+sandbox://", "jinaai://",
                 "jinaai+docker://", "jinaai+sandbox://")


def fields_from_jina(options: Mapping[str, Any] | argparse.Namespace) -> dict[str, Any]:
    """Spec fields from options named as Jina names them (a ``with:`` block, a dict, or a
    Namespace from Jina's parser). Options set to None count as not given.

    Raises:
        SpecError: naming a Jina option that has no meaning here (and why), or one whose
            value cannot be converted.
    """
    given = vars(options) if isinstance(options, argparse.Namespace) else dict(options)
    given = {k: v for k, v in given.items() if v is not None}
    modules = _py_modules(given.pop("py_modules", None))
    fields: dict[str, Any] = {}
    for name, value in given.items():
        entry = JINA_OPTIONS.get(name)
        if entry is None:  # one of our own fields, or unknown: the spec says which
            fields[name] = value
        elif isinstance(entry, Refuse):
            _refuse(name, entry, value)
        elif isinstance(entry, To):
            _set(fields, name, entry.field, entry.convert(value))
    roles = [role for role in ("uses", "uses_before", "uses_after") if role in fields]
    if modules and not any(_reads_modules(fields[role]) for role in roles):
        raise SpecError("only a bare class name in uses, uses_before or uses_after reads "
                        "py_modules (uses: Echo with py_modules: [echo.py])",
                        field="py_modules")
    for role in roles:
        fields.update(_uses(role, fields[role], modules, fields.get("uses_with")))
    return fields


def _reads_modules(uses: Any) -> bool:
    """Whether a Jina `uses` value takes its class from py_modules."""
    if isinstance(uses, Mapping):
        own = uses.get("py_modules") or (uses.get("metas") or {}).get("py_modules")
        return not own
    return isinstance(uses, str) and uses.isidentifier()


def _refuse(name: str, entry: Refuse, value: Any) -> None:
    if isinstance(value, enum.Enum):  # Jina's parser gives enums for some options
        value = value.name
    if any(a is ACCEPTS_ANY or (a == value and type(a) is type(value)) for a in entry.accepts):
        return
    raise SpecError(f"Jina's {name} has no meaning here: {entry.reason}", field=name)


def _set(fields: dict[str, Any], name: str, target: str, value: Any) -> None:
    if target in fields and fields[target] != value:  # port and port_expose, say
        raise SpecError(f"{target} is given twice with different values", field=name)
    fields[target] = value


def _py_modules(value: Any) -> list[str]:
    if value is None:
        return []
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or not all(isinstance(i, str) for i in items):
        raise SpecError("must be a list of Python files", field="py_modules")
    if len(items) > 1:
        raise SpecError(f"{list(items)!r}: one module only; make the executor's file "
                        "import the others", field="py_modules")
    return list(items)


def _uses(role: str, value: Any, modules: list[str],
          uses_with: Any) -> dict[str, Any]:
    """A Jina `uses` value as ours: 'Class' plus py_modules, or an inline executor map."""
    if isinstance(value, Mapping):
        return _inline_executor(role, value, modules, uses_with)
    if not isinstance(value, str):
        return {role: value}  # the spec names the field and the expected form
    if value.startswith(_HUB_PREFIXES):
        raise SpecError(f"{value!r}: there is no Executor Hub here (no registry is "
                        "reachable); build the image locally and use docker://IMAGE",
                        field=role)
    if value.endswith((".yml", ".yaml", ".jaml")):
        raise SpecError(f"{value!r}: executor YAML files are not read; give "
                        "'file.py:Class' and its arguments in uses_with", field=role)
    if value.isidentifier():
        if not modules:
            raise SpecError(f"{value!r} is a bare class name: add py_modules: [file.py], "
                            "or write 'file.py:Class'", field=role)
        return {role: f"{modules[0]}:{value}"}
    return {role: value}


def _inline_executor(role: str, config: Mapping[str, Any], modules: list[str],
                     uses_with: Any) -> dict[str, Any]:
    """``uses: {jtype: Echo, with: {...}, py_modules: [echo.py]}`` (Jina's inline form)."""
    unknown = sorted(set(config) - {"jtype", "with", "py_modules", "metas"})
    metas = config.get("metas") or {}
    if not isinstance(metas, Mapping):
        raise SpecError("must be a map", field=f"{role}.metas")
    unknown += [f"metas.{k}" for k in sorted(set(metas) - {"py_modules"})]
    if unknown:
        raise SpecError(f"{unknown[0]} of an inline executor has no meaning here: only "
                        "jtype, with and py_modules are read", field=f"{role}.{unknown[0]}")
    own = _py_modules(config.get("py_modules", metas.get("py_modules"))) or modules
    out = _uses(role, config.get("jtype"), own, None)
    inner = config.get("with")
    if inner is not None:
        if role != "uses":
            raise SpecError("arguments of a uses_before / uses_after executor cannot be "
                            "given here", field=f"{role}.with")
        if not isinstance(inner, Mapping):
            raise SpecError("must be a map of argument names to values", field="uses.with")
        outer = uses_with if isinstance(uses_with, Mapping) else {}
        out["uses_with"] = {**inner, **outer}  # as in Jina: uses_with overrides `with`
    return out


def spec_fields(args: argparse.Namespace | Mapping[str, Any] | None,
                kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of `Deployment(args, **kwargs)`: `args` speaks Jina's option names and
    units (a Namespace from Jina's parser, or a dict with its names); keyword arguments are
    our own fields and win over `args`."""
    if args is None:
        raw: dict[str, Any] = {}
    elif isinstance(args, argparse.Namespace | Mapping):
        raw = fields_from_jina(args)
    else:
        raise SpecError(f"must be an argparse.Namespace or a dict, not {type(args).__name__}",
                        field="args")
    raw.update(kwargs)
    return raw
