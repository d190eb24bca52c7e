"""Zero-downtime rolling_update and scale on the real engine, under continuous load."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from orchestrator.deployment import Deployment
from orchestrator.errors import RequestError, RolloutError, RolloutInProgress, SpecError
from orchestrator.load import Load
from orchestrator.planning import labels as L
from orchestrator.progress import ProgressEvent
from orchestrator.spec import UpdatePolicy
from tests.support.paths import ECHO, TEST_EXECUTORS
from tests.support.waiting import wait_until

if TYPE_CHECKING:
    from orchestrator.engine.docker_engine import DockerEngine

pytestmark = pytest.mark.integration


def workers(engine: DockerEngine, dep: Deployment) -> list[dict[str, str]]:
    return [dict(c.labels) for c in engine.list_containers(L.for_deployment(dep.name))
            if c.labels[L.ROLE] == "worker"]


def tags(results: list) -> set[str]:  # type: ignore[type-arg]
    return {d["tag"] for r in results for d in r.docs}


def test_rolling_update_uses_with_zero_failed_requests(
    runtime_image: str, dep_name: str, docker_engine: DockerEngine
) -> None:
    events: list[ProgressEvent] = []
    with Deployment(name=dep_name, uses=f"{ECHO}:Echo", uses_with={"tag": "v1"}, replicas=3,
                    shards=2, image=runtime_image) as dep:
        old_pods = {a.name for a in dep.all_args if a.role == "worker"}
        with Load(dep.head_host, dep.head_port) as load:
            asyncio.run(dep.rolling_update(uses_with={"tag": "v2"}, on_progress=events.append))
            finished = time.monotonic()
            load.wait_for(20)
        assert load.failures == [], load.failures[:3]
        assert len(load.results) > 50
        after = load.after(finished)
        assert after and tags(after) == {"v2"}
        assert tags(load.results) == {"v1", "v2"}
        labels = workers(docker_engine, dep)
        assert len(labels) == 6
        assert {lb[L.GENERATION] for lb in labels} == {"2"}
        assert {lb[L.SPEC_HASH] for lb in labels} == {dep.spec.worker_hash()}
        new_pods = {a.name for a in dep.all_args if a.role == "worker"}
        assert not new_pods & old_pods
        assert dep.spec.uses_with == {"tag": "v2"}
    kinds = [e.kind for e in events]
    assert kinds[0] == "plan" and kinds[-1] == "done"
    assert kinds.count("added") == 6 and kinds.count("stopped") == 6
    assert events[-1].done == events[-1].total == 12


@pytest.fixture
def tagged_images(runtime_image: str, docker_engine: DockerEngine) -> Iterator[list[str]]:
    """Two versions of a user image whose entrypoint is the pod runtime."""
    refs = []
    context = Path(tempfile.mkdtemp(prefix="img-"))
    try:
        shutil.copy(ECHO, context / "echo.py")
        for version in ("v1", "v2"):
            (context / "Dockerfile").write_text(
                f"FROM {runtime_image}\n"
                "COPY echo.py /opt/app/echo.py\n"
                "ENV ORCHESTRATOR_USES=/opt/app/echo.py:Echo\n"
                f"ENV ORCHESTRATOR_USES_WITH='{{\"tag\": \"img-{version}\"}}'\n"
            )
            ref = f"orchestrator-test-app:{version}"
            docker_engine.build_image(context, tag=ref)
            refs.append(ref)
        yield refs
    finally:
        shutil.rmtree(context, ignore_errors=True)
        for ref in refs:
            docker_engine.remove_image(ref, force=True)


def test_rolling_update_to_a_new_image_tag(
    tagged_images: list[str], runtime_image: str, dep_name: str, docker_engine: DockerEngine
) -> None:
    v1, v2 = tagged_images
    with Deployment(name=dep_name, uses=f"docker://{v1}", replicas=3,
                    image=runtime_image) as dep:
        assert {d["tag"] for d in dep.post("/echo", docs=[{}])} == {"img-v1"}
        with Load(dep.head_host, dep.head_port) as load:
            dep.rolling_update_sync(uses=f"docker://{v2}")
            finished = time.monotonic()
            load.wait_for(10)
        assert load.failures == []
        assert tags(load.after(finished)) == {"img-v2"}
        images = {c.image for c in docker_engine.list_containers(L.for_deployment(dep.name))
                  if c.labels[L.ROLE] == "worker"}
        assert images == {v2}


@pytest.mark.parametrize(
    ("uses", "uses_with", "replaced_before_failure"),
    [
        (f"{ECHO}:Broken", {}, 0),
        (f"{TEST_EXECUTORS}/flaky.py:FailOnReplica", {"tag": "v2", "fail_replica": 1}, 1),
        (f"{TEST_EXECUTORS}/hang.py:NeverReady", {}, 0),
    ],
    ids=["init-raises", "fails-part-way", "never-healthy"],
)
def test_broken_version_rolls_back_without_failed_requests(
    uses: str, uses_with: dict[str, object], replaced_before_failure: int,
    runtime_image: str, dep_name: str, docker_engine: DockerEngine,
) -> None:
    with Deployment(name=dep_name, uses=f"{ECHO}:Echo", uses_with={"tag": "v1"}, replicas=3,
                    image=runtime_image, timeout_ready=8) as dep:
        old_hash = dep.spec.worker_hash()
        with Load(dep.head_host, dep.head_port) as load:
            with pytest.raises(RolloutError) as info:
                asyncio.run(dep.rolling_update(uses=uses, uses_with=uses_with))
            finished = time.monotonic()
            load.wait_for(10)
        err = info.value
        assert err.rolled_back and err.failed
        started = [d for d in err.done if d.startswith("started")]
        assert len(started) >= replaced_before_failure
        assert load.failures == []
        assert tags(load.after(finished)) == {"v1"}
        labels = workers(docker_engine, dep)
        assert len(labels) == 3
        assert {lb[L.SPEC_HASH] for lb in labels} == {old_hash}
        assert dep.spec.worker_hash() == old_hash
        assert dep.is_ready


def test_scale_up_and_down_under_load_drains_in_flight_requests(
    runtime_image: str, dep_name: str, docker_engine: DockerEngine
) -> None:
    with Deployment(name=dep_name, uses=f"{ECHO}:Echo", replicas=2,
                    image=runtime_image) as dep:
        # Slow requests are in flight on every replica when it is drained and removed.
        with Load(dep.head_host, dep.head_port, endpoint="/slow",
                  parameters={"delay": 0.3}, threads=4) as load:
            dep.scale_sync(5)
            assert len(workers(docker_engine, dep)) == 5
            load.wait_for(12)
            hosts_at_5 = {d["pod"] for r in load.after(time.monotonic() - 2) for d in r.docs}
            dep.scale_sync(1)
            finished = time.monotonic()
            load.wait_for(8)
        assert load.failures == []
        assert len(hosts_at_5) >= 3  # the new replicas really served
        [survivor] = workers(docker_engine, dep)
        assert {d["pod"] for r in load.after(finished) for d in r.docs} == {
            f"{dep_name}-s0-r{survivor[L.REPLICA]}-g{survivor[L.GENERATION]}"}
        assert dep.spec.replicas == 1 and len(dep.pod_args["pods"][0]) == 1


def test_scale_down_removes_outdated_replicas_first(
    runtime_image: str, dep_name: str, docker_engine: DockerEngine
) -> None:
    with Deployment(name=dep_name, uses=f"{ECHO}:Echo", replicas=2, image=runtime_image,
                    timeout_ready=8) as dep:
        # A paused rollout leaves one replica on the new spec and one outdated.
        pause = UpdatePolicy(failure_action="pause")
        with pytest.raises(RolloutError) as info:
            dep.rolling_update_sync(uses=f"{TEST_EXECUTORS}/flaky.py:FailOnReplica",
                                    uses_with={"tag": "v2", "fail_replica": 1}, policy=pause)
        assert not info.value.rolled_back
        hashes = {lb[L.SPEC_HASH] for lb in workers(docker_engine, dep)}
        assert len(hashes) == 2
        dep.scale_sync(1)
        [left] = workers(docker_engine, dep)
        assert left[L.SPEC_HASH] == dep.spec.worker_hash()  # the outdated one went


def test_failed_scale_up_keeps_the_old_count(
    runtime_image: str, dep_name: str, docker_engine: DockerEngine
) -> None:
    with Deployment(name=dep_name, uses=f"{TEST_EXECUTORS}/flaky.py:FailOnReplica",
                    uses_with={"fail_replica": 3}, replicas=2, image=runtime_image,
                    timeout_ready=8) as dep:
        before = {lb[L.REPLICA] for lb in workers(docker_engine, dep)}
        with pytest.raises(RolloutError, match="new replicas were removed") as info:
            dep.scale_sync(5)
        assert info.value.rolled_back
        assert {lb[L.REPLICA] for lb in workers(docker_engine, dep)} == before
        assert dep.spec.replicas == 2 and dep.is_ready
        assert len(dep.control().list_workers()) == 2


def test_bad_rollout_input_changes_nothing(
    runtime_image: str, dep_name: str, docker_engine: DockerEngine
) -> None:
    with Deployment(name=dep_name, uses=f"{ECHO}:Echo", replicas=1, image=runtime_image) as dep:
        before = workers(docker_engine, dep)
        with pytest.raises(SpecError) as info:
            dep.scale_sync(0)
        assert info.value.field == "replicas"
        with pytest.raises(SpecError) as info:
            UpdatePolicy(max_surge=0, max_unavailable=0)
        assert info.value.field == "policy"
        with pytest.raises(SpecError) as info:
            dep.rolling_update_sync(uses="docker://orchestrator-nope:9")
        assert info.value.field == "uses"
        assert workers(docker_engine, dep) == before

        async def two_at_once() -> None:
            first = asyncio.ensure_future(dep.rolling_update(uses_with={"tag": "v2"}))
            await asyncio.sleep(0)  # let the first one take the deployment
            with pytest.raises(RolloutInProgress):
                await dep.rolling_update(uses_with={"tag": "v3"})
            await first

        asyncio.run(two_at_once())
        assert {d["tag"] for d in dep.post("/echo", docs=[{}])} == {"v2"}


def test_crash_during_monitor_rolls_back(
    runtime_image: str, dep_name: str, docker_engine: DockerEngine
) -> None:
    with Deployment(name=dep_name, uses=f"{ECHO}:Echo", uses_with={"tag": "v1"}, replicas=2,
                    image=runtime_image) as dep:
        old_hash = dep.spec.worker_hash()
        policy = UpdatePolicy(monitor=4.0)
        with Load(dep.head_host, dep.head_port) as load:
            with pytest.raises(RolloutError) as info:
                dep.rolling_update_sync(uses=f"{TEST_EXECUTORS}/crashy.py:CrashAfter",
                                        uses_with={"after": 1.0}, policy=policy)
            finished = time.monotonic()
            load.wait_for(10)
        assert info.value.rolled_back and "monitor" in info.value.failed
        assert load.failures == []
        assert tags(load.after(finished)) == {"v1"}
        assert {lb[L.SPEC_HASH] for lb in workers(docker_engine, dep)} == {old_hash}


@pytest.mark.parametrize(
    "policy",
    [UpdatePolicy(max_surge=2), UpdatePolicy(order="stop-first", max_surge=0,
                                             max_unavailable=1)],
    ids=["surge-2", "stop-first"],
)
def test_other_policies_keep_serving(
    policy: UpdatePolicy, runtime_image: str, dep_name: str, docker_engine: DockerEngine
) -> None:
    with Deployment(name=dep_name, uses=f"{ECHO}:Echo", uses_with={"tag": "v1"}, replicas=3,
                    image=runtime_image) as dep:
        with Load(dep.head_host, dep.head_port) as load:
            dep.rolling_update_sync(uses_with={"tag": "v2"}, policy=policy)
            finished = time.monotonic()
            load.wait_for(10)
        assert load.failures == []
        assert tags(load.after(finished)) == {"v2"}
        assert len(workers(docker_engine, dep)) == 3


def test_a_crashed_replica_is_routed_around_and_restarted(
    runtime_image: str, dep_name: str, docker_engine: DockerEngine
) -> None:
    from tests.support.waiting import wait_until

    with Deployment(name=dep_name, uses=f"{TEST_EXECUTORS}/crashy.py:CrashOnce",
                    uses_with={"after": 3.0, "replica": 0}, replicas=2, image=runtime_image,
                    health_interval=0.2) as dep:
        victim = dep.first_pod_args.name
        with Load(dep.head_host, dep.head_port) as load:
            # Its process exits with code 1: the engine restarts it (restart policy
            # on-failure, applied once the pod was ready) ...
            wait_until(lambda: docker_engine.inspect_container(victim).restart_count >= 1,
                       timeout=60, what=f"{victim} restarted")
            # ... and the head, watching its health, routes to it again.
            wait_until(lambda: any(w.address.startswith(victim) and w.state == "ready"
                                   for w in dep.control().list_workers()),
                       timeout=60, what=f"{victim} back in rotation")
            back = time.monotonic()
            load.wait_for(40)
        assert load.failures == []
        assert victim in {d["pod"] for r in load.after(back) for d in r.docs}


def test_heal_replaces_a_hung_replica_and_a_removed_one_with_zero_failed_requests(
        runtime_image: str, dep_name: str, docker_engine: DockerEngine) -> None:
    uses = f"{TEST_EXECUTORS / 'hang.py'}:Freezes"
    with Deployment(name=dep_name, uses=uses, replicas=2, image=runtime_image,
                    stop_grace=1) as dep:
        control = dep.control()
        with Load(dep.head_host, dep.head_port) as load:
            # hang one replica: its event loop blocks, its health checks time out
            with pytest.raises(RequestError):
                dep.post("/freeze", docs=[{}], timeout=1)
            wait_until(lambda: [w.state for w in control.list_workers()].count("unhealthy")
                       == 1, timeout=60, what="the head to mark the hung replica unhealthy")
            hung = next(w.worker_id for w in control.list_workers() if w.state == "unhealthy")
            assert dep.heal(unhealthy_for=60) == []  # sick, but not for 60 s yet
            assert dep.heal(unhealthy_for=0) == [hung]
            # a replica removed behind the deployment's back is replaced too
            gone = next(w.worker_id for w in control.list_workers())
            docker_engine.remove_container(gone, force=True)
            wait_until(lambda: dep.heal(unhealthy_for=0) == [gone], timeout=60,
                       what="heal to replace the removed replica")
            finished = time.monotonic()
            load.wait_for(20)
        assert load.failures == [], load.failures[:3]
        assert load.after(finished)
        workers = control.list_workers()
        assert len(workers) == 2 and {w.state for w in workers} == {"ready"}
        assert {hung, gone}.isdisjoint({w.worker_id for w in workers})
        running = {c.name for c in docker_engine.list_containers(L.for_deployment(dep.name))
                   if c.labels[L.ROLE] == "worker"}
        assert running == {w.worker_id for w in workers}  # the hung container is gone


def test_heal_takes_over_what_another_process_rolled_out(
        runtime_image: str, dep_name: str, docker_engine: DockerEngine) -> None:
    with Deployment(name=dep_name, uses=f"{ECHO}:Echo", uses_with={"tag": "v1"}, replicas=2,
                    image=runtime_image, stop_grace=1) as dep:
        other = Deployment.attach(dep_name)  # as a second process (`orchestrator rollout`)
        try:
            other.rolling_update_sync(uses_with={"tag": "v2"})
        finally:
            other.close()
        # every replica this handle knew is gone: none of them may be "healed" back
        assert dep.heal(unhealthy_for=0) == []
        assert len(worker_containers(docker_engine, dep)) == 2
        gone = worker_containers(docker_engine, dep)[0]
        docker_engine.remove_container(gone, force=True)
        assert dep.heal(unhealthy_for=0) == [gone]
        assert len(worker_containers(docker_engine, dep)) == 2
        tags = {d["tag"] for _ in range(6) for d in dep.post("/echo", docs=[{}])}
        assert tags == {"v2"}  # the replacement runs the spec the other process rolled out


def worker_containers(engine: DockerEngine, dep: Deployment) -> list[str]:
    return sorted(c.name for c in engine.list_containers(L.for_deployment(dep.name))
                  if c.labels[L.ROLE] == "worker")


def crash(container: str) -> int:
    """SIGKILL the container's main process from the host, as the kernel's OOM killer or
    a segfault would end it: unlike `docker kill`, the engine sees a failure and applies
    the restart policy. Returns the restart count before the crash."""
    import os
    import signal

    import docker

    client = docker.from_env()
    try:
        state = client.containers.get(container).attrs
    finally:
        client.close()
    os.kill(state["State"]["Pid"], signal.SIGKILL)
    return int(state["RestartCount"])


def head_back(engine: DockerEngine, dep: Deployment, restarts: int) -> None:
    head = dep.head_args.name
    wait_until(lambda: (info := engine.inspect_container(head)).restart_count > restarts
               and info.running, timeout=60, what=f"{head} restarted by the engine")


def answered(dep: Deployment) -> bool:
    try:
        return bool(dep.post("/echo", docs=[{}], timeout=2))
    except RequestError:  # ServiceUnavailable while it restarts; the port is read again
        return False


def listed(dep: Deployment) -> list[str] | None:
    """The workers the head lists; None while it does not answer."""
    try:
        return [w.worker_id for w in dep.control().list_workers()]
    except RequestError:  # control() re-aims at the head's new address, if it moved
        return None


def test_a_crashed_head_comes_back_with_its_workers(
        runtime_image: str, dep_name: str, docker_engine: DockerEngine) -> None:
    with Deployment(name=dep_name, uses=f"{ECHO}:Echo", replicas=2, image=runtime_image,
                    stop_grace=1) as dep:
        dep.scale_sync(3)  # the head learns the third replica at run time, not at start
        expected = set(worker_containers(docker_engine, dep))
        port = dep.head_port
        head_back(docker_engine, dep, crash(dep.head_args.name))
        # Docker published the restarted head on a new free port (no `port` was given):
        # the deployment follows it after one failed request.
        wait_until(lambda: answered(dep), timeout=60, what="requests through the head again")
        assert dep.head_port == Deployment.attach(dep_name).head_port
        if dep.head_port != port:
            assert dep.address.endswith(f":{dep.head_port}")
        listed = dep.control().list_workers()
        assert {w.worker_id for w in listed} == expected
        assert {w.state for w in listed} == {"ready"}
        served = {d["pod"] for _ in range(9) for d in dep.post("/echo", docs=[{}])}
        assert served == expected  # all three replicas, the scaled-up one included
        log = docker_engine.logs(dep.head_args.name, tail=50)
        assert "restoring 3 saved worker(s)" in log
        from orchestrator.cli import pod_rows

        rows = pod_rows(docker_engine.list_containers(L.for_deployment(dep_name)))
        assert [r["restarts"] for r in rows if r["role"] == "head"] == [1]


def test_heal_registers_again_the_workers_a_restarted_head_lost(
        runtime_image: str, dep_name: str, docker_engine: DockerEngine) -> None:
    """A head that comes back without its saved list (one created before heads kept it, or
    whose file is gone) lists no workers: heal registers the running ones again rather than
    replacing healthy replicas."""
    import docker

    with Deployment(name=dep_name, uses=f"{ECHO}:Echo", replicas=2, image=runtime_image,
                    stop_grace=1) as dep:
        expected = set(worker_containers(docker_engine, dep))
        client = docker.from_env()
        try:
            head = client.containers.get(dep.head_args.name)
            assert head.exec_run(["rm", "/workspace/head-workers.json"]).exit_code == 0
        finally:
            client.close()
        head_back(docker_engine, dep, crash(dep.head_args.name))
        wait_until(lambda: listed(dep) is not None, timeout=60,
                   what="the restarted head's control RPCs")
        assert listed(dep) == []
        events: list[ProgressEvent] = []
        assert dep.heal(unhealthy_for=0, on_progress=events.append) == []  # none replaced
        assert {e.pod for e in events if e.kind == "added"} == expected
        assert all("re-registered" in e.message for e in events)
        assert set(worker_containers(docker_engine, dep)) == expected
        wait_until(lambda: answered(dep), timeout=60, what="requests through the head again")
        served = {d["pod"] for _ in range(6) for d in dep.post("/echo", docs=[{}])}
        assert served == expected


def test_a_replica_restarted_on_a_new_ip_is_routed_to_again(
        runtime_image: str, dep_name: str, docker_engine: DockerEngine) -> None:
    """The head dials workers by name: one that comes back on another address (its old one
    taken meanwhile) is found again by DNS, not only after gRPC's 30 s re-resolution."""
    import docker

    with Deployment(name=dep_name, uses=f"{ECHO}:Echo", replicas=2, image=runtime_image,
                    stop_grace=1, health_interval=0.2) as dep:
        victim = worker_containers(docker_engine, dep)[0]
        network = dep.network
        before = docker_engine.inspect_container(victim).ip_addresses[network]
        client = docker.from_env()
        try:
            client.containers.get(victim).stop(timeout=1)
            filler = client.containers.run(  # takes the freed address
                runtime_image, ["3600"], entrypoint=["sleep"], detach=True,
                network=network, labels={L.MANAGED: "true", L.DEPLOYMENT: dep_name},
                user="10001:10001", cap_drop=["ALL"])
            try:
                client.containers.get(victim).start()
                after = docker_engine.inspect_container(victim).ip_addresses[network]
                assert after != before
                started = time.monotonic()
                wait_until(lambda: victim in {d["pod"] for _ in range(4)
                                              for d in dep.post("/echo", docs=[{}])},
                           timeout=90, what=f"requests reaching {victim} at {after}")
                print(f"{victim} served again {time.monotonic() - started:.1f}s after its "
                      "restart")
            finally:
                filler.remove(force=True)
        finally:
            client.close()


