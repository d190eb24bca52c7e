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


class HeadControl:
    """Synchronous control client of one head; a context manager that closes its channel.
    `tls`: the head serves TLS (its deployment's `DeploymentSpec.own_tls()`)."""

    def __init__(self, address: str, token: str, *, timeout: float = 10.0,
                 tls: ClientTLS | None = None) -> None:
        self.address = address
        self.timeout = timeout
        self._metadata = ((wire.TOKEN_KEY, token),)
        self._channel = sync_channel(address, (), tls)
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
        try:
            return method(request, timeout=rpc_timeout or self.timeout, metadata=self._metadata)
        except grpc.RpcError as exc:
            if exc.code() is grpc.StatusCode.NOT_FOUND:
                raise RequestError(f"{self.address}: {exc.details()}") from exc
            raise map_rpc_error(exc, self.address, rpc_timeout or self.timeout) from exc

    def close(self) -> None:
        """Close the channel."""
        self._channel.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
