"""Clients of a head or worker: `Client` (sync) and `AsyncClient`.

One channel per client, reused by every call (a channel per request costs ~20x latency).
Docs are sent as JSON in batches of `request_size`; one batch goes as a unary call, more
as one bidirectional stream whose answers come back in order.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterable, Iterator
from itertools import islice
from types import TracebackType
from typing import Any, Self

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from orchestrator.errors import (
    ControlAuthError,
    EndpointNotFound,
    ExecutorError,
    RequestError,
    ServiceUnavailable,
    SpecError,
)
from orchestrator.runtime import wire
from orchestrator.tls import ClientTLS

Doc = dict[str, Any]
DEFAULT_REQUEST_SIZE = 100


def _address(host: str, port: int | None) -> str:
    if port is not None:
        return f"{host}:{port}"
    if ":" not in host:
        raise SpecError(f"{host!r} needs a port: Client(host, port) or Client('host:port')",
                        field="address")
    return host


def _batches(docs: Iterable[Doc], size: int) -> Iterator[list[Doc]]:
    it = iter(docs)
    while batch := list(islice(it, size)):
        yield batch


def _requests(
    endpoint: str, docs: Iterable[Doc] | None, parameters: dict[str, Any] | None,
    size: int, timeout: float | None,
) -> Iterator[bytes]:
    if size < 1:
        raise SpecError(f"must be >= 1, got {size}", field="request_size")
    sent = False
    for batch in _batches(docs or (), size):
        sent = True
        yield wire.encode_request(endpoint, batch, parameters, request_id=uuid.uuid4().hex,
                                  timeout=timeout)
    if not sent:  # no docs still means one request: the endpoint may act on parameters
        yield wire.encode_request(endpoint, [], parameters, request_id=uuid.uuid4().hex,
                                  timeout=timeout)


def _split(requests: Iterator[bytes]) -> tuple[list[bytes], Iterator[bytes]]:
    """Peek two requests: one means a unary call, more means a stream."""
    head = list(islice(requests, 2))
    return head, requests


def decode_response(raw: bytes) -> list[Doc]:
    """Docs of a serialized DataResponse.

    Raises:
        ExecutorError: the executor raised.
        EndpointNotFound: unknown endpoint and no default endpoint.
        ServiceUnavailable: no replica could serve.
        RequestError: malformed request or response.
    """
    try:
        resp = wire.parse_response(raw)
        code = resp.status.code
        if code == wire.OK:
            return wire.decode_docs(resp.docs)
    except wire.WireError as exc:
        raise RequestError(f"bad response from server: {exc}") from exc
    status = resp.status
    if code == wire.ERROR:
        raise ExecutorError(status.message, executor=status.executor, exc_type=status.exc_type,
                            traceback=status.traceback)
    if code == wire.NOT_FOUND:
        raise EndpointNotFound(status.message)
    if code == wire.UNAVAILABLE:
        raise ServiceUnavailable(status.message)
    raise RequestError(f"bad request: {status.message}")


def map_rpc_error(exc: grpc.RpcError, address: str, timeout: float | None = None) -> RequestError:
    """Translate a gRPC failure into the package's error (the caller chains it)."""
    code: grpc.StatusCode = exc.code()
    details: str = exc.details() or ""
    if code is grpc.StatusCode.UNAVAILABLE:
        return ServiceUnavailable(f"{address} unavailable: {details}")
    if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
        return ControlAuthError(f"{address} refused the call: {details}")
    if code is grpc.StatusCode.DEADLINE_EXCEEDED:
        if timeout is None:  # the head's timeout_send, not this client's
            return RequestError(f"{address}: DEADLINE_EXCEEDED: {details}")
        return RequestError(f"{address}: no answer within the timeout ({timeout}s): {details}")
    if code is grpc.StatusCode.RESOURCE_EXHAUSTED:
        return RequestError(f"{address}: message too large or server overloaded: {details}")
    if code is grpc.StatusCode.INVALID_ARGUMENT:
        return RequestError(f"{address}: bad request: {details}")
    return RequestError(f"{address}: {code.name}: {details}")


def client_tls(tls: bool | ClientTLS | None = None, *, ca: str | None = None,
               cert: str | None = None, key: str | None = None,
               server_name: str | None = None) -> ClientTLS | None:
    """The TLS a client asks for: `tls=True` (the system's roots), a `ClientTLS`, or any of
    `ca` / `cert`+`key` / `server_name` (None: in clear).

    Raises:
        SpecError: a file cannot be read, a certificate without its key.
    """
    if isinstance(tls, ClientTLS):
        return tls
    if not (tls or ca or cert or key or server_name):
        return None
    return ClientTLS(ca=ca, cert=cert, key=key, server_name=server_name)


