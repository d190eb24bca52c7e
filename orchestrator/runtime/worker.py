"""The worker server: serves one executor over gRPC (Executor service + grpc.health.v1).

Sync handlers run one at a time on a dedicated thread: executors need not be thread-safe,
and the event loop stays free to answer health checks while a handler works. Async
handlers run on the event loop. Failures are reported in-band (`Status`), so one failing
batch does not abort a stream and the server keeps serving.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import traceback
from _queue import SimpleQueue  # queue.py would cost each worker 0.07 MB for this class
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from orchestrator.runtime import wire
from orchestrator.runtime.executor import (
    DEFAULT_ENDPOINT,
    BoundHandler,
    Doc,
    Executor,
    collect_handlers,
)
from orchestrator.runtime.memory import trim_when_idle
from orchestrator.runtime.serve import bind, data_plane_handler

_Job = tuple[concurrent.futures.Future[Any], Callable[[], Any]]


class SerialRunner(concurrent.futures.Executor):
    """Runs submitted callables one at a time on a single daemon thread.

    Daemon, unlike ThreadPoolExecutor's threads: a handler stuck past the grace period must
    not keep the process alive after shutdown.
    """

    def __init__(self, name: str) -> None:
        self._jobs: SimpleQueue[_Job | None] = SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def submit(
        self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any
    ) -> concurrent.futures.Future[Any]:
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self._jobs.put((future, lambda: fn(*args, **kwargs)))
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._jobs.put(None)
        if wait:
            self._thread.join()

    def _loop(self) -> None:
        while (job := self._jobs.get()) is not None:
            future, call = job
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(call())
            except BaseException as exc:  # handed to the awaiting coroutine
                future.set_exception(exc)


class WorkerServer:
    """gRPC server for one executor. `start()` then `stop()`; both on the same event loop."""

    def __init__(
        self,
        executor: Executor,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        max_message_bytes: int = wire.DEFAULT_MAX_MESSAGE_BYTES,
    ) -> None:
        self.executor = executor
        self._address = f"{host}:{port}"
        self._max_message_bytes = max_message_bytes
        self._handlers = collect_handlers(executor)
        self._runner = SerialRunner(f"executor-{executor.name}")
        self._server: grpc.aio.Server | None = None
        self._health = health.aio.HealthServicer()
        self.port = port
        self.served = 0  # requests answered (what memory.trim_when_idle watches)
        self._trimmer: asyncio.Future[None] | None = None

    async def start(self) -> int:
        """Listen, then report SERVING; returns the bound port.

        Raises:
            OrchestratorError: the address cannot be bound.
        """
        server = grpc.aio.server(options=wire.channel_options(self._max_message_bytes))
        server.add_generic_rpc_handlers((data_plane_handler(self._call, self._stream),))
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        self.port = bind(server, self._address)
        await server.start()
        self._server = server
        await self._health.set("", health_pb2.HealthCheckResponse.SERVING)
        await self._health.set(wire.SERVICE, health_pb2.HealthCheckResponse.SERVING)
        self._trimmer = asyncio.ensure_future(trim_when_idle(lambda: self.served))
        return self.port

    async def stop(self, grace: float | None = None) -> None:
        """Report NOT_SERVING, refuse new RPCs, let in-flight ones finish within `grace`."""
        await self._health.enter_graceful_shutdown()
        if self._trimmer is not None:
            self._trimmer.cancel()
        if self._server is not None:
            await self._server.stop(grace)
        self._runner.shutdown(wait=False)

    async def wait_for_termination(self) -> None:
        """Block until the server stops."""
        if self._server is not None:
            await self._server.wait_for_termination()

    async def _call(self, raw: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        return await self.process(raw)

    async def _stream(
        self, requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext[bytes, bytes]
    ) -> AsyncIterator[bytes]:
        async for raw in requests:
            yield await self.process(raw)

    async def process(self, raw: bytes) -> bytes:
        """Serve one serialized DataRequest; every failure becomes an in-band Status."""
        self.served += 1
        name = self.executor.name
        try:
            req = wire.parse_request(raw)
            docs = wire.decode_docs(req.docs)
            parameters = wire.decode_parameters(req.parameters)
        except wire.WireError as exc:
            return wire.response(None, code=wire.BAD_REQUEST, message=str(exc), executor=name)
        endpoint = req.header.endpoint
        handler = self._handlers.get(endpoint) or self._handlers.get(DEFAULT_ENDPOINT)
        if handler is None:
            known = sorted(e for e in self._handlers if e != DEFAULT_ENDPOINT)
            return wire.response(
                req.header, code=wire.NOT_FOUND, executor=name,
                message=f"executor {name!r} has no endpoint {endpoint!r} and no default "
                f"endpoint (known: {known})",
            )
        try:
            body = await self._invoke(handler, docs, parameters, endpoint)
        except Exception as exc:
            return wire.response(
                req.header, code=wire.ERROR, message=str(exc), executor=name,
                exc_type=type(exc).__name__, traceback=traceback.format_exc(),
            )
        return wire.response(req.header, body)

    async def _invoke(
        self, handler: BoundHandler, docs: list[Doc], parameters: dict[str, Any], ep: str
    ) -> bytes:
        kwargs = handler.kwargs_for(docs, parameters, ep)
        if handler.is_async:
            result = await handler.func(**kwargs)
        else:
            loop = asyncio.get_running_loop()
            result = await loop.run_in_executor(self._runner, lambda: handler.func(**kwargs))
        out = docs if result is None else result
        if not isinstance(out, list) or not all(isinstance(d, dict) for d in out):
            raise TypeError(
                f"handler for {ep!r} returned {type(result).__name__}; "
                "expected a list of dicts or None"
            )
        return wire.dumps(out)

