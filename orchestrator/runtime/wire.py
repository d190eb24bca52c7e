"""Wire-format helpers shared by the worker, the head and the clients.

Docs and parameters are compact UTF-8 JSON inside protobuf `bytes` fields, so ints stay
ints. The endpoint also travels as gRPC metadata so that a head can route raw bytes.
"""

from __future__ import annotations

import json
from typing import Any

from orchestrator.proto import orchestrator_pb2 as pb

SERVICE = "orchestrator.v1.Executor"
METHOD_CALL = f"/{SERVICE}/Call"
METHOD_STREAM = f"/{SERVICE}/Stream"
ENDPOINT_KEY = "x-endpoint"
TOKEN_KEY = "x-orchestrator-token"
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024

Code = pb.Status.Code
OK = pb.Status.OK
ERROR = pb.Status.ERROR
NOT_FOUND = pb.Status.NOT_FOUND
BAD_REQUEST = pb.Status.BAD_REQUEST
UNAVAILABLE = pb.Status.UNAVAILABLE
EMPTY_DOCS = b"[]"


class WireError(ValueError):
    """A request body, its docs or its parameters are malformed (-> BAD_REQUEST)."""


def identity(data: bytes) -> bytes:
    """(De)serializer that leaves bytes alone: the head never decodes what it forwards."""
    return data


def dumps(value: Any) -> bytes:
    """Compact JSON bytes (the compact form lets `concat_doc_arrays` stay byte-level)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def channel_options(max_message_bytes: int) -> list[tuple[str, int]]:
    """gRPC options shared by servers and channels."""
    return [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
    ]


def encode_request(
    endpoint: str,
    docs: list[dict[str, Any]],
    parameters: dict[str, Any] | None = None,
    *,
    request_id: str = "",
    timeout: float | None = None,
) -> bytes:
    """Serialize one DataRequest."""
    return pb.DataRequest(
        header=pb.Header(request_id=request_id, endpoint=endpoint, timeout=timeout or 0.0),
        parameters=dumps(parameters or {}),
        docs=dumps(docs),
    ).SerializeToString()


def parse_request(raw: bytes) -> pb.DataRequest:
    """Parse a DataRequest.

    Raises:
        WireError: the bytes are not a DataRequest.
    """
    msg = pb.DataRequest()
    try:
        msg.ParseFromString(raw)
    except Exception as exc:  # protobuf raises DecodeError, or others on some runtimes
        raise WireError(f"malformed request body: {exc}") from exc
    return msg


def parse_response(raw: bytes) -> pb.DataResponse:
    """Parse a DataResponse.

    Raises:
        WireError: the bytes are not a DataResponse.
    """
    msg = pb.DataResponse()
    try:
        msg.ParseFromString(raw)
    except Exception as exc:
        raise WireError(f"malformed response body: {exc}") from exc
    return msg


def decode_docs(raw: bytes) -> list[dict[str, Any]]:
    """Decode a JSON array of objects; empty bytes mean no docs.

    Raises:
        WireError: not JSON, or not a list of objects.
    """
    if not raw:
        return []
    value = _loads(raw, "docs")
    if not isinstance(value, list) or not all(isinstance(d, dict) for d in value):
        raise WireError("docs must be a JSON array of objects")
    return value


def decode_parameters(raw: bytes) -> dict[str, Any]:
    """Decode a JSON object; empty bytes mean no parameters.

    Raises:
        WireError: not JSON, or not an object.
    """
    if not raw:
        return {}
    value = _loads(raw, "parameters")
    if not isinstance(value, dict):
        raise WireError("parameters must be a JSON object")
    return value


def _loads(raw: bytes, what: str) -> Any:
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WireError(f"{what} are not valid UTF-8 JSON: {exc}") from exc


def response(
    header: pb.Header | None,
    docs: bytes = EMPTY_DOCS,
    code: pb.Status.Code.ValueType = OK,
    message: str = "",
    *,
    executor: str = "",
    exc_type: str = "",
    traceback: str = "",
) -> bytes:
    """Serialize one DataResponse."""
    return pb.DataResponse(
        header=header,
        docs=docs,
        status=pb.Status(
            code=code, message=message, executor=executor, exc_type=exc_type, traceback=traceback
        ),
    ).SerializeToString()


def concat_doc_arrays(arrays: list[bytes]) -> bytes:
    """Concatenate JSON arrays at the byte level, without decoding their elements.

    Raises:
        WireError: an element is not a JSON array.
    """
    parts = []
    for raw in arrays:
        text = raw.strip()
        if not text:
            continue
        if not (text.startswith(b"[") and text.endswith(b"]")):
            raise WireError("docs must be a JSON array")
        inner = text[1:-1].strip()
        if inner:
            parts.append(inner)
    return b"[" + b",".join(parts) + b"]"
