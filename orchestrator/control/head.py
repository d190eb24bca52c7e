"""Control-RPC client used by the orchestrator process to manage a head's workers.

Every call carries the deployment token as `x-orchestrator-token` metadata.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Self, TypeVar

import grpc

from orchestrator.client import map_rpc_error, sync_channel
from orchestrator.errors import RequestError
from orchestrator.model import WorkerStatus
from orchestrator.proto import orchestrator_pb2 as pb
from orchestrator.proto import orchestrator_pb2_grpc as pb_grpc
from orchestrator.runtime import wire
from orchestrator.tls import ClientTLS

T = TypeVar("T")

CHANNEL_OPTIONS = (
    ("grpc.initial_reconnect_backoff_ms", 50),
    ("grpc.min_reconnect_backoff_ms", 50),
    ("grpc.max_reconnect_backoff_ms", 250),
)
"""A head restarted by the engine is back within a second or two, usually at the same
address: the channel tries again within a quarter of a second, not after gRPC's default
backoff (1 s, growing to 2 min)."""

RECONNECT_GRACE = 0.5
"""A call that could not connect waits this long for a connection, once: the channel may
be between two attempts at a head that was down a moment ago and is back."""


class HeadControl:
    """Synchronous control client of one head; a context manager that closes its channel.
    `tls`: the head serves TLS (its deployment's `DeploymentSpec.own_tls()`)."""

    def __init__(self, address: str, token: str, *, timeout: float = 10.0,
                 tls: ClientTLS | None = None) -> None:
        self.address = address
        self.timeout = timeout
        self._metadata = ((wire.TOKEN_KEY, token),)
        self._channel = sync_channel(address, CHANNEL_OPTIONS, tls)
        self._stub = pb_grpc.ControlStub(self._channel)

    def add_worker(self, shard: int, address: str, worker_id: str = "") -> None:
        """Register a worker; it is routed to once its gRPC health reports SERVING.

        Raises:
            ControlAuthError: wrong or missing token.
            ServiceUnavailable: the head does not answer.
            RequestError: shard out of range, empty address, other failures.
        """
        self._rpc(self._stub.AddWorker, pb.AddWorkerRequest(shard=shard, address=address,
                                                            id=worker_id))

    def remove_worker(self, shard: int, address: str) -> None:
        """Unregister a worker (no-op if unknown). In-flight calls to it may still finish.

        Raises:
            ControlAuthError: wrong or missing token.
            ServiceUnavailable: the head does not answer.
            RequestError: other failures.
        """
        self._rpc(self._stub.RemoveWorker, pb.RemoveWorkerRequest(shard=shard, address=address))

    def drain_worker(self, shard: int, address: str, timeout: float) -> bool:
        """Stop routing to a worker now; return once its in-flight requests are done (True)
        or `timeout` passed (False). It stays out of routing until removed or re-added.

        Raises:
            ControlAuthError: wrong or missing token.
            ServiceUnavailable: the head does not answer.
            RequestError: no such worker at the head, other failures.
        """
        resp: pb.DrainWorkerResponse = self._rpc(
            self._stub.DrainWorker,
            pb.DrainWorkerRequest(shard=shard, address=address, timeout=timeout),
            rpc_timeout=timeout + self.timeout,
        )
        return resp.drained

    def list_workers(self) -> list[WorkerStatus]:
        """Every registered worker, sorted by (shard, address).

        Raises:
            ControlAuthError: wrong or missing token.
            ServiceUnavailable: the head does not answer.
            RequestError: other failures.
        """
        resp: pb.ListWorkersResponse = self._rpc(self._stub.ListWorkers, pb.Empty())
        return [
            WorkerStatus(w.shard, w.address, w.id, w.state, w.outstanding, w.served, w.failed)
            for w in resp.workers
        ]

    def note_replaced(self, pod: str, role: str, reason: str) -> None:
        """Tell the head that the healer replaced `pod` (its metrics count it).

        Raises:
            ControlAuthError: wrong or missing token.
            ServiceUnavailable: the head does not answer.
            RequestError: other failures (an older head without the call).
        """
        self._rpc(self._stub.NoteReplaced,
                  pb.NoteReplacedRequest(pod=pod, role=role, reason=reason))

    def _rpc(self, method: Callable[..., T], request: Any, rpc_timeout: float | None = None) -> T:
        timeout = rpc_timeout or self.timeout
        try:
            return method(request, timeout=timeout, metadata=self._metadata)
        except grpc.RpcError as exc:
            error = exc
        if error.code() is grpc.StatusCode.UNAVAILABLE \
                and "failed to connect" in (error.details() or ""):
            # Never sent (so safe to send again): the channel failed fast on its last
            # connection error. Once more, waiting briefly for its next attempt.
            try:
                return method(request, timeout=min(timeout, RECONNECT_GRACE),
                              metadata=self._metadata, wait_for_ready=True)
            except grpc.RpcError as again:
                if again.code() is not grpc.StatusCode.DEADLINE_EXCEEDED:
                    error = again  # the head answered this time (a wrong token, say)
        if error.code() is grpc.StatusCode.NOT_FOUND:
            raise RequestError(f"{self.address}: {error.details()}") from error
        raise map_rpc_error(error, self.address, timeout) from error

    def close(self) -> None:
        """Close the channel."""
        self._channel.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
