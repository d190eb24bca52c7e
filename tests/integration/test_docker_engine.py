"""Docker-only checks: what the adapter asks the engine for, read back with the raw SDK."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import docker
import pytest

from orchestrator.engine.base import ContainerSpec, Mount, PortBinding
from orchestrator.engine.cleanup import remove_owned
from orchestrator.engine.docker_engine import DockerEngine
from orchestrator.planning import labels as L
from tests.support.images import TEST_IMAGE

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


@pytest.fixture
def deployment(docker_engine: DockerEngine, test_image: str) -> Iterator[str]:
    name = f"it-{uuid.uuid4().hex[:10]}"
    yield name
    remove_owned(docker_engine, name, grace=0)


@pytest.fixture(scope="module")
def raw() -> Iterator[docker.APIClient]:
    client = docker.APIClient()
    yield client
    client.close()


def test_create_options_reach_the_engine(
    docker_engine: DockerEngine, deployment: str, raw: docker.APIClient, tmp_path: Any
) -> None:
    net = docker_engine.create_network(f"{deployment}-net", labels=L.for_deployment(deployment))
    spec = ContainerSpec(
        name=f"{deployment}-pod", image=TEST_IMAGE, command=("sleep", "300"),
        labels=L.for_deployment(deployment), env={"A": "1"}, network=net.name,
        aliases=("svc",), user="65534", cpus=0.5, memory_bytes=64 * 2**20,
        restart_policy="on-failure", restart_max_retries=2,
        extra_hosts={"host.docker.internal": "host-gateway"},
        mounts=(Mount(str(tmp_path), "/data"),), ports=(PortBinding(9000),),
    )
    info = docker_engine.run_container(spec)
    host = raw.inspect_container(info.id)["HostConfig"]
    config = raw.inspect_container(info.id)["Config"]
    endpoint = raw.inspect_container(info.id)["NetworkSettings"]["Networks"][net.name]

    assert host["CapDrop"] == ["ALL"] and host["SecurityOpt"] == ["no-new-privileges"]
    assert host["NanoCpus"] == 500_000_000 and host["Memory"] == 64 * 2**20
    assert host["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 2}
    assert host["ExtraHosts"] == ["host.docker.internal:host-gateway"]
    assert host["Mounts"][0]["ReadOnly"] is True and host["Mounts"][0]["Target"] == "/data"
    assert config["User"] == "65534" and "A=1" in config["Env"]
    assert "svc" in endpoint["Aliases"]
    assert info.ip_addresses[net.name] == endpoint["IPAddress"]
    assert info.ports[9000][0] == "127.0.0.1"


def test_from_env_honours_docker_host(docker_engine: DockerEngine) -> None:
    engine = DockerEngine.from_env({"DOCKER_HOST": "unix:///var/run/docker.sock"})
    try:
        assert engine.engine_id() == docker_engine.engine_id()
        assert engine.where == "unix:///var/run/docker.sock"
    finally:
        engine.close()


def test_a_failed_start_leaves_no_container(
    docker_engine: DockerEngine, deployment: str
) -> None:
    spec = ContainerSpec(
        name=f"{deployment}-bad", image=TEST_IMAGE, command=("/no/such/binary",),
        labels=L.for_deployment(deployment),
    )
    with pytest.raises(Exception, match="no such file") as caught:
        docker_engine.run_container(spec)
    assert type(caught.value).__module__ == "orchestrator.errors"
    assert docker_engine.list_containers(L.for_deployment(deployment)) == []
