"""Ownership labels: the source of truth for what runs on the engine.

A leaf module (it imports nothing of the project): planning, the engines, cleanup and
the model all take their label names from here, so there is one definition of each.
"""

from __future__ import annotations

from collections.abc import Mapping

PREFIX = "orchestrator."
MANAGED = PREFIX + "managed"
"""Every resource the project creates carries `orchestrator.managed=true`."""
DEPLOYMENT = PREFIX + "deployment"
ROLE = PREFIX + "role"
SHARD = PREFIX + "shard"
REPLICA = PREFIX + "replica"
SPEC_HASH = PREFIX + "spec-hash"
GENERATION = PREFIX + "generation"
OWNER = PREFIX + "owner"
SPEC = PREFIX + "spec"
CONTROL = PREFIX + "control"
GPUS = PREFIX + "gpus"  # the GPU devices a pod was given ("0,1", "all"), for `ps`
"""On the head: host:port of its control service on the deployment network."""
REVISION = PREFIX + "revision"
"""On a rollout history record (a volume): the revision's number."""
RECORD = PREFIX + "record"
"""On a rollout history record: the revision as compact JSON (planning.history.Revision)."""

SUPERVISED = PREFIX + "supervised"
"""`true` on the pods of a deployment the supervisor heals (started by `up --detach`)."""
REPLACED = PREFIX + "replaced"
"""How many times the healer replaced this pod's slot (the count carries over)."""
REPLACED_REASON = PREFIX + "replaced-reason"
"""Why the healer last replaced this pod's slot."""

ROLES = ("head", "worker", "uses_before", "uses_after", "gateway")


def managed() -> dict[str, str]:
    """The filter that matches everything the project created."""
    return {MANAGED: "true"}


def for_deployment(name: str) -> dict[str, str]:
    """The filter that matches every resource of one deployment."""
    return {MANAGED: "true", DEPLOYMENT: name}


def pod_labels(
    *,
    deployment: str,
    role: str,
    owner: str,
    spec_hash: str = "",
    generation: int = 0,
    shard: int | None = None,
    replica: int | None = None,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Labels for one pod's container."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}")
    labels = {
        MANAGED: "true",
        DEPLOYMENT: deployment,
        ROLE: role,
        OWNER: owner,
        SPEC_HASH: spec_hash,
        GENERATION: str(generation),
    }
    if shard is not None:
        labels[SHARD] = str(shard)
    if replica is not None:
        labels[REPLICA] = str(replica)
    if extra:
        labels.update(extra)
    return labels
