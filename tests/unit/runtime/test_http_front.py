"""Jina's HTTP interface on the head's port, in-process over real sockets: data requests on
both routing paths, keep-alive, error mapping, limits and timeouts, cancel, HTTPS (trustme),
and timeout_send on both paths."""

from __future__ import annotations

import http.client
import json
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme

from orchestrator import Client
from orchestrator.errors import RequestError
from orchestrator.runtime.config import HeadConfig, PollingPolicy, SendTimeouts, WorkerAddress
from orchestrator.runtime.h2.limits import Limits
from orchestrator.runtime.h2.tls import server_context
from orchestrator.runtime.head import HeadServer
from orchestrator.runtime.worker import WorkerServer
from tests.unit.runtime.harness import ROOT, TOKEN, Cluster, addr, wait_until

HANGS = f"{ROOT}/tests/integration/executors/hang.py:HangsOn"


def start_head(cluster: Cluster, workers: list[WorkerServer], *, limits: Limits | None = None,
               tls: ssl.SSLContext | None = None, **config: Any) -> HeadServer:
    config.setdefault("http", True)
    config.setdefault("health_interval", 0.05)
    cfg = HeadConfig(shards=1, host="127.0.0.1", port=0, grace=1.0, token=TOKEN, name="h1",
                     workers=tuple(WorkerAddress(0, addr(w)) for w in workers), **config)
    head = HeadServer(cfg, limits, tls)
    cluster.lt.run(head.start())
    cluster._servers.append(head)
    wait_until(head.pool.serving, what="head serving")
    return head


OPEN: list[http.client.HTTPConnection] = []


@pytest.fixture(autouse=True)
def _close_connections() -> Iterator[None]:
    yield
    while OPEN:
        OPEN.pop().close()


def connect(port: int, context: ssl.SSLContext | None = None) -> http.client.HTTPConnection:
    """A client connection, closed after the test."""
    conn = (http.client.HTTPConnection("127.0.0.1", port, timeout=10) if context is None
            else http.client.HTTPSConnection("127.0.0.1", port, timeout=10, context=context))
    OPEN.append(conn)
    return conn


