"""What every export target shares: the control token's variable, the check that a
deployment has pods of its own, the head's static worker list, and the parts of a service
that Compose and a Swarm stack write the same way."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from orchestrator.errors import SpecError
from orchestrator.planning.pods import RUNTIME_USER, TOKEN_ENV, PodPlan
from orchestrator.spec import DeploymentSpec, UsesRef

TOKEN_VARIABLE = "ORCHESTRATOR_TOKEN"
"""Compose reads the head's control token from this variable when the stack starts."""



def exportable(spec: DeploymentSpec) -> None:
    """Raises SpecError for a deployment that has no pods of its own to export."""
    if spec.external:
        raise SpecError("an external deployment is a service running elsewhere: it has no "
                        "pods to export", field="external")


def with_static_workers(pods: list[PodPlan], addresses: Mapping[str, str]) -> list[PodPlan]:
    """The head's command gains one `--worker SHARD=ADDRESS` per worker pod."""
    head, rest = pods[0], pods[1:]
    flags: tuple[str, ...] = ()
    for pod in rest:
        if pod.role == "worker":
            flags += ("--worker", f"{pod.shard}={addresses[pod.name]}")
    container = replace(head.container, command=(*head.container.command, *flags))
    return [replace(head, container=container), *rest]


def service_base(pod: PodPlan, network: str) -> dict[str, Any]:
    """What a Compose service and a Swarm stack service write the same way. The control
    token is `${ORCHESTRATOR_TOKEN}`, which both tools substitute from their environment."""
    c = pod.container
    env = dict(c.env)
    if TOKEN_ENV in env:
        env[TOKEN_ENV] = f"${{{TOKEN_VARIABLE}:?set {TOKEN_VARIABLE} to the control token}}"
    service: dict[str, Any] = {
        "image": c.image,
        "command": list(c.command),
        "hostname": c.hostname or pod.name,
        "user": c.user or RUNTIME_USER,
        "cap_drop": list(c.cap_drop),
        "environment": env,
        "networks": [network],
    }
    if c.stop_timeout is not None:
        service["stop_grace_period"] = f"{c.stop_timeout}s"
    if c.extra_hosts:
        service["extra_hosts"] = [f"{h}:{ip}" for h, ip in c.extra_hosts.items()]
    if c.log_max_bytes is not None:  # no driver: the engine's default, as when we run it
        service["logging"] = {"options": {"max-size": str(c.log_max_bytes),
                                          "max-file": str(c.log_max_files)}}
    return service


def uses_of(spec: DeploymentSpec, role: str) -> UsesRef | None:
    """The executor a pod of this role runs (None for the head)."""
    return {"worker": spec.uses, "uses_before": spec.uses_before,
            "uses_after": spec.uses_after}.get(role)


def code_name(spec: DeploymentSpec, role: str) -> str:
    """The name of the ConfigMap (or the prefix of the Swarm config) holding a role's
    executor file."""
    return f"{spec.name}-{role.replace('_', '-')}-code"

