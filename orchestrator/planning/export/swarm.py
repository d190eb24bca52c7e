"""Export to a Swarm stack: one single-task service per pod on an attachable overlay
network (endpoint_mode dnsrr), the executor's file as a Swarm config, the control token as
a Swarm secret."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import PurePosixPath
from typing import Any

from orchestrator.errors import SpecError
from orchestrator.planning import labels as L
from orchestrator.planning.export.common import (
    code_name,
    exportable,
    service_base,
    uses_of,
    with_static_workers,
)
from orchestrator.planning.pods import (
    RUNTIME_USER,
    TOKEN_ENV,
    TOKEN_FILE_ENV,
    USES_MOUNT,
    PodContext,
    PodPlan,
    initial_pods,
)
from orchestrator.planning.tls_secrets import (
    repointed,
    swarm_paths,
    swarm_secrets,
    without_tls_mounts,
)
from orchestrator.spec import CONTAINER_PORT, DeploymentSpec, UsesRef

SWARM_TOKEN_TARGET = "/run/secrets/orchestrator-token"
"""On Swarm, the head reads its token from this file: the Swarm secret NAME-token."""

SWARM_PROBE = "/usr/local/bin/orchestrator-probe"
SWARM_HEALTHCHECK: dict[str, Any] = {
    # an executor image built FROM an older runtime image has only the Python probe
    "test": ["CMD-SHELL", f"if [ -x {SWARM_PROBE} ]; then exec {SWARM_PROBE}; fi; "
             "exec /opt/venv/bin/python -m orchestrator.runtime probe"],
    "interval": "5s", "timeout": "3s", "retries": 3, "start_period": "60s",
}
"""Swarm publishes a task (in DNS) and moves a start-first update on only once the task is
healthy, and the first check runs one interval after the start: the image's 30 s would
stall both. The image's compiled probe makes an exec every 5 s cheap (the Python one it
replaces cost ~0.17 s of CPU per exec)."""

_SWARM_RESTART = {"no": "none", "on-failure": "on-failure", "always": "any",
                  "unless-stopped": "any"}


def to_swarm(spec: DeploymentSpec, ctx: PodContext,
             sources: Mapping[str, str]) -> dict[str, Any]:
    """A stack file (format 3.8) for `docker stack deploy --resolve-image never`: one
    single-task service per pod on an attachable overlay network, so the head dials every
    worker by its service name.

    The head's control token is the external Swarm secret `NAME-token` (created first with
    `docker secret create`), mounted as a file: it is in no service's environment.
    Swarm services cannot set no-new-privileges (the runtime image has no setuid files
    instead) nor a CPU weight, and cannot bind a published port to one address: the head's
    port is published (mode host, every interface) only when the spec gives `port` with
    `host: 0.0.0.0`; without `port`, clients reach `NAME-head:50051` on the network.
    The policy becomes each service's update_config (order, parallelism = max_surge,
    monitor, failure_action) and stop_grace its stop_grace_period.

    Raises:
        SpecError: `port` with another host than 0.0.0.0, `gpus` (Swarm has only generic
            resources set up per node), a file executor missing from `sources`, an
            `external` deployment.
    """
    exportable(spec)
    if spec.port is not None and spec.host != "0.0.0.0":
        raise SpecError(f"Swarm cannot publish a port on {spec.host} only; set host: "
                        "0.0.0.0 to publish on every interface, or drop port and reach the "
                        "head on the stack's network", field="host")
    if spec.gpus is not None:
        raise SpecError("Swarm has no GPU request, only generic resources set up per node",
                        field="gpus")
    pods = initial_pods(spec, ctx)
    pods = with_static_workers(pods, {p.name: p.address for p in pods})
    pods = [without_tls_mounts(p, spec) for p in pods]
    network = pods[0].container.network or "default"
    configs: dict[str, Any] = {}
    services: dict[str, Any] = {}
    for pod in pods:
        uses = uses_of(spec, pod.role)
        code = None
        if uses is not None and uses.kind == "file":
            code = _swarm_config(spec, pod.role, uses, sources)
            configs.update(code)
        services[pod.name] = _swarm_service(spec, pod, network, code)
    doc: dict[str, Any] = {
        "version": "3.8",
        "services": services,
        "networks": {network: {"name": network, "driver": "overlay", "attachable": True,
                               "labels": L.for_deployment(spec.name)}},
    }
    if configs:
        doc["configs"] = configs
    secret = swarm_secret_name(spec)
    doc["secrets"] = {secret: {"external": True, "name": secret}}
    doc["secrets"].update(swarm_secrets(spec, "", "")[1])  # the head's TLS files, if any
    return doc


def swarm_secret_name(spec: DeploymentSpec) -> str:
    """The Swarm secret holding a deployment's control token."""
    return f"{spec.name}-token"