def test_a_heal_from_another_handle_waits_for_a_start_to_register_its_workers(
        runtime_image: str, dep_name: str, docker_engine: DockerEngine) -> None:
    """`orchestrator heal NAME` started next to `up -d` (two service units) can attach
    while the pods still start: it must not take the workers not yet registered for what
    a killed update left behind."""
    import threading

    from orchestrator.errors import DeploymentNotFound, OrchestratorError

    dep = Deployment(name=dep_name, uses=f"{ECHO}:Echo", replicas=2, image=runtime_image,
                     stop_grace=1)
    failed: list[BaseException] = []

    def start() -> None:
        try:
            dep.start()
        except BaseException as exc:  # reported by the assertion below
            failed.append(exc)

    starter = threading.Thread(target=start)
    starter.start()
    healed: list[str] = []
    looks = 0
    try:
        while starter.is_alive():
            try:
                other = Deployment.attach(dep_name)
            except DeploymentNotFound:
                continue  # no head container yet
            try:
                healed += other.heal(unhealthy_for=0)
                looks += 1
            except OrchestratorError:
                pass  # the head does not answer yet
            finally:
                other.close()
        starter.join()
        assert failed == []
        assert looks > 0 and healed == []
        assert {d["pod"] for _ in range(6) for d in dep.post("/echo", docs=[{}])} \
            == set(worker_containers(docker_engine, dep))
        assert len(worker_containers(docker_engine, dep)) == 2
    finally:
        starter.join()
        dep.close()


