"""`orchestrator.apply`: what `up` decides for a running deployment (pure, table-driven),
and how it carries that out, on the in-memory engine with recording handles (a real start
needs a head that answers gRPC: that part is covered by tests/integration/test_cli.py)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import pytest

from orchestrator.apply import (
    HEAD_FIELDS,
    Applied,
    Decision,
    StepKind,
    apply_config,
    apply_each,
    decide,
    leave_running,
    open_new,
    open_supervised,
    pod_count,
    remove,
    spec_changes,
    tear_down,
)
from orchestrator.config import DeploymentConfig
from orchestrator.deployment import Deployment
from orchestrator.engine.base import ContainerEngine, ContainerSpec
from orchestrator.engine.memory import MemoryEngine
from orchestrator.errors import ConfigError, DeploymentNotFound, PodStartError
from orchestrator.planning import labels as L
from orchestrator.planning.names import network_name
from orchestrator.progress import ProgressCallback, ProgressEvent
from orchestrator.spec import DeploymentSpec

IMAGE = "orchestrator-runtime:test"
BASE: dict[str, Any] = {"name": "dep", "uses": "pkg.mod:Exec", "replicas": 2, "image": IMAGE}


def spec(**changes: Any) -> DeploymentSpec:
    return DeploymentSpec.from_fields(**{**BASE, **changes})


def config(path: str = "", **changes: Any) -> DeploymentConfig:
    fields = {**BASE, **changes}
    return DeploymentConfig(fields=fields, spec=DeploymentSpec.from_fields(**fields),
                            source=Path("app.yml"), path=path)


# -- deciding ---------------------------------------------------------------------------

DECISIONS: list[tuple[str, dict[str, Any], list[str], Decision]] = [
    ("same spec", {}, [], Decision()),
    ("more replicas", {"replicas": 4}, [], Decision(replicas=4)),
    ("fewer replicas", {"replicas": 1}, [], Decision(replicas=1)),
    ("new uses_with", {"uses_with": {"tag": "v2"}}, [],
     Decision(roll={"uses_with": {"tag": "v2"}})),
    ("new image and replicas", {"image": "other:1", "replicas": 3}, [],
     Decision(roll={"image": "other:1"}, replicas=3)),
    ("env and uses_with together", {"env": {"A": "1"}, "uses_with": {"k": 1}}, [],
     Decision(roll={"env": {"A": "1"}, "uses_with": {"k": 1}})),
    ("a cut-short update to this spec", {}, ["dep-s0-r1-g1"],
     Decision(replicas=2, notes=("finishing an interrupted update: 1 replica(s) ran an "
                                 "older spec",))),
    ("a cut-short update and a new spec", {"uses_with": {"tag": "v3"}}, ["dep-s0-r1-g1"],
     Decision(roll={"uses_with": {"tag": "v3"}})),
    ("a new policy only", {"policy": {"max_surge": 2}}, [],
     Decision(notes=("the new policy applies to this file's rollouts",))),
]


@pytest.mark.parametrize(("case", "changes", "outdated", "expected"), DECISIONS,
                         ids=[d[0] for d in DECISIONS])
def test_decide(case: str, changes: dict[str, Any], outdated: list[str],
                expected: Decision) -> None:
    assert decide(spec(), config(**changes), outdated) == expected


@pytest.mark.parametrize(("decision", "action"), [
    (Decision(), "unchanged"), (Decision(replicas=3), "scaled"),
    (Decision(roll={"image": "x"}), "updated"), (Decision(roll={"image": "x"}, replicas=3),
                                                 "updated")])
def test_the_action_a_decision_reports(decision: Decision, action: str) -> None:
    assert decision.action == action


HEAD_CHANGES = [("shards", {"shards": 2}), ("polling", {"polling": "ALL"}),
                ("port", {"port": 5123}), ("host", {"host": "0.0.0.0"}),
                ("uses_before", {"uses_before": "pkg.mod:Before"}),
                ("uses_after", {"uses_after": "pkg.mod:After"})]


@pytest.mark.parametrize(("field", "changes"), HEAD_CHANGES, ids=[h[0] for h in HEAD_CHANGES])
@pytest.mark.parametrize("path", ["", "deployments[1]"])
def test_a_field_that_shapes_the_head_is_refused_naming_file_and_field(
        field: str, changes: dict[str, Any], path: str) -> None:
    assert field in HEAD_FIELDS
    with pytest.raises(ConfigError) as info:
        decide(spec(), config(path, **changes))
    where = f"{path}.{field}" if path else field
    assert str(info.value).startswith(f"app.yml: {where}: cannot change on the running "
                                      "deployment 'dep'")
    assert "orchestrator down dep" in str(info.value)


def test_a_port_left_to_the_engine_is_not_a_change() -> None:
    assert spec_changes(spec(port=5123), spec()) == {}
    assert spec_changes(spec(), spec(port=5123)) == {"port": 5123}


def test_pod_count() -> None:
    assert pod_count(spec()) == 3
    assert pod_count(spec(shards=2, replicas=3, uses_after="pkg.mod:After")) == 8


# -- doing, on the in-memory engine -------------------------------------------------------


class Handle:
    """Records what apply asks of a deployment handle; rollouts and scales change its
    spec as a real one would."""

    def __init__(self, spec: DeploymentSpec, *, converged: list[str] | None = None,
                 outdated: list[str] | None = None, fail_start: bool = False) -> None:
        self.spec = spec
        self.calls: list[tuple[str, Any]] = []
        self._converged = converged or []
        self._outdated = outdated or []
        self._fail_start = fail_start

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def address(self) -> str:
        return "127.0.0.1:5000"

    def start(self) -> Handle:
        self.calls.append(("start", None))
        if self._fail_start:
            raise PodStartError("dep-head exited", pod="dep-head", exit_code=1)
        return self

    def close(self) -> None:
        self.calls.append(("close", None))

    def detach(self) -> None:
        self.calls.append(("detach", None))

    def converge(self, on_progress: ProgressCallback | None = None) -> list[str]:
        for pod in self._converged:
            assert on_progress is not None
            on_progress(ProgressEvent("stopped", self.name, 0, 0, pod=pod, message="removed"))
        self.calls.append(("converge", None))
        return self._converged

    def outdated(self) -> list[str]:
        return self._outdated

    def rolling_update_sync(self, *, policy: Any, on_progress: ProgressCallback,
                            replace_uses_with: bool = False, **changes: Any) -> None:
        assert replace_uses_with, "up -f: the file's uses_with replaces the running one"
        self.calls.append(("rolling_update", changes))
        on_progress(ProgressEvent("done", self.name, 1, 1))
        self.spec = self.spec.evolve(**changes)

    def scale_sync(self, replicas: int, *, policy: Any, on_progress: ProgressCallback
                   ) -> None:
        self.calls.append(("scale", replicas))
        self.spec = self.spec.with_replicas(replicas)
        self._outdated = []


class Recorder:
    """A Reporter that keeps every step and event."""

    def __init__(self) -> None:
        self.steps: list[tuple[StepKind, str, str]] = []
        self.events: list[ProgressEvent] = []

    @contextmanager
    def step(self, kind: StepKind, deployment: str, title: str
             ) -> Iterator[ProgressCallback]:
        self.steps.append((kind, deployment, title))
        yield self.events.append

    def event(self, event: ProgressEvent) -> None:
        self.events.append(event)


@pytest.fixture
def engine() -> MemoryEngine:
    memory = MemoryEngine()
    memory.add_image(IMAGE)
    return memory


def run_pod(engine: MemoryEngine, deployment: str, suffix: str = "head") -> None:
    engine.run_container(ContainerSpec(name=f"{deployment}-{suffix}", image=IMAGE,
                                       labels={**L.for_deployment(deployment),
                                               L.ROLE: "head"}))


class Handles:
    """The opener and attacher apply is given: new handles and attached ones."""

    def __init__(self, running: Handle | None = None, **new: Any) -> None:
        self.running = running
        self.new_options = new
        self.opened: list[Handle] = []
        self.attached: list[str] = []

    def open(self, cfg: DeploymentConfig, engine: ContainerEngine) -> Deployment:
        handle = Handle(cfg.spec, **self.new_options)
        self.opened.append(handle)
        return cast(Deployment, handle)

    def attach(self, name: str, engine: ContainerEngine) -> Deployment:
        assert self.running is not None
        self.attached.append(name)
        return cast(Deployment, self.running)


def applied(cfg: DeploymentConfig, engine: MemoryEngine, handles: Handles,
            recorder: Recorder) -> Applied:
    return apply_config(cfg, engine, recorder, opener=handles.open, attacher=handles.attach)


def test_nothing_running_starts_it_in_one_step(engine: MemoryEngine) -> None:
    handles, recorder = Handles(), Recorder()
    result = applied(config(), engine, handles, recorder)
    assert result.action == "started" and result.started_here and result.notes == ()
    assert [c for c, _ in handles.opened[0].calls] == ["start"]
    assert recorder.steps == [("start", "dep", "starting dep (3 pods)")]
    assert handles.attached == []
    assert result.summary() == {"name": "dep", "action": "started",
                                "address": "127.0.0.1:5000", "replicas": 2, "shards": 1,
                                "image": IMAGE, "notes": []}


def test_a_failed_start_closes_the_handle_and_raises(engine: MemoryEngine) -> None:
    handles = Handles(fail_start=True)
    with pytest.raises(PodStartError):
        applied(config(), engine, handles, Recorder())
    assert [c for c, _ in handles.opened[0].calls] == ["start", "close"]


def test_a_running_deployment_is_rolled_then_scaled(engine: MemoryEngine) -> None:
    run_pod(engine, "dep")
    running = Handle(spec())
    handles, recorder = Handles(running), Recorder()
    result = applied(config(uses_with={"tag": "v2"}, replicas=3), engine, handles, recorder)
    assert handles.opened == [] and handles.attached == ["dep"]
    assert running.calls == [("converge", None), ("rolling_update", {"uses_with": {"tag": "v2"}}),
                             ("scale", 3)]
    assert [s[0] for s in recorder.steps] == ["rollout", "scale"]
    assert recorder.steps[1][2] == "scaling dep to 3"
    assert (result.action, result.started_here) == ("updated", False)
    # applying the same file again is a no-op: the running spec now matches
    again = applied(config(uses_with={"tag": "v2"}, replicas=3), engine, handles, Recorder())
    assert again.action == "unchanged"
    assert [c for c, _ in running.calls[3:]] == ["converge"]


def test_only_replicas_changed_scales(engine: MemoryEngine) -> None:
    run_pod(engine, "dep")
    running = Handle(spec())
    result = applied(config(replicas=1), engine, Handles(running), Recorder())
    assert result.action == "scaled"
    assert [c for c in running.calls if c[0] != "converge"] == [("scale", 1)]


def test_a_cut_short_update_is_finished_and_converge_reported(engine: MemoryEngine) -> None:
    run_pod(engine, "dep")
    running = Handle(spec(), converged=["dep-s0-r2-g2"], outdated=["dep-s0-r0-g1"])
    recorder = Recorder()
    result = applied(config(), engine, Handles(running), recorder)
    assert result.action == "scaled"
    assert result.notes == ("cleaned up after an interrupted update or scale",
                            "finishing an interrupted update: 1 replica(s) ran an older spec")
    assert [e.pod for e in recorder.events if e.kind == "stopped"] == ["dep-s0-r2-g2"]
    assert running.calls[-1] == ("scale", 2)


def test_a_refused_head_field_closes_the_attached_handle(engine: MemoryEngine) -> None:
    run_pod(engine, "dep")
    running = Handle(spec())
    with pytest.raises(ConfigError, match="shards"):
        applied(config(shards=2), engine, Handles(running), Recorder())
    assert [c for c, _ in running.calls] == ["converge", "close"]


def test_apply_each_yields_what_is_done_before_a_later_failure(engine: MemoryEngine) -> None:
    run_pod(engine, "bad")
    handles = Handles(Handle(spec(name="bad")))
    done: list[Applied] = []
    with pytest.raises(ConfigError):
        for item in apply_each([config(), config("deployments[1]", name="bad", shards=3)],
                               engine, Recorder(), opener=handles.open,
                               attacher=handles.attach):
            done.append(item)
    assert [(d.deployment.name, d.action) for d in done] == [("dep", "started")]


def test_leave_running_detaches_and_tear_down_removes_attached_ones_by_label(
        engine: MemoryEngine) -> None:
    run_pod(engine, "old")
    engine.create_network(network_name("old"), labels=L.for_deployment("old"))
    started, attached = Handle(spec(name="new")), Handle(spec(name="old", stop_grace=0))
    items = [Applied(cast(Deployment, started), "started", True),
             Applied(cast(Deployment, attached), "unchanged", False)]
    recorder = Recorder()
    tear_down(items, engine, recorder)
    assert recorder.steps == [("remove", "old", "removing old"), ("remove", "new", "removing new")]
    assert engine.list_containers(L.for_deployment("old")) == []
    assert engine.list_networks(L.for_deployment("old")) == []
    leave_running(items[:1])
    assert [c for c, _ in started.calls] == ["close", "detach", "close"]


def test_remove_by_name_all_and_missing(engine: MemoryEngine) -> None:
    for name in ("a", "b", "c"):
        run_pod(engine, name)
    recorder = Recorder()
    gone = remove(engine, ["a"], grace=0, reporter=recorder)
    assert gone.containers == ("a-head",) and gone.not_running == ()
    assert recorder.steps == [("remove", "a", "removing a")]
    with pytest.raises(DeploymentNotFound) as info:
        remove(engine, ["a", "b"], grace=0)
    assert info.value.name == "a" and info.value.known == ("b", "c")
    assert engine.list_containers(L.for_deployment("b"))  # nothing removed on refusal
    partial = remove(engine, ["a", "b"], grace=0, missing_ok=True)
    assert partial.containers == ("b-head",) and partial.not_running == ("a",)
    rest = remove(engine, None, grace=0, reporter=recorder)
    assert rest.containers == ("c-head",)
    assert recorder.steps[-1] == ("remove", "", "removing every deployment")


@pytest.mark.parametrize("opener", [open_new, open_supervised])
def test_a_file_s_fields_are_our_own_names_and_units_on_every_open(
        opener: Any, engine: MemoryEngine) -> None:
    # A file's fields are ours (seconds), not Jina's (ms): `up` and `up --detach` alike.
    dep = opener(config(timeout_ready=60, stop_grace=2, heal_after=5), engine)
    try:
        assert (dep.spec.timeout_ready, dep.spec.stop_grace, dep.spec.heal_after) == (60, 2, 5)
    finally:
        dep.close()
