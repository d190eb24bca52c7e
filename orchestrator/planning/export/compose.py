"""Export to Compose: one service per pod, on one network, with the orchestrator's labels."""

from __future__ import annotations

from typing import Any

from orchestrator.planning import labels as L
from orchestrator.planning.export.common import (
    exportable,
    service_base,
    with_static_workers,
)
from orchestrator.planning.pods import PodContext, PodPlan, initial_pods
from orchestrator.planning.tls_secrets import compose_secrets, without_tls_mounts
from orchestrator.spec import DeploymentSpec


def to_compose(spec: DeploymentSpec, ctx: PodContext) -> dict[str, Any]:
    """A Compose file (format 2.4: Debian's docker-compose v1 and `docker compose` read it)
    with one service per pod, on one network, with the orchestrator's labels.

    The head's control token is `${ORCHESTRATOR_TOKEN}`, required when the stack starts.

    Raises:
        SpecError: an `external` deployment.
    """
    exportable(spec)
    pods = initial_pods(spec, ctx)
    pods = with_static_workers(pods, {p.name: p.address for p in pods})
    network = pods[0].container.network or "default"
    pods = [without_tls_mounts(p, spec) for p in pods]
    services = {p.name: _compose_service(p, network) for p in pods}
    doc = {
        "version": "2.4",
        "services": services,
        "networks": {network: {"name": network, "labels": L.for_deployment(spec.name)}},
    }
    tls_uses, tls_secrets = compose_secrets(spec)
    if tls_secrets:  # the head's certificate and key: file secrets, never in environment
        services[pods[0].name]["secrets"] = tls_uses
        doc["secrets"] = tls_secrets
    return doc


def _compose_service(pod: PodPlan, network: str) -> dict[str, Any]:
    c = pod.container
    service = service_base(pod, network)
    service.update({
        "security_opt": [_compose_security_opt(o) for o in c.security_opt],
        "labels": {k: v for k, v in c.labels.items() if k != L.OWNER},
        "restart": c.restart_policy if c.restart_policy != "on-failure"
        else f"on-failure:{c.restart_max_retries}" if c.restart_max_retries else "on-failure",
    })
    if c.mounts:
        service["volumes"] = [f"{m.source}:{m.target}:{'ro' if m.read_only else 'rw'}"
                              for m in c.mounts]
    if c.ports:
        service["ports"] = [f"{p.host_ip}:{p.host_port or ''}:{p.container_port}"
                            for p in c.ports]
    if c.cpu_shares:
        service["cpu_shares"] = c.cpu_shares
    if c.cpus:
        service["cpus"] = c.cpus
    if c.memory_bytes:
        service["mem_limit"] = c.memory_bytes
    if c.gpus:
        count = "all" if c.gpus < 0 else c.gpus
        request: dict[str, Any] = {"capabilities": [["gpu"]], "count": count}
        if c.gpu_ids:
            request = {"capabilities": [["gpu"]], "device_ids": list(c.gpu_ids)}
        service["device_requests"] = [request]
    return service


def _compose_security_opt(option: str) -> str:
    return "no-new-privileges:true" if option == "no-new-privileges" else option

