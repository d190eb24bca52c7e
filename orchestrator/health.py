"""Readiness probes, run from the orchestrating process.

Readiness is probed over gRPC health from here, not by a `docker exec`
HEALTHCHECK in every container: an exec probe costs ~230 ms of host CPU per
tick with grpcio, which eight replicas at 1 s would turn into most of a core.
"""

from __future__ import annotations

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

from orchestrator.engine.base import ContainerEngine, ContainerInfo
from orchestrator.errors import HealthCheckTimeout, PodStartError, ResourceNotFound

LOG_TAIL = 20


class HealthProbe(Protocol):
    """Answers whether a pod serves. `address` is host:port."""

    def serving(self, address: str, service: str = "") -> bool: ...


class GrpcHealthProbe:
    """One `grpc.health.v1.Health/Check` call per probe, with a short deadline."""

    def __init__(self, timeout: float = 1.0) -> None:
        self.timeout = timeout

    def serving(self, address: str, service: str = "") -> bool:
        with grpc.insecure_channel(address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            try:
                reply = stub.Check(
                    health_pb2.HealthCheckRequest(service=service), timeout=self.timeout
                )
            except grpc.RpcError:
                return False
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


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
    max_interval: float = 0.25,
) -> ContainerInfo:
    """Poll until `ready(info)` holds. A container that exits fails at once.

    Raises:
        PodStartError: the container exited or vanished.
        HealthCheckTimeout: `timeout` seconds passed without readiness.
    """
    retrying = Retrying(
        stop=stop_after_delay(timeout),
        wait=wait_exponential(multiplier=0.02, max=max_interval),
        retry=retry_if_exception_type(_NotReady),
        reraise=False,
    )
    try:
        for attempt in retrying:
            with attempt:
                info = _inspect(engine, name)
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
    """host:port of a container on `network`, reachable from this host on Linux."""
    ip = info.ip_addresses.get(network)
    return f"{ip}:{port}" if ip else None
