"""Jina's Namespace views of a deployment's pods, and worker host resolution.

The seed API promises argparse Namespaces (`head_args`, `all_args`, `pod_args`, ...).
They are views: built from the spec and the pods on every call that changes them, never
passed inward and never mutated per replica (Jina's habit we do not repeat).
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from typing import Any

from orchestrator.planning.hosts import Placement, resolve_worker_address
from orchestrator.planning.pods import PodPlan
from orchestrator.state import DeploymentState


def namespace(state: DeploymentState, plan: PodPlan | None) -> argparse.Namespace | None:
    """One pod's arguments as a Namespace (None for a pod the deployment does not have)."""
    if plan is None:
        return None
    values = plan.args(state.spec)
    info = state.infos.get(plan.name)
    values["container_id"] = info.id if info else None
    return argparse.Namespace(**values)


def build(state: DeploymentState) -> dict[str, Any]:
    """Every pod's Namespace: {"head", "uses_before", "uses_after": ns or None,
    "pods": {shard: [ns, ...]}} (workers in replica order)."""
    plans = state.planned()
    by_role = {p.role: p for p in plans if p.role != "worker"}
    return {
        "head": namespace(state, by_role.get("head")),
        "uses_before": namespace(state, by_role.get("uses_before")),
        "uses_after": namespace(state, by_role.get("uses_after")),
        "pods": workers(state),
    }


def workers(state: DeploymentState) -> dict[int, list[argparse.Namespace]]:
    """The workers' Namespaces, grouped by shard, in replica order."""
    plans = sorted((p for p in state.planned() if p.role == "worker"),
                   key=lambda p: (p.shard or 0, p.replica or 0))
    pods: dict[int, list[argparse.Namespace]] = {s: [] for s in range(state.spec.shards)}
    for plan in plans:
        ns = namespace(state, plan)
        assert ns is not None and plan.shard is not None
        pods.setdefault(plan.shard, []).append(ns)
    return pods


def all_args(pod_args: dict[str, Any]) -> list[argparse.Namespace]:
    """Every pod's Namespace: head, uses_before, uses_after, then workers."""
    out: list[argparse.Namespace] = [pod_args["head"]]
    out += [ns for ns in (pod_args["uses_before"], pod_args["uses_after"]) if ns is not None]
    for shard in sorted(pod_args["pods"]):
        out += pod_args["pods"][shard]
    return out


def get_worker_address(pod_args: argparse.Namespace, pod: Placement, head_pod: Placement,
                       orchestrator: Placement | None = None) -> tuple[str, int]:
    """The (host, port) the head must dial to reach the worker described by `pod_args` /
    `pod`. `pod_args.host` / `pod_args.port` override the placement's when set; a
    containerized pod keeps its placement host (its own name is not where the host
    reaches it)."""
    host = getattr(pod_args, "host", None) or pod.host
    port = getattr(pod_args, "port", None) or pod.port
    if pod.containerized:
        host = pod.host
    return resolve_worker_address(replace(pod, host=host, port=port), head_pod, orchestrator)
