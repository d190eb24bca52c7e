"""TLS on the head's port, on the real engine, with a CA and certificates made here (trustme).

The right CA: calls, `orchestrator ping`, GET /metrics and a rolling update under load
all succeed (zero failed requests). The wrong CA, a clear-text client, and (with mutual
TLS) a client without a certificate: each fails cleanly, with `ServiceUnavailable`, and
the head keeps serving the others. The key is a read-only file in the head's container,
in no environment variable; an exported Compose file carries it as a secret and serves TLS.
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import trustme

from orchestrator.cli import main
from orchestrator.client import Client
from orchestrator.deployment import Deployment
from orchestrator.engine.cleanup import remove_owned
from orchestrator.errors import ServiceUnavailable
from orchestrator.load import Load
from orchestrator.planning.tls import TLS_DIR
from orchestrator.status import grpc_health, head_view
from tests.support.paths import ECHO
from tests.support.waiting import wait_until

if TYPE_CHECKING:
    from orchestrator.engine.docker_engine import DockerEngine

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class Pki:
    ca: str  # signed the head's certificate
    cert: str
    key: str
    other_ca: str  # signed nothing here
    client_ca: str  # signed the client certificate
    client_cert: str
    client_key: str


def _write(blob: trustme.Blob, path: Path) -> str:
    blob.write_to_path(str(path))
    # The head runs as uid 10001 and reads the bind-mounted file: a real key would get
    # `setfacl -m u:10001:r` (docs/security.md); here the files are the test's own.
    path.chmod(0o644)
    return str(path)


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    ca, other, client_ca = trustme.CA(), trustme.CA(), trustme.CA()
    server = ca.issue_cert("head.example", "localhost", "127.0.0.1")
    client = client_ca.issue_cert("orchestrator-client")
    return Pki(
        ca=_write(ca.cert_pem, tmp_path / "ca.pem"),
        cert=_write(server.cert_chain_pems[0], tmp_path / "head.pem"),
        key=_write(server.private_key_pem, tmp_path / "head.key"),
        other_ca=_write(other.cert_pem, tmp_path / "other-ca.pem"),
        client_ca=_write(client_ca.cert_pem, tmp_path / "client-ca.pem"),
        client_cert=_write(client.cert_chain_pems[0], tmp_path / "client.pem"),
        client_key=_write(client.private_key_pem, tmp_path / "client.key"),
    )


def ping(address: str, *args: str) -> int:
    """`orchestrator ping ADDRESS ...`'s exit code."""
    return subprocess.run([sys.executable, "-c", "import sys; from orchestrator.cli import "
                           "main; sys.exit(main(sys.argv[1:]))", "ping", address,
                           "--timeout", "5", *args], capture_output=True, check=False
                          ).returncode


def probe_in_head(head: str) -> bool:
    """The image's HEALTHCHECK command, run in the head's container as Docker runs it (with
    a longer deadline than its 2 s: under load an exec'd interpreter starts slowly), polled
    until it answers SERVING. The compiled probe hands TLS to the Python one."""
    def serving() -> bool:
        return subprocess.run(["docker", "exec", head, "/usr/local/bin/orchestrator-probe",
                               "--timeout", "10"],
                              capture_output=True, check=False).returncode == 0

    wait_until(serving, timeout=120, what=f"the probe in {head} to see SERVING over TLS")
    return True


def test_tls_head_right_ca_wrong_ca_metrics_and_a_rolling_update_under_load(
    runtime_image: str, dep_name: str, docker_engine: DockerEngine, pki: Pki
) -> None:
    with Deployment(name=dep_name, uses=f"{ECHO}:Echo", uses_with={"tag": "v1"}, replicas=2,
                    image=runtime_image, tls_cert=pki.cert, tls_key=pki.key,
                    tls_ca=pki.ca) as dep:
        address = f"127.0.0.1:{dep.head_port}"
        assert dep.post("/echo", docs=[{"text": "hi"}])[0]["text"] == "hi"
        with Client(address, ca=pki.ca) as good:
            assert good.post("/echo", docs=[{"i": 1}])[0]["i"] == 1
            with Client(address, ca=pki.other_ca) as wrong, \
                    pytest.raises(ServiceUnavailable):
                wrong.post("/echo", docs=[{"i": 2}], timeout=20)
            with Client(address) as clear, pytest.raises(ServiceUnavailable):
                clear.post("/echo", docs=[{"i": 3}], timeout=20)
            assert good.post("/echo", docs=[{"i": 4}])[0]["i"] == 4  # still serving

        assert ping(address, "--ca", pki.ca) == 0
        assert ping(address, "--ca", pki.other_ca) == 1
        assert ping(address) == 1  # in clear

        context = ssl.create_default_context(cafile=pki.ca)
        with urllib.request.urlopen(f"https://localhost:{dep.head_port}/metrics",
                                    context=context, timeout=20) as reply:
            assert reply.status == 200 and b"# TYPE" in reply.read()

        head = docker_engine.inspect_container(dep.state.head_name)
        assert all("PRIVATE KEY" not in v and "CERTIFICATE" not in v
                   for v in head.env.values())
        mounts = subprocess.run(
            ["docker", "inspect", "-f", "{{range .Mounts}}{{.Destination}}={{.RW}} {{end}}",
             head.name], capture_output=True, text=True, check=True).stdout.split()
        assert f"{TLS_DIR}/tls.key=false" in mounts
        assert probe_in_head(head.name)

        with Load(dep.head_host, dep.head_port, tls=dep.spec.own_tls()) as load:
            asyncio.run(dep.rolling_update(uses_with={"tag": "v2"}))
            finished = time.monotonic()
            load.wait_for(20)
        assert load.failures == [], load.failures[:3]
        assert len(load.results) > 50
        after = load.after(finished)
        assert after and {d["tag"] for r in after for d in r.docs} == {"v2"}


