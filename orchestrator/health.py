"""Readiness probes, run from the orchestrating process.

Readiness is probed over gRPC health from here, not by a `docker exec`
HEALTHCHECK in every container: an exec probe costs ~230 ms of host CPU per
tick with grpcio, which eight replicas at 1 s would turn into most of a core.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Protocol

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tenacity import (
    RetryError,
    Retrying,
    retry_if_exception_type,
    stop_after_delay,
    wait_exponential,
)

from orchestrator.client import sync_channel
from orchestrator.engine.base import ContainerEngine, ContainerInfo
from orchestrator.errors import HealthCheckTimeout, PodStartError, ResourceNotFound
from orchestrator.tls import ClientTLS

LOG_TAIL = 20


class HealthProbe(Protocol):
    """Answers whether a pod serves. `address` is host:port."""

    def serving(self, address: str, service: str = "") -> bool: ...

    def answers(self, address: str) -> bool:
        """The server is up (it answers health checks), serving or not."""

    def close_address(self, address: str) -> None:
        """Forget a pod that is gone."""

    def close(self) -> None: ...


class GrpcHealthProbe:
    """`grpc.health.v1.Health/Check` with a short deadline, over one cached channel per
    address. Channels reconnect fast (tens of ms, not gRPC's default 1 s backoff), so
    a pod is seen SERVING within one poll interval of its server starting. With `tls`,
    every channel speaks TLS (a head serving TLS: see `Actuator.head_probe`)."""

    OPTIONS = (
        ("grpc.initial_reconnect_backoff_ms", 20),
        ("grpc.min_reconnect_backoff_ms", 20),
        ("grpc.max_reconnect_backoff_ms", 100),
        ("grpc.enable_retries", 0),
    )

    def __init__(self, timeout: float = 1.0, tls: ClientTLS | None = None) -> None:
        self.timeout = timeout
        self.tls = tls
        self._channels: dict[str, grpc.Channel] = {}
        self._lock = threading.Lock()

    def _stub(self, address: str) -> health_pb2_grpc.HealthStub:
        with self._lock:
            channel = self._channels.get(address)
            if channel is None:
                channel = sync_channel(address, self.OPTIONS, self.tls)
                self._channels[address] = channel
        return health_pb2_grpc.HealthStub(channel)

    def status(self, address: str, service: str = "") -> int | None:
        """The health status code, or None when nothing answers."""
        try:
            reply = self._stub(address).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=self.timeout
            )
        except grpc.RpcError:
            return None
        return int(reply.status)

    def serving(self, address: str, service: str = "") -> bool:
        return bool(self.status(address, service) == health_pb2.HealthCheckResponse.SERVING)

    def answers(self, address: str) -> bool:
        """The server is up, whatever it says about its readiness."""
        return self.status(address) is not None

    def close_address(self, address: str) -> None:
        """Close the channel to a pod that is gone."""
        with self._lock:
            channel = self._channels.pop(address, None)
        if channel is not None:
            channel.close()

    def close(self) -> None:
        with self._lock:
            channels, self._channels = list(self._channels.values()), {}
        for channel in channels:
            channel.close()


class _NotReady(Exception):
    """Internal: the pod is alive but not serving yet (retried)."""


def log_tail(engine: ContainerEngine, name: str, lines: int = LOG_TAIL) -> str:
    try:
        return engine.logs(name, tail=lines).strip()
    except Exception:  # the logs are a courtesy in an error message, never the error
        return ""


def exited(info: ContainerInfo) -> bool:
    """True once a container is dead or crash-looping: waiting longer cannot help."""
    return info.status in ("exited", "dead") or info.restart_count > 0 \
        or info.status == "restarting"


def pod_failure(engine: ContainerEngine, info: ContainerInfo) -> PodStartError:
    tail = log_tail(engine, info.name)
    code = info.exit_code
    message = f"pod {info.name} exited with code {code} while starting"
    if info.oom_killed:
        message += " (killed: out of memory)"
    if tail:
        message += f"; last log lines:\n{tail}"
    return PodStartError(message, pod=info.name, exit_code=code, log_tail=tail)


def wait_ready(
    engine: ContainerEngine,
    name: str,
    ready: Callable[[ContainerInfo], bool],
    *,
    timeout: float,
    max_interval: float = 0.03,
    inspect_every: float = 0.5,
) -> ContainerInfo:
    """Poll until `ready(info)` holds. A container that exits fails within `inspect_every`.

    The readiness probe runs every poll (every `max_interval` at most); the engine is
    asked for the container's state only every `inspect_every` seconds, since an
    inspect costs the engine far more than a refused health check costs anyone: with 16
    pods starting at once, 0.1 s meant 160 inspects a second, on the engine that is busy
    starting them.

    Raises:
        PodStartError: the container exited or vanished.
        HealthCheckTimeout: `timeout` seconds passed without readiness.
    """
    retrying = Retrying(
        stop=stop_after_delay(timeout),
        wait=wait_exponential(multiplier=0.01, max=max_interval),
        retry=retry_if_exception_type(_NotReady),
        reraise=False,
    )
    info: ContainerInfo | None = None
    inspected = 0.0
    try:
        for attempt in retrying:
            with attempt:
                if info is None or time.monotonic() - inspected >= inspect_every:
                    info, inspected = _inspect(engine, name), time.monotonic()
                    if exited(info):
                        raise pod_failure(engine, info)
                if not info.running or not ready(info):
                    raise _NotReady(name)
                return info
    except RetryError:
        pass
    tail = log_tail(engine, name)
    message = f"pod {name} did not report SERVING within {timeout:g}s"
    if tail:
        message += f"; last log lines:\n{tail}"
    raise HealthCheckTimeout(message, pod=name, timeout=timeout, log_tail=tail)


def _inspect(engine: ContainerEngine, name: str) -> ContainerInfo:
    try:
        return engine.inspect_container(name)
    except ResourceNotFound as exc:
        raise PodStartError(f"pod {name} disappeared while starting", pod=name) from exc


def container_address(info: ContainerInfo, network: str, port: int) -> str | None:
    """host:port of a container on `network`, reachable from this host on Linux; on an
    engine of several nodes (Swarm), whose overlay this process is not on, the port the pod
    publishes on its node."""
    ip = info.ip_addresses.get(network)
    if ip:
        return f"{ip}:{port}"
    published = info.ports.get(port) if info.node else None
    return f"{published[0]}:{published[1]}" if published else None
