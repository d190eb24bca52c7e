"""Jina's HTTP interface on a real Deployment's head port, with a plain HTTP client from the
standard library (what curl does): POST /post, POST /<endpoint>, GET /status, /health,
/openapi.json, error mapping, gRPC on the same port."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

from orchestrator import Deployment
from orchestrator.engine.cleanup import list_owned, remove_owned
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


@pytest.fixture(scope="module")
def dep(runtime_image: str, module_dep_name: str) -> Iterator[Deployment]:
    with Deployment(name=module_dep_name, uses=HANGS, uses_with={"hang_replicas": []},
                    replicas=2, protocol=["grpc", "http"], image=runtime_image) as d:
        yield d


@pytest.fixture(scope="module")
def module_dep_name(docker_engine: DockerEngine) -> Iterator[str]:
    """A unique name for the module's deployment; nothing with it may remain after."""
    name = f"t{uuid.uuid4().hex[:10]}"
    yield name
    left = list_owned(docker_engine, name)
    if left:
        remove_owned(docker_engine, name, grace=0)
        pytest.fail(f"deployment {name} left resources behind: {', '.join(left.names())}",
                    pytrace=False)


def request(dep: Deployment, method: str, path: str,
            body: Any = None) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) of one plain HTTP/1.1 request to the head's port."""
    data = None if body is None else body if isinstance(body, bytes) else \
        json.dumps(body).encode()
    req = urllib.request.Request(f"http://{dep.head_host}:{dep.head_port}{path}", data=data,
                                 method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, dict(exc.headers), exc.read()


def test_protocol_reports_what_is_enabled(dep: Deployment) -> None:
    assert dep.protocol == ["grpc", "http"]
    status, _, body = request(dep, "GET", "/status")
    info = json.loads(body)
    assert status == 200 and info["protocol"] == ["grpc", "http"] and info["serving"]
    assert len(info["replicas"]) == 2 and {r["state"] for r in info["replicas"]} == {"ready"}


def test_post_with_exec_endpoint_returns_the_result_docs(dep: Deployment) -> None:
    docs = [{"i": 1, "f": 1.5, "nested": {"l": [1, None, True]}}, {"i": 2}]
    status, headers, body = request(dep, "POST", "/post", {
        "data": docs, "parameters": {"p": 1}, "exec_endpoint": "/echo"})
    out = json.loads(body)
    assert status == 200 and headers["Content-Type"] == "application/json"
    assert [{k: v for k, v in d.items() if k != "replica"} for d in out["data"]] == docs
    assert {d["replica"] for d in out["data"]} <= {0, 1}
    assert out["header"]["exec_endpoint"] == "/echo" and out["header"]["status"] is None
    assert out["parameters"] == {"p": 1}


def test_the_endpoint_shortcut_and_grpc_on_the_same_port(dep: Deployment) -> None:
    replicas = set()
    for i in range(6):
        status, _, body = request(dep, "POST", "/echo", {"data": [{"i": i}]})
        out = json.loads(body)
        assert status == 200 and out["data"][0]["i"] == i
        replicas.add(out["data"][0]["replica"])
    assert replicas == {0, 1}  # the head balances HTTP requests over the replicas too
    assert dep.post("/echo", [{"i": 9}])[0]["i"] == 9  # gRPC, same port


def test_health_openapi_and_metrics(dep: Deployment) -> None:
    status, _, body = request(dep, "GET", "/health")
    assert status == 200 and json.loads(body) == {"status": "SERVING"}
    status, _, body = request(dep, "GET", "/openapi.json")
    doc = json.loads(body)
    assert status == 200 and doc["openapi"].startswith("3.")
    assert {"/post", "/{endpoint}", "/status", "/health"} <= set(doc["paths"])
    status, _, body = request(dep, "GET", "/metrics")
    assert status == 200 and b"orchestrator_requests_total" in body


@pytest.mark.parametrize(("method", "path", "body", "status", "says"), [
    ("POST", "/fail", {"data": [{}]}, 500, "failed on purpose"),   # the executor raised
    ("POST", "/nowhere", {"data": [{}]}, 404, "/nowhere"),          # no such endpoint
    ("POST", "/post", b"{not json", 400, "not valid UTF-8 JSON"),
    ("POST", "/echo", {"data": "text"}, 400, "data must be a list"),
    ("GET", "/echo", None, 405, "use POST"),
    ("GET", "/status/x", None, 405, "use POST"),
])
def test_errors_map_to_http_status_with_the_message(dep: Deployment, method: str, path: str,
                                                    body: Any, status: int,
                                                    says: str) -> None:
    got, headers, raw = request(dep, method, path, body)
    assert got == status and headers["Content-Type"] == "application/json"
    out = json.loads(raw)
    message = out["header"]["status"]["description"] if "header" in out else out["detail"]
    assert says in message
    if status == 500:
        exception = out["header"]["status"]["exception"]
        assert exception["name"] == "ValueError" and exception["executor"]
        assert any("raise ValueError" in line for line in exception["stacks"])
