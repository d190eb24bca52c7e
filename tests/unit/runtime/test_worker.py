"""The worker server, called directly by the client (no head)."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import grpc
import pytest

from orchestrator import (
    AsyncClient,
    Client,
    EndpointNotFound,
    Executor,
    ExecutorError,
    RequestError,
    ServiceUnavailable,
    requests,
)
from orchestrator.runtime import wire
from orchestrator.runtime.head import HeadServer
from orchestrator.runtime.worker import WorkerServer
from tests.unit.runtime.harness import ECHO, Cluster, addr, wait_until


class NoDefault(Executor):
    @requests(on=["/a", "/b"])
    def ab(self, docs: list[dict[str, Any]], endpoint: str, **kwargs: Any) -> list[dict[str, Any]]:
        return [{"endpoint": endpoint, "n": len(docs)}]

    @requests(on="/fail")
    def fail(self, docs: list[dict[str, Any]], **kwargs: Any) -> None:
        raise ValueError("bad doc on purpose")

    @requests(on="/wrong-type")
    def wrong(self, docs: list[dict[str, Any]], **kwargs: Any) -> Any:
        return {"not": "a list"}

    @requests(on="/async")
    async def asynchronous(self, docs: list[dict[str, Any]], parameters: dict[str, Any]) -> None:
        await asyncio.sleep(0)
        for d in docs:
            d["factor"] = parameters["factor"]


EXACT = [
    {"i": 1, "big": 2**62, "f": 1.5, "neg": -0.0, "b": True, "n": None, "s": "é ✓",
     "l": [1, 2.0, [3, {"x": None}]], "d": {"nested": {"deep": [False]}}},
    {},
]


def test_docs_round_trip_exactly_and_handler_sees_runtime_args(cluster: Cluster) -> None:
    w = cluster.worker(shard=2, replica=1, tag="v9")
    with Client(addr(w)) as c:
        out = c.post("/", [dict(d) for d in EXACT])  # default endpoint: unchanged
        tagged = c.post("/echo", [{"i": 1}])
    assert out == EXACT
    assert type(out[0]["i"]) is int and type(out[0]["l"][1]) is float
    assert tagged[0]["tag"] == "v9" and tagged[0]["shard"] == 2 and tagged[0]["replica"] == 1


def test_unknown_endpoint_without_default_is_endpoint_not_found(cluster: Cluster) -> None:
    w = cluster.serve_executor(NoDefault())
    with Client(addr(w)) as c:
        assert c.post("/b", [{}, {}]) == [{"endpoint": "/b", "n": 2}]
        with pytest.raises(EndpointNotFound, match=r"'/nope'.*no default endpoint"):
            c.post("/nope", [{}])


def test_executor_error_carries_details_and_worker_keeps_serving(cluster: Cluster) -> None:
    w = cluster.serve_executor(NoDefault())
    with Client(addr(w)) as c:
        with pytest.raises(ExecutorError) as info:
            c.post("/fail", [{}])
        assert c.post("/a", [{}]) == [{"endpoint": "/a", "n": 1}]
        with pytest.raises(ExecutorError, match="expected a list of dicts"):
            c.post("/wrong-type", [{}])
    err = info.value
    assert (err.executor, err.exc_type, err.remote_message) == (
        "NoDefault", "ValueError", "bad doc on purpose")
    assert "raise ValueError" in err.traceback


def test_async_handler_and_async_client(cluster: Cluster) -> None:
    w = cluster.serve_executor(NoDefault())

    async def go() -> list[dict[str, Any]]:
        async with AsyncClient(addr(w)) as c:
            assert await c.is_ready()
            return await c.post("/async", [{"i": 1}, {"i": 2}], {"factor": 3}, request_size=1)

    assert asyncio.run(go()) == [{"i": 1, "factor": 3}, {"i": 2, "factor": 3}]


def test_large_input_is_batched_and_streamed_in_order(cluster: Cluster) -> None:
    w = cluster.worker()
    docs = [{"i": i} for i in range(25)]
    with Client(addr(w)) as c:
        batches = list(c.stream("/echo", docs, request_size=10))
        assert [len(b) for b in batches] == [10, 10, 5]
        assert [d["i"] for d in c.post("/echo", docs, request_size=7)] == list(range(25))


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (b"\xff\xff\xff garbage", "malformed request body"),
        (b"\x1a\x03[1]", "array of objects"),
        (b"\x1a\x03{x:", "not valid UTF-8 JSON"),
        (b"\x12\x02[]\x1a\x02[]", "parameters must be a JSON object"),
    ],
)
def test_malformed_request_gets_bad_request_status(
    cluster: Cluster, body: bytes, needle: str
) -> None:
    w = cluster.worker()
    with grpc.insecure_channel(addr(w)) as channel:
        call = channel.unary_unary(wire.METHOD_CALL, request_serializer=wire.identity,
                                   response_deserializer=wire.identity)
        resp = wire.parse_response(call(body, timeout=5))
    assert resp.status.code == wire.BAD_REQUEST
    assert needle in resp.status.message


def test_oversized_message_is_refused_clearly(cluster: Cluster) -> None:
    w = cluster.worker(max_message_bytes=4096)
    with Client(addr(w)) as c, pytest.raises(RequestError, match="message too large"):
        c.post("/echo", [{"blob": "x" * 10_000}])


def test_per_call_timeout(cluster: Cluster) -> None:
    w = cluster.worker()
    with Client(addr(w)) as c:
        with pytest.raises(RequestError, match="no answer within the timeout"):
            c.post("/slow", [{}], {"delay": 5}, timeout=0.2)
        assert c.post("/echo", [{}], timeout=5)[0]["tag"] == "v1"


def test_unreachable_server_is_service_unavailable() -> None:
    from tests.support.ports import free_port

    with Client("127.0.0.1", free_port()) as c:
        assert not c.is_ready(timeout=0.5)
        with pytest.raises(ServiceUnavailable):
            c.post("/echo", [{}], timeout=5)


class Gate(Executor):
    """Blocks each call until released, and says when a call has started."""

    def __init__(self) -> None:
        super().__init__()
        self.started = threading.Event()
        self.release = threading.Event()

    @requests
    def hold(self, docs: list[dict[str, Any]], **kwargs: Any) -> None:
        self.started.set()
        self.release.wait(10)


def assert_graceful_stop(cluster: Cluster, gate: Gate, server: WorkerServer | HeadServer) -> None:
    """A call held by `gate` finishes while `server` (the worker serving `gate`, or a head
    in front of it) stops with a grace period; new calls are refused meanwhile."""
    results: list[Any] = []
    with Client(addr(server)) as c:
        t = threading.Thread(target=lambda: results.append(c.post("/x", [{"i": 7}], timeout=10)))
        t.start()
        assert gate.started.wait(10), "call never reached the executor"
        stopping = cluster.lt.submit(server.stop(grace=5))
        wait_until(lambda: not c.is_ready(timeout=0.2), what="server to refuse new calls")
        with pytest.raises(ServiceUnavailable):
            c.post("/echo", [{}], timeout=2)
        assert t.is_alive()  # still in flight while the server is stopping
        gate.release.set()
        t.join(10)
        stopping.result(10)
    assert results == [[{"i": 7}]]


def test_graceful_stop_finishes_in_flight_and_refuses_new(cluster: Cluster) -> None:
    gate = Gate()
    assert_graceful_stop(cluster, gate, cluster.serve_executor(gate))


def test_echo_file_is_loadable_by_path() -> None:
    # the conftest loads executors by file path; make sure the module path form works too
    from orchestrator.runtime.loader import load_executor

    assert type(load_executor(f"{ECHO}:Stamp")).__name__ == "Stamp"