@pytest.mark.parametrize("how", ["stopped", "removed"])
def test_heal_recreates_a_head_that_stays_down_and_keeps_the_workers(
        runtime_image: str, dep_name: str, docker_engine: DockerEngine, how: str) -> None:
    """The engine does not restart a head stopped by hand or out of restart retries, and
    nothing at all brings back a removed one: heal recreates it; the workers keep running
    and are registered with the new head, not replaced."""
    import docker

    with Deployment(name=dep_name, uses=f"{ECHO}:Echo", replicas=2, image=runtime_image,
                    stop_grace=1) as dep:
        workers_before = set(worker_containers(docker_engine, dep))
        head = dep.head_args.name
        old_id = docker_engine.inspect_container(head).id
        client = docker.from_env()
        try:
            container = client.containers.get(head)
            container.stop(timeout=1)
            if how == "removed":
                container.remove()
        finally:
            client.close()
        events: list[ProgressEvent] = []
        assert dep.heal(unhealthy_for=60, on_progress=events.append) == []
        assert events == []  # down, but not for 60 s yet: nothing done
        assert dep.heal(unhealthy_for=0, on_progress=events.append) == []  # no worker replaced
        recreated = [e for e in events if e.pod == head]
        assert len(recreated) == 1 and "recreated" in recreated[0].message
        assert docker_engine.inspect_container(head).id != old_id
        assert {e.pod for e in events if "re-registered" in e.message} == workers_before
        assert set(worker_containers(docker_engine, dep)) == workers_before
        wait_until(lambda: answered(dep), timeout=60, what="requests through the new head")
        served = {d["pod"] for _ in range(6) for d in dep.post("/echo", docs=[{}])}
        assert served == workers_before
        assert dep.control().list_workers()  # our token works with the new head


