"""Heal and converge, decided: pure functions of what the engine and the head show.

A heal tick (and a converge) reads the world (the engine's listing of the deployment's
containers, the head's list of workers, probe results) and calls these functions with
those values, a "since when" table and the time. They return what to do; the healer
(control/healer.py) does it. Nothing here does I/O or reads a clock: a table-driven test
can walk every row, as a Kubernetes controller's reconcile is tested.

Since-when tables map a pod name to the monotonic time it was first seen sick or down.
Every function returns a new table; the caller keeps it for the next tick.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from orchestrator import labels as L
from orchestrator.model import ContainerInfo, WorkerStatus

Since = Mapping[str, float]
HeadVerdict = Literal["up", "down", "recreate"]


def track(since: Since, name: str, alive: bool, now: float, unhealthy_for: float
          ) -> tuple[dict[str, float], bool]:
    """Remember since when `name` has been down; the flag is True once that has lasted
    `unhealthy_for` seconds."""
    table = dict(since)
    if alive:
        table.pop(name, None)
        return table, False
    first = table.setdefault(name, now)
    return table, now - first >= unhealthy_for


def workers_run(containers: Sequence[ContainerInfo]) -> bool:
    """Does any worker container of the listing run?"""
    return any(c.labels.get(L.ROLE) == "worker" and c.running for c in containers)


def alive(info: ContainerInfo | None) -> bool:
    """Running, or being restarted by the engine's restart policy."""
    return info is not None and (info.running or info.status == "restarting")


def head_verdict(containers: Sequence[ContainerInfo], head: str, since: Since, now: float,
                 unhealthy_for: float) -> tuple[HeadVerdict, dict[str, float]]:
    """Is the head up? A head stopped or gone for `unhealthy_for` seconds is recreated,
    but only while a worker runs: a `down` removes the head last, and a heal must never
    bring it back in the middle of one."""
    info = next((c for c in containers if c.name == head), None)
    up = alive(info)
    table, due = track(since, head, up or not workers_run(containers), now, unhealthy_for)
    if due:
        return "recreate", table
    return ("up" if up else "down"), table


def uses_to_recreate(containers: Sequence[ContainerInfo], uses: Collection[str],
                     serving: Mapping[str, bool], since: Since, now: float,
                     unhealthy_for: float) -> tuple[list[str], dict[str, float]]:
    """The uses_before / uses_after pods (names in `uses`) stopped, gone or not serving
    (`serving`: probed by the caller, for running ones only) for `unhealthy_for` seconds.
    Only while a worker runs."""
    by_name = {c.name: c for c in containers}
    run = workers_run(containers)
    table, due = dict(since), []
    for name in sorted(uses):
        info = by_name.get(name)
        ok = not run or (info is not None and (
            info.status == "restarting" or (info.running and serving.get(name, False))))
        table, late = track(table, name, ok, now, unhealthy_for)
        if late:
            due.append(name)
    return due, table


def uses_to_probe(containers: Sequence[ContainerInfo], uses: Collection[str]) -> list[str]:
    """Which uses pods the caller must probe for `uses_to_recreate` (probing costs a call:
    only running ones, and only while a worker runs)."""
    if not workers_run(containers):
        return []
    return sorted(c.name for c in containers if c.name in uses and c.running)


@dataclass(frozen=True)
class ConvergePlan:
    """What an interrupted update or scale left behind, and what to do about it."""

    undrain: tuple[WorkerStatus, ...] = ()
    """Workers the head lists as draining (a retirement cut short): remove at the head."""
    debris: tuple[str, ...] = ()
    """Worker containers the head does not route to: stop and remove."""
    forgotten: tuple[str, ...] = ()
    """Running workers a restarted head lost: register again."""

    def __bool__(self) -> bool:
        return bool(self.debris or self.forgotten)


def forgotten_candidates(containers: Sequence[ContainerInfo],
                         at_head: Mapping[str, WorkerStatus]) -> list[str]:
    """Running workers that might have been lost by a head that restarted after them: only
    when the head lists no worker at all. The caller finds out which started before the
    head's current run (a start time a brief listing may not hold)."""
    if at_head:
        return []
    return sorted(c.name for c in containers
                  if c.labels.get(L.ROLE) == "worker" and c.running)


