"""Jina's HTTP interface on the head, as pure functions: routes, JSON <-> wire, status codes.

    POST /post        {"data": [docs], "parameters": {...}, "exec_endpoint": "/echo"}
    POST /<endpoint>  {"data": [docs], "parameters": {...}}     (the path is the endpoint)
    GET  /status, GET /health (and GET /), GET /openapi.json, GET /metrics

A request becomes one `DataRequest` (docs and parameters are compact JSON bytes in it,
exactly what the gRPC clients send), routed by the head like any gRPC call. The answer's
docs are spliced into the JSON response as the worker sent them, never decoded here:

    {"header": {"request_id": ..., "exec_endpoint": ..., "status": null},
     "parameters": {...}, "data": [docs]}

A failure keeps Jina's shape (`header.status` with `code` 1, `description`, `exception`)
and an HTTP status that says what kind it is (see `STATUS_OF_CODE` and `STATUS_OF_GRPC`).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

from orchestrator.proto import orchestrator_pb2 as pb
from orchestrator.runtime import wire
from orchestrator.runtime.http1 import HttpError

JSON = "application/json"
RESERVED = frozenset({"/status", "/health", "/openapi.json", "/metrics", "/"})
# in-band status of a DataResponse -> HTTP status
STATUS_OF_CODE = {wire.OK: 200, wire.ERROR: 500, wire.NOT_FOUND: 404, wire.BAD_REQUEST: 400,
                  wire.UNAVAILABLE: 503}
# gRPC status of the head's answer (when not OK) -> HTTP status
STATUS_OF_GRPC = {1: 499, 3: 400, 4: 504, 5: 404, 8: 503, 14: 503, 16: 401}
JINA_ERROR = 1  # Jina's StatusProto.ERROR


@dataclass(frozen=True)
class Route:
    """What a request asks for: `kind` is data, status, health, openapi or metrics."""

    kind: str
    endpoint: str = ""


def route(method: str, path: str, http_enabled: bool) -> Route:
    """Which handler serves `method path` (the HTTP interface only when enabled).

    Raises:
        HttpError: 404 unknown path, 405 a method the path does not take.
    """
    if path == "/metrics":
        return _only(method, ("GET", "HEAD"), Route("metrics"))
    if not http_enabled:
        raise HttpError(404, "this port serves gRPC (HTTP/2) and GET /metrics")
    if path in ("/health", "/"):
        return _only(method, ("GET", "HEAD"), Route("health"))
    if path == "/status":
        return _only(method, ("GET", "HEAD"), Route("status"))
    if path == "/openapi.json":
        return _only(method, ("GET", "HEAD"), Route("openapi"))
    if path == "/post":
        return _only(method, ("POST",), Route("data"))
    return _only(method, ("POST",), Route("data", path))


def _only(method: str, allowed: tuple[str, ...], result: Route) -> Route:
    if method not in allowed:
        raise HttpError(405, f"use {' or '.join(allowed)} here")
    return result


@dataclass(frozen=True)
class DataCall:
    """One HTTP data request, converted: the DataRequest and what the answer needs."""

    endpoint: str
    request_id: str
    raw: bytes          # a serialized DataRequest
    parameters: bytes   # compact JSON, echoed in the answer


def to_request(body: bytes, path_endpoint: str = "") -> DataCall:
    """A JSON body (Jina's request model) -> a DataRequest.

    `data` is a list of docs (objects), or `{"docs": [...]}` as Jina also takes;
    `exec_endpoint` (POST /post only; default "/") names the endpoint, the path does for
    POST /<endpoint>. `parameters` is an object. `target_executor` and Jina's other
    request fields are accepted: a Deployment has one executor.

    Raises:
        HttpError: 400, naming what is wrong.
    """
    try:
        value = json.loads(body) if body.strip() else {}
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise HttpError(400, f"the body is not valid UTF-8 JSON: {exc}") from None
    if not isinstance(value, dict):
        raise HttpError(400, "the body must be a JSON object such as "
                             '{"data": [{"text": "hi"}], "parameters": {}}')
    docs = _docs(value.get("data"))
    parameters = value.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise HttpError(400, "parameters must be a JSON object")
    endpoint = path_endpoint or value.get("exec_endpoint") or "/"
    if not isinstance(endpoint, str):
        raise HttpError(400, "exec_endpoint must be a string such as '/echo'")
    request_id = value.get("request_id") or uuid.uuid4().hex
    if not isinstance(request_id, str):
        raise HttpError(400, "request_id must be a string")
    params = wire.dumps(parameters)
    raw = pb.DataRequest(header=pb.Header(request_id=request_id, endpoint=endpoint),
                         parameters=params, docs=wire.dumps(docs)).SerializeToString()
    return DataCall(endpoint, request_id, raw, params)


def _docs(data: Any) -> list[Any]:
    if data is None:
        return []
    if isinstance(data, dict) and set(data) == {"docs"}:
        data = data["docs"]
    if not isinstance(data, list) or not all(isinstance(d, dict) for d in data):
        raise HttpError(400, "data must be a list of docs (JSON objects)")
    return data


def grpc_frame(raw: bytes) -> bytes:
    """A gRPC length-prefixed message (uncompressed)."""
    return b"\x00" + len(raw).to_bytes(4, "big") + raw


def grpc_unframe(data: bytes) -> bytes:
    """The one message of a unary gRPC response body.

    Raises:
        HttpError: 502, the body is not one uncompressed message.
    """
    if len(data) < 5 or data[0] != 0 or int.from_bytes(data[1:5], "big") != len(data) - 5:
        raise HttpError(502, "the head got a malformed gRPC response")
    return data[5:]


def answer(call: DataCall, raw_response: bytes) -> tuple[int, bytes]:
    """A DataResponse -> (HTTP status, JSON body); docs spliced in undecoded.

    Raises:
        HttpError: 502, the response does not parse.
    """
    try:
        resp = wire.parse_response(raw_response)
    except wire.WireError as exc:
        raise HttpError(502, str(exc)) from None
    status = resp.status
    if status.code == wire.OK:
        return 200, _body(call, None, resp.docs or wire.EMPTY_DOCS)
    exception = {"name": status.exc_type, "args": [status.message],
                 "stacks": status.traceback.splitlines(), "executor": status.executor}
    return (STATUS_OF_CODE.get(status.code, 500),
            _body(call, _status(status.message, pb.Status.Code.Name(status.code), exception),
                  b"null"))


def failure(call: DataCall, grpc_status: int, message: str) -> tuple[int, bytes]:
    """The head could not get an answer (gRPC status not OK) -> (HTTP status, JSON body)."""
    status = STATUS_OF_GRPC.get(grpc_status, 502)
    reason = _GRPC_NAMES.get(grpc_status, f"gRPC status {grpc_status}")
    return status, _body(call, _status(message, reason, None), b"null")


_GRPC_NAMES = {1: "CANCELLED", 2: "UNKNOWN", 3: "INVALID_ARGUMENT", 4: "DEADLINE_EXCEEDED",
               5: "NOT_FOUND", 8: "RESOURCE_EXHAUSTED", 13: "INTERNAL", 14: "UNAVAILABLE",
               16: "UNAUTHENTICATED"}


def _status(message: str, reason: str, exception: dict[str, Any] | None) -> dict[str, Any]:
    out: dict[str, Any] = {"code": JINA_ERROR, "reason": reason, "description": message}
    if exception is not None:
        out["exception"] = exception
    return out


def _body(call: DataCall, status: dict[str, Any] | None, docs: bytes) -> bytes:
    header = wire.dumps({"request_id": call.request_id, "exec_endpoint": call.endpoint,
                         "status": status})
    return b'{"header":%s,"parameters":%s,"data":%s}' % (header, call.parameters, docs)


def error_body(status: int, message: str) -> bytes:
    """The JSON body of an HTTP-level error (bad request, unknown path, limits)."""
    return wire.dumps({"detail": message, "status": status})


def openapi(title: str, version: str) -> bytes:
    """The OpenAPI 3.1 document of this interface."""
    doc_schema = {"type": "object", "additionalProperties": True,
                  "description": "a doc: any JSON object, returned as the executor left it"}
    request = {"type": "object", "properties": {
        "data": {"anyOf": [{"type": "array", "items": doc_schema},
                           {"type": "object", "properties": {
                               "docs": {"type": "array", "items": doc_schema}}}]},
        "parameters": {"type": "object", "additionalProperties": True},
        "request_id": {"type": "string"}}}
    post_request = {"allOf": [request, {"type": "object", "properties": {
        "exec_endpoint": {"type": "string", "default": "/",
                          "description": "the executor endpoint, such as /echo"}}}]}
    status = {"type": ["object", "null"], "properties": {
        "code": {"type": "integer", "description": "1: error (Jina's StatusProto.ERROR)"},
        "reason": {"type": "string"}, "description": {"type": "string"},
        "exception": {"type": "object"}}}
    response = {"type": "object", "properties": {
        "header": {"type": "object", "properties": {
            "request_id": {"type": "string"}, "exec_endpoint": {"type": "string"},
            "status": status}},
        "parameters": {"type": "object"},
        "data": {"type": ["array", "null"], "items": doc_schema}}}
    errors = {str(code): {"description": text, "content": {JSON: {"schema": {
        "$ref": "#/components/schemas/Response"}}}} for code, text in (
            (400, "malformed request, or the executor refused its docs or parameters"),
            (404, "the executor has no such endpoint and no default endpoint"),
            (500, "the executor raised (header.status has its message and traceback)"),
            (503, "no replica could serve"),
            (504, "no replica answered within timeout_send"))}

    def data_op(summary: str, schema_ref: str) -> dict[str, Any]:
        return {"summary": summary, "requestBody": {"required": False, "content": {
            JSON: {"schema": {"$ref": f"#/components/schemas/{schema_ref}"}}}},
            "responses": {"200": {"description": "the result docs", "content": {
                JSON: {"schema": {"$ref": "#/components/schemas/Response"}}}}, **errors}}

    def get_op(summary: str, content_type: str = JSON) -> dict[str, Any]:
        return {"get": {"summary": summary, "responses": {"200": {
            "description": summary, "content": {content_type: {}}}}}}

    doc = {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version,
                 "description": "Jina-compatible HTTP interface of an orchestrator "
                                "Deployment's head (gRPC is served on the same port)."},
        "paths": {
            "/post": {"post": data_op("Post a data request to exec_endpoint", "PostRequest")},
            "/{endpoint}": {"post": {**data_op("Post a data request to /{endpoint}",
                                               "Request"),
                                     "parameters": [{"name": "endpoint", "in": "path",
                                                     "required": True,
                                                     "schema": {"type": "string"}}]}},
            "/status": get_op("Name, version, protocols and replicas of this Deployment"),
            "/health": {"get": {"summary": "200 while every shard has a ready replica, "
                                           "else 503", "responses": {
                "200": {"description": "serving"}, "503": {"description": "not serving"}}}},
            "/openapi.json": get_op("This document"),
            "/metrics": get_op("Prometheus metrics", "text/plain"),
        },
        "components": {"schemas": {"Request": request, "PostRequest": post_request,
                                   "Response": response}},
    }
    return wire.dumps(doc)
