"""Which engine a deployment runs on: `target="docker"` (one host, the default) or
`target="swarm"` (the services of a Docker Swarm, through a manager at DOCKER_HOST).

The engine modules are imported on use: a user of one never loads the other.
"""

from __future__ import annotations

import os

from orchestrator.engine.base import ContainerEngine
from orchestrator.errors import SpecError

TARGETS = ("docker", "swarm")
TARGET_ENV = "ORCHESTRATOR_TARGET"
"""The target when none is given (e.g. ORCHESTRATOR_TARGET=swarm for every CLI command)."""


def chosen_target(target: str | None = None) -> str:
    """`target`, else $ORCHESTRATOR_TARGET, else docker. Raises `SpecError`."""
    chosen = target or os.environ.get(TARGET_ENV) or "docker"
    if chosen not in TARGETS:
        raise SpecError(f"unknown target {chosen!r}: one of {', '.join(TARGETS)}",
                        field="target")
    return chosen


def engine_for(target: str | None = None, *, timeout: int = 60) -> ContainerEngine:
    """The engine of a target, from the environment (DOCKER_HOST: for swarm, a manager).

    Raises:
        SpecError: an unknown target.
        EngineUnavailable: no engine answers (or, for swarm, it is not a manager).
    """
    if chosen_target(target) == "swarm":
        from orchestrator.engine.docker_engine_swarm import SwarmEngine

        return SwarmEngine.from_env(timeout=timeout)
    from orchestrator.engine.docker_engine import DockerEngine

    return DockerEngine.from_env(timeout=timeout)
