"""Every row of the get_worker_host table, as pure unit tests."""

from __future__ import annotations

import argparse

import pytest

from orchestrator.deployment import Deployment
from orchestrator.planning.hosts import DOCKER_HOST, Placement, __docker_host__

ENGINE = "engine-a"


def container(name: str, networks: set[str], port: int = 50051, engine: str = ENGINE,
              host: str = "127.0.0.1") -> Placement:
    return Placement(host=host, port=port, containerized=True, container_name=name,
                     networks=frozenset(networks), engine_id=engine)


HEAD = container("dep-head", {"dep-net"}, port=41000)
ARGS = argparse.Namespace(host=None, port=None)


@pytest.mark.parametrize(
    ("situation", "worker", "head", "orchestrator", "expected"),
    [
        ("both containers, same engine and network",
         container("dep-s0-r0-g1", {"dep-net"}, port=32001), HEAD, None,
         ("dep-s0-r0-g1", 50051)),
        ("both containerized on this host, no shared network",
         container("other-w", {"other-net"}, port=32002), HEAD, None, (DOCKER_HOST, 32002)),
        ("worker is a local process on this host, head containerized",
         Placement(host="127.0.0.1", port=45000), HEAD, None, (DOCKER_HOST, 45000)),
        ("worker is an external service on this host, head containerized",
         Placement(host="localhost", port=6000), HEAD, None, (DOCKER_HOST, 6000)),
        ("worker on another host",
         Placement(host="10.1.2.3", port=7000), HEAD, None, ("10.1.2.3", 7000)),
        ("worker container on another host",
         container("remote-w", {"dep-net"}, host="build-box", port=7001), HEAD, None,
         ("build-box", 7001)),
        ("orchestrator in a container that shares the head's network, local worker",
         Placement(host="127.0.0.1", port=45001), HEAD,
         container("orch-ctl", {"dep-net", "bridge"}), ("orch-ctl", 45001)),
        ("orchestrator in a container without a shared network, local worker",
         Placement(host="127.0.0.1", port=45002), HEAD,
         container("orch-ctl", {"bridge"}), (DOCKER_HOST, 45002)),
        ("orchestrator in a container, workers on the head's network",
         container("dep-s0-r1-g1", {"dep-net"}), HEAD, container("orch-ctl", {"bridge"}),
         ("dep-s0-r1-g1", 50051)),
        ("head is a local process, worker is a local process",
         Placement(host="127.0.0.1", port=45003), Placement(host="127.0.0.1", port=45004),
         None, ("127.0.0.1", 45003)),
        ("containers on different engines of this host",
         container("w", {"dep-net"}, port=32005, engine="engine-b"), HEAD, None,
         (DOCKER_HOST, 32005)),
    ],
)
def test_get_worker_host_table(
    situation: str, worker: Placement, head: Placement, orchestrator: Placement | None,
    expected: tuple[str, int],
) -> None:
    assert Deployment.get_worker_address(ARGS, worker, head, orchestrator) == expected, situation
    assert Deployment.get_worker_host(ARGS, worker, head, orchestrator) == expected[0]


def test_pod_args_host_and_port_override_a_local_placement() -> None:
    args = argparse.Namespace(host="10.9.9.9", port=9000)
    assert Deployment.get_worker_host(args, Placement(), HEAD) == "10.9.9.9"
    assert Deployment.get_worker_address(args, Placement(), HEAD) == ("10.9.9.9", 9000)


def test_docker_host_alias_is_the_host_gateway_name() -> None:
    assert __docker_host__ == "host.docker.internal"