@pytest.mark.parametrize("role", ["uses_before", "uses_after"])
def test_heal_recreates_a_uses_pod_that_stays_down(
        runtime_image: str, dep_name: str, docker_engine: DockerEngine, role: str) -> None:
    """Every request goes through the uses_before / uses_after pod: once its container is
    removed (or stopped for good), nothing serves. Heal recreates it under the same name,
    the head dials it by name again, and the workers are left alone."""
    import docker

    with Deployment(name=dep_name, uses=f"{ECHO}:Echo", replicas=2, shards=2,
                    polling="ALL", uses_before=f"{ECHO}:Stamp", uses_after=f"{ECHO}:Sum",
                    image=runtime_image, stop_grace=1) as dep:
        def merged() -> bool:
            try:
                docs = dep.post("/echo", docs=[{}], timeout=5)
            except RequestError:
                return False
            return docs == [{"count": 2, "shards": [0, 1]}]

        assert merged()
        workers_before = set(worker_containers(docker_engine, dep))
        pod = f"{dep_name}-{role.replace('_', '-')}"
        old = docker_engine.inspect_container(pod)
        client = docker.from_env()
        filler = None
        try:
            client.containers.get(pod).remove(force=True)
            assert not merged()
            filler = client.containers.run(  # takes the freed address: the new pod gets another
                runtime_image, ["3600"], entrypoint=["sleep"], detach=True,
                network=dep.network, labels={L.MANAGED: "true", L.DEPLOYMENT: dep_name},
                user="10001:10001", cap_drop=["ALL"])
            events: list[ProgressEvent] = []
            assert dep.heal(unhealthy_for=60, on_progress=events.append) == []
            assert events == []  # gone, but not for 60 s yet
            assert dep.heal(unhealthy_for=0, on_progress=events.append) == []  # no worker
            assert [(e.pod, "recreated" in e.message) for e in events] == [(pod, True)]
            new = docker_engine.inspect_container(pod)
            assert new.id != old.id
            assert new.ip_addresses[dep.network] != old.ip_addresses[dep.network]
            started = time.monotonic()
            wait_until(merged, timeout=60, what=f"requests through the new {pod}")
            print(f"served through the new {pod} {time.monotonic() - started:.1f}s after heal")
        finally:
            if filler is not None:
                filler.remove(force=True)
            client.close()
        assert set(worker_containers(docker_engine, dep)) == workers_before


