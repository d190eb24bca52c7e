"""The health probes against real servers on loopback: grpcio's own health service, a
worker, the head's HTTP/2 relay, and peers that misbehave. Each case runs twice: the stdlib
Python probe, and the image's HEALTHCHECK program (probe.c, compiled here as the image
build compiles it)."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from orchestrator.images import PROBE_SOURCE, build_probe
from orchestrator.runtime.probe import check, request
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


ROOT = Path(__file__).resolve().parents[3]
Probe = Callable[..., bool]


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """probe.c, built as the image build builds it (static, libc only)."""
    out = tmp_path_factory.mktemp("probe") / "orchestrator-probe"
    assert build_probe(ROOT / PROBE_SOURCE, out), "no C compiler: scripts/setup installs gcc"
    return out


@pytest.fixture(params=["python", "compiled"])
def probe(request: pytest.FixtureRequest, compiled: Path) -> Probe:
    """`check(port, timeout=...)` of one of the two probes."""
    if request.param == "python":
        return check

    def run(port: int, timeout: float = 2.0) -> bool:
        done = subprocess.run([str(compiled), "--port", str(port), "--timeout", str(timeout)],
                              capture_output=True, timeout=timeout + 30, check=False)
        assert done.returncode in (0, 1), done.stderr
        return done.returncode == 0

    return run


@pytest.mark.parametrize(("status", "expected"), [
    (health_pb2.HealthCheckResponse.SERVING, True),
    (health_pb2.HealthCheckResponse.NOT_SERVING, False),
    (health_pb2.HealthCheckResponse.UNKNOWN, False),
])
def test_the_probe_reads_grpcio_health_status(
        grpcio_health: tuple[int, health.HealthServicer], status: int, expected: bool,
        probe: Probe) -> None:
    port, servicer = grpcio_health
    servicer.set("", status)
    assert probe(port, timeout=5) is expected


def test_a_service_grpcio_does_not_know_is_not_serving(
        grpcio_health: tuple[int, health.HealthServicer], probe: Probe) -> None:
    port, servicer = grpcio_health
    servicer._server_status.pop("")  # no public way to forget a service
    # Check now answers NOT_FOUND: trailers only, no message
    assert probe(port, timeout=5) is False
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    assert probe(port, timeout=5) is True


def test_worker_and_head_relay_answer_the_probe(cluster: Cluster, probe: Probe) -> None:
    worker = cluster.worker()
    head = cluster.head(workers=[(0, worker)])
    wait_until(lambda: probe(head.port, timeout=2), what="head SERVING to the probe")
    assert probe(worker.port, timeout=5)
    cluster.stop(worker)
    # the head's only replica is gone: the relay answers NOT_SERVING
    wait_until(lambda: not probe(head.port, timeout=2), what="head NOT_SERVING to the probe")
    assert not probe(worker.port, timeout=2)  # nothing listens there any more


def test_peers_that_are_not_grpc_fail_the_probe_within_its_timeout(probe: Probe) -> None:
    with socket.socket() as mute:  # accepts, never speaks
        mute.bind(("127.0.0.1", 0))
        mute.listen()
        assert probe(mute.getsockname()[1], timeout=0.3) is False

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
        assert probe(http1.getsockname()[1], timeout=5) is False
        t.join(5)

    assert probe(free_port(), timeout=1) is False  # nothing listening


def test_the_compiled_probe_sends_what_the_python_probe_sends(compiled: Path) -> None:
    """Byte for byte: preface, SETTINGS, the HEADERS block and the empty request."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        child = subprocess.Popen([str(compiled), "--port", str(port), "--timeout", "5"])
        conn, _ = listener.accept()
        with conn:
            received = b""
            expected = request(port)
            while len(received) < len(expected) and (chunk := conn.recv(4096)):
                received += chunk
        assert child.wait(10) == 1  # hung up before any answer
    assert received == expected


def test_the_compiled_probe_rejects_bad_arguments_and_hands_tls_to_python(
        tmp_path: Path) -> None:
    python = tmp_path / "python"  # stands in for /opt/venv/bin/python: records its argv
    python.write_text(f'#!/bin/sh\necho "$@" > {tmp_path}/argv\nexit 0\n')
    python.chmod(0o755)
    binary = tmp_path / "orchestrator-probe"
    subprocess.run(["cc", "-static", "-Os", f'-DPYTHON="{python}"', "-o", str(binary),
                    str(ROOT / PROBE_SOURCE)], check=True)
    for bad in (["--port", "x"], ["--port", "70000"], ["--timeout", "0"], ["--nope"],
                ["--tls-cert"]):
        done = subprocess.run([str(binary), *bad], capture_output=True, text=True)
        assert done.returncode == 2 and "usage: orchestrator-probe" in done.stderr, bad
    done = subprocess.run([str(binary), "--tls", "--port", "5"], check=False)
    assert done.returncode == 0
    assert (tmp_path / "argv").read_text().split() == [
        "-m", "orchestrator.runtime", "probe", "--tls", "--port", "5"]
    for env in ({"ORCHESTRATOR_PROBE_TLS": "1"}, {"ORCHESTRATOR_PROBE_TLS_CERT": "/c.pem"}):
        (tmp_path / "argv").unlink()
        assert subprocess.run([str(binary)], env=env, check=False).returncode == 0
        assert (tmp_path / "argv").read_text().split() == [
            "-m", "orchestrator.runtime", "probe"]
    (tmp_path / "argv").unlink()  # a TLS switch set to anything else is not TLS
    assert subprocess.run([str(binary), "--port", str(free_port())],
                          env={"ORCHESTRATOR_PROBE_TLS": "0"}, check=False).returncode == 1
    assert not (tmp_path / "argv").exists()


def test_without_a_compiler_the_image_gets_the_python_probe(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    logs: list[str] = []
    out = tmp_path / "probe" / "orchestrator-probe"
    assert build_probe(ROOT / PROBE_SOURCE, out, log=logs.append) is False
    assert out.read_text().startswith("#!/bin/sh\nexec /opt/venv/bin/python -m "
                                      "orchestrator.runtime probe")
    assert out.stat().st_mode & 0o111
    assert any("Python probe" in line for line in logs)


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
