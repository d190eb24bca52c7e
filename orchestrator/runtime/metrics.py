"""The head's Prometheus metrics: `GET /metrics` on its one port (HTTP/1.1, next to gRPC).

Per request the head only bumps plain counters on its event loop (no locks, no client
library on the hot path); the text is built when Prometheus scrapes, from those counters
and the replica table.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator
from typing import Any

from orchestrator.runtime.pool import Pool, State

BOUNDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
          10.0, 30.0)
"""Upper bounds (seconds) of the request duration histogram's buckets."""

GRPC_CODES = ("OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED",
              "NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED",
              "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL",
              "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class RequestStats:
    """Data-plane requests the head answered: by gRPC status, and how long they took."""

    __slots__ = ("buckets", "by_code", "count", "replaced", "total")

    def __init__(self) -> None:
        self.buckets = [0] * (len(BOUNDS) + 1)  # the last one is +Inf
        self.by_code: dict[int, int] = {}
        self.count = 0
        self.total = 0.0
        self.replaced: dict[tuple[str, str], int] = {}  # (role, reason) -> pods replaced

    def note_replaced(self, role: str, reason: str) -> None:
        """The orchestrator's healer replaced a pod (told over the control channel)."""
        key = (role[:32] or "?", reason[:32] or "?")
        if key in self.replaced or len(self.replaced) < 64:  # a bounded label set
            self.replaced[key] = self.replaced.get(key, 0) + 1

    def observe(self, seconds: float, code: int) -> None:
        """One request answered with gRPC status `code` after `seconds`."""
        self.buckets[bisect_left(BOUNDS, seconds)] += 1
        self.count += 1
        self.total += seconds
        self.by_code[code] = self.by_code.get(code, 0) + 1


def code_name(code: int) -> str:
    return GRPC_CODES[code] if 0 <= code < len(GRPC_CODES) else str(code)


class _Collector:
    """What prometheus_client's exposition asks of a registry: `collect()`."""

    def __init__(self, name: str, pool: Pool, stats: RequestStats, serving: bool) -> None:
        self.name, self.pool, self.stats, self.serving = name, pool, stats, serving

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        head = [self.name]
        requests = CounterMetricFamily(
            "orchestrator_requests", "Data-plane requests the head answered, by gRPC status",
            labels=["head", "code"])
        for code, n in sorted(self.stats.by_code.items()):
            requests.add_metric([*head, code_name(code)], n)
        yield requests
        cumulative, buckets = 0, []
        for bound, n in zip((*BOUNDS, float("inf")), self.stats.buckets, strict=True):
            cumulative += n
            buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
        duration = HistogramMetricFamily(
            "orchestrator_request_duration_seconds",
            "Time from a request's arrival at the head to its answer", labels=["head"])
        duration.add_metric(head, buckets, self.stats.total)
        yield duration
        serving = GaugeMetricFamily(
            "orchestrator_head_serving", "1 while every shard has a ready replica",
            labels=["head"])
        serving.add_metric(head, 1 if self.serving else 0)
        yield serving
        labels = ["head", "shard", "address", "pod"]
        done = CounterMetricFamily(
            "orchestrator_replica_requests", "Requests a replica finished, by outcome (a "
            "request its client cancelled counts as neither)", labels=[*labels, "outcome"])
        in_flight = GaugeMetricFamily(
            "orchestrator_replica_in_flight", "Requests a replica is serving now",
            labels=labels)
        ready = GaugeMetricFamily(
            "orchestrator_replica_ready", "1 while the head routes to the replica (0: "
            "unhealthy or draining)", labels=labels)
        for r in self.pool:
            key = [*head, str(r.shard), r.address, r.worker_id]
            done.add_metric([*key, "served"], r.served)
            done.add_metric([*key, "failed"], r.failed)
            in_flight.add_metric(key, r.outstanding)
            ready.add_metric(key, 1 if r.state is State.READY else 0)
        yield done
        yield in_flight
        yield ready
        replaced = CounterMetricFamily(
            "orchestrator_replacements", "Pods the orchestrator's healer replaced since "
            "this head started, by role and reason (gone, stopped, unhealthy)",
            labels=["head", "role", "reason"])
        for (role, reason), n in sorted(self.stats.replaced.items()):
            replaced.add_metric([*head, role, reason], n)
        yield replaced


def render(name: str, pool: Pool, stats: RequestStats, serving: bool) -> bytes:
    """The Prometheus text exposition of the head's metrics."""
    from prometheus_client import generate_latest

    return generate_latest(_Collector(name, pool, stats, serving))
