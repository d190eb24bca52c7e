"""Deployment on the real Docker engine: members, routing, merging, bad input."""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from prometheus_client.parser import text_string_to_metric_families

from orchestrator import Client
from orchestrator.deployment import BaseDeployment, Deployment, DeploymentRoleType
from orchestrator.engine.cleanup import list_owned
from orchestrator.errors import HealthCheckTimeout, PodStartError, SpecError
from orchestrator.planning import labels as L
from tests.support.paths import ECHO, ROOT, TEST_EXECUTORS
from tests.support.waiting import wait_until

if TYPE_CHECKING:
    from orchestrator.engine.docker_engine import DockerEngine

pytestmark = pytest.mark.integration


@pytest.fixture
def sharded(runtime_image: str, dep_name: str) -> Iterator[Deployment]:
    with Deployment(name=dep_name, uses=f"{ECHO}:Echo", uses_with={"tag": "v1"}, replicas=2,
                    shards=2, polling="ALL", image=runtime_image) as dep:
        yield dep


def test_every_public_member(sharded: Deployment, docker_engine: DockerEngine) -> None:
    dep = sharded
    assert isinstance(dep, BaseDeployment)
    assert dep.role is DeploymentRoleType.DEPLOYMENT
    assert dep.is_sandbox is False and dep.external is False
    assert dep.protocol == "grpc" and dep.host == "127.0.0.1"
    assert dep.head_host == "127.0.0.1" and dep.port == dep.head_port > 0
    assert dep.num_pods == 1 + 2 * 2
    assert dep.is_ready
    assert dep.deployments == [{"name": dep.name, "head_host": "127.0.0.1",
                                "head_port": dep.head_port, "needs": []}]
    head = dep.head_args
    assert isinstance(head, argparse.Namespace) and head.role == "head"
    assert head.container_id == docker_engine.inspect_container(head.name).id
    assert dep.first_pod_args.shard_id == 0 and dep.first_pod_args.replica_id == 0
    assert dep.uses_before_args is None and dep.uses_after_args is None
    assert len(dep.all_args) == 5
    assert {(a.shard_id, a.replica_id) for a in dep.all_args[1:]} == {
        (0, 0), (0, 1), (1, 0), (1, 1)}
    dep.update_pod_args()
    dep.update_worker_pod_args()
    assert [len(v) for v in dep.pod_args["pods"].values()] == [2, 2]
    dep.activate()  # idempotent: every worker is already registered
    assert len(dep.control().list_workers()) == 4
    dep.wait_start_success()  # already started: returns at once
    # Only the head publishes a port, on 127.0.0.1; every pod is locked down.
    for info in docker_engine.list_containers(L.for_deployment(dep.name)):
        role = info.labels[L.ROLE]
        assert bool(info.ports) == (role == "head")
        if role == "head":
            assert info.ports[50051][0] == "127.0.0.1"
    docs = dep.post("/echo", docs=[{"text": "hi", "i": 1}])
    assert sorted(d["shard"] for d in docs) == [0, 1]
    assert all(d["tag"] == "v1" and d["i"] == 1 and isinstance(d["i"], int) for d in docs)


def test_security_defaults_on_every_container(sharded: Deployment) -> None:
    import docker

    client = docker.from_env()
    try:
        for c in client.containers.list(filters={"label": f"{L.DEPLOYMENT}={sharded.name}"}):
            host = c.attrs["HostConfig"]
            assert host["CapDrop"] == ["ALL"]
            assert "no-new-privileges" in host["SecurityOpt"]
            assert c.attrs["Config"]["User"] not in ("", "0", "root")
            binds = host.get("Binds") or []
            assert not any("docker.sock" in b for b in binds)
            mounts = c.attrs.get("Mounts") or []
            assert all(not m.get("RW", False) for m in mounts if "/opt/uses" in m["Destination"])
    finally:
        client.close()


def test_the_heads_healthcheck_is_the_compiled_probe(sharded: Deployment,
                                                     docker_engine: DockerEngine) -> None:
    """The image's HEALTHCHECK program, run in the pods as Docker runs it: a static binary
    (its own usage line, not the Python probe's), answering as the servers do."""
    head = sharded.state.head_name
    probe = "/usr/local/bin/orchestrator-probe"
    assert docker_engine.exec_container(head, [probe]).exit_code == 0
    worker = sharded.state.workers()[0].name  # grpcio's health service answers it too
    assert docker_engine.exec_container(worker, [probe]).exit_code == 0
    assert docker_engine.exec_container(head, [probe, "--port", "1"]).exit_code == 1
    bad = docker_engine.exec_container(head, [probe, "--nope"])
    assert bad.exit_code == 2 and "usage: orchestrator-probe" in bad.output


