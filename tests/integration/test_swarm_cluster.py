"""The same Deployment API and CLI on a real three-node Docker Swarm (target="swarm").

The module builds its own cluster (tests/support/swarm_cluster.py): three Docker-in-Docker
nodes, one manager and two workers, on a network it creates, the runtime image loaded on
each; it removes them all afterwards. Nothing runs on this machine's own engine in swarm
mode (tests/integration/test_swarm.py swarm-inits that one).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator

import pytest

from orchestrator.cli import main
from orchestrator.deployment import Deployment
from orchestrator.engine.docker_engine_swarm import SwarmEngine
from orchestrator.errors import RolloutError
from orchestrator.load import Load
from orchestrator.planning import labels as L
from tests.support import swarm_cluster
from tests.support.paths import ECHO
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

START_TIMEOUT = 300.0  # readiness deadline of a pod: seven Python servers on two cores


@pytest.fixture(scope="module")
def cluster(runtime_image: str) -> Iterator[swarm_cluster.Cluster]:
    name = f"t{uuid.uuid4().hex[:8]}"
    made = swarm_cluster.up(name, [runtime_image])
    try:
        yield made
    finally:
        swarm_cluster.down(name)
        left = swarm_cluster.docker("ps", "-aq", "--filter",
                                    f"label={swarm_cluster.CLUSTER_LABEL}={name}")
        assert left.strip() == "", f"cluster nodes left behind: {left}"


@pytest.fixture
def swarm(cluster: swarm_cluster.Cluster, monkeypatch: pytest.MonkeyPatch
          ) -> Iterator[SwarmEngine]:
    """The manager's engine; DOCKER_HOST points at it for the CLI. After the test, nothing
    of ours may be left on the manager nor on any node."""
    monkeypatch.setenv("DOCKER_HOST", cluster.manager.docker_host)
    engine = SwarmEngine.from_env()
    try:
        yield engine
        wait_until(lambda: not leftovers(cluster), timeout=120,
                   what=f"nothing of ours left on the swarm: {leftovers(cluster)}")
    finally:
        engine.close()


def leftovers(cluster: swarm_cluster.Cluster) -> list[str]:
    """Services, configs and networks on the manager, containers on every node."""
    found = []
    manager = cluster.manager.docker_host
    for kind in ("service", "config", "network"):
        found += [f"{kind} {n}" for n in swarm_cluster.docker(
            kind, "ls", "-q", "--filter", f"label={L.MANAGED}=true", host=manager).split()]
    for node in cluster.nodes:
        if node.role in stopped_nodes:
            continue
        found += [f"container {c} on {node.hostname}" for c in swarm_cluster.docker(
            "ps", "-aq", "--filter", f"label={L.MANAGED}=true", host=node.docker_host).split()]
    return found


stopped_nodes: set[str] = set()


def nodes_of(engine: SwarmEngine, dep: Deployment, shard: int) -> set[str]:
    return {c.node for c in engine.list_containers(L.for_deployment(dep.name))
            if c.labels.get(L.ROLE) == "worker" and c.labels.get(L.SHARD) == str(shard)}


def tags(results: list) -> set[str]:  # type: ignore[type-arg]
    return {d["tag"] for r in results for d in r.docs}


@pytest.mark.timeout(2400)
def test_a_deployment_through_its_life_on_three_nodes(
    swarm: SwarmEngine, cluster: swarm_cluster.Cluster, capsys: pytest.CaptureFixture[str]
) -> None:
    name = f"s{uuid.uuid4().hex[:8]}"
    with Deployment(name=name, uses=f"{ECHO}:Echo", uses_with={"tag": "v1"}, shards=2,
                    replicas=3, polling="ANY", engine=swarm, reaper=False,
                    timeout_ready=START_TIMEOUT) as dep:
        # spread: each shard's replicas on at least two nodes; the head on the manager
        for shard in (0, 1):
            assert len(nodes_of(swarm, dep, shard)) >= 2, nodes_of(swarm, dep, shard)
        head = swarm.inspect_container(dep.state.head_name)
        assert head.node == cluster.manager.hostname
        assert dep.head_host == cluster.manager.address

        [reply] = dep.post("/echo", docs=[{"text": "hi"}])
        assert reply["text"] == "hi" and reply["tag"] == "v1"

        # ps (with nodes) and logs, through the CLI, from this process as another would
        capsys.readouterr()
        assert main(["ps", "--target", "swarm", name, "--json"]) == 0
        rows = json.loads(capsys.readouterr().out)
        assert len(rows) == 7
        assert {r["node"] for r in rows} <= {n.hostname for n in cluster.nodes}
        assert len({r["node"] for r in rows}) >= 2
        assert all(r["state"] == "running" for r in rows)
        assert main(["ps", "--target", "swarm", name]) == 0
        assert "NODE" in capsys.readouterr().out
        assert main(["logs", "--target", "swarm", name]) == 0
        logs = capsys.readouterr().out
        assert f"{name}-s0-r0-g1" in logs and f"{name}-head" in logs

        # attach from another handle, as another process would: the labels on the swarm
        # are the whole truth (DOCKER_HOST names the manager)
        other = Deployment.attach(name, target="swarm")
        try:
            assert other.address == dep.address
            assert other.post("/echo", docs=[{"text": "again"}])[0]["text"] == "again"
        finally:
            other.close()  # a detached handle: the deployment goes on

        # rolling update under load: no failed request
        with Load(dep.head_host, dep.head_port) as load:
            asyncio.run(dep.rolling_update(uses_with={"tag": "v2"}))
            finished = time.monotonic()
            load.wait_for(20)
        assert load.failures == [], load.failures[:3]
        assert tags(load.after(finished)) == {"v2"}
        assert tags(load.results) == {"v1", "v2"}

        # a broken version: rolled back, still no failed request
        with Load(dep.head_host, dep.head_port) as load:
            with pytest.raises(RolloutError) as info:
                asyncio.run(dep.rolling_update(uses=f"{ECHO}:Broken"))
            finished = time.monotonic()
            load.wait_for(10)
        assert info.value.rolled_back
        assert load.failures == [], load.failures[:3]
        assert tags(load.after(finished)) == {"v2"}

        # scale 3 -> 5 -> 2 under load
        with Load(dep.head_host, dep.head_port) as load:
            dep.scale_sync(5)
            assert len(dep.control().list_workers()) == 10
            load.wait_for(20)
            dep.scale_sync(2)
            finished = time.monotonic()
            load.wait_for(20)
        assert load.failures == [], load.failures[:3]
        served = {d["pod"] for r in load.after(finished) for d in r.docs}
        workers = {c.name for c in swarm.list_containers(L.for_deployment(name))
                   if c.labels.get(L.ROLE) == "worker"}
        assert len(workers) == 4 and served <= workers
    # down: the `swarm` fixture checks that nothing is left on the manager or any node


def restart_node(cluster: swarm_cluster.Cluster, role: str) -> None:
    """Start a stopped node's container again and wait until the swarm sees it Ready."""
    node = next(n for n in cluster.nodes if n.role == role)
    swarm_cluster.docker("start", node.container)
    manager = cluster.manager.docker_host

    def ready() -> bool:
        out = swarm_cluster.docker("node", "inspect", "--format", "{{.Status.State}}",
                                   node.hostname, host=manager, check=False)
        return out.strip() == "ready"

    wait_until(ready, timeout=300, what=f"{node.hostname} Ready again")
    stopped_nodes.discard(role)


