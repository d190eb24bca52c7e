"""TLS on the head's port, in-process, with a CA and certificates made by the test (trustme):
gRPC and GET /metrics over the same TLS, ALPN h2, mutual TLS, the probe, the head's CLI."""

from __future__ import annotations

import socket
import ssl
import urllib.request
from pathlib import Path

import grpc
import pytest
import trustme

from orchestrator.runtime import wire
from orchestrator.runtime.__main__ import main
from orchestrator.runtime.config import HeadConfig, WorkerAddress
from orchestrator.runtime.h2.limits import Limits
from orchestrator.runtime.h2.tls import probe_context, server_context
from orchestrator.runtime.head import HeadServer
from orchestrator.runtime.probe import check
from orchestrator.runtime.worker import WorkerServer
from tests.unit.runtime.harness import TOKEN, Cluster, addr


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def pki(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The head's certificate and key, its CA, and a client CA with one client's cert."""
    root = tmp_path_factory.mktemp("pki")
    server = ca.issue_cert("127.0.0.1", "localhost")
    clients = trustme.CA()
    client = clients.issue_cert("client@example.org")
    paths = {name: root / f"{name}.pem" for name in
             ("cert", "key", "ca", "client_ca", "client_cert", "client_key", "other_ca")}
    server.cert_chain_pems[0].write_to_path(paths["cert"])
    server.private_key_pem.write_to_path(paths["key"])
    ca.cert_pem.write_to_path(paths["ca"])
    clients.cert_pem.write_to_path(paths["client_ca"])
    client.cert_chain_pems[0].write_to_path(paths["client_cert"])
    client.private_key_pem.write_to_path(paths["client_key"])
    trustme.CA().cert_pem.write_to_path(paths["other_ca"])
    return paths


def tls_head(cluster: Cluster, pki: dict[str, Path], *, mutual: bool = False,
             limits: Limits | None = None) -> HeadServer:
    worker: WorkerServer = cluster.worker()
    cfg = HeadConfig(shards=1, host="127.0.0.1", port=0, grace=1.0, token=TOKEN,
                     health_interval=0.05, workers=(WorkerAddress(0, addr(worker)),))
    tls = server_context(str(pki["cert"]), str(pki["key"]),
                         str(pki["client_ca"]) if mutual else None)
    head = HeadServer(cfg, limits, tls)
    cluster.lt.run(head.start())
    cluster._servers.append(head)
    return head


def call(head: HeadServer, ca: Path, client: tuple[Path, Path] | None = None) -> list[dict]:
    creds = grpc.ssl_channel_credentials(
        root_certificates=ca.read_bytes(),
        private_key=client[1].read_bytes() if client else None,
        certificate_chain=client[0].read_bytes() if client else None)
    with grpc.secure_channel(addr(head), creds) as channel:
        post = channel.unary_unary(wire.METHOD_CALL, request_serializer=wire.identity,
                                   response_deserializer=wire.identity)
        out = post(wire.encode_request("/echo", [{"i": 7}]), timeout=10,
                   wait_for_ready=True)
    return wire.decode_docs(wire.parse_response(out).docs)


def test_calls_and_metrics_over_tls_with_the_right_ca(cluster: Cluster,
                                                      pki: dict[str, Path]) -> None:
    head = tls_head(cluster, pki)
    assert call(head, pki["ca"])[0]["i"] == 7
    ctx = ssl.create_default_context(cafile=str(pki["ca"]))
    with urllib.request.urlopen(f"https://127.0.0.1:{head.port}/metrics", context=ctx,
                                timeout=10) as resp:
        assert b"requests" in resp.read()
    ctx.set_alpn_protocols(["h2"])
    with socket.create_connection(("127.0.0.1", head.port)) as raw, \
            ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        assert tls.selected_alpn_protocol() == "h2"


def test_a_client_with_the_wrong_ca_fails_cleanly_and_the_head_keeps_serving(
        cluster: Cluster, pki: dict[str, Path]) -> None:
    head = tls_head(cluster, pki)
    creds = grpc.ssl_channel_credentials(root_certificates=pki["other_ca"].read_bytes())
    with grpc.secure_channel(addr(head), creds) as channel:
        post = channel.unary_unary(wire.METHOD_CALL)
        with pytest.raises(grpc.RpcError) as failed:
            post(wire.encode_request("/echo", [{}]), timeout=10)
    assert failed.value.code() is grpc.StatusCode.UNAVAILABLE
    with socket.create_connection(("127.0.0.1", head.port)) as s:  # plain HTTP/2: refused
        s.settimeout(10)
        s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        assert s.recv(100)[:1] in (b"\x15", b"")  # a TLS alert, or the close
    assert call(head, pki["ca"])[0]["i"] == 7


def test_mutual_tls_needs_a_client_certificate_from_the_client_ca(
        cluster: Cluster, pki: dict[str, Path]) -> None:
    head = tls_head(cluster, pki, mutual=True)
    with pytest.raises(grpc.RpcError) as failed:
        creds = grpc.ssl_channel_credentials(root_certificates=pki["ca"].read_bytes())
        with grpc.secure_channel(addr(head), creds) as channel:
            channel.unary_unary(wire.METHOD_CALL)(wire.encode_request("/echo", [{}]),
                                                  timeout=10)
    assert failed.value.code() is grpc.StatusCode.UNAVAILABLE
    assert call(head, pki["ca"], (pki["client_cert"], pki["client_key"]))[0]["i"] == 7


def test_the_probe_speaks_tls(cluster: Cluster, pki: dict[str, Path]) -> None:
    head = tls_head(cluster, pki)
    assert check(head.port, 5, tls=probe_context())
    assert not check(head.port, 5)  # plain HTTP/2 against TLS: not serving
    mutual = tls_head(cluster, pki, mutual=True)
    assert not check(mutual.port, 5, tls=probe_context())
    assert check(mutual.port, 5, tls=probe_context(str(pki["client_cert"]),
                                                   str(pki["client_key"])))


def test_an_unfinished_tls_handshake_is_dropped(cluster: Cluster, pki: dict[str, Path]) -> None:
    head = tls_head(cluster, pki, limits=Limits(handshake_timeout=0.3, tick=0.05))
    with socket.create_connection(("127.0.0.1", head.port)) as s:
        s.settimeout(30)
        s.sendall(b"\x16\x03\x01")  # the start of a ClientHello, never finished
        assert s.recv(100) == b""
    assert call(head, pki["ca"])[0]["i"] == 7


@pytest.mark.parametrize(("args", "field"), [
    (["--tls-cert", "x.pem"], "tls_cert"),
    (["--tls-key", "x.pem"], "tls_cert"),
    (["--tls-client-ca", "x.pem"], "tls_client_ca"),
    (["--tls-cert", "/no/such.pem", "--tls-key", "/no/such.pem"], "tls_cert"),
])
def test_the_head_cli_refuses_bad_tls_arguments(args: list[str], field: str,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["head", "--shards", "1", "--port", "0", *args]) == 2
    err = capsys.readouterr().err
    assert field in err and "Traceback" not in err


def test_the_head_cli_refuses_a_key_that_does_not_match(
        pki: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["head", "--shards", "1", "--port", "0", "--tls-cert", str(pki["cert"]),
                 "--tls-key", str(pki["client_key"])]) == 2
    assert "tls_cert" in capsys.readouterr().err