def test_requests_reach_every_replica(runtime_image: str, dep_name: str) -> None:
    with Deployment(name=dep_name, uses=f"{ECHO}:Echo", replicas=3, image=runtime_image) as dep:
        seen = set()
        for _ in range(30):
            [doc] = dep.post("/echo", docs=[{"n": 1}])
            seen.add(doc["pod"])
        workers = {a.name for a in dep.all_args if a.role == "worker"}
        assert seen == workers


def test_uses_before_and_uses_after(runtime_image: str, dep_name: str) -> None:
    with Deployment(name=dep_name, uses=f"{ECHO}:Echo", shards=2, polling="ALL",
                    uses_before=f"{ECHO}:Stamp", uses_after=f"{ECHO}:Sum",
                    image=runtime_image) as dep:
        assert dep.num_pods == 1 + 2 + 2
        assert dep.uses_before_args is not None and dep.uses_after_args is not None
        docs = dep.post("/echo", docs=[{"x": 1}, {"x": 2}])
        assert docs == [{"count": 4, "shards": [0, 1]}]


def test_client_reaches_the_head_from_outside(sharded: Deployment) -> None:
    with Client(sharded.head_host, sharded.head_port) as client:
        docs = client.post("/echo", docs=[{"k": v} for v in range(5)])
    assert len(docs) == 10  # ALL: every shard answers every doc


def test_prometheus_scrapes_the_head_on_its_one_port(sharded: Deployment) -> None:
    with Client(sharded.head_host, sharded.head_port) as client:
        for _ in range(3):
            client.post("/echo", docs=[{}])
    url = f"http://{sharded.head_host}:{sharded.head_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:  # plain HTTP/1.1, like Prometheus
        text = response.read().decode()
    samples = {(s.name, s.labels.get("code"), s.labels.get("pod"), s.labels.get("outcome")):
               s.value for f in text_string_to_metric_families(text) for s in f.samples}
    head = sharded.head_args.name
    assert samples[("orchestrator_requests_total", "OK", None, None)] == 3
    workers = [ns.name for shard in sharded.pod_args["pods"].values() for ns in shard]
    served = [samples[("orchestrator_replica_requests_total", None, w, "served")]
              for w in workers]
    assert len(workers) == 4 and sum(served) == 6  # ALL: each request, one per shard
    assert f'head="{head}"' in text


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"replicas": 0}, "replicas"),
        ({"shards": 0}, "shards"),
        ({"name": "Not A Name"}, "name"),
        ({"polling": "MOST"}, "polling"),
        ({"uses": "executors/nope.py:Echo"}, "uses"),
    ],
)
def test_bad_spec_fails_before_anything_starts(
    fields: dict[str, object], field: str, dep_name: str
) -> None:
    with pytest.raises(SpecError) as info:
        Deployment(**{"name": dep_name, "uses": f"{ECHO}:Echo", **fields})
    assert info.value.field == field


def test_missing_image_is_a_spec_error(dep_name: str, docker_engine: DockerEngine) -> None:
    dep = Deployment(name=dep_name, uses=f"{ECHO}:Echo", image="orchestrator-nope:0")
    with pytest.raises(SpecError, match="orchestrator-nope:0") as info:
        dep.start()
    assert info.value.field == "image"
    assert not list_owned(docker_engine, dep_name)


@pytest.mark.parametrize(
    ("uses", "needle"),
    [
        (f"{ECHO}:NoSuchClass", "NoSuchClass"),
        ("no_such_module.deep:Thing", "no_such_module"),
        (f"{ECHO}:Broken", "broken on purpose"),
    ],
)
def test_executor_that_cannot_load_names_pod_exit_code_and_logs(
    uses: str, needle: str, runtime_image: str, dep_name: str, docker_engine: DockerEngine
) -> None:
    dep = Deployment(name=dep_name, uses=uses, replicas=2, image=runtime_image)
    with pytest.raises(PodStartError) as info:
        dep.start()
    err = info.value
    assert err.pod.startswith(f"{dep_name}-s0-r")
    assert err.exit_code not in (None, 0)
    assert needle in err.log_tail and needle in str(err)
    assert not list_owned(docker_engine, dep_name)


def test_container_that_exits_at_once(
    runtime_image: str, dep_name: str, docker_engine: DockerEngine
) -> None:
    # The runtime refuses a worker with no executor: it exits at once with a usage error.
    dep = Deployment(name=dep_name, uses=f"docker://{runtime_image}", image=runtime_image)
    with pytest.raises(PodStartError) as info:
        dep.start()
    assert info.value.exit_code not in (None, 0)
    assert "ORCHESTRATOR_USES" in info.value.log_tail
    assert not list_owned(docker_engine, dep_name)


