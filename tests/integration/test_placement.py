"""Asking the engine whether this process runs in one of its containers."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

from orchestrator.deployment import Deployment
from orchestrator.placement import container_placement, orchestrator_placement, self_container
from orchestrator.planning.hosts import Placement
from tests.support.paths import ECHO, ROOT

if TYPE_CHECKING:
    from orchestrator.engine.docker_engine import DockerEngine

pytestmark = pytest.mark.integration


def test_this_host_is_not_a_container_of_the_engine(docker_engine: DockerEngine) -> None:
    # /.dockerenv may well exist here; the engine knows better.
    assert orchestrator_placement(docker_engine) is None


def test_a_pod_is_recognised_from_its_hostname_and_resolves_by_name(
    runtime_image: str, dep_name: str, docker_engine: DockerEngine
) -> None:
    with Deployment(name=dep_name, uses=f"{ECHO}:Echo", image=runtime_image) as dep:
        head_info = docker_engine.inspect_container(dep.head_args.name)
        worker_info = docker_engine.inspect_container(dep.first_pod_args.name)
        # A process inside the worker container would find itself by its hostname.
        found = self_container(docker_engine, hostname=worker_info.hostname)
        assert found is not None and found.id == worker_info.id
        engine_id = docker_engine.engine_id()
        head = container_placement(head_info, engine_id)
        worker = container_placement(worker_info, engine_id)
        assert head.port == dep.head_port and head.containerized
        assert Deployment.get_worker_host(dep.first_pod_args, worker, head) == worker_info.name
        local = Placement(host="127.0.0.1", port=45000)
        no_override = argparse.Namespace(host=None, port=None)
        assert Deployment.get_worker_host(no_override, local, head) == "host.docker.internal"


# A CI job's script, run in a container of the same engine with the Docker socket mounted
# (GitLab's docker executor, a Jenkins agent, a dev container): start, call, roll out,
# attach a second handle, tear down.
CI_JOB = """
import json, sys
from orchestrator import Deployment
name, echo, image = sys.argv[1:4]
with Deployment(name=name, uses=f"{echo}:Echo", image=image, replicas=2,
                uses_with={"tag": "v1"}) as dep:
    first = dep.post("/echo", docs=[{"i": 1}])
    dep.rolling_update_sync(uses_with={"tag": "v2"})
    later = Deployment.attach(name)
    second = later.post("/echo", docs=[{"i": 2}])
    later.close()
    print(json.dumps({"address": dep.address, "first": first, "second": second}))
"""


@pytest.fixture
def ci_container() -> Iterator[Any]:
    """Runs `CI_JOB` as a non-root user in the docker group, like a CI runner would; the
    container is not the project's (no managed label) and is removed afterwards."""
    import docker  # the raw SDK: a container the project did not create

    client = docker.from_env()
    owner = f"ci-{uuid.uuid4().hex[:8]}"
    socket = "/var/run/docker.sock"

    # The runtime image is lean (pods get only what the runtime imports); a CI job's image
    # would have the host package's dependencies installed: lend it this venv's.
    site = next(p for p in sys.path if p.endswith("site-packages"))

    def run(image: str, *args: str) -> Any:
        return client.containers.run(
            image, ["-c", CI_JOB, *args], entrypoint=["python"], detach=True,
            labels={"orchestrator.test-owner": owner}, user="10001",
            group_add=[str(os.stat(socket).st_gid)],
            environment={"PYTHONPATH": "/opt/host-site"},
            volumes={socket: {"bind": socket, "mode": "rw"},
                     site: {"bind": "/opt/host-site", "mode": "ro"},
                     str(ROOT / "executors"): {"bind": str(ROOT / "executors"), "mode": "ro"}},
        )

    try:
        yield run
    finally:
        mine = {"label": f"orchestrator.test-owner={owner}"}
        for c in client.containers.list(all=True, filters=mine):
            with contextlib.suppress(docker.errors.NotFound):
                c.remove(force=True)
        client.close()


def test_an_orchestrator_inside_a_container_reaches_its_deployment(
    runtime_image: str, dep_name: str, docker_engine: DockerEngine, ci_container: Any
) -> None:
    if not os.path.exists("/var/run/docker.sock"):
        pytest.fail("this test mounts /var/run/docker.sock into the CI-job container")
    job = ci_container(runtime_image, dep_name, ECHO, runtime_image)
    code = job.wait(timeout=240)["StatusCode"]
    logs = job.logs().decode()
    assert code == 0, logs
    out = json.loads(logs.strip().splitlines()[-1])
    host, port = out["address"].rsplit(":", 1)
    assert host != "127.0.0.1" and port == "50051"  # the head's address on the network
    assert [(d["i"], d["tag"]) for d in out["first"]] == [(1, "v1")]
    assert [(d["i"], d["tag"]) for d in out["second"]] == [(2, "v2")]
    job.reload()
    networks = job.attrs["NetworkSettings"]["Networks"]
    assert set(networks) == {"bridge"}  # detached again when the network went