def tls_options(tls: ClientTLS | None) -> tuple[tuple[str, str], ...]:
    """Channel options for `tls`: the name checked in the server's certificate, when it is
    not the host dialled."""
    if tls is None or not tls.server_name:
        return ()
    return (("grpc.ssl_target_name_override", tls.server_name),
            ("grpc.default_authority", tls.server_name))


def credentials(tls: ClientTLS) -> grpc.ChannelCredentials:
    """gRPC channel credentials: trust `tls.ca` (or the system's roots), present `tls.cert`.

    Raises:
        SpecError: a file cannot be read.
    """
    root, key, chain = tls.pems()
    return grpc.ssl_channel_credentials(root_certificates=root, private_key=key,
                                        certificate_chain=chain)


def sync_channel(address: str, options: Any = (), tls: ClientTLS | None = None
                 ) -> grpc.Channel:
    """One channel to `address`: in clear, or over TLS with `tls`."""
    if tls is None:
        return grpc.insecure_channel(address, options=options)
    return grpc.secure_channel(address, credentials(tls),
                               options=[*options, *tls_options(tls)])


class _Base:
    def __init__(
        self, host: str, port: int | None, max_message_bytes: int, request_size: int,
        tls: ClientTLS | None = None,
    ) -> None:
        self.address = _address(host, port)
        self.request_size = request_size
        self.tls = tls
        self._options = wire.channel_options(max_message_bytes)

    def _prepare(
        self, endpoint: str, docs: Iterable[Doc] | None, parameters: dict[str, Any] | None,
        request_size: int | None, timeout: float | None,
    ) -> tuple[list[bytes], Iterator[bytes], tuple[tuple[str, str], ...]]:
        head, rest = _split(_requests(endpoint, docs, parameters,
                                      request_size or self.request_size, timeout))
        return head, rest, ((wire.ENDPOINT_KEY, endpoint),)


class Client(_Base):
    """Synchronous client. `Client(host, port)` or `Client("host:port")`; close it when done.

    TLS: `ca="ca.pem"` (the CA that signed the head's certificate; `tls=True` trusts the
    system's roots), `cert`/`key` for a head that requires client certificates (mutual
    TLS), `server_name` when the certificate does not name the host dialled. A wrong CA or a
    missing client certificate fails the call with `ServiceUnavailable` (the handshake is
    refused), never a hang.

    Raises (construction): SpecError: a TLS file cannot be read, a cert without its key.
    """

    def __init__(
        self, host: str = "127.0.0.1", port: int | None = None, *,
        max_message_bytes: int = wire.DEFAULT_MAX_MESSAGE_BYTES,
        request_size: int = DEFAULT_REQUEST_SIZE,
        tls: bool | ClientTLS = False, ca: str | None = None, cert: str | None = None,
        key: str | None = None, server_name: str | None = None,
    ) -> None:
        super().__init__(host, port, max_message_bytes, request_size,
                         client_tls(tls, ca=ca, cert=cert, key=key, server_name=server_name))
        self._channel = sync_channel(self.address, self._options, self.tls)
        self._call = self._channel.unary_unary(
            wire.METHOD_CALL, request_serializer=wire.identity, response_deserializer=wire.identity)
        self._stream = self._channel.stream_stream(
            wire.METHOD_STREAM, request_serializer=wire.identity,
            response_deserializer=wire.identity)

    def post(
        self, endpoint: str, docs: Iterable[Doc] | None = None,
        parameters: dict[str, Any] | None = None, *,
        request_size: int | None = None, timeout: float | None = None,
    ) -> list[Doc]:
        """Send docs to `endpoint`; returns all result docs, in input order.

        Raises:
            ExecutorError: the executor raised (executor name, type, message, traceback).
            EndpointNotFound: unknown endpoint and no default endpoint.
            ServiceUnavailable: the server, or every replica of a needed shard, is down.
            RequestError: timeout, oversized or malformed message, other failures.
            SpecError: request_size < 1.
        """
        out: list[Doc] = []
        for batch in self.stream(endpoint, docs, parameters, request_size=request_size,
                                 timeout=timeout):
            out.extend(batch)
        return out

    def stream(
        self, endpoint: str, docs: Iterable[Doc] | None = None,
        parameters: dict[str, Any] | None = None, *,
        request_size: int | None = None, timeout: float | None = None,
    ) -> Iterator[list[Doc]]:
        """Like `post`, but yields each batch's result docs as it arrives (same errors)."""
        head, rest, metadata = self._prepare(endpoint, docs, parameters, request_size, timeout)
        try:
            if len(head) == 1:
                yield decode_response(self._call(head[0], timeout=timeout, metadata=metadata))
                return
            responses = self._stream(_chain(head, rest), timeout=timeout, metadata=metadata)
            try:
                for raw in responses:
                    yield decode_response(raw)
            finally:
                responses.cancel()  # no-op when complete; stops the stream if abandoned
        except grpc.RpcError as exc:
            raise map_rpc_error(exc, self.address, timeout) from exc

    def is_ready(self, timeout: float = 1.0) -> bool:
        """True if the server's gRPC health reports SERVING."""
        stub = health_pb2_grpc.HealthStub(self._channel)
        try:
            resp = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout)
        except grpc.RpcError:
            return False
        return bool(resp.status == health_pb2.HealthCheckResponse.SERVING)

    def close(self) -> None:
        """Close the channel."""
        self._channel.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _chain(head: list[bytes], rest: Iterator[bytes]) -> Iterator[bytes]:
    yield from head
    yield from rest


