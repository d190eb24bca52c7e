"""The head server: the stable address of a Deployment.

It forwards the raw request bytes (never decoded on the ANY fast path) to worker replicas
over one reused channel per worker, retries on another replica when one is unavailable,
watches every worker's gRPC health, and exposes token-protected control RPCs.

Data flow of one request: [uses_before] -> ANY: one replica of one shard
                                         | ALL: one replica of every shard, in parallel,
                                           docs concatenated in shard order -> [uses_after]
uses_after receives ONE request whose docs are the concatenation of all shards' docs (in
shard order) and whose parameters/header are the client's; its response is the answer.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import ssl
import time
from collections.abc import AsyncIterator, Awaitable
from typing import Any, NoReturn

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from orchestrator.errors import OrchestratorError
from orchestrator.proto import orchestrator_pb2 as pb
from orchestrator.proto import orchestrator_pb2_grpc as pb_grpc
from orchestrator.runtime import membership, metrics, wire
from orchestrator.runtime.config import HeadConfig, Polling
from orchestrator.runtime.h2.limits import Limits
from orchestrator.runtime.memory import trim_when_idle
from orchestrator.runtime.metrics import RequestStats
from orchestrator.runtime.pool import Pool, Replica, ReplicaKey, State, due_for_check
from orchestrator.runtime.relay import Relay
from orchestrator.runtime.serve import bind, data_plane_handler

# A stopping server answers CANCELLED; a dead one UNAVAILABLE: both mean "try another".
RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED})
STREAM_PREFETCH = 32  # batches of one stream routed concurrently
CHECK_TIMEOUT = 1.0
MISSES_TO_FAIL = 3  # consecutive health-check timeouts before a replica leaves routing
DNS_REFRESH_MS = 500  # least time between two DNS lookups of one worker's name
# READY replicas health-checked per second at most, beyond 2 per round (see
# pool.due_for_check and docs/scale.md): checking 64 idle replicas every 0.5 s would cost
# the head and the workers 128 gRPC calls a second at rest. A replica whose connection
# drops (its process exited) is checked at once (HeadServer._watch_connection); the poll
# is for replicas that hang with their connection open.
CHECKS_PER_SECOND = 4.0


class Unroutable(Exception):
    """A request cannot be served; carries the gRPC code to answer with."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        self.code = code
        super().__init__(message)