def converge_plan(containers: Sequence[ContainerInfo], at_head: Mapping[str, WorkerStatus],
                  started_before_head: Collection[str]) -> ConvergePlan:
    """Decide what `converge` does. `at_head`: worker id -> the head's view;
    `started_before_head`: running workers that started before the head's current run."""
    undrain: list[WorkerStatus] = []
    debris: list[str] = []
    forgotten: list[str] = []
    for info in containers:
        if info.labels.get(L.ROLE) != "worker":
            continue
        seen = at_head.get(info.name)
        if seen is not None:
            if seen.state == "draining":  # its retirement was cut short
                undrain.append(seen)
                debris.append(info.name)
        elif info.running and not at_head and info.name in started_before_head:
            forgotten.append(info.name)  # the head restarted after it and lost its list
        else:
            debris.append(info.name)  # stopped, or started and never added
    return ConvergePlan(tuple(undrain), tuple(sorted(debris)), tuple(sorted(forgotten)))


@dataclass(frozen=True)
class SickReport:
    """Workers due for replacement, and the since-when table to keep."""

    due: tuple[str, ...]
    since: dict[str, float] = field(default_factory=dict)


def sick_workers(workers: Collection[str], containers: Sequence[ContainerInfo],
                 at_head: Mapping[str, str], since: Since, now: float,
                 unhealthy_for: float) -> SickReport:
    """Workers (names in `workers`, the ones the deployment has) whose container is not
    running, or that the head routes around (`at_head`: worker id -> routing state), for
    `unhealthy_for` seconds now. Names that are no longer workers leave the table."""
    running = {c.name for c in containers if c.running}
    table = {name: t for name, t in since.items() if name in workers}
    due: list[str] = []
    for name in sorted(workers):
        ok = name in running and at_head.get(name) != "unhealthy"
        table, late = track(table, name, ok, now, unhealthy_for)
        if late:
            due.append(name)
    return SickReport(tuple(due), table)


def why_sick(name: str, containers: Sequence[ContainerInfo], at_head: Mapping[str, str]
             ) -> str:
    """Why worker `name` counts as sick: its container is gone or stopped, or the head
    routes around it. The reason the healer logs and puts on the replacement's labels."""
    info = next((c for c in containers if c.name == name), None)
    if info is None:
        return "container gone"
    if not info.running:
        code = "" if info.exit_code is None else f", exit code {info.exit_code}"
        return f"container {info.status}{code}"
    if at_head.get(name) == "unhealthy":
        return "failing health checks"
    return "not routed by the head"


def all_well(workers: Collection[str], containers: Sequence[ContainerInfo],
             at_head: Mapping[str, str], head: str, uses: Collection[str]) -> bool:
    """Nothing for a heal to look at more closely: the head and the uses pods run, every
    worker of the deployment (`workers`) runs and is routed as ready, and the head routes
    exactly the running workers. A heal that sees this takes no lock and acts on nothing
    (what a healthy deployment costs per tick: one listing and one call to the head)."""
    running = {c.name for c in containers if c.running}
    listed_workers = {c.name for c in containers if c.labels.get(L.ROLE) == "worker"}
    return (head in running and all(u in running for u in uses)
            and set(workers) == listed_workers == set(at_head)
            and listed_workers <= running
            and all(state == "ready" for state in at_head.values()))


def well_at_head(workers: Collection[str], at_head: Mapping[str, str]) -> bool:
    """The head routes exactly the deployment's workers (`workers`), every one as ready:
    what a look that asks only the head calls well."""
    return set(workers) == set(at_head) and all(s == "ready" for s in at_head.values())


def reason_kind(reason: str) -> str:
    """The few values of the head's replacement counter's `reason` label: 'gone',
    'stopped' or 'unhealthy' (the full reason goes to the log and the labels)."""
    if "gone" in reason:
        return "gone"
    if reason.startswith(("container ", "its container had stopped")):
        return "stopped"
    return "unhealthy"