def test_mutual_tls_refuses_a_client_without_a_certificate(
    runtime_image: str, dep_name: str, docker_engine: DockerEngine, pki: Pki
) -> None:
    # the deployment's own readiness checks and control calls present the client cert:
    # it could not start otherwise
    with Deployment(name=dep_name, uses=f"{ECHO}:Echo", image=runtime_image,
                    tls_cert=pki.cert, tls_key=pki.key, tls_ca=pki.ca,
                    tls_client_ca=pki.client_ca, tls_client_cert=pki.client_cert,
                    tls_client_key=pki.client_key) as dep:
        address = f"127.0.0.1:{dep.head_port}"
        assert dep.post("/echo", docs=[{"i": 0}])[0]["i"] == 0
        with Client(address, ca=pki.ca) as anonymous, pytest.raises(ServiceUnavailable):
            anonymous.post("/echo", docs=[{"i": 1}], timeout=20)
        wrong = trustme.CA().issue_cert("stranger")  # a certificate the client CA never signed
        tmp = Path(pki.ca).parent
        with Client(address, ca=pki.ca, cert=_write(wrong.cert_chain_pems[0], tmp / "s.pem"),
                    key=_write(wrong.private_key_pem, tmp / "s.key")) as stranger, \
                pytest.raises(ServiceUnavailable):
            stranger.post("/echo", docs=[{"i": 2}], timeout=20)
        with Client(address, ca=pki.ca, cert=pki.client_cert, key=pki.client_key) as known:
            assert known.post("/echo", docs=[{"i": 3}])[0]["i"] == 3
        assert ping(address, "--ca", pki.ca) == 1
        assert ping(address, "--ca", pki.ca, "--cert", pki.client_cert,
                    "--key", pki.client_key) == 0
        assert probe_in_head(dep.state.head_name)  # with the mounted client cert
        # `orchestrator ps` reaches a TLS head with the client cert its spec label names
        head = docker_engine.inspect_container(dep.state.head_name)
        assert grpc_health(head) == "serving"
        assert [v.state for v in head_view(head).values()] == ["ready"]


def test_an_exported_compose_file_serves_tls_from_its_secrets(
    runtime_image: str, dep_name: str, docker_engine: DockerEngine, pki: Pki, tmp_path: Path
) -> None:
    spec = tmp_path / "dep.yml"
    spec.write_text(f"name: {dep_name}\nuses: {ECHO}:Echo\nimage: {runtime_image}\n"
                    f"stop_grace: 1\ntls_cert: {pki.cert}\ntls_key: {pki.key}\n")
    out = tmp_path / "compose.yml"
    assert main(["export", "-f", str(spec), "--to", "compose", "-o", str(out)]) == 0
    env = {**os.environ, "ORCHESTRATOR_TOKEN": "exported-token"}

    def compose(*args: str) -> str:
        proc = subprocess.run(["docker-compose", "-f", str(out), "-p", dep_name, *args],
                              capture_output=True, text=True, env=env, check=False)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    try:
        compose("up", "-d")
        published = compose("port", f"{dep_name}-head", "50051").strip()
        with Client(published, ca=pki.ca) as client:
            wait_until(lambda: client.is_ready(timeout=1), timeout=120,
                       what="the exported head to serve TLS")
            assert client.post("/echo", docs=[{"i": 1}], timeout=20)[0]["i"] == 1
        with Client(published) as clear, pytest.raises(ServiceUnavailable):
            clear.post("/echo", docs=[{"i": 2}], timeout=20)
        pods = docker_engine.list_containers({"orchestrator.deployment": dep_name})
        head = next(p for p in pods if p.labels["orchestrator.role"] == "head")
        assert all("PRIVATE KEY" not in v for v in head.env.values())
    finally:
        compose("down", "-v", "-t", "1")
        remove_owned(docker_engine, dep_name, grace=0)


def test_https_on_the_head_port_with_the_http_protocol(
    runtime_image: str, dep_name: str, pki: Pki
) -> None:
    """protocol [grpc, http] with the head's TLS: Jina's HTTP interface is HTTPS on the same
    port, verified against the test's CA (and refused by a client that trusts another)."""
    with Deployment(name=dep_name, uses=f"{ECHO}:Echo", uses_with={"tag": "tls"},
                    image=runtime_image, protocol=["grpc", "http"], tls_cert=pki.cert,
                    tls_key=pki.key, tls_ca=pki.ca) as dep:
        assert dep.tls_enabled and dep.protocol == ["grpcs", "https"]
        body = json.dumps({"data": [{"text": "over https"}], "exec_endpoint": "/echo"})
        req = urllib.request.Request(f"https://localhost:{dep.head_port}/post",
                                     data=body.encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
        good = ssl.create_default_context(cafile=pki.ca)
        with urllib.request.urlopen(req, context=good, timeout=30) as reply:
            answer = json.loads(reply.read())
        assert reply.status == 200
        assert [(d["text"], d["tag"]) for d in answer["data"]] == [("over https", "tls")]
        wrong = ssl.create_default_context(cafile=pki.other_ca)
        with pytest.raises(urllib.error.URLError) as refused:
            urllib.request.urlopen(req, context=wrong, timeout=30)
        assert isinstance(refused.value.reason, ssl.SSLCertVerificationError)
