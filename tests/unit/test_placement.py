"""self_container over the in-memory engine: the engine decides, not /.dockerenv."""

from __future__ import annotations

import pytest

from orchestrator.engine.base import ContainerSpec
from orchestrator.engine.memory import MemoryEngine
from orchestrator.placement import own_container, self_container

MANAGED = {"orchestrator.managed": "true"}


def engine_with_pods() -> MemoryEngine:
    engine = MemoryEngine()
    engine.add_image("img:1")
    engine.create_network("net", labels=MANAGED)
    engine.run_container(ContainerSpec(name="web", image="img:1", labels=MANAGED,
                                       network="net", hostname="web"))
    # Host networking: no address of its own, and the host's name.
    engine.run_container(ContainerSpec(name="hostnet", image="img:1", labels=MANAGED,
                                       hostname="vm", network="host"))
    return engine


def test_no_container_matches_the_host() -> None:
    assert self_container(engine_with_pods(), hostname="vm") is None


def test_a_container_is_found_by_hostname_or_short_id() -> None:
    engine = engine_with_pods()
    web = engine.inspect_container("web")
    by_name = self_container(engine, hostname="web")
    by_id = self_container(engine, hostname=web.id[:12])
    assert by_name is not None and by_name.id == web.id
    assert by_id is not None and by_id.id == web.id


def test_a_stopped_container_is_not_us() -> None:
    engine = engine_with_pods()
    engine.stop_container("web", grace=0)
    assert self_container(engine, hostname="web") is None


def test_own_container_is_looked_up_once_per_engine_then_read_fresh(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    engine = engine_with_pods()
    job = engine.add_unmanaged_container("ci-job", "img:1")
    monkeypatch.setattr("orchestrator.placement.socket.gethostname", lambda: job[:12])
    first = own_container(engine)
    assert first is not None and first.id == job and "net" not in first.ip_addresses
    engine.connect_network("net", job)
    monkeypatch.setattr("orchestrator.placement.socket.gethostname", lambda: "elsewhere")
    again = own_container(engine)  # the id is remembered, the networks are current
    assert again is not None and again.id == job and again.ip_addresses["net"]
    assert own_container(engine_with_pods()) is None  # another engine: asked afresh
