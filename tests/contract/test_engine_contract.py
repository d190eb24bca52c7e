"""One behaviour suite, run against MemoryEngine and the real Docker engine."""

from __future__ import annotations

import contextlib
import dataclasses
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator.engine.base import ContainerEngine, PortBinding
from orchestrator.engine.cleanup import list_owned, remove_owned
from orchestrator.engine.memory import MemoryEngine
from orchestrator.errors import (
    EngineUnavailable,
    ImageBuildError,
    ImageNotFound,
    NotManaged,
    PortAllocated,
    ResourceConflict,
    ResourceNotFound,
)
from tests.contract.conftest import Ours
from tests.support.images import TEST_IMAGE
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.contract, pytest.mark.timeout(60)]

SCRIPT = ("sh", "-c")
KILLED = 137  # 128 + SIGKILL: PID 1 ignores an untrapped SIGTERM, so stop ends in a kill


# -- containers -----------------------------------------------------------------------


def test_run_inspect_stop_remove(engine: ContainerEngine, ours: Ours) -> None:
    info = engine.run_container(ours.spec("a", hostname="pod-a"))

    assert info.running and info.status == "running"
    assert info.name == ours.name("a") and info.image == TEST_IMAGE
    assert info.labels == ours.labels()
    assert info.exit_code is None and info.started_at is not None
    assert info.hostname == "pod-a"
    assert engine.inspect_container(info.id).name == info.name
    assert engine.inspect_container(info.name).id == info.id

    engine.stop_container(info.name, grace=0)
    stopped = engine.inspect_container(info.id)
    assert stopped.status == "exited" and stopped.exit_code == KILLED

    engine.remove_container(info.name)
    with pytest.raises(ResourceNotFound):
        engine.inspect_container(info.id)
    engine.remove_container(info.name)  # idempotent
    engine.stop_container(info.name)  # missing: ignored


def test_stop_lets_a_trapping_process_exit_in_its_grace_period(
    engine: ContainerEngine, ours: Ours
) -> None:
    script = "trap 'exit 0' TERM; echo ready; sleep 300 & wait"
    info = engine.run_container(ours.spec("t", (*SCRIPT, script)))
    wait_until(lambda: "ready" in engine.logs(info.id), what="trap installed")

    engine.stop_container(info.id, grace=10)

    assert engine.inspect_container(info.id).exit_code == 0


def test_kill_then_kill_again_is_harmless(engine: ContainerEngine, ours: Ours) -> None:
    info = engine.run_container(ours.spec("k"))
    engine.kill_container(info.id)
    assert engine.wait_container(info.id, timeout=10) == KILLED
    engine.kill_container(info.id)  # not running any more: ignored
    assert engine.inspect_container(info.id).exit_code == KILLED


def test_exit_code_and_logs(engine: ContainerEngine, ours: Ours) -> None:
    info = engine.run_container(ours.spec("x", (*SCRIPT, "echo hello; echo world; exit 3")))

    assert engine.wait_container(info.id, timeout=10) == 3
    done = engine.inspect_container(info.id)
    assert (done.status, done.exit_code, done.running) == ("exited", 3, False)
    assert done.ports == {} and done.ip_addresses == {}
    assert engine.logs(info.id) == "hello\nworld\n"
    assert engine.logs(info.id, tail=1) == "world\n"
    timed = engine.log_lines(info.id)
    assert [line.text for line in timed] == ["hello", "world"]
    assert timed[0].time.tzinfo is not None and timed[0].time <= timed[1].time
    assert [line.text for line in engine.log_lines(info.id, tail=1)] == ["world"]


def test_follow_logs_yields_lines_until_the_container_stops(
    engine: ContainerEngine, ours: Ours
) -> None:
    script = "echo one; sleep 0.3; echo two; sleep 0.3; echo three"
    info = engine.run_container(ours.spec("f", (*SCRIPT, script)))

    followed = list(engine.follow_logs(info.id))
    assert [line.text for line in followed] == ["one", "two", "three"]
    assert [line.text for line in engine.follow_logs(info.id, tail=1)] == ["three"]
    # `since` starts at a line's own time (inclusive), for reading and following alike
    assert [line.text for line in engine.log_lines(info.id, since=followed[1].time)] == [
        "two", "three"]
    assert [line.text for line in engine.follow_logs(info.id, since=followed[1].time)] == [
        "two", "three"]


