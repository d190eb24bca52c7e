"""Asking the engine whether this process runs in one of its containers."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

import pytest

from orchestrator.deployment import Deployment
from orchestrator.placement import container_placement, orchestrator_placement, self_container
from orchestrator.planning.hosts import Placement
from tests.support.paths import ECHO

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
