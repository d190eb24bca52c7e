"""compose/docker-compose.yml runs the runtime image as a hardened, labelled Echo worker.

Driven by pytest-docker. Its fixtures are overridden at module scope so the Compose project
is brought `down -v` when this module ends, not at the end of the session (a cleanup test
elsewhere must not find it running).
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from pytest_docker.plugin import Services, get_docker_services

from orchestrator.client import Client
from orchestrator.health import GrpcHealthProbe

if TYPE_CHECKING:
    from orchestrator.engine.docker_engine import DockerEngine

COMPOSE_FILE = Path(__file__).resolve().parents[2] / "compose" / "docker-compose.yml"
PORT = 50051

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def docker_compose_command() -> str:
    return "docker-compose"  # Debian's Compose v1


@pytest.fixture(scope="module")
def docker_compose_file(runtime_image: str) -> str:
    """The project's compose file; asking for `runtime_image` builds the image first."""
    return str(COMPOSE_FILE)


@pytest.fixture(scope="module")
def docker_compose_project_name() -> str:
    return f"orchtest{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def docker_setup() -> str:
    return "up -d"  # Compose v1 has no --wait; the test waits for gRPC SERVING itself


@pytest.fixture(scope="module")
def docker_cleanup() -> str:
    return "down -v --timeout 5"


@pytest.fixture(scope="module")
def docker_services(
    docker_compose_command: str,
    docker_compose_file: str,
    docker_compose_project_name: str,
    docker_setup: str,
    docker_cleanup: str,
) -> Iterator[Services]:
    with get_docker_services(
        docker_compose_command,
        docker_compose_file,
        docker_compose_project_name,
        docker_setup,
        docker_cleanup,
    ) as services:
        yield services


@pytest.fixture(scope="module")
def worker_address(docker_services: Services, docker_ip: str) -> str:
    """host:port of the worker once it reports gRPC SERVING."""
    address = f"{docker_ip}:{docker_services.port_for('worker', PORT)}"
    probe = GrpcHealthProbe(timeout=1.0)
    docker_services.wait_until_responsive(
        check=lambda: probe.serving(address), timeout=60.0, pause=0.2
    )
    return address


def _compose_filter(project: str) -> dict[str, str]:
    return {"orchestrator.managed": "true", "com.docker.compose.project": project}


def _inspect(container_id: str) -> dict[str, Any]:
    out = subprocess.run(
        ["docker", "inspect", container_id], check=True, capture_output=True, text=True
    ).stdout
    return dict(json.loads(out)[0])


def test_compose_worker_answers_a_request(worker_address: str) -> None:
    with Client(worker_address) as client:
        docs = client.post("/echo", [{"i": 1}], timeout=10)
    assert len(docs) == 1
    assert docs[0]["i"] == 1 and isinstance(docs[0]["i"], int)
    assert docs[0]["tag"] == "compose"


def test_compose_worker_is_labelled_hardened_and_local_only(
    worker_address: str, docker_engine: DockerEngine, docker_compose_project_name: str
) -> None:
    containers = docker_engine.list_containers(_compose_filter(docker_compose_project_name))
    assert [c.labels["orchestrator.role"] for c in containers] == ["worker"]
    assert containers[0].ports[PORT][0] == "127.0.0.1"
    raw = _inspect(containers[0].id)
    assert raw["Config"]["User"] == "10001:10001"
    assert raw["HostConfig"]["CapDrop"] == ["ALL"]
    assert any(opt.startswith("no-new-privileges") for opt in raw["HostConfig"]["SecurityOpt"])
    mounts = {m["Destination"]: m for m in raw["Mounts"]}
    assert mounts["/executors"]["RW"] is False


def test_compose_network_is_labelled(
    worker_address: str, docker_engine: DockerEngine, docker_compose_project_name: str
) -> None:
    networks = docker_engine.list_networks(_compose_filter(docker_compose_project_name))
    assert [n.name for n in networks] == [f"{docker_compose_project_name}_default"]