def test_missing_container_raises_resource_not_found(engine: ContainerEngine) -> None:
    missing = f"ct-missing-{uuid.uuid4().hex[:8]}"
    with pytest.raises(ResourceNotFound):
        engine.inspect_container(missing)
    with pytest.raises(ResourceNotFound):
        engine.logs(missing)


def test_list_containers_by_label(engine: ContainerEngine, ours: Ours) -> None:
    engine.run_container(ours.spec("w0", extra_labels={L_ROLE: "worker"}))
    engine.run_container(ours.spec("h", extra_labels={L_ROLE: "head"}))
    other = Ours(engine, ours.deployment + "-other")
    try:
        engine.run_container(other.spec("w0", extra_labels={L_ROLE: "worker"}))

        mine = engine.list_containers(ours.labels())
        workers = engine.list_containers(ours.labels(**{L_ROLE: "worker"}))

        assert [c.name for c in mine] == [ours.name("h"), ours.name("w0")]
        assert [c.name for c in workers] == [ours.name("w0")]
    finally:
        remove_owned(engine, other.deployment, grace=0)


def test_a_brief_listing_has_what_the_full_one_has_of_names_states_and_addresses(
    engine: ContainerEngine, ours: Ours
) -> None:
    net = engine.create_network(ours.name("net"), labels=ours.labels())
    engine.run_container(ours.spec("up", network=net.name, ports=(PortBinding(8080),)))
    down = engine.run_container(ours.spec("down", (*SCRIPT, "exit 3")))
    engine.wait_container(down.id, timeout=10)

    def seen(brief: bool) -> list[tuple[Any, ...]]:
        return [(c.id, c.name, c.image, dict(c.labels), c.status, dict(c.ip_addresses),
                 dict(c.ports))
                for c in engine.list_containers(ours.labels(), brief=brief)]

    full = seen(brief=False)
    assert seen(brief=True) == full
    assert [(name, status) for _, name, _, _, status, _, _ in full] == [
        (ours.name("down"), "exited"), (ours.name("up"), "running")]
    assert full[1][5][net.name] and full[1][6][8080][1] > 0
    remove_owned(engine, ours.deployment, grace=0)


# -- bad input ------------------------------------------------------------------------


def test_name_conflict(engine: ContainerEngine, ours: Ours) -> None:
    engine.run_container(ours.spec("dup"))
    with pytest.raises(ResourceConflict, match="dup"):
        engine.run_container(ours.spec("dup"))


def test_published_port_is_chosen_by_the_engine_and_read_back(
    engine: ContainerEngine, ours: Ours
) -> None:
    info = engine.run_container(ours.spec("p", ports=(PortBinding(8080),)))
    host_ip, host_port = info.ports[8080]
    assert host_ip == "127.0.0.1" and host_port > 0

    with pytest.raises(PortAllocated) as caught:
        engine.run_container(ours.spec("p2", ports=(PortBinding(8080, host_port=host_port),)))

    assert caught.value.port == host_port
    assert [c.name for c in engine.list_containers(ours.labels())] == [ours.name("p")]


def test_missing_image(engine: ContainerEngine, ours: Ours) -> None:
    spec = ours.spec("m")
    missing = f"orchestrator-test-missing-{uuid.uuid4().hex[:6]}:1"
    with pytest.raises(ImageNotFound) as caught:
        engine.run_container(dataclasses.replace(spec, image=missing))
    assert caught.value.image == missing
    assert engine.list_containers(ours.labels()) == []


def test_unmanaged_resources_are_refused(
    engine: ContainerEngine, unmanaged: tuple[str, str]
) -> None:
    container, network = unmanaged
    for touch in (engine.stop_container, engine.kill_container, engine.remove_container):
        with pytest.raises(NotManaged):
            touch(container)
    with pytest.raises(NotManaged):
        engine.remove_network(network)
    assert container not in list_owned(engine).names()
    assert engine.inspect_container(container).name == container


def test_engine_down_raises_engine_unavailable(down_engine: ContainerEngine) -> None:
    for call in (
        down_engine.ping,
        lambda: down_engine.list_containers({}),
        lambda: down_engine.image_exists(TEST_IMAGE),
        lambda: down_engine.create_network("ct-down", labels={}),
    ):
        with pytest.raises(EngineUnavailable, match="DOCKER_HOST"):
            call()


# -- networks -------------------------------------------------------------------------