def test_heal_recreates_a_uses_before_pod_that_stops_answering(
        runtime_image: str, dep_name: str, docker_engine: DockerEngine) -> None:
    """A uses_before pod whose event loop is frozen keeps running but serves nothing, and
    the head does not health-check it: heal probes it and recreates it."""
    with Deployment(name=dep_name, uses=f"{ECHO}:Echo", replicas=1,
                    uses_before=f"{TEST_EXECUTORS / 'hang.py'}:Freezes", image=runtime_image,
                    stop_grace=1) as dep:
        def served() -> bool:
            try:
                return len(dep.post("/echo", docs=[{}], timeout=3)) == 1
            except RequestError:
                return False

        pod = f"{dep_name}-uses-before"
        assert served()
        with pytest.raises(RequestError):
            dep.post("/freeze", docs=[{}], timeout=1)
        assert not served()
        assert docker_engine.inspect_container(pod).running  # hung, not exited
        events: list[ProgressEvent] = []
        assert dep.heal(unhealthy_for=0, on_progress=events.append) == []
        assert [(e.pod, e.message) for e in events] == [
            (pod, "recreated: it did not answer health checks")]
        wait_until(served, timeout=30, what=f"requests through the new {pod}")


def test_heal_looks_with_nothing_to_do_make_one_engine_call_in_ten(
        runtime_image: str, dep_name: str, docker_engine: DockerEngine,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """`up`, `orchestrator heal` and the background healer look at a deployment for as
    long as a server runs: while all is well, a look asks the head once, and every
    FULL_LOOK_EVERY-th look also lists the deployment (brief: no inspect per container)."""
    from orchestrator.control.healer import FULL_LOOK_EVERY
    from orchestrator.engine.docker_engine import DockerEngine as Adapter

    with Deployment(name=dep_name, uses=f"{ECHO}:Echo", replicas=2, image=runtime_image,
                    uses_before=f"{ECHO}:Stamp", stop_grace=1, heal_after=0) as dep:
        calls: list[str] = []
        real = Adapter._call

        def counted(self: Adapter, subject: Any, name: str) -> Any:
            calls.append(f"{subject} {name}")
            return real(self, subject, name)

        dep.heal(unhealthy_for=30)  # the first look lists, and opens the control channel
        monkeypatch.setattr(Adapter, "_call", counted)
        for _ in range(2 * FULL_LOOK_EVERY):
            assert dep.heal(unhealthy_for=30) == []
        assert calls == ["container *"] * 2
