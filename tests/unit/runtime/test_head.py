"""The head in-process: routing, merging, retries, drain, control RPCs, health."""

from __future__ import annotations

import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import pytest

from orchestrator import (
    Client,
    ControlAuthError,
    Executor,
    ExecutorError,
    RequestError,
    ServiceUnavailable,
    requests,
)
from orchestrator.control import HeadControl
from orchestrator.runtime import wire
from orchestrator.runtime.config import PollingPolicy
from orchestrator.runtime.head import HeadServer
from orchestrator.runtime.worker import WorkerServer
from tests.unit.runtime.harness import ECHO, TOKEN, Cluster, LoopThread, addr, wait_until


def control(head: Any, token: str = TOKEN) -> HeadControl:
    return HeadControl(addr(head), token, timeout=5)


def test_replicas_get_a_fair_share(cluster: Cluster) -> None:
    workers = [cluster.worker(replica=i) for i in range(3)]
    head = cluster.head(1, [(0, w) for w in workers])
    with Client(addr(head)) as c:
        sequential = Counter(c.post("/echo", [{}])[0]["replica"] for _ in range(30))
        with ThreadPoolExecutor(6) as pool:
            concurrent = Counter(pool.map(
                lambda _: c.post("/slow", [{}], {"delay": 0.02})[0]["replica"], range(60)))
    assert sequential == {0: 10, 1: 10, 2: 10}  # idle replicas: strict rotation
    assert set(concurrent) == {0, 1, 2} and min(concurrent.values()) >= 10, concurrent
    with control(head) as ctl:
        served = {w.address: w.served for w in ctl.list_workers()}
    assert sum(served.values()) == 90 and min(served.values()) >= 20


def test_all_merges_every_shard_in_shard_order(cluster: Cluster) -> None:
    shards = [cluster.worker(shard=s) for s in range(3)]
    head = cluster.head(3, list(enumerate(shards)), polling=PollingPolicy.parse("ALL"))
    with Client(addr(head)) as c:
        out = c.post("/echo", [{"i": 0}, {"i": 1}])
    assert [(d["shard"], d["i"]) for d in out] == [(0, 0), (0, 1), (1, 0), (1, 1), (2, 0), (2, 1)]


def test_polling_per_endpoint(cluster: Cluster) -> None:
    shards = [cluster.worker(shard=s) for s in range(2)]
    policy = PollingPolicy.parse('{"/echo": "ALL", "*": "ANY"}')
    head = cluster.head(2, list(enumerate(shards)), polling=policy)
    with Client(addr(head)) as c:
        assert len(c.post("/echo", [{}])) == 2
        assert len(c.post("/other", [{}])) == 1


def test_uses_before_and_uses_after(cluster: Cluster) -> None:
    shards = [cluster.worker(shard=s) for s in range(2)]
    before = cluster.worker(f"{ECHO}:Stamp")
    after = cluster.worker(f"{ECHO}:Sum")
    head = cluster.head(2, list(enumerate(shards)), polling=PollingPolicy.parse("ALL"),
                        uses_before=addr(before), uses_after=addr(after))
    only_before = cluster.head(2, list(enumerate(shards)), uses_before=addr(before))
    with Client(addr(head)) as c:
        assert c.post("/echo", [{}, {}, {}]) == [{"count": 6, "shards": [0, 1]}]
    with Client(addr(only_before)) as c:
        out = c.post("/echo", [{"i": 1}])
    assert out[0]["before"] is True and out[0]["tag"] == "v1"