def test_networks(engine: ContainerEngine, ours: Ours) -> None:
    net = engine.create_network(ours.name("net"), labels=ours.labels())
    assert net.name == ours.name("net") and net.labels == ours.labels()
    assert [n.name for n in engine.list_networks(ours.labels())] == [net.name]
    with pytest.raises(ResourceConflict):
        engine.create_network(net.name, labels=ours.labels())

    info = engine.run_container(ours.spec("c", network=net.name, aliases=("svc",)))
    assert set(info.ip_addresses) == {net.name} and info.ip_addresses[net.name]
    with pytest.raises(ResourceConflict):
        engine.remove_network(net.name)  # a container is attached

    engine.remove_container(info.id)
    engine.remove_network(net.name)
    assert engine.list_networks(ours.labels()) == []
    engine.remove_network(net.name)  # idempotent


def test_a_foreign_container_joins_a_managed_network_and_leaves_with_it(
    engine: ContainerEngine, ours: Ours, unmanaged: tuple[str, str]
) -> None:
    """How an orchestrating process inside a container reaches a deployment's pods."""
    container, foreign_net = unmanaged
    net = engine.create_network(ours.name("join"), labels=ours.labels())
    engine.connect_network(net.name, container)
    engine.connect_network(net.name, container)  # already attached: a no-op
    assert engine.inspect_container(container).ip_addresses[net.name]
    pod = engine.run_container(ours.spec("pod", network=net.name))
    with pytest.raises(ResourceConflict):
        engine.remove_network(net.name)  # a managed container is still attached
    engine.remove_container(pod.id)
    engine.remove_network(net.name)  # the foreign container is detached, then it goes
    assert engine.list_networks(ours.labels()) == []
    assert net.name not in engine.inspect_container(container).ip_addresses
    assert engine.inspect_container(container).running  # and nothing else happened to it

    with pytest.raises(NotManaged):
        engine.connect_network(foreign_net, container)
    with pytest.raises(ResourceNotFound):
        engine.connect_network(ours.name("no-such-net"), container)


def test_unknown_network_is_resource_not_found(engine: ContainerEngine, ours: Ours) -> None:
    with pytest.raises(ResourceNotFound):
        engine.run_container(ours.spec("n", network=ours.name("no-such-net")))
    assert engine.list_containers(ours.labels()) == []


# -- events ---------------------------------------------------------------------------


def test_events_follow_a_container_life(engine: ContainerEngine, ours: Ours) -> None:
    since = time.time() - 1
    info = engine.run_container(ours.spec("e", (*SCRIPT, "exit 4")))
    engine.wait_container(info.id, timeout=10)
    engine.remove_container(info.id)
    until = time.time() + 1

    events = [e for e in engine.events(labels=ours.labels(), since=since, until=until)
              if e.type == "container"]

    actions = [e.action for e in events]
    wanted = ["create", "start", "die", "destroy"]
    assert [a for a in actions if a in wanted] == wanted
    die = next(e for e in events if e.action == "die")
    assert die.exit_code == 4 and die.id == info.id and die.name == info.name
    assert all(e.labels[L_DEPLOYMENT] == ours.deployment for e in events)


def test_network_events_are_unlabelled(engine: ContainerEngine, ours: Ours) -> None:
    since = time.time() - 1
    net = engine.create_network(ours.name("evnet"), labels=ours.labels())
    engine.remove_network(net.id)
    until = time.time() + 0.5

    labelled = list(engine.events(labels=ours.labels(), since=since, until=until))
    unfiltered = [(e.type, e.action) for e in engine.events(since=since, until=until)
                  if e.name == net.name]

    assert labelled == []  # Docker puts no labels on network events
    assert ("network", "create") in unfiltered and ("network", "destroy") in unfiltered


# -- images ---------------------------------------------------------------------------


def test_images(engine: ContainerEngine, built_tag: str, tmp_path: Path) -> None:
    assert engine.image_exists(TEST_IMAGE)
    assert not engine.image_exists("orchestrator-test-missing:0")
    with pytest.raises(ImageNotFound):
        engine.image_labels("orchestrator-test-missing:0")
    with pytest.raises(ImageNotFound):
        engine.pull_image("orchestrator-test-missing:0")

    (tmp_path / "Dockerfile").write_text(f"FROM {TEST_IMAGE}\nLABEL from.file=yes\n")
    image_id = engine.build_image(tmp_path, tag=built_tag, labels={"orchestrator.hash": "abc"})
    assert image_id.startswith("sha256:")
    assert engine.image_labels(built_tag) == {"from.file": "yes", "orchestrator.hash": "abc"}

    engine.tag_image(built_tag, built_tag + "-alias")
    assert engine.image_labels(built_tag + "-alias")["orchestrator.hash"] == "abc"
    with pytest.raises(ImageNotFound):
        engine.tag_image("orchestrator-test-missing:0", built_tag + "-x")
    # Listing by label finds both tags, and nothing else carries this label.
    tagged = engine.image_tags({"from.file": "yes", "orchestrator.hash": "abc"})
    assert [t for t in tagged if t.startswith(built_tag)] == [built_tag, built_tag + "-alias"]
    engine.remove_image(built_tag + "-alias")
    assert built_tag + "-alias" not in engine.image_tags({"orchestrator.hash": "abc"})


