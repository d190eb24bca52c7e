"""Seed parity on the in-memory engine: `needs` as an attribute, `args` with Jina's option
names, `noblock_on_start`, and `head_port` known from construction. The same run on the
real engine in tests/integration/test_parity.py."""

from __future__ import annotations

import argparse
import uuid
from pathlib import Path
from typing import Any

import pytest

from orchestrator import labels as L
from orchestrator.deployment import Deployment
from orchestrator.engine.memory import MemoryEngine
from orchestrator.errors import HealthCheckTimeout, PodStartError, SpecError
from tests.support.fakes import EngineProbe, FakeHeads

IMAGE = "orchestrator-runtime:test"
ECHO = str(Path(__file__).resolve().parents[2] / "executors" / "echo.py")


@pytest.fixture
def engine() -> MemoryEngine:
    engine = MemoryEngine()
    engine.add_image(IMAGE)
    return engine


def make(engine: MemoryEngine, args: Any = None, **fields: Any) -> Deployment:
    fields.setdefault("name", f"p{uuid.uuid4().hex[:8]}")
    fields.setdefault("image", IMAGE)
    return Deployment(args, engine=engine, probe=EngineProbe(engine),
                      connect=FakeHeads(engine).connect, reaper=False, **fields)


def test_needs_is_a_set_attribute(engine: MemoryEngine) -> None:
    dep = make(engine, uses="pkg.m:E", needs=["b", "a"])
    assert dep.needs == {"a", "b"} and isinstance(dep.needs, set)
    dep.needs = {"c"}
    assert dep.needs == {"c"} and dep.deployments[0]["needs"] == ["c"]
    with pytest.raises(SpecError) as info:
        dep.needs = {"Not A Name"}
    assert info.value.field == "needs"
    dep.close()


def test_args_speak_jinas_names_and_units_and_keywords_win(engine: MemoryEngine) -> None:
    dep = make(engine, {"uses": "Echo", "py_modules": [ECHO], "timeout_ready": 2500,
                        "replicas": 2, "port_expose": 50911, "log_config": "default"},
               replicas=3)
    assert str(dep.spec.uses) == f"{ECHO}:Echo" and dep.spec.timeout_ready == 2.5
    assert (dep.spec.replicas, dep.head_port) == (3, 50911)
    dep.close()


def test_a_jina_option_with_no_meaning_here_is_named(engine: MemoryEngine) -> None:
    ns = argparse.Namespace(uses="pkg.m:E", docker_kwargs={"privileged": True})
    with pytest.raises(SpecError) as info:
        make(engine, ns)
    assert info.value.field == "docker_kwargs" and "Jina's docker_kwargs" in str(info.value)


def test_head_port_is_reserved_at_construction_and_published_at_start(
        engine: MemoryEngine) -> None:
    dep = make(engine, uses="pkg.m:E")
    port = dep.head_port
    assert port > 0 and dep.port == port
    with dep:
        head = engine.inspect_container(dep.head_args.name)
        assert head.ports[50051][1] == port == dep.head_port


def test_noblock_start_returns_created_and_wait_start_success_finishes(
        engine: MemoryEngine) -> None:
    dep = make(engine, uses="pkg.m:E", replicas=2, noblock_on_start=True)
    engine.faults.slow_start(f"{dep.name}-s0-r1-*", 0.5)
    dep.start()
    assert len(engine.list_containers(L.for_deployment(dep.name))) == 3
    assert not dep.is_ready  # replica 1 still reports `starting`
    dep.wait_start_success()
    assert dep.is_ready
    dep.close()
    assert engine.list_containers(L.managed()) == []


def test_noblock_start_of_a_pod_that_never_serves_fails_in_wait_and_leaves_nothing(
        engine: MemoryEngine) -> None:
    dep = make(engine, uses="pkg.m:E", noblock_on_start=True, timeout_ready=0.5)
    engine.faults.never_healthy(f"{dep.name}-s0-r0-*")
    dep.start()
    assert not dep.is_ready
    with pytest.raises((HealthCheckTimeout, PodStartError), match=f"{dep.name}-s0-r0"):
        dep.wait_start_success()
    assert engine.list_containers(L.managed()) == []
    assert engine.list_networks(L.managed()) == []
    dep.close()