def _swarm_config(spec: DeploymentSpec, role: str, uses: UsesRef,
                  sources: Mapping[str, str]) -> dict[str, Any]:
    """A Swarm config holding the executor's file. Configs cannot change, so the name
    carries a hash of the text: an edited executor deploys as a new config."""
    if uses.path not in sources:
        raise SpecError(f"the source of {uses.path} was not given to the export",
                        field="uses" if role == "worker" else role)
    digest = hashlib.sha256(sources[uses.path].encode()).hexdigest()[:12]
    name = f"{code_name(spec, role)}-{digest}"
    return {name: {"name": name, "file": uses.path}}


def _swarm_service(spec: DeploymentSpec, pod: PodPlan, network: str,
                   code: Mapping[str, Any] | None) -> dict[str, Any]:
    c = pod.container
    service = service_base(pod, network)
    service["healthcheck"] = {**SWARM_HEALTHCHECK, "test": list(SWARM_HEALTHCHECK["test"])}
    volumes = [{"type": "bind", "source": m.source, "target": m.target,
                "read_only": m.read_only} for m in c.mounts if m.target != USES_MOUNT]
    if volumes:
        service["volumes"] = volumes
    user, group = (c.user or RUNTIME_USER).split(":")
    if code:
        service["configs"] = [{
            "source": name,
            "target": f"{USES_MOUNT}/{PurePosixPath(body['file']).name}",
            "uid": user, "gid": group, "mode": 0o444,
        } for name, body in code.items()]
    if pod.role == "head":
        service["environment"].pop(TOKEN_ENV, None)
        service["environment"][TOKEN_FILE_ENV] = SWARM_TOKEN_TARGET
        service["secrets"] = [{"source": swarm_secret_name(spec),
                               "target": PurePosixPath(SWARM_TOKEN_TARGET).name,
                               "uid": user, "gid": group, "mode": 0o400}]
        service["secrets"] += swarm_secrets(spec, user, group)[0]
        repointed(service, swarm_paths(spec))
        if spec.port is not None:
            service["ports"] = [{"target": CONTAINER_PORT, "published": spec.port,
                                 "protocol": "tcp", "mode": "host"}]
    policy = spec.policy
    update: dict[str, Any] = {
        "parallelism": max(policy.max_surge, 1), "order": policy.order,
        "failure_action": policy.failure_action,
    }
    if policy.monitor:
        update["monitor"] = f"{policy.monitor}s"
    restart: dict[str, Any] = {"condition": _SWARM_RESTART[c.restart_policy or "no"]}
    if c.restart_policy == "on-failure" and c.restart_max_retries:
        restart["max_attempts"] = c.restart_max_retries
    deploy: dict[str, Any] = {
        "replicas": 1,
        "endpoint_mode": "dnsrr",
        "labels": {k: v for k, v in c.labels.items() if k != L.OWNER},
        "restart_policy": restart,
        "update_config": update,
        "rollback_config": {"parallelism": update["parallelism"], "order": policy.order},
    }
    limits: dict[str, Any] = {}
    if c.cpus:
        limits["cpus"] = str(c.cpus)
    if c.memory_bytes:
        limits["memory"] = f"{c.memory_bytes}b"
    if limits:
        deploy["resources"] = {"limits": limits}
    service["deploy"] = deploy
    return service