def test_failed_build_carries_the_log_tail(
    engine: ContainerEngine, built_tag: str, tmp_path: Path
) -> None:
    (tmp_path / "Dockerfile").write_text("FROM orchestrator-test-missing-base:0\n")
    with pytest.raises(ImageBuildError) as caught:
        engine.build_image(tmp_path, tag=built_tag)
    assert "orchestrator-test-missing-base" in caught.value.log_tail
    with pytest.raises(ImageBuildError):
        engine.build_image(tmp_path / "nowhere", tag=built_tag)


# -- cleanup --------------------------------------------------------------------------


def test_cleanup_by_deployment_then_all(engine: ContainerEngine, ours: Ours) -> None:
    second = Ours(engine, ours.deployment + "-b")
    for scope in (ours, second):
        engine.create_network(scope.name("net"), labels=scope.labels())
        engine.run_container(scope.spec("c", network=scope.name("net")))
        engine.run_container(scope.spec("x", (*SCRIPT, "exit 0")))
    try:
        removed = remove_owned(engine, ours.deployment, grace=0)

        assert sorted(removed.names()) == sorted(
            [ours.name("c"), ours.name("x"), ours.name("net")]
        )
        assert not list_owned(engine, ours.deployment)
        assert len(list_owned(engine, second.deployment).containers) == 2
    finally:
        remove_owned(engine, second.deployment, grace=0)
    assert not list_owned(engine, second.deployment)


# -- fixtures local to this module ------------------------------------------------------

L_ROLE = "orchestrator.role"
L_DEPLOYMENT = "orchestrator.deployment"


@pytest.fixture
def built_tag(engine: ContainerEngine) -> Iterator[str]:
    """A unique tag for a test build; the images are removed afterwards."""
    tag = f"orchestrator-test-build-{uuid.uuid4().hex[:8]}:1"
    yield tag
    for ref in (tag, tag + "-alias"):
        engine.remove_image(ref)


@pytest.fixture
def unmanaged(engine: ContainerEngine, engine_kind: str) -> Iterator[tuple[str, str]]:
    """A container and a network WITHOUT our label, made behind the engine's back."""
    suffix = uuid.uuid4().hex[:8]
    container, network = f"ct-foreign-{suffix}", f"ct-foreign-net-{suffix}"
    if isinstance(engine, MemoryEngine):
        engine.add_unmanaged_container(container, TEST_IMAGE)
        engine.add_unmanaged_network(network)
        yield container, network
        return
    import docker  # the raw SDK, only to create what the project must not touch

    client = docker.from_env()
    try:
        client.containers.run(TEST_IMAGE, ["sleep", "300"], name=container, detach=True)
        client.networks.create(network)
        yield container, network
    finally:
        with contextlib.suppress(docker.errors.NotFound):
            client.containers.get(container).remove(force=True)
        with contextlib.suppress(docker.errors.NotFound):
            client.networks.get(network).remove()
        client.close()


@pytest.fixture
def down_engine(engine_kind: str) -> Iterator[ContainerEngine]:
    """An engine that does not answer."""
    if engine_kind == "memory":
        memory = MemoryEngine()
        memory.faults.engine_down = True
        yield memory
        return
    from orchestrator.engine.docker_engine import DockerEngine

    bogus = {"DOCKER_HOST": "unix:///nonexistent.sock"}
    with pytest.raises(EngineUnavailable, match="DOCKER_HOST"):
        DockerEngine.from_env(bogus)
    lazy = DockerEngine.from_env(bogus, version="1.41")  # connects on first call only
    yield lazy
    lazy.close()