class AsyncClient(_Base):
    """asyncio client; its channel is created on first use, inside the running loop. TLS
    arguments as for `Client`."""

    def __init__(
        self, host: str = "127.0.0.1", port: int | None = None, *,
        max_message_bytes: int = wire.DEFAULT_MAX_MESSAGE_BYTES,
        request_size: int = DEFAULT_REQUEST_SIZE,
        tls: bool | ClientTLS = False, ca: str | None = None, cert: str | None = None,
        key: str | None = None, server_name: str | None = None,
    ) -> None:
        super().__init__(host, port, max_message_bytes, request_size,
                         client_tls(tls, ca=ca, cert=cert, key=key, server_name=server_name))
        self._channel: grpc.aio.Channel | None = None
        self._call: Any = None
        self._stream: Any = None

    def _ensure(self) -> grpc.aio.Channel:
        if self._channel is None:
            if self.tls is None:
                self._channel = grpc.aio.insecure_channel(self.address, options=self._options)
            else:
                self._channel = grpc.aio.secure_channel(
                    self.address, credentials(self.tls),
                    options=[*self._options, *tls_options(self.tls)])
            self._call = self._channel.unary_unary(
                wire.METHOD_CALL, request_serializer=wire.identity,
                response_deserializer=wire.identity)
            self._stream = self._channel.stream_stream(
                wire.METHOD_STREAM, request_serializer=wire.identity,
                response_deserializer=wire.identity)
        return self._channel

    async def post(
        self, endpoint: str, docs: Iterable[Doc] | None = None,
        parameters: dict[str, Any] | None = None, *,
        request_size: int | None = None, timeout: float | None = None,
    ) -> list[Doc]:
        """Async `Client.post` (same arguments, result and errors)."""
        out: list[Doc] = []
        async for batch in self.stream(endpoint, docs, parameters, request_size=request_size,
                                       timeout=timeout):
            out.extend(batch)
        return out

    async def stream(
        self, endpoint: str, docs: Iterable[Doc] | None = None,
        parameters: dict[str, Any] | None = None, *,
        request_size: int | None = None, timeout: float | None = None,
    ) -> AsyncIterator[list[Doc]]:
        """Async `Client.stream`."""
        self._ensure()
        head, rest, metadata = self._prepare(endpoint, docs, parameters, request_size, timeout)
        try:
            if len(head) == 1:
                raw = await self._call(head[0], timeout=timeout, metadata=metadata)
                yield decode_response(raw)
                return
            responses = self._stream(_chain(head, rest), timeout=timeout, metadata=metadata)
            try:
                async for raw in responses:
                    yield decode_response(raw)
            finally:
                responses.cancel()
        except grpc.RpcError as exc:
            raise map_rpc_error(exc, self.address, timeout) from exc

    async def is_ready(self, timeout: float = 1.0) -> bool:
        """True if the server's gRPC health reports SERVING."""
        stub = health_pb2_grpc.HealthStub(self._ensure())
        try:
            resp = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout)
        except grpc.RpcError:
            return False
        return bool(resp.status == health_pb2.HealthCheckResponse.SERVING)

    async def close(self) -> None:
        """Close the channel."""
        if self._channel is not None:
            await self._channel.close()
            self._channel = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
