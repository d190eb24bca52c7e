"""MemoryEngine: fault injection, fake time and the command model (no Docker)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from orchestrator.engine.base import ContainerEngine, ContainerSpec, PortBinding
from orchestrator.engine.memory import FakeClock, MemoryEngine
from orchestrator.errors import (
    EngineError,
    EngineUnavailable,
    ImageBuildError,
    ImageNotFound,
    PortAllocated,
    ResourceConflict,
)

IMAGE = "app:1"
MANAGED = {"orchestrator.managed": "true", "orchestrator.deployment": "d"}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def engine(clock: FakeClock) -> MemoryEngine:
    return MemoryEngine(clock=clock, images={IMAGE: {"v": "1"}})


def spec(name: str, *command: str, **fields: Any) -> ContainerSpec:
    return ContainerSpec(name=name, image=IMAGE, command=command, labels=MANAGED, **fields)


def test_it_satisfies_the_protocol(engine: MemoryEngine) -> None:
    assert isinstance(engine, ContainerEngine)
    protocol = {n for n in vars(ContainerEngine) if not n.startswith("_")}
    assert protocol <= set(dir(engine))


def test_exit_after_start_with_code_and_logs(engine: MemoryEngine) -> None:
    engine.faults.exit_after_start("crash*", code=7, logs="boom\nbad config")

    info = engine.run_container(spec("crash-1"))

    assert (info.status, info.exit_code) == ("exited", 7)
    assert engine.logs("crash-1") == "boom\nbad config\n"
    die = [e for e in engine.events(until=engine.clock.now()) if e.action == "die"]
    assert [(e.name, e.exit_code) for e in die] == [("crash-1", 7)]
    assert engine.run_container(spec("other")).running


def test_delayed_exit_follows_the_fake_clock(engine: MemoryEngine, clock: FakeClock) -> None:
    engine.faults.exit_after_start(IMAGE, code=3, after=5.0)
    start = clock.now()

    assert engine.run_container(spec("late")).running
    clock.advance(4.9)
    assert engine.inspect_container("late").running
    assert engine.wait_container("late") == 3
    assert clock.now() == pytest.approx(start + 5.0)


def test_never_healthy(engine: MemoryEngine, clock: FakeClock) -> None:
    engine.faults.never_healthy("sick")
    engine.run_container(spec("sick"))
    engine.run_container(spec("fine"))
    clock.advance(3600)

    assert engine.inspect_container("sick").health == "unhealthy"
    assert engine.inspect_container("sick").running
    assert engine.inspect_container("fine").health == "healthy"


def test_slow_start_is_fake_time_not_a_sleep(engine: MemoryEngine, clock: FakeClock) -> None:
    engine.faults.slow_start("slow", 30.0)
    start = clock.now()

    info = engine.run_container(spec("slow"))

    assert clock.now() == start  # nothing waited
    assert info.health == "starting"
    clock.advance(29.0)
    assert engine.inspect_container("slow").health == "starting"
    clock.advance(1.0)
    assert engine.inspect_container("slow").health == "healthy"


def test_create_failure_creates_nothing(engine: MemoryEngine) -> None:
    engine.faults.create_failure("app:*", ResourceConflict("injected"))
    with pytest.raises(ResourceConflict, match="injected"):
        engine.run_container(spec("x"))
    assert engine.list_containers({}) == []
    engine.faults.clear()
    engine.faults.create_failure("x")
    with pytest.raises(EngineError, match="injected create failure"):
        engine.run_container(spec("x"))


def test_build_failure_and_unknown_base(engine: MemoryEngine, tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text(f"FROM {IMAGE}\n")
    engine.faults.build_failure("bad:*", log="step 3: pip install failed")
    with pytest.raises(ImageBuildError, match="pip install failed"):
        engine.build_image(tmp_path, tag="bad:1")
    (tmp_path / "Dockerfile").write_text("FROM nowhere:1\n")
    with pytest.raises(ImageBuildError, match="nowhere"):
        engine.build_image(tmp_path, tag="good:1")
    assert not engine.image_exists("bad:1") and not engine.image_exists("good:1")


def test_built_image_inherits_and_adds_labels(engine: MemoryEngine, tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text(f'FROM {IMAGE}\nLABEL a=1 "b=two words"\n')
    engine.build_image(tmp_path, tag="child", labels={"c": "3"})
    assert engine.image_labels("child:latest") == {"v": "1", "a": "1", "b": "two words", "c": "3"}


def test_pull_comes_from_the_registry_dict(engine: MemoryEngine) -> None:
    with pytest.raises(ImageNotFound):
        engine.pull_image("python:3.11-slim")
    engine.registry["python:3.11-slim"] = {"os": "debian"}
    engine.pull_image("python:3.11-slim")
    assert engine.image_labels("python:3.11-slim") == {"os": "debian"}


def _every_call(engine: MemoryEngine, tmp_path: Path) -> list[Callable[[], object]]:
    return [
        engine.ping, engine.engine_id,
        lambda: engine.image_exists(IMAGE), lambda: engine.image_labels(IMAGE),
        lambda: engine.pull_image(IMAGE), lambda: engine.tag_image(IMAGE, "t"),
        lambda: engine.build_image(tmp_path, tag="t"),
        lambda: engine.import_image(tmp_path / "x.tar", tag="t"),
        lambda: engine.remove_image(IMAGE),
        lambda: engine.create_network("n", labels=MANAGED), lambda: engine.remove_network("n"),
        lambda: engine.list_networks({}), lambda: engine.run_container(spec("c")),
        lambda: engine.inspect_container("a"), lambda: engine.list_containers({}),
        lambda: engine.logs("a"), lambda: engine.follow_logs("a"),
        lambda: engine.wait_container("a"), lambda: engine.stop_container("a"),
        lambda: engine.kill_container("a"), lambda: engine.remove_container("a"),
        lambda: engine.events(),
    ]


def test_engine_down_fails_every_call(engine: MemoryEngine, tmp_path: Path) -> None:
    engine.run_container(spec("a"))
    engine.faults.engine_down = True
    calls = _every_call(engine, tmp_path)
    for call in calls:
        with pytest.raises(EngineUnavailable):
            call()
    engine.faults.engine_down = False
    assert engine.inspect_container("a").running


def test_wait_timeout_advances_fake_time(engine: MemoryEngine, clock: FakeClock) -> None:
    engine.run_container(spec("server"))
    start = clock.now()
    with pytest.raises(TimeoutError):
        engine.wait_container("server", timeout=2.5)
    assert clock.now() == pytest.approx(start + 2.5)


def test_follow_logs_in_fake_time(engine: MemoryEngine, clock: FakeClock) -> None:
    start = clock.now()
    engine.run_container(spec("s", "sh", "-c", "echo a; sleep 10; echo b; exit 2"))
    assert engine.logs("s") == "a\n"
    assert [line.text for line in engine.follow_logs("s")] == ["a", "b"]
    assert clock.now() == pytest.approx(start + 10)
    assert engine.inspect_container("s").exit_code == 2


def test_sigterm_is_ignored_by_pid1_unless_trapped(engine: MemoryEngine) -> None:
    engine.run_container(spec("plain", "sleep", "300"))
    engine.run_container(spec("trapper", "sh", "-c", "trap 'exit 5' TERM; sleep 300 & wait"))

    engine.kill_container("plain", signal="SIGTERM")
    engine.kill_container("trapper", signal="TERM")

    assert engine.inspect_container("plain").running
    assert engine.inspect_container("trapper").exit_code == 5
    engine.stop_container("plain", grace=1)
    assert engine.inspect_container("plain").exit_code == 137


def test_host_ports(engine: MemoryEngine) -> None:
    auto = engine.run_container(spec("a", ports=(PortBinding(80), PortBinding(81))))
    assert auto.ports[80][1] != auto.ports[81][1]
    fixed = engine.run_container(spec("b", ports=(PortBinding(80, "0.0.0.0", 9000),)))
    assert fixed.ports == {80: ("0.0.0.0", 9000)}
    with pytest.raises(PortAllocated) as caught:
        engine.run_container(spec("c", ports=(PortBinding(80, "127.0.0.1", 9000),)))
    assert caught.value.port == 9000
    engine.stop_container("b", grace=0)  # a stopped container frees its port
    assert engine.run_container(spec("c", ports=(PortBinding(80, "127.0.0.1", 9000),))).running


def test_images_without_healthcheck_report_no_health(clock: FakeClock) -> None:
    engine = MemoryEngine(clock=clock, default_health=None, images={IMAGE: {}})
    assert engine.run_container(spec("a")).health is None


def test_same_operations_give_same_ids(clock: FakeClock) -> None:
    def run() -> list[str]:
        engine = MemoryEngine(clock=FakeClock(), images={IMAGE: {}})
        return [engine.run_container(spec(n)).id for n in ("a", "b")]

    assert run() == run()