def test_cleanup_removes_the_head_last(engine: ContainerEngine, ours: Ours,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A heal watching from another process must never see the head gone while workers
    still run (it would recreate the head in the middle of a `down`)."""
    for suffix, role in (("head", "head"), ("w0", "worker"), ("w1", "worker")):
        engine.run_container(ours.spec(suffix, extra_labels={L_ROLE: role}))
    order: list[str] = []
    remove = engine.remove_container

    def recording(name_or_id: str, **kwargs: Any) -> None:
        order.append(engine.inspect_container(name_or_id).name)
        remove(name_or_id, **kwargs)

    monkeypatch.setattr(engine, "remove_container", recording)
    remove_owned(engine, ours.deployment, grace=0)
    assert len(order) == 3 and order[-1] == ours.name("head")


# -- exec and stats (`orchestrator exec`, `orchestrator top`) -----------------------------


def test_exec_returns_the_exit_code_and_the_output(engine: ContainerEngine, ours: Ours
                                                   ) -> None:
    engine.run_container(ours.spec("x"))
    script = [*SCRIPT, "echo hello; echo world; exit 3"]
    assert engine.exec_container(ours.name("x"), script) == (3, "hello\nworld\n")
    code, output = engine.exec_container(ours.name("x"), script, tty=True)
    assert (code, output) == (3, "hello\r\nworld\r\n")  # a terminal ends lines with CR LF
    missing = engine.exec_container(ours.name("x"), ["no-such-command", "x"])
    assert missing.exit_code == 127 and "no-such-command" in missing.output


def test_exec_refuses_a_stopped_a_missing_and_a_foreign_container(
        engine: ContainerEngine, ours: Ours, unmanaged: tuple[str, str]) -> None:
    engine.run_container(ours.spec("x"))
    engine.stop_container(ours.name("x"), grace=0)
    with pytest.raises(ResourceConflict):
        engine.exec_container(ours.name("x"), ["true"])
    with pytest.raises(ResourceNotFound):
        engine.exec_container(ours.name("gone"), ["true"])
    with pytest.raises(NotManaged):
        engine.exec_container(unmanaged[0], ["true"])


def test_stats_of_a_running_and_a_stopped_container(engine: ContainerEngine, ours: Ours
                                                    ) -> None:
    limit = 64 * 1024 * 1024
    engine.run_container(ours.spec("x", memory_bytes=limit))
    running = engine.container_stats(ours.name("x"))
    assert running.memory_limit_bytes == limit
    assert 0 < running.memory_bytes < limit and running.cpu_percent >= 0
    engine.stop_container(ours.name("x"), grace=0)
    stopped = engine.container_stats(ours.name("x"))
    assert (stopped.cpu_percent, stopped.memory_bytes) == (0.0, 0)
    with pytest.raises(ResourceNotFound):
        engine.container_stats(ours.name("gone"))


# -- volumes (the rollout history's records) ------------------------------------------------


def test_volumes_are_created_listed_by_label_and_removed(engine: ContainerEngine,
                                                         ours: Ours) -> None:
    from orchestrator.engine.base import VolumeEngine

    assert isinstance(engine, VolumeEngine)
    record = '{"number": 1, "change": "uses_with.tag: v1 -> v2"}' + " " * 2000  # a big label
    for n in (1, 2):
        made = engine.create_volume(ours.name(f"rev{n}"), labels=ours.labels(record=record))
        assert made.labels == ours.labels(record=record)
    listed = engine.list_volumes(ours.labels())
    assert [v.name for v in listed] == [ours.name("rev1"), ours.name("rev2")]
    assert listed[0].labels["record"] == record
    assert engine.list_volumes({**ours.labels(), "record": "other"}) == []
    engine.remove_volume(ours.name("rev1"))
    engine.remove_volume(ours.name("rev1"))  # idempotent
    assert [v.name for v in engine.list_volumes(ours.labels())] == [ours.name("rev2")]
    assert [v.name for v in list_owned(engine, ours.deployment).volumes] == [ours.name("rev2")]
    gone = remove_owned(engine, ours.deployment, grace=0)
    assert [v.name for v in gone.volumes] == [ours.name("rev2")]
    assert engine.list_volumes(ours.labels()) == []
def test_one_host_reports_no_node_and_ignores_placement_constraints(
    engine: ContainerEngine, ours: Ours
) -> None:
    # Swarm's engine (orchestrator.engine.docker_engine_swarm) places by constraints and
    # names each pod's node; an engine of one host has one place for everything.
    info = engine.run_container(ours.spec("placed", constraints=("node.hostname==elsewhere",)))
    assert info.node == ""
    assert engine.inspect_container(info.id).node == ""
    assert [c.node for c in engine.list_containers(ours.labels())] == [""]
