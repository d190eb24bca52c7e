"""Jina's HTTP interface as pure functions: routes, JSON <-> DataRequest/DataResponse."""

from __future__ import annotations

import json
from typing import Any

import pytest

from orchestrator.runtime import httpapi, wire
from orchestrator.runtime.http1 import HttpError


@pytest.mark.parametrize(("method", "path", "enabled", "expected"), [
    ("GET", "/metrics", False, httpapi.Route("metrics")),
    ("GET", "/metrics", True, httpapi.Route("metrics")),
    ("GET", "/status", True, httpapi.Route("status")),
    ("HEAD", "/health", True, httpapi.Route("health")),
    ("GET", "/", True, httpapi.Route("health")),
    ("GET", "/openapi.json", True, httpapi.Route("openapi")),
    ("POST", "/post", True, httpapi.Route("data")),
    ("POST", "/echo", True, httpapi.Route("data", "/echo")),
    ("POST", "/a/b", True, httpapi.Route("data", "/a/b")),
])
def test_routes(method: str, path: str, enabled: bool, expected: httpapi.Route) -> None:
    assert httpapi.route(method, path, enabled) == expected


@pytest.mark.parametrize(("method", "path", "enabled", "status"), [
    ("POST", "/post", False, 404),   # the interface is off: only /metrics
    ("GET", "/status", False, 404),
    ("GET", "/echo", True, 405),     # an endpoint is POSTed to
    ("POST", "/status", True, 405),
    ("DELETE", "/metrics", True, 405),
])
def test_refused_routes(method: str, path: str, enabled: bool, status: int) -> None:
    with pytest.raises(HttpError) as caught:
        httpapi.route(method, path, enabled)
    assert caught.value.status == status


DOCS: list[dict[str, Any]] = [{"i": 1, "f": 1.5, "b": True, "n": None, "s": "é",
                               "nested": {"l": [1, 2.0, {"x": []}]}}]


@pytest.mark.parametrize("data", [DOCS, {"docs": DOCS}])
def test_a_post_body_becomes_the_data_request_the_grpc_client_sends(data: Any) -> None:
    body = json.dumps({"data": data, "parameters": {"k": 1}, "exec_endpoint": "/echo",
                       "target_executor": "ignored"}).encode()
    call = httpapi.to_request(body)
    req = wire.parse_request(call.raw)
    assert call.endpoint == req.header.endpoint == "/echo"
    assert req.header.request_id == call.request_id and len(call.request_id) == 32
    assert wire.decode_docs(req.docs) == DOCS  # ints stay ints, exactly as sent
    assert wire.decode_parameters(req.parameters) == {"k": 1}


def test_the_path_names_the_endpoint_and_defaults_are_jinas() -> None:
    call = httpapi.to_request(b'{"data": [{}], "exec_endpoint": "/ignored"}', "/echo")
    assert call.endpoint == "/echo"
    empty = httpapi.to_request(b"")  # no body: no docs, endpoint "/"
    req = wire.parse_request(empty.raw)
    assert (empty.endpoint, wire.decode_docs(req.docs), empty.parameters) == ("/", [], b"{}")
    given = httpapi.to_request(b'{"request_id": "abc"}')
    assert given.request_id == "abc"


@pytest.mark.parametrize(("body", "words"), [
    (b"not json", "not valid UTF-8 JSON"),
    (b"\xff\xfe", "not valid UTF-8 JSON"),
    (b"[1, 2]", "must be a JSON object"),
    (b'{"data": {"text": "a"}}', "data must be a list"),
    (b'{"data": [1, 2]}', "data must be a list"),
    (b'{"parameters": [1]}', "parameters must be a JSON object"),
    (b'{"exec_endpoint": 5}', "exec_endpoint must be a string"),
    (b'{"request_id": 5}', "request_id must be a string"),
])
def test_bad_bodies_are_400_naming_the_fault(body: bytes, words: str) -> None:
    with pytest.raises(HttpError, match=words) as caught:
        httpapi.to_request(body)
    assert caught.value.status == 400


def test_an_answer_splices_the_workers_docs_undecoded() -> None:
    call = httpapi.to_request(b'{"data": [{"i": 1}], "parameters": {"p": 2}}', "/echo")
    docs = b'[{"i":1,"big":12345678901234567890,"f":1.0}]'
    status, body = httpapi.answer(call, wire.response(None, docs))
    assert status == 200
    assert body == (b'{"header":{"request_id":"%s","exec_endpoint":"/echo","status":null},'
                    b'"parameters":{"p":2},"data":%s}' % (call.request_id.encode(), docs))
    assert json.loads(body)["data"][0]["f"] == 1.0  # what the worker wrote, byte for byte


@pytest.mark.parametrize(("code", "status"), [
    (wire.ERROR, 500), (wire.NOT_FOUND, 404), (wire.BAD_REQUEST, 400), (wire.UNAVAILABLE, 503),
])
def test_in_band_failures_map_to_http_status_with_the_executors_message(
        code: wire.Code.ValueType, status: int) -> None:
    call = httpapi.to_request(b"{}", "/x")
    raw = wire.response(None, code=code, message="it broke", executor="Exec",
                        exc_type="ValueError", traceback="Traceback\n  line\nValueError")
    got, body = httpapi.answer(call, raw)
    out = json.loads(body)
    assert got == status and out["data"] is None
    assert out["header"]["status"]["code"] == 1  # Jina's StatusProto.ERROR
    assert out["header"]["status"]["description"] == "it broke"
    assert out["header"]["status"]["exception"] == {
        "name": "ValueError", "args": ["it broke"], "executor": "Exec",
        "stacks": ["Traceback", "  line", "ValueError"]}


@pytest.mark.parametrize(("grpc_status", "status", "reason"), [
    (4, 504, "DEADLINE_EXCEEDED"), (14, 503, "UNAVAILABLE"), (8, 503, "RESOURCE_EXHAUSTED"),
    (3, 400, "INVALID_ARGUMENT"), (13, 502, "INTERNAL"),
])
def test_head_failures_map_to_http_status(grpc_status: int, status: int, reason: str) -> None:
    call = httpapi.to_request(b"{}", "/x")
    got, body = httpapi.failure(call, grpc_status, "why")
    out = json.loads(body)["header"]["status"]
    assert got == status and out["reason"] == reason and out["description"] == "why"


def test_grpc_framing_round_trips_and_refuses_garbage() -> None:
    assert httpapi.grpc_unframe(httpapi.grpc_frame(b"abc")) == b"abc"
    for bad in (b"", b"\x00\x00\x00\x00\x05abc", b"\x01\x00\x00\x00\x03abc"):
        with pytest.raises(HttpError):
            httpapi.grpc_unframe(bad)


def test_openapi_document_lists_every_route() -> None:
    doc = json.loads(httpapi.openapi("echo", "1.0"))
    assert doc["openapi"].startswith("3.") and doc["info"]["title"] == "echo"
    assert set(doc["paths"]) == {"/post", "/{endpoint}", "/status", "/health",
                                 "/openapi.json", "/metrics"}
    responses = doc["paths"]["/post"]["post"]["responses"]
    assert {"200", "400", "404", "500", "503", "504"} <= set(responses)
    refs = json.dumps(doc).count("#/components/schemas/")
    assert refs and all(name in doc["components"]["schemas"]
                        for name in ("Request", "PostRequest", "Response"))