def test_pod_that_never_gets_healthy_times_out(
    runtime_image: str, dep_name: str, docker_engine: DockerEngine
) -> None:
    dep = Deployment(name=dep_name, uses=f"{TEST_EXECUTORS}/hang.py:NeverReady",
                     timeout_ready=4, image=runtime_image)
    with pytest.raises(HealthCheckTimeout) as info:
        dep.start()
    assert info.value.pod == f"{dep_name}-s0-r0-g1"
    assert not list_owned(docker_engine, dep_name)


def test_port_already_taken(runtime_image: str, dep_name: str,
                            docker_engine: DockerEngine) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        dep = Deployment(name=dep_name, uses=f"{ECHO}:Echo", port=port, image=runtime_image)
        with pytest.raises(SpecError) as info:
            dep.start()
    assert info.value.field == "port" and str(port) in str(info.value)
    assert not list_owned(docker_engine, dep_name)


def test_same_name_twice_is_refused(sharded: Deployment, runtime_image: str) -> None:
    twin = Deployment(name=sharded.name, uses=f"{ECHO}:Echo", image=runtime_image)
    with pytest.raises(SpecError, match="already running") as info:
        twin.start()
    assert info.value.field == "name"
    assert sharded.is_ready  # the first one is untouched


def interrupt(proc: subprocess.Popen[str]) -> None:
    """Ctrl-C the child; it must exit with KeyboardInterrupt, not hang."""
    os.kill(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0 and "KeyboardInterrupt" in err


def reap(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait()


RUNNER = """
import sys
from orchestrator.deployment import Deployment
dep = Deployment(name=sys.argv[1], uses=sys.argv[2], replicas=2, image=sys.argv[3])
with dep:
    print("READY", dep.head_port, flush=True)
    sys.stdin.readline()
"""


def test_ctrl_c_leaves_nothing_behind(
    runtime_image: str, dep_name: str, docker_engine: DockerEngine
) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", RUNNER, dep_name, f"{ECHO}:Echo", runtime_image],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        cwd=ROOT,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("READY"), proc.stderr.read() if proc.stderr else line
        assert len(list_owned(docker_engine, dep_name).containers) == 3
        interrupt(proc)
    finally:
        reap(proc)
    assert not list_owned(docker_engine, dep_name)


def test_env_volumes_and_limits_reach_the_workers(
    runtime_image: str, dep_name: str, docker_engine: DockerEngine, tmp_path: Path
) -> None:
    import docker

    tmp_path.chmod(0o755)
    with Deployment(name=dep_name, uses=f"{ECHO}:Echo", env={"GREETING": "hi"},
                    volumes=[f"{tmp_path}:/data:ro"], cpus=0.5, memory="128m",
                    image=runtime_image) as dep:
        client = docker.from_env()
        try:
            container = client.containers.get(dep.first_pod_args.name)
            host = container.attrs["HostConfig"]
            assert host["NanoCpus"] == 500_000_000
            assert host["Memory"] == 128 * 1024**2
            assert "GREETING=hi" in container.attrs["Config"]["Env"]
            [data] = [m for m in container.attrs["Mounts"] if m["Destination"] == "/data"]
            assert data["Source"] == str(tmp_path) and data["RW"] is False
            assert host["RestartPolicy"]["Name"] == "on-failure"  # applied once ready
        finally:
            client.close()
        assert dep.post("/echo", docs=[{}])[0]["tag"] == "v1"


def test_join_returns_once_every_pod_has_exited(
    runtime_image: str, dep_name: str, docker_engine: DockerEngine
) -> None:
    import threading

    with Deployment(name=dep_name, uses=f"{ECHO}:Echo", replicas=2, image=runtime_image,
                    restart_policy="no") as dep:
        joined = threading.Event()
        waiter = threading.Thread(target=lambda: (dep.join(), joined.set()), daemon=True)
        waiter.start()
        assert not joined.wait(0.5)  # the pods run: join blocks
        for info in docker_engine.list_containers(L.for_deployment(dep.name)):
            docker_engine.stop_container(info.id, grace=5)
        waiter.join(timeout=60)
        assert joined.is_set()
        assert dep.num_pods == 0 and not dep.is_ready


def test_external_deployment_starts_nothing_and_routes_to_the_service(
    sharded: Deployment, docker_engine: DockerEngine
) -> None:
    before = len(docker_engine.list_containers(L.managed()))
    with Deployment(name="outside", external=True, host=sharded.head_host,
                    port=sharded.head_port) as ext:
        assert ext.external and ext.num_pods == 0
        assert ext.head_port == sharded.head_port and ext.is_ready
        assert len(ext.post("/echo", docs=[{}])) == 2
    assert len(docker_engine.list_containers(L.managed())) == before
    assert sharded.is_ready


def test_attach_from_labels_finds_and_drives_a_running_deployment(sharded: Deployment) -> None:
    from orchestrator.deployment import running_deployments
    from orchestrator.errors import DeploymentNotFound

    attached = Deployment.attach(sharded.name)
    try:
        assert sharded.name in running_deployments(attached.engine)
        assert attached.spec.worker_hash() == sharded.spec.worker_hash()
        assert attached.head_port == sharded.head_port
        assert {a.name for a in attached.all_args} == {a.name for a in sharded.all_args}
        assert len(attached.post("/echo", docs=[{}])) == 2
    finally:
        attached.close()  # detached: closing the handle leaves the deployment running
    assert sharded.is_ready
    with pytest.raises(DeploymentNotFound, match=sharded.name):
        Deployment.attach("no-such-deployment")


def test_module_uses_loads_a_class_installed_in_the_runtime_image(
    runtime_image: str, dep_name: str
) -> None:
    from orchestrator.errors import EndpointNotFound

    # The bare Executor base class is installed in the image: it loads, and having no
    # endpoint at all, a request gets a clear NOT_FOUND-style error through the head.
    with Deployment(name=dep_name, uses="orchestrator.runtime.executor:Executor",
                    image=runtime_image) as dep:
        assert dep.is_ready
        with pytest.raises(EndpointNotFound, match="/anything"):
            dep.post("/anything", docs=[{}])


STARTER = """
import sys
from orchestrator.deployment import Deployment
Deployment(name=sys.argv[1], uses=sys.argv[2], replicas=2, image=sys.argv[3],
           timeout_ready=300).start()
"""


def test_ctrl_c_during_start_stops_waiting_and_leaves_nothing(
    runtime_image: str, dep_name: str, docker_engine: DockerEngine
) -> None:
    from tests.support.waiting import wait_until

    proc = subprocess.Popen(
        [sys.executable, "-c", STARTER, dep_name, f"{TEST_EXECUTORS}/hang.py:NeverReady",
         runtime_image],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
    )
    try:
        # The pods exist and will never serve: start() is waiting on them.
        wait_until(lambda: len(list_owned(docker_engine, dep_name).containers) == 3,
                   timeout=120, what="pods created")
        # Far inside the 300 s readiness deadline: Ctrl-C does not wait it out.
        interrupt(proc)
    finally:
        reap(proc)
    assert not list_owned(docker_engine, dep_name)


def test_a_staggered_start_serves_like_any_other(runtime_image: str, dep_name: str) -> None:
    with Deployment(name=dep_name, uses=f"{ECHO}:Echo", replicas=3, max_starting=2,
                    image=runtime_image) as dep:
        assert dep.is_ready and dep.num_pods == 4
        served = {dep.post("/echo", docs=[{}])[0]["pod"] for _ in range(9)}
        assert len(served) == 3


@pytest.mark.parametrize("log_max_size", ["64k", None])
def test_pod_logs_rotate_at_log_max_size(runtime_image: str, dep_name: str,
                                         docker_engine: DockerEngine,
                                         log_max_size: str | None) -> None:
    """A pod that logs ~400 KiB keeps about `log_max_size` x `log_max_files` of it, the
    newest lines; with `log_max_size: null` the engine's own settings apply (this engine's
    default rotates only at 10 MB, so everything is kept)."""
    with Deployment(name=dep_name, uses=f"{TEST_EXECUTORS / 'chatty.py'}:Chatty",
                    image=runtime_image, log_max_size=log_max_size, log_max_files=2) as dep:
        for first in range(0, 400, 100):
            dep.post("/say", docs=[{}], parameters={"first": first, "lines": 100})
        worker = next(i for i in docker_engine.list_containers(L.for_deployment(dep.name))
                      if i.labels[L.ROLE] == "worker")
        # The engine copies stdout and stderr into its log file asynchronously, each stream
        # on its own, so the last lines may land a moment after the request returned. Only
        # the order within one stream is kept: the stderr line printed last may be written
        # before the stdout lines printed ahead of it, and then rotated out with them.
        logs: list[str] = []

        def delivered() -> bool:
            logs.append(docker_engine.logs(worker.name))
            return "\nline 000399 " in logs[-1] and (
                log_max_size is not None or "said up to line 000399" in logs[-1])

        wait_until(delivered, timeout=30, what="the last lines reach the engine's log")
        log = logs[-1]
    kept = [line for line in log.splitlines() if line.startswith("line ")]
    assert kept[-1].startswith("line 000399")  # the newest lines are there either way
    if log_max_size is None:
        assert len(kept) == 400
        assert kept == [f"line {i:06d} " + "x" * 1000 for i in range(400)]
    else:
        # each line is ~1.1 KiB in the engine's JSON file: 2 files of 64 KiB hold < 120
        assert 0 < len(kept) < 120, len(kept)
        first = int(kept[0].split()[1])
        assert kept == [f"line {i:06d} " + "x" * 1000 for i in range(first, 400)]