def test_retry_when_a_replica_dies_mid_stream(cluster: Cluster) -> None:
    victim, survivor = cluster.worker(replica=0), cluster.worker(replica=1)
    head = cluster.head(1, [(0, victim), (0, survivor)])
    out: list[Any] = []
    with Client(addr(head)) as c, control(head) as ctl:
        t = threading.Thread(target=lambda: out.extend(c.post(
            "/slow", [{"i": i} for i in range(12)], {"delay": 0.3}, request_size=1, timeout=20)))
        t.start()
        wait_until(lambda: any(w.outstanding for w in ctl.list_workers()
                               if w.address == addr(victim)), what="calls in flight on victim")
        cluster.stop(victim, grace=0)  # in-flight calls end CANCELLED/UNAVAILABLE
        t.join(20)
        stats = {w.address: w for w in ctl.list_workers()}
    assert [d["i"] for d in out] == list(range(12))
    assert stats[addr(victim)].failed >= 1
    assert stats[addr(survivor)].served == 12


def test_drain_finishes_in_flight_while_new_requests_go_elsewhere(cluster: Cluster) -> None:
    a, b = cluster.worker(replica=0), cluster.worker(replica=1)
    head = cluster.head(1, [(0, a), (0, b)])
    slow: list[Any] = []
    with Client(addr(head)) as c, control(head) as ctl:
        t = threading.Thread(target=lambda: slow.extend(c.post("/slow", [{}], {"delay": 0.6})))
        t.start()
        wait_until(lambda: any(w.outstanding for w in ctl.list_workers()), what="slow call")
        busy = next(w for w in ctl.list_workers() if w.outstanding)
        with ThreadPoolExecutor(1) as pool:
            drained = pool.submit(ctl.drain_worker, 0, busy.address, 10)
            wait_until(lambda: any(w.state == "draining" for w in ctl.list_workers()),
                       what="draining state")
            new = {c.post("/echo", [{}])[0]["replica"] for _ in range(6)}
            assert not drained.done()  # still waiting for the slow call
            assert drained.result(10) is True
        t.join(10)
        states = {w.address: w.state for w in ctl.list_workers()}
    assert slow and slow[0]["replica"] == (0 if busy.address == addr(a) else 1)
    assert new == {1 if busy.address == addr(a) else 0}
    assert states[busy.address] == "draining"  # stays out of routing until removed


def test_drain_timeout_returns_false(cluster: Cluster) -> None:
    w = cluster.worker()
    head = cluster.head(1, [(0, w)])
    with Client(addr(head)) as c, control(head) as ctl:
        t = threading.Thread(target=lambda: c.post("/slow", [{}], {"delay": 0.8}))
        t.start()
        wait_until(lambda: ctl.list_workers()[0].outstanding == 1, what="slow call")
        assert ctl.drain_worker(0, addr(w), 0.05) is False
        t.join(10)


def test_executor_errors_propagate_and_are_not_retried(cluster: Cluster) -> None:
    workers = [cluster.worker(f"{ECHO}:Echo", replica=i) for i in range(2)]
    head = cluster.head(1, [(0, w) for w in workers])
    with Client(addr(head)) as c, control(head) as ctl:
        with pytest.raises(ExecutorError) as info:
            c.post("/slow", [{}], {"delay": "not a number"})
        served = sum(w.served for w in ctl.list_workers())
    assert info.value.executor == "w0-0" or info.value.executor == "w0-1"
    assert info.value.exc_type == "ValueError" and "float" in info.value.traceback
    assert served == 1


def test_no_live_replica_is_service_unavailable(cluster: Cluster) -> None:
    shards = [cluster.worker(shard=s) for s in range(2)]
    head = cluster.head(2, list(enumerate(shards)), polling=PollingPolicy.parse("ALL"))
    cluster.stop(shards[1])
    with Client(addr(head)) as c, pytest.raises(ServiceUnavailable, match="shard 1"):
        c.post("/echo", [{}], timeout=5)


