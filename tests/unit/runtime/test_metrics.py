"""The head's Prometheus metrics: GET /metrics (HTTP/1.1) on the same port as gRPC."""

from __future__ import annotations

import socket
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from orchestrator import Client, ServiceUnavailable
from orchestrator.control import HeadControl
from orchestrator.runtime.config import PollingPolicy
from tests.unit.runtime.harness import TOKEN, Cluster, addr, wait_until

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def get(port: int, path: str) -> tuple[bytes, bytes]:
    """(status line and headers, body) of a plain HTTP/1.1 GET."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: head\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return head, body


def scrape(port: int) -> Samples:
    head, body = get(port, "/metrics")
    assert head.startswith(b"HTTP/1.1 200 OK"), head
    assert b"Content-Type: text/plain; version=0.0.4" in head
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(body.decode())
            for s in family.samples}


def value(samples: Samples, name: str, **labels: Any) -> float:
    return samples[(name, frozenset((k, str(v)) for k, v in labels.items()))]


@pytest.mark.parametrize("polling", ["ANY", "ALL"])  # ANY: fast path; ALL: grpcio path
def test_metrics_count_what_the_head_answered(cluster: Cluster, polling: str) -> None:
    workers = [cluster.worker(replica=0), cluster.worker(replica=1)]
    head = cluster.head(1, [(0, w) for w in workers], polling=PollingPolicy.parse(polling),
                        name="h1")
    with Client(addr(head)) as client, HeadControl(addr(head), TOKEN, timeout=5) as ctl:
        wait_until(lambda: {w.state for w in ctl.list_workers()} == {"ready"},
                   what="both replicas ready")
        for i in range(10):
            client.post("/echo", [{"i": i}], timeout=5)
        m = scrape(head.port)
        assert value(m, "orchestrator_requests_total", head="h1", code="OK") == 10
        assert value(m, "orchestrator_request_duration_seconds_count", head="h1") == 10
        assert value(m, "orchestrator_request_duration_seconds_bucket", head="h1",
                     le="+Inf") == 10
        assert value(m, "orchestrator_head_serving", head="h1") == 1
        served = []
        for w in workers:
            key = {"head": "h1", "shard": 0, "address": addr(w), "pod": ""}
            served.append(value(m, "orchestrator_replica_requests_total", outcome="served",
                                **key))
            assert value(m, "orchestrator_replica_requests_total", outcome="failed",
                         **key) == 0
            assert value(m, "orchestrator_replica_ready", **key) == 1
            assert value(m, "orchestrator_replica_in_flight", **key) == 0
        assert sum(served) == 10 and min(served) > 0

        for w in workers:
            cluster.stop(w)
        wait_until(lambda: not client.is_ready(timeout=1), what="the head to lose its shard")
        with pytest.raises(ServiceUnavailable):
            client.post("/echo", [{}], timeout=5)
        m = scrape(head.port)
        assert value(m, "orchestrator_requests_total", head="h1", code="UNAVAILABLE") == 1
        assert value(m, "orchestrator_head_serving", head="h1") == 0


def test_other_paths_are_404_and_grpc_still_shares_the_port(cluster: Cluster) -> None:
    head = cluster.head(1, [(0, cluster.worker())])
    status, body = get(head.port, "/")
    assert status.startswith(b"HTTP/1.1 404") and b"GET /metrics" in body
    with Client(addr(head)) as client:
        wait_until(lambda: client.is_ready(timeout=1), what="head ready")
        assert client.post("/echo", [{}], timeout=5)[0]["tag"] == "v1"
