"""timeout_send on a real Deployment: a replica that hangs on a request (while its health
says SERVING) is given up on after timeout_send, and the request goes to another replica;
when every replica hangs, the client gets DEADLINE_EXCEEDED. gRPC and HTTP alike."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from orchestrator import Deployment
from orchestrator.errors import RequestError
from orchestrator.images import prepare_runtime_image
from tests.support.paths import TEST_EXECUTORS

if TYPE_CHECKING:
    from orchestrator.engine.docker_engine import DockerEngine

pytestmark = pytest.mark.integration

HANGS = f"{TEST_EXECUTORS}/hang.py:HangsOn"


@pytest.fixture(scope="module")
def runtime_image(docker_engine: DockerEngine) -> str:
    """This checkout's image by its content hash: another checkout building on the same
    engine moves `orchestrator-runtime:latest`, never this tag."""
    return prepare_runtime_image(docker_engine, tag=None, prune=False).ref


@pytest.fixture
def hung(runtime_image: str, dep_name: str) -> Iterator[Deployment]:
    """Replica 0 hangs on /hang, replica 1 answers; /hang waits 1.5 s per replica."""
    with Deployment(name=dep_name, uses=HANGS, uses_with={"hang_replicas": [0]}, replicas=2,
                    timeout_send={"/hang": 1500, "*": -1}, protocol=["grpc", "http"],
                    image=runtime_image) as dep:
        yield dep


def http_post(dep: Deployment, path: str, body: object) -> tuple[int, dict[str, object]]:
    req = urllib.request.Request(f"http://{dep.head_host}:{dep.head_port}{path}",
                                 data=json.dumps(body).encode(), method="POST")
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, json.loads(exc.read())


def test_a_hung_replica_is_given_up_and_another_answers(hung: Deployment) -> None:
    for _ in range(6):  # whichever replica the head picks first, replica 1 answers
        assert hung.post("/hang", [{}])[0]["replica"] == 1
    status, out = http_post(hung, "/hang", {"data": [{}]})
    assert status == 200 and out["data"] == [{"replica": 1}]  # type: ignore[comparison-overlap]
    assert {hung.post("/echo", [{}])[0]["replica"] for _ in range(6)} == {0, 1}
    assert hung.is_ready  # a hung request does not make its replica unhealthy


def test_when_every_replica_hangs_the_client_gets_deadline_exceeded(hung: Deployment) -> None:
    with pytest.raises(RequestError, match=r"DEADLINE_EXCEEDED.*timeout_send"):
        hung.post("/hang", [{}], parameters={"everywhere": True})
    status, out = http_post(hung, "/hang", {"data": [{}], "parameters": {"everywhere": True}})
    assert status == 504
    assert "timeout_send" in out["header"]["status"]["description"]  # type: ignore[index]
    assert hung.post("/echo", [{"i": 1}])[0]["i"] == 1  # other endpoints have no limit


def test_timeout_send_is_a_jina_option_in_milliseconds(runtime_image: str,
                                                       dep_name: str) -> None:
    from orchestrator.jina import fields_from_jina

    fields = fields_from_jina({"name": dep_name, "uses": HANGS, "timeout_send": 1000})
    assert fields["timeout_send"] == 1000
    with Deployment(**fields, image=runtime_image) as dep:
        assert dep.head_args.timeout_send == 1000  # Jina's Namespace view, in ms
        with pytest.raises(RequestError, match="DEADLINE_EXCEEDED"):
            dep.post("/hang", [{}])
        assert dep.protocol == "grpc"  # HTTP is off unless asked
        req = urllib.request.Request(f"http://{dep.head_host}:{dep.head_port}/post",
                                     data=b"{}", method="POST")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(req, timeout=30)
        refused.value.close()
        assert refused.value.code == 404