class HeadServer:
    """gRPC head: data plane (Executor service), Control service and Health.

    Args:
        config: what to serve.
        limits: what an HTTP/2 client may do on the public port (runtime/h2/limits.py);
            by default `Limits.for_messages(config.max_message_bytes)`. The head's memory
            ceiling follows from them: `h2.limits.memory_ceiling(limits)` on top of the
            process's baseline (Python and grpcio: about 22 MB measured).
        tls: serve the public port over TLS (`h2.tls.server_context`): gRPC and GET /metrics
            alike. The connections to workers stay in the deployment's network, in clear.
    """

    def __init__(self, config: HeadConfig, limits: Limits | None = None,
                 tls: ssl.SSLContext | None = None) -> None:
        self.config = config
        self.tls = tls
        self.limits = limits if limits is not None else Limits.for_messages(
            config.max_message_bytes)
        self.pool = Pool(config.shards)
        self.stats = RequestStats()  # GET /metrics (see metrics.py)
        self._opts = wire.channel_options(config.max_message_bytes)
        # The head retries on another replica itself; gRPC's transparent retries would only
        # add per-call buffering (measurably slower) and could duplicate a request.
        # A worker that restarts can come back on a new IP under the same name: re-resolve
        # it within a second of a failed connection, not gRPC's default 30 s (measured: a
        # restarted replica stayed out of routing for ~30 s with the default).
        # The same holds for a uses_before / uses_after pod that heal recreates.
        self._uses_opts = [*self._opts,
                           ("grpc.dns_min_time_between_resolutions_ms", DNS_REFRESH_MS)]
        self._worker_opts = [*self._uses_opts, ("grpc.enable_retries", 0)]
        self._health = health.aio.HealthServicer()
        self._serving: bool | None = None
        self._server: grpc.aio.Server | None = None
        self._relay: Relay | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        # Upstream channels are made in start(): aio channels bind to the running loop.
        self._before: tuple[Any, Any] = (None, None)
        self._after: tuple[Any, Any] = (None, None)
        self._fast_any = (
            config.polling.uniform and config.polling.default is Polling.ANY
            and not config.uses_before
        )
        self.port = config.port

    # ---- lifecycle -------------------------------------------------------------------

    async def start(self) -> int:
        """Register initial workers, listen, start health polling; returns the bound port.

        The public port is the relay (see relay.py): unary ANY calls go straight to the
        replicas; everything else reaches this grpcio server on a loopback port.

        Raises:
            OrchestratorError: the address cannot be bound.
        """
        server = grpc.aio.server(options=self._opts)
        server.add_generic_rpc_handlers((data_plane_handler(self._call, self._stream),))
        pb_grpc.add_ControlServicer_to_server(_Control(self), server)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        inner = bind(server, "127.0.0.1:0")
        for service in ("", wire.SERVICE):  # until every shard has a live replica
            await self._health.set(service, health_pb2.HealthCheckResponse.NOT_SERVING)
        self._serving = False
        await server.start()
        self._server = server
        # Listen before the workers are checked: a readiness probe connects at once (and is
        # told NOT_SERVING until they are) instead of backing off from a refused connection.
        self._relay = Relay(self, f"127.0.0.1:{inner}", self.config.max_message_bytes,
                            self.limits)
        try:
            self.port = await self._relay.listen(self.config.host, self.config.port, self.tls)
        except OSError as exc:
            await self.stop(None)
            raise OrchestratorError(
                f"cannot listen on {self.config.host}:{self.config.port}: {exc}") from exc
        self._before = self._upstream(self.config.uses_before)
        self._after = self._upstream(self.config.uses_after)
        members = self._initial_members()
        await asyncio.gather(*(self._admit(m) for m in members))
        self._persist()
        await self._refresh_health()
        self._spawn(self._poll_health())
        self._spawn(trim_when_idle(lambda: self.stats.count))
        return self.port

    async def stop(self, grace: float | None = None) -> None:
        """NOT_SERVING first, refuse new RPCs, let in-flight ones finish within `grace`."""
        await self._health.enter_graceful_shutdown()
        if self._relay is not None:  # GOAWAY to clients; in-flight calls finish
            await self._relay.shutdown(grace)
        if self._server is not None:
            await self._server.stop(grace)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        channels = [r.channel for r in self.pool] + [c for c, _ in (self._before, self._after) if c]
        await asyncio.gather(*(c.close() for c in channels), return_exceptions=True)
        if self._relay is not None:
            self._relay.close_upstreams(list(self.pool))

    async def wait_for_termination(self) -> None:
        """Block until the server stops."""
        if self._server is not None:
            await self._server.wait_for_termination()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ---- membership (used by the Control service) ------------------------------------

    def _initial_members(self) -> list[membership.Member]:
        """The workers to start with: the saved list when the head restarts in its own
        container (see membership.py), else the `--worker` arguments."""
        given = [membership.Member(w.shard, w.address, w.worker_id) for w in self.config.workers]
        if not self.config.state:
            return given
        try:
            saved = membership.load(self.config.state)
        except membership.StateError as exc:
            membership.warn(f"head {self.config.name}: ignoring its saved worker list: {exc}")
            return given
        if saved is None:
            return given
        kept = [m for m in saved if m.shard < self.config.shards]
        for m in saved:
            if m.shard >= self.config.shards:
                membership.warn(f"head {self.config.name}: ignoring saved worker {m.address}: "
                                f"shard {m.shard} >= shards ({self.config.shards})")
        membership.warn(f"head {self.config.name}: restarted; restoring {len(kept)} saved "
                        f"worker(s) from {self.config.state}")
        return kept

    async def _admit(self, member: membership.Member) -> None:
        await self.add_worker(member.shard, member.address, member.worker_id, persist=False)
        if member.draining and (replica := self.pool.get(member.shard, member.address)):
            replica.state = State.DRAINING

    def _persist(self) -> None:
        """Save the worker list (when the head has a state file). A failure is logged, not
        raised: routing goes on, only a restart of this head would lose the list."""
        if not self.config.state:
            return
        members = [membership.Member(r.shard, r.address, r.worker_id,
                                     r.state is State.DRAINING) for r in self.pool]
        try:
            membership.save(self.config.state, members)
        except OSError as exc:
            membership.warn(f"head {self.config.name}: cannot save its worker list to "
                            f"{self.config.state}: {exc.strerror or exc}")

    async def add_worker(self, shard: int, address: str, worker_id: str = "", *,
                         persist: bool = True) -> None:
        """Register (or re-admit) a worker; it is routable once its health says SERVING.

        Raises:
            ValueError: shard out of range or empty address.
        """
        if not 0 <= shard < self.config.shards or not address:
            raise ValueError(f"bad worker shard={shard} address={address!r} "
                             f"(shards: {self.config.shards})")
        replica = self.pool.get(shard, address)
        if replica is None:
            channel = grpc.aio.insecure_channel(address, options=self._worker_opts)
            call = channel.unary_unary(wire.METHOD_CALL, request_serializer=wire.identity,
                                       response_deserializer=wire.identity)
            replica = Replica(shard, address, worker_id, channel, call)
            self.pool.add(replica)
            self._spawn(self._watch_connection(replica))
        elif worker_id:
            replica.worker_id = worker_id
        if self._relay is not None:
            self._relay.connect(replica)
        replica.state = State.READY if await self._probe(replica) else State.UNHEALTHY
        if persist:
            self._persist()
        await self._refresh_health()

    async def remove_worker(self, shard: int, address: str) -> bool:
        """Unregister a worker; its in-flight calls may finish (channel closed with grace)."""
        replica = self.pool.get(shard, address)
        if replica is None:
            return False
        self.pool.remove(replica)
        self._persist()
        await self._refresh_health()
        self._spawn(replica.channel.close(self.config.grace))
        if self._relay is not None:
            self._relay.forget(replica)
        return True

    # ---- what the relay asks -----------------------------------------------------------

    def fast_path(self, endpoint: bytes | None) -> bool:
        """May a unary call to `endpoint` go straight to ANY replica (no decoding)?"""
        if self._fast_any:
            return True
        if endpoint is None or self.config.uses_before:
            return False
        return self.config.polling.mode_for(endpoint.decode(errors="replace")) is Polling.ANY

    def finished(self, seconds: float, code: int) -> None:
        """A data-plane request was answered (either path): for the metrics."""
        self.stats.observe(seconds, code)

    def metrics(self) -> bytes:
        """The Prometheus text of this head."""
        return metrics.render(self.config.name, self.pool, self.stats, bool(self._serving))

    def http_enabled(self) -> bool:
        """Does this head serve Jina's HTTP interface (`--http`)?"""
        return self.config.http

    def http_status(self) -> dict[str, Any]:
        """GET /status (and /health: `serving`)."""
        secure = self.tls is not None
        protocols = ["grpcs" if secure else "grpc"]
        if self.config.http:
            protocols.append("https" if secure else "http")
        replicas = [{"shard": r.shard, "address": r.address, "id": r.worker_id,
                     "state": r.state.value, "in_flight": r.outstanding}
                    for r in sorted(self.pool, key=lambda r: r.key)]
        return {"name": self.config.name, "version": _version(), "protocol": protocols,
                "serving": bool(self._serving), "shards": self.config.shards,
                "replicas": replicas}

    def send_timeout(self, endpoint: bytes | None) -> float | None:
        """timeout_send of `endpoint` in seconds (None: none)."""
        timeouts = self.config.timeout_send
        if timeouts.default is None and not timeouts.per_endpoint:
            return None
        return timeouts.for_endpoint(None if endpoint is None
                                     else endpoint.decode(errors="replace"))

    def replica_failed(self, replica: Replica) -> None:
        """A replica refused a request: route around it until its health says SERVING."""
        if replica.state is State.READY:  # the health poll re-admits it
            replica.state = State.UNHEALTHY
            self._spawn(self._refresh_health())

    async def drain_worker(self, shard: int, address: str, timeout: float) -> bool:
        """Stop routing to a worker now; wait until its in-flight requests end or `timeout`.

        Raises:
            KeyError: no such worker.
        """
        replica = self.pool.get(shard, address)
        if replica is None:
            raise KeyError(f"no worker {address} in shard {shard}")
        replica.state = State.DRAINING
        self._persist()
        await self._refresh_health()
        try:
            await asyncio.wait_for(replica.idle.wait(), timeout)
        except TimeoutError:
            return False
        return True

    # ---- health ----------------------------------------------------------------------

    async def _probe(self, replica: Replica) -> bool | None:
        """True: SERVING. False: said otherwise, or unreachable. None: no answer in time."""
        stub = health_pb2_grpc.HealthStub(replica.channel)
        timeout = min(CHECK_TIMEOUT, self.config.health_interval * 2)
        try:
            resp = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            return None if exc.code() is grpc.StatusCode.DEADLINE_EXCEEDED else False
        return bool(resp.status == health_pb2.HealthCheckResponse.SERVING)

    async def _watch_connection(self, replica: Replica) -> None:
        """Check a READY replica at once when its connection drops (its process exited,
        its container was stopped or removed), not at its next turn of the health poll:
        at rest each READY replica is polled only every few seconds (CHECKS_PER_SECOND),
        and watching a channel's state costs nothing while it does not change."""
        channel = replica.channel
        state = channel.get_state(try_to_connect=True)
        while True:
            await channel.wait_for_state_change(state)
            was, state = state, channel.get_state()
            if state is grpc.ChannelConnectivity.SHUTDOWN or \
                    self.pool.get(replica.shard, replica.address) is not replica:
                return  # removed: its channel was closed
            if was is not grpc.ChannelConnectivity.READY or replica.state is not State.READY:
                continue
            # the connection it had is gone: no answer now is evidence enough (a timeout
            # here is not a busy worker, whose connection would have stayed up)
            if await self._probe(replica) is not True and replica.state is State.READY:
                replica.state = State.UNHEALTHY
                await self._refresh_health()

    async def _poll_health(self) -> None:
        """Keep routing in step with each worker's own health, continuously."""
        turn = 0
        share = max(2, round(CHECKS_PER_SECOND * self.config.health_interval))
        while True:
            await asyncio.sleep(self.config.health_interval)
            replicas, turn = due_for_check(list(self.pool), turn, share)
            results = await asyncio.gather(*(self._probe(r) for r in replicas))
            for replica, ok in zip(replicas, results, strict=True):
                # A check that merely timed out (a busy worker, a loaded machine) takes a
                # replica out of routing only the MISSES_TO_FAIL-th time in a row; an
                # explicit NOT_SERVING or a refused connection does at once.
                replica.misses = 0 if ok is not None else replica.misses + 1
                if ok is None and replica.misses < MISSES_TO_FAIL:
                    continue
                if replica.state is not State.DRAINING:  # a drain may have begun meanwhile
                    replica.state = State.READY if ok else State.UNHEALTHY
            await self._refresh_health()

    async def _refresh_health(self) -> None:
        serving = self.pool.serving()
        if serving != self._serving:
            self._serving = serving
            status = (health_pb2.HealthCheckResponse.SERVING if serving
                      else health_pb2.HealthCheckResponse.NOT_SERVING)
            await self._health.set("", status)
            await self._health.set(wire.SERVICE, status)

    # ---- data plane ------------------------------------------------------------------

    async def _call(self, raw: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        timeout = context.time_remaining()
        try:
            if self._fast_any and not self.config.timeout_send.per_endpoint:
                # no metadata lookup, no decoding: the hot path
                return await self._measured(self._forward_any(raw, timeout))
            return await self._measured(self.route(raw, _endpoint_of(context), timeout))
        except Unroutable as exc:
            await _abort(context, exc)

    async def _measured(self, work: Awaitable[bytes]) -> bytes:
        """Await one request's answer and count it for the metrics."""
        started, code = time.monotonic(), grpc.StatusCode.OK
        try:
            return await work
        except Unroutable as exc:
            code = exc.code
            raise
        except asyncio.CancelledError:
            code = grpc.StatusCode.CANCELLED
            raise
        finally:
            self.finished(time.monotonic() - started, code.value[0])

    async def _stream(
        self, requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext[bytes, bytes]
    ) -> AsyncIterator[bytes]:
        endpoint = _endpoint_of(context)
        pending: asyncio.Queue[asyncio.Task[bytes] | None] = asyncio.Queue(STREAM_PREFETCH)

        async def feed() -> None:
            async for raw in requests:
                await pending.put(asyncio.ensure_future(self._measured(
                    self.route(raw, endpoint, context.time_remaining()))))
            await pending.put(None)

        feeder = asyncio.ensure_future(feed())
        try:
            while (task := await pending.get()) is not None:
                try:
                    yield await task
                except Unroutable as exc:
                    await _abort(context, exc)
            await feeder  # surfaces a failure of the request iterator
        finally:
            feeder.cancel()
            while not pending.empty():
                if (left := pending.get_nowait()) is not None:
                    left.cancel()
                    left.add_done_callback(_retrieve)

    async def route(self, raw: bytes, endpoint: str | None, timeout: float | None) -> bytes:
        """Serve one serialized DataRequest; returns a serialized DataResponse.

        Raises:
            Unroutable: no replica could serve, or a worker failed in a non-retryable way.
        """
        if endpoint is None:
            endpoint = _parse(raw).header.endpoint
        if self._before[1] is not None:
            raw, failed = await self._through_before(raw, timeout, endpoint)
            if failed is not None:
                return failed
        if self.config.polling.mode_for(endpoint) is Polling.ANY:
            return await self._forward_any(raw, timeout, endpoint)
        return await self._forward_all(raw, timeout, endpoint)

    async def _through_before(
        self, raw: bytes, timeout: float | None, endpoint: str | None
    ) -> tuple[bytes, bytes | None]:
        out = await _call_upstream(self._before[1], "uses_before", raw,
                                   self._per_try(timeout, endpoint))
        resp = wire.parse_response(out)
        if resp.status.code != wire.OK:
            return raw, out
        req = _parse(raw)
        req.docs = resp.docs
        return req.SerializeToString(), None

    def _per_try(self, timeout: float | None, endpoint: str | None) -> float | None:
        """The deadline of one call to a pod: the client's, shortened to timeout_send."""
        per_try = self.config.timeout_send.for_endpoint(endpoint)
        if per_try is None:
            return timeout
        return per_try if timeout is None else min(timeout, per_try)

    async def _forward_any(self, raw: bytes, timeout: float | None,
                           endpoint: str | None = None) -> bytes:
        return await self._forward(raw, timeout, None, endpoint)

    async def _forward_all(self, raw: bytes, timeout: float | None,
                           endpoint: str | None = None) -> bytes:
        tasks = [asyncio.ensure_future(self._forward(raw, timeout, s, endpoint))
                 for s in range(self.config.shards)]
        try:
            outs = await asyncio.gather(*tasks)
        except BaseException:
            for task in tasks:  # one shard failed: the others' answers are useless now
                task.cancel()
            raise
        responses = [wire.parse_response(out) for out in outs]
        failed = next((r for r in responses if r.status.code != wire.OK), None)
        if failed is not None:
            return failed.SerializeToString()
        merged = wire.concat_doc_arrays([r.docs for r in responses])
        if self._after[1] is None:
            return wire.response(responses[0].header, merged)
        req = _parse(raw)
        req.docs = merged
        return await _call_upstream(self._after[1], "uses_after", req.SerializeToString(),
                                    self._per_try(timeout, endpoint))

    async def _forward(self, raw: bytes, timeout: float | None, shard: int | None,
                       endpoint: str | None = None) -> bytes:
        """Send to one replica (of `shard`, or of any shard); retry elsewhere if unavailable
        or silent for timeout_send."""
        tried: set[ReplicaKey] = set()
        last: grpc.aio.AioRpcError | None = None
        per_try = self.config.timeout_send.for_endpoint(endpoint)
        deadline = None if timeout is None else time.monotonic() + timeout
        expired = False
        while True:
            replica = self.pool.pick_any(tried) if shard is None else self.pool.pick(shard, tried)
            if replica is None:
                raise _no_replica(shard, last, expired)
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise Unroutable(grpc.StatusCode.DEADLINE_EXCEEDED,
                                 "deadline exceeded in the head")
            attempt = per_try if left is None else left if per_try is None else min(per_try,
                                                                                     left)
            tried.add(replica.key)
            replica.begin()
            ok: bool | None = False
            try:
                out: bytes = await replica.call(raw, timeout=attempt)
                ok = True
                return out
            except asyncio.CancelledError:  # the client gave up: not the replica's failure
                ok = None
                raise
            except grpc.aio.AioRpcError as exc:
                if (exc.code() is grpc.StatusCode.DEADLINE_EXCEEDED and per_try is not None
                        and attempt == per_try):  # timeout_send, not the client's deadline
                    expired, last = True, exc
                    continue
                if exc.code() not in RETRYABLE:
                    raise Unroutable(exc.code(), f"worker {replica.address}: {exc.details()}"
                                     ) from exc
                last = exc
                if replica.state is State.READY:  # the health poll re-admits it
                    replica.state = State.UNHEALTHY
                    await self._refresh_health()
            finally:
                replica.end(ok)

    def _upstream(self, address: str | None) -> tuple[Any, Any]:
        if not address:
            return None, None
        channel = grpc.aio.insecure_channel(address, options=self._uses_opts)
        return channel, channel.unary_unary(wire.METHOD_CALL, request_serializer=wire.identity,
                                            response_deserializer=wire.identity)


async def _call_upstream(call: Any, role: str, raw: bytes, timeout: float | None) -> bytes:
    try:
        out: bytes = await call(raw, timeout=timeout)
    except grpc.aio.AioRpcError as exc:
        code = grpc.StatusCode.UNAVAILABLE if exc.code() in RETRYABLE else exc.code()
        raise Unroutable(code, f"{role} pod failed: {exc.details()}") from exc
    return out


def _retrieve(task: asyncio.Task[bytes]) -> None:
    """Mark an abandoned task's outcome as seen (no 'exception never retrieved' noise)."""
    if not task.cancelled():
        task.exception()


def _no_replica(shard: int | None, last: grpc.aio.AioRpcError | None,
                expired: bool = False) -> Unroutable:
    which = "any shard" if shard is None else f"shard {shard}"
    cause = f" (last error: {last.code().name}: {last.details()})" if last else ""
    if expired:
        return Unroutable(grpc.StatusCode.DEADLINE_EXCEEDED,
                          f"no replica of {which} answered within timeout_send{cause}")
    return Unroutable(grpc.StatusCode.UNAVAILABLE, f"no live replica of {which} could serve{cause}")


@functools.cache
def _version() -> str:
    import importlib.metadata  # on first use: it imports email, zipfile, csv (startup, memory)

    try:
        return importlib.metadata.version("orchestrator")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _parse(raw: bytes) -> pb.DataRequest:
    try:
        return wire.parse_request(raw)
    except wire.WireError as exc:
        raise Unroutable(grpc.StatusCode.INVALID_ARGUMENT, str(exc)) from exc


def _endpoint_of(context: grpc.aio.ServicerContext[bytes, bytes]) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == wire.ENDPOINT_KEY:
            return value if isinstance(value, str) else value.decode()
    return None


async def _abort(context: grpc.aio.ServicerContext[bytes, bytes], exc: Unroutable) -> NoReturn:
    await context.abort(exc.code, str(exc))
    raise AssertionError("unreachable: abort raises")


def token_matches(got: bytes, expected: bytes) -> bool:
    """Constant-time token check: digests of equal length are compared with
    `hmac.compare_digest`, so neither the token's bytes nor its length leak by timing."""
    return hmac.compare_digest(hashlib.sha256(got).digest(), hashlib.sha256(expected).digest())


class _Control(pb_grpc.ControlServicer):
    """Control RPCs; every call must carry the deployment token in metadata."""

    def __init__(self, head: HeadServer) -> None:
        self._head = head

    async def _auth(self, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        expected = self._head.config.token
        if not expected:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED,
                                "control RPCs are disabled: the head has no ORCHESTRATOR_TOKEN")
        got = next((v for k, v in context.invocation_metadata() or () if k == wire.TOKEN_KEY), "")
        got_bytes = got.encode() if isinstance(got, str) else got
        if not token_matches(got_bytes, expected.encode()):  # the error never quotes either
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "wrong control token")

    async def AddWorker(
        self, request: pb.AddWorkerRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.Empty:
        await self._auth(context)
        try:
            await self._head.add_worker(request.shard, request.address, request.id)
        except ValueError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        return pb.Empty()

    async def RemoveWorker(
        self, request: pb.RemoveWorkerRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.Empty:
        await self._auth(context)
        await self._head.remove_worker(request.shard, request.address)
        return pb.Empty()

    async def DrainWorker(
        self, request: pb.DrainWorkerRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.DrainWorkerResponse:
        await self._auth(context)
        try:
            drained = await self._head.drain_worker(request.shard, request.address,
                                                    request.timeout)
        except KeyError as exc:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(exc.args[0]))
        return pb.DrainWorkerResponse(drained=drained)

    async def ListWorkers(
        self, request: pb.Empty, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ListWorkersResponse:
        await self._auth(context)
        infos = [
            pb.WorkerInfo(shard=r.shard, address=r.address, id=r.worker_id, state=r.state.value,
                          outstanding=r.outstanding, served=r.served, failed=r.failed)
            for r in sorted(self._head.pool, key=lambda r: r.key)
        ]
        return pb.ListWorkersResponse(workers=infos)

    async def NoteReplaced(
        self, request: pb.NoteReplacedRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.Empty:
        await self._auth(context)
        self._head.stats.note_replaced(request.role, request.reason)
        return pb.Empty()

