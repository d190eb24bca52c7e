"""planning.heal, row by row: what a heal tick and a converge decide from what they see."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator import labels as L
from orchestrator.model import ContainerInfo, ContainerStatus, WorkerStatus
from orchestrator.planning import heal


def pod(name: str, role: str = "worker", status: ContainerStatus = "running",
        started: int | None = None) -> ContainerInfo:
    return ContainerInfo(
        id=name, name=name, image="img", status=status,
        labels={L.MANAGED: "true", L.DEPLOYMENT: "d", L.ROLE: role, L.SHARD: "0"},
        started_at=None if started is None else datetime.fromtimestamp(started, UTC))


def seen(name: str, state: str = "ready") -> WorkerStatus:
    return WorkerStatus(0, f"{name}:50051", name, state)


HEAD = "d-head"


# -- track ---------------------------------------------------------------------------------
@pytest.mark.parametrize(("since", "alive", "now", "after", "table", "due"), [
    ({}, True, 10.0, 5.0, {}, False),
    ({}, False, 10.0, 5.0, {"p": 10.0}, False),
    ({"p": 10.0}, False, 14.9, 5.0, {"p": 10.0}, False),
    ({"p": 10.0}, False, 15.0, 5.0, {"p": 10.0}, True),
    ({"p": 10.0}, True, 15.0, 5.0, {}, False),
    ({}, False, 10.0, 0.0, {"p": 10.0}, True),
])
def test_track(since: dict[str, float], alive: bool, now: float, after: float,
               table: dict[str, float], due: bool) -> None:
    assert heal.track(since, "p", alive, now, after) == (table, due)


# -- the head ----------------------------------------------------------------------------------
@pytest.mark.parametrize(("containers", "since", "now", "verdict"), [
    ([pod(HEAD, "head"), pod("w")], {}, 100.0, "up"),
    ([pod(HEAD, "head", "restarting"), pod("w")], {HEAD: 0.0}, 100.0, "up"),
    ([pod(HEAD, "head", "exited"), pod("w")], {}, 100.0, "down"),
    ([pod(HEAD, "head", "exited"), pod("w")], {HEAD: 60.0}, 100.0, "recreate"),
    ([pod("w")], {HEAD: 60.0}, 100.0, "recreate"),  # removed by hand
    # no worker runs (a `down` in progress): never bring the head back
    ([pod("w", status="exited")], {HEAD: 0.0}, 100.0, "down"),
    ([], {HEAD: 0.0}, 100.0, "down"),
])
def test_head_verdict(containers: list[ContainerInfo], since: dict[str, float], now: float,
                      verdict: str) -> None:
    got, _ = heal.head_verdict(containers, HEAD, since, now, 30.0)
    assert got == verdict


# -- uses pods --------------------------------------------------------------------------------
UB = "d-uses-before"


@pytest.mark.parametrize(("containers", "serving", "since", "due"), [
    ([pod(UB, "uses_before"), pod("w")], {UB: True}, {UB: 0.0}, []),
    ([pod(UB, "uses_before"), pod("w")], {UB: False}, {UB: 0.0}, [UB]),  # silent
    ([pod(UB, "uses_before"), pod("w")], {UB: False}, {}, []),  # silent, not for long yet
    ([pod(UB, "uses_before", "exited"), pod("w")], {}, {UB: 0.0}, [UB]),
    ([pod("w")], {}, {UB: 0.0}, [UB]),  # gone
    ([pod(UB, "uses_before", "restarting"), pod("w")], {}, {UB: 0.0}, []),
    ([pod(UB, "uses_before", "exited")], {}, {UB: 0.0}, []),  # no worker runs
])
def test_uses_to_recreate(containers: list[ContainerInfo], serving: dict[str, bool],
                          since: dict[str, float], due: list[str]) -> None:
    got, _ = heal.uses_to_recreate(containers, {UB}, serving, since, 100.0, 30.0)
    assert got == due


def test_uses_pods_are_probed_only_when_running_and_while_workers_run() -> None:
    assert heal.uses_to_probe([pod(UB, "uses_before"), pod("w")], {UB}) == [UB]
    assert heal.uses_to_probe([pod(UB, "uses_before", "exited"), pod("w")], {UB}) == []
    assert heal.uses_to_probe([pod(UB, "uses_before")], {UB}) == []


# -- converge --------------------------------------------------------------------------------
@pytest.mark.parametrize(("containers", "at_head", "before", "plan"), [
    # all registered and routed: nothing to do
    ([pod("a"), pod("b")], [seen("a"), seen("b")], [], heal.ConvergePlan()),
    # started, never added: debris
    ([pod("a"), pod("n")], [seen("a")], [], heal.ConvergePlan(debris=("n",))),
    # a retirement cut short: undrain at the head, remove the container
    ([pod("a"), pod("o")], [seen("a"), seen("o", "draining")], [],
     heal.ConvergePlan(undrain=(seen("o", "draining"),), debris=("o",))),
    # a stopped worker the head does not list: debris
    ([pod("a"), pod("x", status="exited")], [seen("a")], [],
     heal.ConvergePlan(debris=("x",))),
    # the head restarted and lost its list: running workers from before it come back
    ([pod("a"), pod("b")], [], ["a", "b"], heal.ConvergePlan(forgotten=("a", "b"))),
    # ... but one started after the head's restart was never registered: debris
    ([pod("a"), pod("n")], [], ["a"], heal.ConvergePlan(debris=("n",), forgotten=("a",))),
    # heads and uses pods are not converge's business
    ([pod(HEAD, "head"), pod(UB, "uses_before")], [], [], heal.ConvergePlan()),
])
def test_converge_plan(containers: list[ContainerInfo], at_head: list[WorkerStatus],
                       before: list[str], plan: heal.ConvergePlan) -> None:
    table = {w.worker_id: w for w in at_head}
    assert heal.converge_plan(containers, table, before) == plan


def test_forgotten_candidates_only_when_the_head_lists_nothing() -> None:
    containers = [pod("a"), pod("b", status="exited"), pod(HEAD, "head")]
    assert heal.forgotten_candidates(containers, {}) == ["a"]
    assert heal.forgotten_candidates(containers, {"a": seen("a")}) == []


# -- sick workers ----------------------------------------------------------------------------
@pytest.mark.parametrize(("containers", "at_head", "since", "due", "table"), [
    ([pod("a"), pod("b")], {"a": "ready", "b": "ready"}, {}, (), {}),
    ([pod("a"), pod("b")], {"a": "ready", "b": "unhealthy"}, {}, (), {"b": 100.0}),
    ([pod("a"), pod("b")], {"a": "ready", "b": "unhealthy"}, {"b": 50.0}, ("b",),
     {"b": 50.0}),
    ([pod("a")], {"a": "ready", "b": "ready"}, {"b": 0.0}, ("b",), {"b": 0.0}),  # gone
    ([pod("a"), pod("b", status="exited")], {"a": "ready"}, {"b": 0.0}, ("b",),
     {"b": 0.0}),
    # draining is not sick; healed ones leave the table; strangers are dropped
    ([pod("a"), pod("b")], {"a": "draining", "b": "ready"}, {"b": 0.0, "zz": 1.0}, (), {}),
])
def test_sick_workers(containers: list[ContainerInfo], at_head: dict[str, str],
                      since: dict[str, float], due: tuple[str, ...],
                      table: dict[str, float]) -> None:
    report = heal.sick_workers({"a", "b"}, containers, at_head, since, 100.0, 30.0)
    assert (report.due, report.since) == (due, table)


names = st.sampled_from(["a", "b", "c", "d"])


@given(st.lists(st.tuples(names, st.sampled_from(["running", "exited"]),
                          st.sampled_from(["ready", "unhealthy", "draining", None])),
                unique_by=lambda t: t[0]),
       st.floats(0, 100), st.floats(0, 100))
def test_sick_workers_invariants(rows: list[tuple[str, Any, Any]], first: float,
                                 after: float) -> None:
    containers = [pod(n, status=s) for n, s, _ in rows]
    at_head = {n: r for n, _, r in rows if r is not None}
    since = {n: first for n, _, _ in rows}
    workers = {n for n, _, _ in rows}
    report = heal.sick_workers(workers, containers, at_head, since, 100.0, after)
    # only known workers are due, and only those that are really sick
    for name in report.due:
        row = next(r for r in rows if r[0] == name)
        assert row[1] != "running" or row[2] == "unhealthy"
    # the table never holds a healthy worker nor a stranger
    assert set(report.since) <= workers
    for name in report.since:
        row = next(r for r in rows if r[0] == name)
        assert row[1] != "running" or row[2] == "unhealthy"


@pytest.mark.parametrize(("workers", "at_head", "well"), [
    (["w1", "w2"], {"w1": "ready", "w2": "ready"}, True),
    (["w1", "w2"], {"w1": "ready", "w2": "unhealthy"}, False),   # routed around
    (["w1", "w2"], {"w1": "ready", "w2": "draining"}, False),    # an update under way
    (["w1", "w2"], {"w1": "ready"}, False),                      # the head lost one
    (["w1"], {"w1": "ready", "w3": "ready"}, False),             # another process's worker
    ([], {}, True),
])
def test_well_at_head(workers: list[str], at_head: dict[str, str], well: bool) -> None:
    assert heal.well_at_head(workers, at_head) is well
