"""The Swarm target without a swarm: how services and tasks become pods (SwarmEngine's
mapping, on canned manager answers), placement on the in-memory engine's nodes, the spec's
constraints, `ps` with nodes, and the choice of target."""

from __future__ import annotations

from typing import Any

import pytest

from orchestrator.cli.ps import format_table
from orchestrator.engine.base import ContainerInfo, ContainerSpec
from orchestrator.engine.docker_engine_swarm import SwarmEngine
from orchestrator.engine.memory import MemoryEngine
from orchestrator.engine.targets import chosen_target
from orchestrator.errors import EngineError, SpecError
from orchestrator.health import container_address
from orchestrator.planning.pods import PodContext, initial_pods
from orchestrator.spec import DeploymentSpec

MANAGED = {"orchestrator.managed": "true", "orchestrator.deployment": "d"}
NODES = [
    {"ID": "n1", "Description": {"Hostname": "manager"}, "Status": {"Addr": "0.0.0.0"},
     "ManagerStatus": {"Addr": "10.9.0.2:2377"}},
    {"ID": "n2", "Description": {"Hostname": "worker-1"}, "Status": {"Addr": "10.9.0.3"}},
]


def task(state: str, created: str, *, desired: str = "running", node: str = "n2",
         exit_code: int | None = None, published: int | None = None) -> dict[str, Any]:
    status: dict[str, Any] = {"State": state, "Timestamp": "2026-01-01T00:00:00Z"}
    if exit_code is not None:
        status["ContainerStatus"] = {"ExitCode": exit_code}
    if published is not None:
        status["PortStatus"] = {"Ports": [{"TargetPort": 50051, "PublishedPort": published,
                                           "PublishMode": "host"}]}
    return {"ID": created, "ServiceID": "svc", "NodeID": node, "DesiredState": desired,
            "CreatedAt": created, "Status": status}


class Api:
    """The manager's answers, canned."""

    def __init__(self, tasks: list[dict[str, Any]]) -> None:
        self._tasks = tasks

    def nodes(self) -> list[dict[str, Any]]:
        return NODES

    def inspect_service(self, name: str) -> dict[str, Any]:
        return {"ID": "svc", "Spec": {
            "Name": "d-s0-r0-g1", "Labels": MANAGED, "Mode": {"Replicated": {"Replicas": 1}},
            "TaskTemplate": {"ContainerSpec": {"Image": "img:1@sha256:abc",
                                               "Env": ["A=1"], "Hostname": "d-s0-r0-g1"}}}}

    def tasks(self, filters: dict[str, Any]) -> list[dict[str, Any]]:
        return self._tasks


class Client:
    def __init__(self, api: Api) -> None:
        self.api = api


def pod(*tasks: dict[str, Any]) -> ContainerInfo:
    engine = SwarmEngine(Client(Api(list(tasks))), where="tcp://manager:2375")  # type: ignore[arg-type]
    return engine.inspect_container("d-s0-r0-g1")


def test_a_running_task_is_a_running_pod_on_its_node_with_its_published_port() -> None:
    info = pod(task("running", "2", published=30001), task("failed", "1", exit_code=3))
    assert (info.status, info.node, info.image, info.env) == (
        "running", "worker-1", "img:1", {"A": "1"})
    assert info.ports == {50051: ("10.9.0.3", 30001)}
    assert info.restart_count == 1  # one task failed before this one
    assert info.exit_code == 3  # what explains the restart
    assert container_address(info, "d-net", 50051) == "10.9.0.3:30001"


def test_a_manager_that_reports_0_0_0_0_is_reached_at_its_manager_address() -> None:
    info = pod(task("running", "1", node="n1", published=30002))
    assert info.node == "manager" and info.ports == {50051: ("10.9.0.2", 30002)}


