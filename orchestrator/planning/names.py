"""Deterministic, DNS-safe names of a deployment's containers and network."""

from __future__ import annotations

from orchestrator.spec import validate_name


def network_name(deployment: str) -> str:
    return f"{validate_name(deployment)}-net"


def head_name(deployment: str) -> str:
    return f"{deployment}-head"


def uses_name(deployment: str, role: str) -> str:
    """`uses_before` -> '<dep>-uses-before'."""
    return f"{deployment}-{role.replace('_', '-')}"


def worker_name(deployment: str, shard: int, replica: int, generation: int) -> str:
    """One name per (shard, replica slot, generation): an update's new replica never
    clashes with the old one it replaces, so both can run side by side."""
    return f"{deployment}-s{shard}-r{replica}-g{generation}"