@pytest.mark.timeout(1800)
def test_losing_a_worker_node_under_load(
    swarm: SwarmEngine, cluster: swarm_cluster.Cluster
) -> None:
    """Stop a worker node's container under load: Swarm reschedules its pods on the other
    nodes, the head routes around them meanwhile and takes them back (same service name,
    new address) once they serve. Prints how many requests failed and how long until the
    head had every replica ready again."""
    name = f"f{uuid.uuid4().hex[:8]}"
    with Deployment(name=name, uses=f"{ECHO}:Echo", shards=1, replicas=3, engine=swarm,
                    reaper=False, timeout_ready=START_TIMEOUT) as dep:
        pods = [c for c in swarm.list_containers(L.for_deployment(name))
                if c.labels.get(L.ROLE) == "worker"]
        victim = next(n for n in cluster.workers if any(p.node == n.hostname for p in pods))
        lost = {p.name for p in pods if p.node == victim.hostname}
        control = dep.control()

        def full_capacity() -> bool:
            workers = control.list_workers()
            running = [c for c in swarm.list_containers(L.for_deployment(name))
                       if c.labels.get(L.ROLE) == "worker"]
            return len(workers) == 3 and all(w.state == "ready" for w in workers) and all(
                c.running and c.node != victim.hostname for c in running)

        try:
            with Load(dep.head_host, dep.head_port, threads=2, timeout=10) as load:
                load.wait_for(20)
                stopped = time.monotonic()
                stopped_nodes.add(victim.role)
                swarm_cluster.stop_node(cluster, victim.role)
                wait_until(full_capacity, timeout=600, what="every replica ready again")
                recovered = time.monotonic()
                load.wait_for(20)
            during = [r for r in load.results if stopped <= r.started <= recovered]
            failed = [r for r in load.results if not r.ok]
            print(f"\nnode failure: {victim.hostname} held {len(lost)} of 3 replicas; "
                  f"{len(failed)} of {len(load.results)} requests failed "
                  f"({len([r for r in during if not r.ok])} of {len(during)} while "
                  f"recovering); full capacity back after {recovered - stopped:.1f}s",
                  flush=True)
            assert lost and recovered > stopped
            assert load.after(recovered) and all(r.ok for r in load.after(recovered))
            assert len(failed) <= len(during) // 2, failed[:3]  # degraded, never down
            [reply] = dep.post("/echo", docs=[{"text": "after"}])
            assert reply["text"] == "after"
            assert dep.heal(unhealthy_for=0) == []  # nothing left for heal to replace
        finally:
            if victim.role in stopped_nodes:
                restart_node(cluster, victim.role)
    restart_wait = [n.role for n in cluster.nodes if n.role in stopped_nodes]
    assert restart_wait == []