@pytest.mark.parametrize(("state", "code", "status", "exit_code"), [
    ("preparing", None, "created", None),
    ("failed", 1, "exited", 1),
    ("rejected", None, "exited", -1),  # no container ever ran (e.g. no such image)
    ("complete", 0, "exited", 0),
])
def test_task_states(state: str, code: int | None, status: str, exit_code: int | None
                     ) -> None:
    info = pod(task(state, "1", exit_code=code))
    assert (info.status, info.exit_code, info.restart_count) == (status, exit_code, 0)
    assert info.ports == {}


def test_a_stopping_task_is_still_the_pod_once_nothing_is_meant_to_run() -> None:
    info = pod(task("running", "1", desired="shutdown", published=30003))
    assert info.status == "running"


def test_no_task_yet_is_a_created_pod() -> None:
    assert pod().status == "created"


class NoLogs(Api):
    """A manager whose log stream fails, as for a task that never started."""

    def service_logs(self, name: str, **kwargs: Any) -> Any:
        import docker

        raise docker.errors.APIError("no logs for a task that never started")


def failed_to_start(created: str, err: str) -> dict[str, Any]:
    failed = task("failed", created, desired="shutdown", exit_code=128)
    failed["Status"]["Err"] = err
    return failed


def test_the_logs_of_a_pod_whose_task_failed_to_start_say_why() -> None:
    """Swarm already runs the next task: the failed one's error is what explains it, and
    a log stream that fails does not hide it."""
    tasks = [task("pending", "2"), failed_to_start("1", "starting container failed: boom")]
    engine = SwarmEngine(Client(NoLogs(tasks)), where="tcp://manager:2375")  # type: ignore[arg-type]
    assert engine.logs("d-s0-r0-g1") == "[swarm] task failed: starting container failed: boom\n"


def test_a_running_pod_s_logs_carry_no_earlier_task_s_error() -> None:
    tasks = [task("running", "2"), failed_to_start("1", "starting container failed: boom")]
    engine = SwarmEngine(Client(NoLogs(tasks)), where="tcp://manager:2375")  # type: ignore[arg-type]
    assert engine.logs("d-s0-r0-g1") == ""


def test_tasks_that_failed_before_their_container_ran_are_swarm_s_to_retry() -> None:
    """`starting container failed` (an overlay address still held, a port taken): the
    first two read as a pod still starting; the third fails it, with its exit code."""
    from orchestrator.health import exited

    once = pod(failed_to_start("1", "starting container failed: Address already in use"))
    assert (once.status, once.restart_count, exited(once)) == ("created", 0, False)
    retried = pod(task("pending", "3"), failed_to_start("1", "starting container failed: a"),
                  failed_to_start("2", "starting container failed: b"))
    assert (retried.status, retried.restart_count, exited(retried)) == ("created", 0, False)
    ran = pod(task("running", "2", published=30004),
              failed_to_start("1", "starting container failed: a"))
    assert (ran.status, ran.restart_count) == ("running", 0)
    third = pod(*[failed_to_start(str(i), "starting container failed: x") for i in (1, 2, 3)])
    assert (third.status, third.exit_code, exited(third)) == ("exited", 128, True)
    crashed = pod(task("pending", "2"), task("failed", "1", desired="shutdown", exit_code=1))
    assert crashed.restart_count == 1 and exited(crashed)  # a task that ran and failed


def test_no_equivalent_through_a_manager_says_so() -> None:
    engine = SwarmEngine(Client(Api([])), where="tcp://manager:2375")  # type: ignore[arg-type]
    for call in (lambda: engine.exec_container("p", ["true"]),
                 lambda: engine.container_stats("p"),
                 lambda: engine.kill_container("p"),
                 lambda: engine.connect_network("n", "c")):
        with pytest.raises(EngineError):
            call()


# -- placement on the in-memory engine's nodes ----------------------------------------------
def spec(name: str, *constraints: str) -> ContainerSpec:
    return ContainerSpec(name=name, image="app:1", command=("sleep", "60"), labels=MANAGED,
                         constraints=constraints)


