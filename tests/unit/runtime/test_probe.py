"""The stdlib health probe (the image's HEALTHCHECK) against real servers on loopback:
grpcio's own health service, a worker, the head's HTTP/2 relay, and peers that misbehave."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from orchestrator.runtime.probe import check
from tests.support.ports import free_port
from tests.unit.runtime.harness import Cluster, wait_until


@pytest.fixture
def grpcio_health() -> Iterator[tuple[int, health.HealthServicer]]:
    """grpcio's reference health service on a loopback port."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield port, servicer
    finally:
        server.stop(0)


@pytest.mark.parametrize(("status", "expected"), [
    (health_pb2.HealthCheckResponse.SERVING, True),
    (health_pb2.HealthCheckResponse.NOT_SERVING, False),
    (health_pb2.HealthCheckResponse.UNKNOWN, False),
])
def test_the_probe_reads_grpcio_health_status(
        grpcio_health: tuple[int, health.HealthServicer], status: int, expected: bool) -> None:
    port, servicer = grpcio_health
    servicer.set("", status)
    assert check(port, timeout=5) is expected


def test_a_service_grpcio_does_not_know_is_not_serving(
        grpcio_health: tuple[int, health.HealthServicer]) -> None:
    port, servicer = grpcio_health
    servicer._server_status.pop("")  # no public way to forget a service
    # Check now answers NOT_FOUND: trailers only, no message
    assert check(port, timeout=5) is False
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    assert check(port, timeout=5) is True


def test_worker_and_head_relay_answer_the_probe(cluster: Cluster) -> None:
    worker = cluster.worker()
    head = cluster.head(workers=[(0, worker)])
    wait_until(lambda: check(head.port, timeout=2), what="head SERVING to the probe")
    assert check(worker.port, timeout=5)
    cluster.stop(worker)
    # the head's only replica is gone: the relay answers NOT_SERVING
    wait_until(lambda: not check(head.port, timeout=2), what="head NOT_SERVING to the probe")
    assert not check(worker.port, timeout=2)  # nothing listens there any more


def test_peers_that_are_not_grpc_fail_the_probe_within_its_timeout() -> None:
    with socket.socket() as mute:  # accepts, never speaks
        mute.bind(("127.0.0.1", 0))
        mute.listen()
        assert check(mute.getsockname()[1], timeout=0.3) is False

    with socket.socket() as http1:  # answers in HTTP/1 text and hangs up
        http1.bind(("127.0.0.1", 0))
        http1.listen()

        def answer() -> None:
            conn, _ = http1.accept()
            with conn:
                conn.recv(1024)
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")

        t = threading.Thread(target=answer)
        t.start()
        assert check(http1.getsockname()[1], timeout=5) is False
        t.join(5)

    assert check(free_port(), timeout=1) is False  # nothing listening


def test_the_probe_command_imports_no_grpc(grpcio_health: tuple[int, health.HealthServicer]
                                           ) -> None:
    """What keeps the HEALTHCHECK cheap: `python -m orchestrator.runtime probe` must not pay
    for importing grpcio."""
    port, servicer = grpcio_health
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    code = ("import sys; from orchestrator.runtime.__main__ import main; "
            f"rc = main(['probe', '--port', '{port}']); "
            "sys.exit(rc if 'grpc' not in sys.modules else 9)")
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0