def test_head_health_follows_its_workers(cluster: Cluster) -> None:
    head = cluster.head(2)
    w0, w1 = cluster.worker(shard=0), cluster.worker(shard=1)
    with Client(addr(head)) as c, control(head) as ctl:
        assert not c.is_ready()  # no workers yet
        ctl.add_worker(0, addr(w0), "w0")
        assert not c.is_ready()  # shard 1 still missing
        ctl.add_worker(1, addr(w1), "w1")
        assert c.is_ready()
        port = w1.port
        cluster.stop(w1)
        wait_until(lambda: not c.is_ready(), what="head NOT_SERVING after worker death")
        assert ctl.list_workers()[1].state == "unhealthy"
        cluster.worker(shard=1, port=port)  # comes back on the same address
        wait_until(c.is_ready, what="head SERVING again")
        ctl.remove_worker(0, addr(w0))
        assert not c.is_ready()
        assert [w.worker_id for w in ctl.list_workers()] == ["w1"]


def test_a_dropped_connection_takes_a_replica_out_without_waiting_for_the_poll(
        cluster: Cluster) -> None:
    # the health poll is as good as off (once an hour): only the connection watch can see it
    w0, w1 = cluster.worker(), cluster.worker()
    head = cluster.head(1, [(0, w0), (0, w1)], health_interval=3600)
    with control(head) as ctl:
        def states() -> dict[str, str]:
            return {s.address: s.state for s in ctl.list_workers()}

        assert states() == {addr(w0): "ready", addr(w1): "ready"}
        cluster.stop(w1)
        wait_until(lambda: states() == {addr(w0): "ready", addr(w1): "unhealthy"},
                   what="the stopped replica out of routing")
        cluster.stop(w0)
        wait_until(lambda: set(states().values()) == {"unhealthy"}, what="both out")
    with Client(addr(head)) as c:
        assert not c.is_ready()  # the head's own health follows


def test_wrong_or_missing_token_is_rejected(cluster: Cluster) -> None:
    w = cluster.worker()
    head = cluster.head(1, [(0, w)])
    tokenless = cluster.head(1, token=None)
    with control(head, "wrong") as bad:
        calls = (lambda: bad.list_workers(), lambda: bad.add_worker(0, addr(w)),
                 lambda: bad.remove_worker(0, addr(w)), lambda: bad.drain_worker(0, addr(w), 1))
        for call in calls:
            with pytest.raises(ControlAuthError, match="wrong control token"):
                call()
    with control(tokenless, TOKEN) as ctl, pytest.raises(ControlAuthError, match="disabled"):
        ctl.list_workers()
    with control(head) as ctl:  # nothing changed
        assert [s.state for s in ctl.list_workers()] == ["ready"]


def test_control_reaches_a_head_back_at_its_address_at_once(cluster: Cluster) -> None:
    """A head restarted in its container is back at the same address: the control client
    that failed while it was down reaches it on the first call after, not once gRPC's
    reconnect backoff (1 s, growing) has run out."""
    head = cluster.head()
    port = head.port
    with control(head) as ctl:
        assert ctl.list_workers() == []
        cluster.stop(head)
        for _ in range(4):  # each failure lengthens gRPC's default backoff
            with pytest.raises(ServiceUnavailable, match="failed to connect"):
                ctl.list_workers()
        cluster.head(port=port)  # listening when this returns
        assert ctl.list_workers() == []


def test_control_rejects_bad_arguments(cluster: Cluster) -> None:
    head = cluster.head(1)
    with control(head) as ctl:
        with pytest.raises(RequestError, match="bad worker shard=3"):
            ctl.add_worker(3, "127.0.0.1:1")
        with pytest.raises(RequestError, match="no worker"):
            ctl.drain_worker(0, "127.0.0.1:1", 1)


