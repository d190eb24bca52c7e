"""Ownership labels, for planning code: the definitions live in orchestrator.labels."""

from orchestrator.labels import (
    CONTROL,
    DEPLOYMENT,
    GENERATION,
    GPUS,
    MANAGED,
    OWNER,
    PREFIX,
    REPLICA,
    ROLE,
    ROLES,
    SHARD,
    SPEC,
    SPEC_HASH,
    for_deployment,
    managed,
    pod_labels,
)

__all__ = [
    "CONTROL",
    "DEPLOYMENT",
    "GENERATION",
    "GPUS",
    "MANAGED",
    "OWNER",
    "PREFIX",
    "REPLICA",
    "ROLE",
    "ROLES",
    "SHARD",
    "SPEC",
    "SPEC_HASH",
    "for_deployment",
    "managed",
    "pod_labels",
]