def test_memory_nodes_spread_and_honour_constraints() -> None:
    engine = MemoryEngine(images={"app:1": {}}, nodes=("a", "b", "c"))
    placed = [engine.run_container(spec(f"p{i}")).node for i in range(6)]
    assert sorted(placed) == ["a", "a", "b", "b", "c", "c"]
    assert engine.run_container(spec("pinned", "node.hostname==b")).node == "b"
    assert engine.run_container(spec("not-a", "node.hostname!=a")).node == "c"
    with pytest.raises(EngineError, match="no node satisfies"):
        engine.run_container(spec("nowhere", "node.hostname==z"))


def test_one_host_has_no_node_and_ignores_constraints() -> None:
    engine = MemoryEngine(images={"app:1": {}})
    assert engine.run_container(spec("p", "node.hostname==z")).node == ""


# -- the spec ---------------------------------------------------------------------------------
def test_constraints_go_to_the_executor_pods_not_the_head() -> None:
    s = DeploymentSpec.from_fields(name="d", uses="docker://img:1", replicas=2,
                                   constraints=["node.labels.zone==a"])
    pods = initial_pods(s, PodContext(owner="o", token="t"))
    assert {p.role: p.container.constraints for p in pods} == {
        "head": (), "worker": ("node.labels.zone==a",)}
    assert DeploymentSpec.from_fields(**s.to_fields()) == s
    plain = DeploymentSpec.from_fields(name="d", uses="docker://img:1", replicas=2)
    assert plain.worker_hash() != s.worker_hash()


@pytest.mark.parametrize("bad", ["zone==a", "node.labels.zone=a", 3, "node.hostname == "])
def test_bad_constraints_name_the_item(bad: object) -> None:
    with pytest.raises(SpecError) as info:
        DeploymentSpec.from_fields(name="d", uses="docker://img:1", constraints=["node.id==x",
                                                                                 bad])
    assert info.value.field == "constraints[1]"


# -- ps and the target ------------------------------------------------------------------------
def test_ps_shows_a_node_column_only_when_pods_have_nodes() -> None:
    row = {"pod": "d-head", "role": "head", "shard": None, "replica": None,
           "state": "running", "restarts": 0, "health": "serving", "routing": None,
           "uptime_seconds": 3, "ports": [], "image": "img", "node": "manager"}
    table = format_table([row], with_deployment=False).splitlines()
    assert table[0].split()[:5] == ["POD", "ROLE", "SHARD", "REPLICA", "NODE"]
    assert table[1].split()[4] == "manager"
    assert "NODE" not in format_table([{**row, "node": ""}], with_deployment=False)


def test_target(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ORCHESTRATOR_TARGET", raising=False)
    assert chosen_target() == "docker"
    monkeypatch.setenv("ORCHESTRATOR_TARGET", "swarm")
    assert chosen_target() == "swarm" and chosen_target("docker") == "docker"
    with pytest.raises(SpecError) as info:
        chosen_target("k8s")
    assert info.value.field == "target"


class Flaky:
    """A manager that refuses `fails` times, as a busy one does, then answers."""

    def __init__(self, fails: int, text: str, status: int = 500) -> None:
        self.fails, self.text, self.status, self.calls = fails, text, status, 0

    def services(self, filters: dict[str, Any]) -> list[dict[str, Any]]:
        self.calls += 1
        if self.calls <= self.fails:
            import docker.errors
            import requests

            response = requests.Response()
            response.status_code = self.status
            raise docker.errors.APIError("refused", response=response, explanation=self.text)
        return []


def test_a_busy_manager_is_asked_again_and_other_refusals_go_through() -> None:
    busy = Flaky(2, "rpc error: code = DeadlineExceeded desc = context deadline exceeded")
    engine = SwarmEngine(Client(busy), where="tcp://manager:2375")  # type: ignore[arg-type]
    assert engine.list_containers(MANAGED) == [] and busy.calls == 3
    refused = Flaky(1, "invalid filter", status=400)
    engine = SwarmEngine(Client(refused), where="tcp://manager:2375")  # type: ignore[arg-type]
    with pytest.raises(EngineError):
        engine.list_containers(MANAGED)
    assert refused.calls == 1
