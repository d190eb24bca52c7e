"""Shared server plumbing: binding a port and running until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Callable
from typing import Any, Protocol

import grpc

from orchestrator.errors import OrchestratorError
from orchestrator.runtime import wire


class Stoppable(Protocol):
    """A server with the start/stop pair of WorkerServer and HeadServer."""

    async def start(self) -> int: ...

    async def stop(self, grace: float | None = None) -> None: ...


def bind(server: grpc.aio.Server, address: str) -> int:
    """Add an insecure port; returns the bound port.

    Raises:
        OrchestratorError: the address cannot be bound.
    """
    try:
        port = server.add_insecure_port(address)
    except RuntimeError as exc:
        raise OrchestratorError(f"cannot listen on {address}: {exc}") from exc
    if port == 0:  # older grpcio reports a failed bind this way
        raise OrchestratorError(f"cannot listen on {address}")
    return port


async def serve_until_signalled(server: Stoppable, grace: float, label: str = "server") -> None:
    """Start `server`, wait for SIGTERM or SIGINT, then stop it gracefully.

    Prints one line to stderr when serving and one when stopping (they end up in the
    container's log tail, which start-up errors quote).

    Raises:
        OrchestratorError: the server cannot listen.
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    port = await server.start()
    print(f"orchestrator.runtime: {label} serving on port {port}", file=sys.stderr, flush=True)
    await stop.wait()
    print(f"orchestrator.runtime: {label} stopping (grace {grace}s)", file=sys.stderr, flush=True)
    await server.stop(grace)


def data_plane_handler(
    call: Callable[..., Any], stream: Callable[..., Any]
) -> grpc.GenericRpcHandler:
    """The Executor service (Call and Stream) over raw bytes: the worker decodes them, the
    head forwards them as they are."""
    return grpc.method_handlers_generic_handler(
        wire.SERVICE,
        {
            "Call": grpc.unary_unary_rpc_method_handler(
                call, request_deserializer=wire.identity, response_serializer=wire.identity,
            ),
            "Stream": grpc.stream_stream_rpc_method_handler(
                stream, request_deserializer=wire.identity, response_serializer=wire.identity,
            ),
        },
    )
