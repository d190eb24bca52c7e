"""Seed parity on the real engine: `noblock_on_start` (a pod that never gets ready), a
Namespace built with Jina's option names, `head_port` known before start, `needs`."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

import pytest

from orchestrator.deployment import Deployment
from orchestrator.engine.cleanup import list_owned
from orchestrator.errors import HealthCheckTimeout, SpecError
from orchestrator.spec import CONTAINER_PORT
from tests.support.paths import ECHO, TEST_EXECUTORS

if TYPE_CHECKING:
    from orchestrator.engine.docker_engine import DockerEngine

pytestmark = pytest.mark.integration


def jina_parser() -> argparse.ArgumentParser:
    """Options of Jina's `jina deployment` parser, with Jina's names, types and defaults
    (read from jina/parsers/orchestrate/*.py; jina itself is not installed here)."""
    p = argparse.ArgumentParser(prog="jina deployment")
    kv: dict[str, Any] = {"type": str, "default": None}
    p.add_argument("--name", type=str, default="executor")
    p.add_argument("--workspace", type=str, default=None)
    p.add_argument("--log-config", type=str, default="default")
    p.add_argument("--quiet", action="store_true", default=False)
    p.add_argument("--quiet-error", action="store_true", default=False)
    p.add_argument("--workspace-id", type=str, default="a1b2c3")
    p.add_argument("--extra-search-paths", type=str, nargs="*", default=[])
    p.add_argument("--timeout-ctrl", type=int, default=60)
    p.add_argument("--k8s-namespace", type=str)
    p.add_argument("--polling", type=str, default="ANY")
    p.add_argument("--shards", type=int, default=1)
    p.add_argument("--replicas", type=int, default=1)
    p.add_argument("--uses", type=str, default="BaseExecutor")
    p.add_argument("--uses-with", **kv)
    p.add_argument("--uses-metas", **kv)
    p.add_argument("--uses-requests", **kv)
    p.add_argument("--uses-dynamic-batching", **kv)
    p.add_argument("--py-modules", type=str, nargs="*")
    p.add_argument("--output-array-type", type=str, default=None)
    p.add_argument("--exit-on-exceptions", type=str, nargs="*", default=[])
    p.add_argument("--no-reduce", "--disable-reduce", action="store_true", default=False)
    p.add_argument("--grpc-server-options", **kv)
    p.add_argument("--entrypoint", type=str)
    p.add_argument("--docker-kwargs", **kv)
    p.add_argument("--volumes", type=str, nargs="*")
    p.add_argument("--gpus", type=str)
    p.add_argument("--disable-auto-volume", action="store_true", default=False)
    p.add_argument("--host", type=str, default="0.0.0.0")
    p.add_argument("--runtime-cls", type=str, default="WorkerRuntime")
    p.add_argument("--timeout-ready", type=int, default=600000)
    p.add_argument("--env", action=KeyValue, nargs="*")
    p.add_argument("--env-from-secret", **kv)
    p.add_argument("--shard-id", type=int, default=0)
    p.add_argument("--pod-role", type=str, default="WORKER")
    p.add_argument("--noblock-on-start", action="store_true", default=False)
    p.add_argument("--floating", action="store_true", default=False)
    p.add_argument("--reload", action="store_true", default=False)
    p.add_argument("--install-requirements", action="store_true", default=False)
    p.add_argument("--port", "--port-expose", "--port-in", "--ports", type=int, nargs="+",
                   default=None)  # Jina draws a random free port here; we reserve one
    p.add_argument("--monitoring", action="store_true", default=False)
    p.add_argument("--port-monitoring", type=int, nargs="+", default=[61422])
    p.add_argument("--retries", type=int, default=-1)
    p.add_argument("--tracing", action="store_true", default=False)
    for name in ("traces", "metrics"):
        p.add_argument(f"--{name}-exporter-host", type=str, default=None)
        p.add_argument(f"--{name}-exporter-port", type=int, default=None)
    p.add_argument("--metrics", action="store_true", default=False)
    p.add_argument("--force-update", "--force", action="store_true", default=False)
    p.add_argument("--prefer-platform", type=str)
    p.add_argument("--compression", choices=["NoCompression", "Deflate", "Gzip"])
    p.add_argument("--uses-before-address", type=str)
    p.add_argument("--uses-after-address", type=str)
    p.add_argument("--connection-list", type=str)
    p.add_argument("--uses-before", type=str)
    p.add_argument("--uses-after", type=str)
    p.add_argument("--when", **kv)
    p.add_argument("--secrets", **kv)
    p.add_argument("--external", action="store_true", default=False)
    p.add_argument("--grpc-metadata", **kv)
    p.add_argument("--deployment-role", type=str)
    p.add_argument("--tls", action="store_true", default=False)
    return p


class KeyValue(argparse.Action):
    """Jina's KVAppendAction: `--env A=1 B=2` -> {"A": "1", "B": "2"}."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        pairs = dict(v.split("=", 1) for v in values or [])
        setattr(namespace, self.dest, {**(getattr(namespace, self.dest) or {}), **pairs})


def test_a_namespace_from_jinas_option_names_runs(
        own_image: str, dep_name: str, docker_engine: DockerEngine) -> None:
    ns = jina_parser().parse_args([
        "--name", dep_name, "--uses", "Echo", "--py-modules", ECHO, "--replicas", "2",
        "--timeout-ready", "90000", "--env", "GREETING=hi", "--host", "127.0.0.1",
        "--polling", "ALL",
    ])
    with Deployment(ns, image=own_image) as dep:
        assert (dep.spec.replicas, dep.spec.timeout_ready, dep.spec.polling) == (2, 90.0, "ALL")
        assert dep.spec.env == {"GREETING": "hi"} and str(dep.spec.uses) == f"{ECHO}:Echo"
        assert {d["tag"] for d in dep.post("/echo", docs=[{}, {}])} == {"v1"}
        assert dep.is_ready and dep.needs == set()
    with pytest.raises(SpecError) as info:  # a Jina option that means nothing here
        Deployment(jina_parser().parse_args(["--name", dep_name, "--uses", f"{ECHO}:Echo",
                                             "--docker-kwargs", "privileged"]),
                   image=own_image)
    assert info.value.field == "docker_kwargs" and "Jina's docker_kwargs" in str(info.value)
    assert not list_owned(docker_engine, dep_name)


def test_head_port_before_start_is_the_published_one(
        own_image: str, dep_name: str, docker_engine: DockerEngine) -> None:
    dep = Deployment(name=dep_name, uses=f"{ECHO}:Echo", image=own_image,
                     needs={"upstream"})
    before = dep.head_port
    assert before > 0 and dep.address == f"127.0.0.1:{before}"
    assert dep.needs == {"upstream"}
    with dep:
        head = docker_engine.inspect_container(dep.head_args.name)
        assert head.ports[CONTAINER_PORT] == ("127.0.0.1", before)
        assert dep.head_port == before and dep.post("/echo", docs=[{}])


def test_noblock_start_of_a_pod_that_never_gets_ready(
        own_image: str, dep_name: str, docker_engine: DockerEngine) -> None:
    dep = Deployment(name=dep_name, uses=f"{TEST_EXECUTORS / 'hang.py'}:NeverReady",
                     image=own_image, noblock_on_start=True, timeout_ready=8,
                     stop_grace=0)
    dep.start()  # returns once the containers exist
    try:
        created = list_owned(docker_engine, dep_name).names()
        assert len([n for n in created if n.startswith(dep_name)]) >= 2  # head + worker
        assert not dep.is_ready
        with pytest.raises(HealthCheckTimeout) as info:
            dep.wait_start_success()
        assert f"{dep_name}-s0-r0" in str(info.value)
        assert not dep.is_ready
        assert not list_owned(docker_engine, dep_name)  # nothing left
    finally:
        dep.close()


def test_noblock_start_then_wait_gives_a_ready_deployment(
        own_image: str, dep_name: str) -> None:
    with Deployment(name=dep_name, uses=f"{ECHO}:Echo", image=own_image, replicas=2,
                    noblock_on_start=True) as dep:
        dep.wait_start_success()
        assert dep.is_ready
        assert len({d["pod"] for _ in range(6) for d in dep.post("/echo", docs=[{}])}) == 2


def test_gpus_on_an_engine_without_gpus_is_a_clear_error_before_anything_starts(
        own_image: str, dep_name: str, docker_engine: DockerEngine,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """No machine here has a GPU: this is the only GPU behaviour the real engine can show."""
    monkeypatch.delenv("ORCHESTRATOR_GPUS", raising=False)
    assert docker_engine.gpu_devices() == []
    for fields in ({"gpus": 1}, {"env": {"CUDA_VISIBLE_DEVICES": "RR"}}):
        dep = Deployment(name=dep_name, uses=f"{ECHO}:Echo", image=own_image, **fields)
        with pytest.raises(SpecError) as info:
            dep.start()
        assert "has none" in str(info.value) and "nothing was started" in str(info.value)
        assert info.value.field in ("gpus", "env.CUDA_VISIBLE_DEVICES")
        assert not list_owned(docker_engine, dep_name)
        dep.close()