def test_malformed_and_oversized_requests_through_the_head(cluster: Cluster) -> None:
    w = cluster.worker()
    fast = cluster.head(1, [(0, w)], max_message_bytes=4096)
    routed = cluster.head(1, [(0, w)], polling=PollingPolicy.parse("ALL"))
    with grpc.insecure_channel(addr(routed)) as ch:
        call = ch.unary_unary(wire.METHOD_CALL, request_serializer=wire.identity,
                              response_deserializer=wire.identity)
        with pytest.raises(grpc.RpcError) as info:
            call(b"\xff\xff garbage", timeout=5)
        assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    with grpc.insecure_channel(addr(fast)) as ch:  # forwarded untouched; the worker says why
        call = ch.unary_unary(wire.METHOD_CALL, request_serializer=wire.identity,
                              response_deserializer=wire.identity)
        resp = wire.parse_response(call(b"\xff\xff garbage", timeout=5))
        assert resp.status.code == wire.BAD_REQUEST
    with Client(addr(fast)) as c, pytest.raises(RequestError, match="message too large"):
        c.post("/echo", [{"blob": "x" * 10_000}])


class Hog(Executor):
    """An async handler that blocks its worker's event loop (health checks go unanswered)."""

    @requests(on="/hog")
    async def hog(self, docs: list[dict[str, Any]], parameters: dict[str, Any],
                  **kwargs: Any) -> None:
        time.sleep(float(parameters["seconds"]))


def test_health_check_timeouts_take_a_replica_out_only_when_they_persist(
    cluster: Cluster,
) -> None:
    own_loop = LoopThread()  # the worker must not share the head's event loop here
    w = WorkerServer(Hog(), host="127.0.0.1", port=0)
    own_loop.run(w.start())
    try:
        head = cluster.head(1, [(0, w)])  # checks every 0.05 s, each with a 0.1 s timeout
        _hog_and_watch(head)
    finally:
        own_loop.run(w.stop(0))
        own_loop.close()


def _hog_and_watch(head: HeadServer) -> None:
    states: list[str] = []
    watching = threading.Event()

    def watch() -> None:
        while watching.is_set():
            states.extend(r.state.value for r in head.pool)
            time.sleep(0.005)

    def hog_states(seconds: float) -> set[str]:
        states.clear()
        watching.set()
        t = threading.Thread(target=watch)
        t.start()
        try:
            with Client(addr(head)) as c:
                c.post("/hog", [{}], {"seconds": seconds}, timeout=10)
        finally:
            watching.clear()
            t.join()
        return set(states)

    assert hog_states(0.25) == {"ready"}  # one or two missed checks: still routable
    assert "unhealthy" in hog_states(1.0)  # a worker stuck for a second is routed around
    wait_until(lambda: [r.state.value for r in head.pool] == ["ready"], what="re-admitted")


def test_every_channel_to_a_pod_re_resolves_its_name_within_a_second(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker or a uses_before / uses_after pod that comes back on another IP under the
    same name (restarted, or recreated by heal) is found again by DNS within
    DNS_REFRESH_MS, not gRPC's default 30 s (measured on the real engine: 0.5-1 s against
    24-30 s; see tests/integration/test_rollout.py)."""
    import asyncio

    from orchestrator.runtime import head as head_module
    from orchestrator.runtime.config import HeadConfig

    opened: dict[str, dict[str, Any]] = {}
    real = grpc.aio.insecure_channel

    def spy(target: str, options: Any = None, **kwargs: Any) -> Any:
        opened[target] = dict(options or [])
        return real(target, options=options, **kwargs)

    monkeypatch.setattr(grpc.aio, "insecure_channel", spy)

    async def scenario() -> None:
        head = HeadServer(HeadConfig(shards=1, host="127.0.0.1", port=0,
                                     uses_before="before:50051", uses_after="after:50051"))
        head._upstream("before:50051")
        head._upstream("after:50051")
        await head.add_worker(0, "127.0.0.1:1", "w")  # nothing listens: added unhealthy
        for channel_target in ("before:50051", "after:50051", "127.0.0.1:1"):
            assert opened[channel_target]["grpc.dns_min_time_between_resolutions_ms"] \
                == head_module.DNS_REFRESH_MS <= 1000

    asyncio.run(scenario())