def post(conn: http.client.HTTPConnection, path: str, body: Any) -> tuple[int, Any]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    conn.request("POST", path, body=data, headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    return resp.status, json.loads(resp.read())


def curl(*args: str) -> str:
    """curl's answer with its status line and headers (curl is the client users have)."""
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    done = subprocess.run(["curl", "-sS", "-i", "--max-time", "30", *args],
                          capture_output=True, text=True, check=True)
    return done.stdout.replace("\r\n", "\n")


def get_status(conn: http.client.HTTPConnection, path: str) -> int:
    conn.request("GET", path)
    resp = conn.getresponse()
    resp.read()
    return resp.status


def raw_exchange(port: int, data: bytes) -> bytes:
    """Send bytes, read until the head closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(data)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    return out


@pytest.mark.parametrize("polling", ["ANY", "ALL"])  # ANY: relay fast path; ALL: grpcio path
def test_post_and_endpoint_shortcut_on_one_kept_alive_connection(cluster: Cluster,
                                                                 polling: str) -> None:
    head = start_head(cluster, [cluster.worker()], polling=PollingPolicy.parse(polling))
    conn = connect(head.port)
    status, out = post(conn, "/post", {"data": [{"i": 1, "f": 2.5}], "parameters": {"p": 1},
                                       "exec_endpoint": "/echo"})
    sock = conn.sock
    assert status == 200 and out["data"][0]["i"] == 1 and out["data"][0]["tag"] == "v1"
    assert out["header"]["exec_endpoint"] == "/echo" and out["parameters"] == {"p": 1}
    status, out = post(conn, "/echo", {"data": [{"i": 2}]})
    assert status == 200 and out["data"] == [{"i": 2, "tag": "v1", "pod": out["data"][0]["pod"],
                                              "shard": 0, "replica": 0}]
    assert conn.sock is sock  # the same connection: HTTP/1.1 keep-alive


@pytest.mark.parametrize("version", ["--http1.1", "--http2-prior-knowledge"])
def test_curl_over_http1_and_cleartext_http2(cluster: Cluster, version: str) -> None:
    head = start_head(cluster, [cluster.worker()])
    base = f"http://127.0.0.1:{head.port}"
    out = curl(version, "-X", "POST", f"{base}/post", "-H", "Content-Type: application/json",
               "-d", '{"data": [{"i": 1}], "exec_endpoint": "/echo"}')
    assert out.split("\n")[0].split()[1] == "200" and '"i":1,"tag":"v1"' in out
    out = curl(version, "-X", "POST", f"{base}/post", "-d", "{bad")
    assert out.split("\n")[0].split()[1] == "400" and "not valid UTF-8 JSON" in out
    out = curl(version, f"{base}/status")
    assert '"protocol": ["grpc", "http"]' in out
    with Client(addr(head)) as client:  # gRPC on the same HTTP/2 port, unaffected
        assert client.post("/echo", [{"i": 2}], timeout=10)[0]["i"] == 2


def test_status_health_openapi_and_metrics(cluster: Cluster) -> None:
    w = cluster.worker()
    head = start_head(cluster, [w])
    conn = connect(head.port)
    post(conn, "/echo", {"data": [{}]})
    for path, status, kind in [("/status", 200, "application/json"),
                               ("/health", 200, "application/json"),
                               ("/openapi.json", 200, "application/json"),
                               ("/metrics", 200, "text/plain")]:
        conn.request("GET", path)
        resp = conn.getresponse()
        body = resp.read()
        assert (resp.status, resp.getheader("Content-Type", "").split(";")[0]) == \
            (status, kind), path
        if path == "/status":
            info = json.loads(body)
            assert info["name"] == "h1" and info["protocol"] == ["grpc", "http"]
            assert info["serving"] is True and info["replicas"][0]["address"] == addr(w)
        elif path == "/openapi.json":
            assert "/post" in json.loads(body)["paths"]
        elif path == "/metrics":
            assert b'orchestrator_requests_total{code="OK",head="h1"} 1.0' in body
    conn.request("HEAD", "/health")
    resp = conn.getresponse()
    assert resp.status == 200 and resp.read() == b""
    cluster.stop(w)
    wait_until(lambda: get_status(conn, "/health") == 503,
               what="/health to say 503 without a replica")


def test_errors_map_to_http_status_with_the_executors_message(cluster: Cluster) -> None:
    head = start_head(cluster, [cluster.worker(HANGS)])
    conn = connect(head.port)
    status, out = post(conn, "/fail", {"data": [{}]})
    assert status == 500 and out["header"]["status"]["description"] == "failed on purpose"
    assert out["header"]["status"]["exception"]["name"] == "ValueError"
    assert any("failed on purpose" in line
               for line in out["header"]["status"]["exception"]["stacks"])
    status, out = post(conn, "/nowhere", {"data": [{}]})  # no such endpoint, no default
    assert status == 404 and "/nowhere" in out["header"]["status"]["description"]
    status, out = post(conn, "/post", b"{broken")
    assert status == 400 and "not valid UTF-8 JSON" in out["detail"]
    conn.request("GET", "/echo")
    resp = conn.getresponse()
    assert resp.status == 405 and resp.getheader("Allow") == "POST"
    resp.read()
    status, out = post(conn, "/echo", {"data": [{"x": 1}]})  # the connection still serves
    assert status == 200 and out["data"][0]["x"] == 1


def test_http_is_off_unless_asked(cluster: Cluster) -> None:
    head = start_head(cluster, [cluster.worker()], http=False)
    out = raw_exchange(head.port, b"POST /post HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}")
    assert out.startswith(b"HTTP/1.1 404") and b"Connection: close" in out
    out = raw_exchange(head.port, b"GET /metrics HTTP/1.1\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200") and b"Connection: close" in out


@pytest.mark.parametrize(("request_bytes", "status"), [
    (b"POST /post HTTP/1.1\r\nContent-Length: 5000\r\n\r\n", 413),
    (b"GET /status HTTP/1.1\r\nX: " + b"a" * 3000 + b"\r\n\r\n", 431),
    (b"POST /post HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 501),
])
def test_oversized_or_ambiguous_requests_are_refused_and_closed(
        cluster: Cluster, request_bytes: bytes, status: int) -> None:
    head = start_head(cluster, [cluster.worker()],
                      limits=Limits(max_http_head=2048, max_http_body=4096))
    out = raw_exchange(head.port, request_bytes)
    assert out.startswith(b"HTTP/1.1 %d" % status) and b"Connection: close" in out
    with Client(addr(head)) as client:
        assert client.post("/echo", [{}], timeout=5)[0]["tag"] == "v1"


def test_expect_100_continue_gets_its_interim_answer(cluster: Cluster) -> None:
    head = start_head(cluster, [cluster.worker()])
    body = json.dumps({"data": [{"i": 7}]}).encode()
    with socket.create_connection(("127.0.0.1", head.port), timeout=10) as s:
        s.sendall(b"POST /echo HTTP/1.1\r\nExpect: 100-continue\r\nConnection: close\r\n"
                  b"Content-Length: %d\r\n\r\n" % len(body))
        assert s.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        s.sendall(body)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    assert out.startswith(b"HTTP/1.1 200") and b'"i":7' in out


def test_a_request_that_stops_half_way_gets_408_and_idle_connections_close(
        cluster: Cluster) -> None:
    head = start_head(cluster, [cluster.worker()],
                      limits=Limits(handshake_timeout=0.3, idle_timeout=0.5, tick=0.05))
    started = time.monotonic()
    out = raw_exchange(head.port, b"POST /post HTTP/1.1\r\nContent-Length: 10\r\n\r\n{")
    assert out.startswith(b"HTTP/1.1 408")
    assert raw_exchange(head.port, b"GET /status HTTP/1.1\r\nX: slow") .startswith(b"HTTP/1.1 408")
    out = raw_exchange(head.port, b"GET /health HTTP/1.1\r\n\r\n")  # kept alive, then idle
    assert out.startswith(b"HTTP/1.1 200") and b"Connection: keep-alive" in out
    assert time.monotonic() - started < 60  # all three were closed by the head


def test_a_client_that_leaves_mid_call_cancels_it(cluster: Cluster) -> None:
    worker = cluster.worker(HANGS)
    head = start_head(cluster, [worker])
    relay = head._relay
    assert relay is not None
    body = b'{"data": [{}]}'
    with socket.create_connection(("127.0.0.1", head.port), timeout=10) as s:
        s.sendall(b"POST /hang HTTP/1.1\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        wait_until(lambda: relay.calls == 1, what="the call in flight")
    wait_until(lambda: relay.calls == 0 and not relay.clients, what="the call cancelled")
    wait_until(lambda: relay.buffers.total == 0, what="every byte released")
    assert head.pool.get(0, addr(worker)) is not None  # not blamed on the replica
    with Client(addr(head)) as client:
        assert client.post("/echo", [{}], timeout=5)[0]["replica"] == 0


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    ca = trustme.CA()
    root = tmp_path_factory.mktemp("pki")
    server = ca.issue_cert("127.0.0.1", "localhost")
    paths = {name: root / f"{name}.pem" for name in ("cert", "key", "ca")}
    server.cert_chain_pems[0].write_to_path(paths["cert"])
    server.private_key_pem.write_to_path(paths["key"])
    ca.cert_pem.write_to_path(paths["ca"])
    return paths


def test_https_with_the_heads_tls(cluster: Cluster, pki: dict[str, Path]) -> None:
    tls = server_context(str(pki["cert"]), str(pki["key"]))
    head = start_head(cluster, [cluster.worker()], tls=tls)
    ctx = ssl.create_default_context(cafile=str(pki["ca"]))
    ctx.set_alpn_protocols(["http/1.1"])
    conn = connect(head.port, ctx)
    status, out = post(conn, "/post", {"data": [{"i": 1}], "exec_endpoint": "/echo"})
    assert status == 200 and out["data"][0]["tag"] == "v1"
    assert conn.sock.version() in ("TLSv1.2", "TLSv1.3")  # type: ignore[union-attr]
    conn.request("GET", "/status")
    assert json.loads(conn.getresponse().read())["protocol"] == ["grpcs", "https"]
    conn.close()  # before the head stops: TLS closes with both sides there
    # curl over TLS picks HTTP/2 by ALPN: the interface answers there too
    out = curl("--cacert", str(pki["ca"]), "-X", "POST", f"https://127.0.0.1:{head.port}/echo",
               "-d", '{"data": [{"i": 3}]}')
    assert out.startswith("HTTP/2 200") and '"i":3' in out
    relay = head._relay
    assert relay is not None
    wait_until(lambda: not relay.clients, what="the TLS connection closed")


@pytest.mark.parametrize("polling", ["ANY", "ALL"])
def test_timeout_send_retries_a_hung_replica_then_gives_up(cluster: Cluster,
                                                           polling: str) -> None:
    hung = cluster.worker(HANGS, replica=0, hang_replicas=[0])
    fine = cluster.worker(HANGS, replica=1, hang_replicas=[0])
    head = start_head(cluster, [hung, fine], polling=PollingPolicy.parse(polling),
                      timeout_send=SendTimeouts.parse("1500"), health_interval=0.5)
    with Client(addr(head)) as client:
        for _ in range(4):  # whichever replica is picked first, replica 1 answers
            assert client.post("/hang", [{}])[0]["replica"] == 1
    conn = connect(head.port)
    status, out = post(conn, "/hang", {"data": [{}]})
    assert status == 200 and out["data"][0]["replica"] == 1
    cluster.lt.run(head.remove_worker(0, addr(fine)))  # only the hung replica is left
    with Client(addr(head)) as client, pytest.raises(RequestError,
                                                     match=r"DEADLINE_EXCEEDED.*timeout_send"):
        client.post("/hang", [{}])
    status, out = post(conn, "/hang", {"data": [{}]})
    assert status == 504 and "timeout_send" in out["header"]["status"]["description"]
    assert head.pool.get(0, addr(hung)).state.value == "ready"  # type: ignore[union-attr]


def test_timeout_send_per_endpoint(cluster: Cluster) -> None:
    worker = cluster.worker(HANGS)
    head = start_head(cluster, [worker],
                      timeout_send=SendTimeouts.parse('{"/hang": 200, "*": -1}'))
    assert head.send_timeout(b"/hang") == 0.2 and head.send_timeout(b"/echo") is None
    with Client(addr(head)) as client:
        with pytest.raises(RequestError, match="DEADLINE_EXCEEDED"):
            client.post("/hang", [{}])
        assert client.post("/echo", [{"i": 1}])[0]["i"] == 1


def test_thousands_of_pipelined_requests_are_answered_in_order(cluster: Cluster) -> None:
    head = start_head(cluster, [cluster.worker()])
    n = 3000
    requests = b"GET /health HTTP/1.1\r\n\r\n" * (n - 1) + \
        b"GET /health HTTP/1.1\r\nConnection: close\r\n\r\n"
    out = raw_exchange(head.port, requests)
    assert out.count(b"HTTP/1.1 200 OK") == n and out.count(b'{"status": "SERVING"}') == n
