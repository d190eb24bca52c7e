"""A Deployment started from Python heals by itself (heal_after), under load, on the real
engine: `docker kill` of a worker, then `docker stop` of the head (restart policies
ignore both). Each is replaced within heal_after plus the time a pod takes to start; the
failed requests of each phase are counted and printed, as are the measured times."""

from __future__ import annotations

import time
import urllib.request
from typing import TYPE_CHECKING

import pytest

from orchestrator.client import Client
from orchestrator.deployment import Deployment
from orchestrator.errors import OrchestratorError
from orchestrator.load import Load
from orchestrator.planning import labels as L
from tests.support.paths import ECHO
from tests.support.waiting import wait_until

if TYPE_CHECKING:
    from orchestrator.engine.docker_engine import DockerEngine

pytestmark = pytest.mark.integration

HEAL_AFTER = 2.0
PATIENCE = 180.0  # the polling bound on this shared, loaded machine; the figure is printed


def running_workers(engine: DockerEngine, dep: Deployment) -> list[str]:
    return sorted(c.name for c in engine.list_containers(L.for_deployment(dep.name))
                  if c.labels[L.ROLE] == "worker" and c.running)


def routed(dep: Deployment) -> set[str]:
    try:
        return {w.worker_id for w in dep.control().list_workers() if w.state == "ready"}
    except OrchestratorError:
        return set()


def head_serves(dep: Deployment) -> bool:
    try:
        with Client(dep.head_host, dep.head_port) as client:
            return bool(client.post("/echo", docs=[{}], timeout=5))
    except OrchestratorError:
        return False


def test_python_api_heals_a_killed_worker_then_a_stopped_head_under_load(
        runtime_image: str, dep_name: str, docker_engine: DockerEngine) -> None:
    with Deployment(name=dep_name, uses=f"{ECHO}:Echo", replicas=2, image=runtime_image,
                    heal_after=HEAL_AFTER) as dep:
        assert dep.healer is not None and dep.healer.running  # on by default
        port = dep.head_port

        # 1. docker kill of a worker: the head routes around it, the healer replaces it
        victim = running_workers(docker_engine, dep)[0]
        with Load(dep.head_host, dep.head_port) as load:
            killed = time.monotonic()
            docker_engine.kill_container(victim)
            wait_until(lambda: len(dep.healer.replaced if dep.healer else []) == 1,
                       timeout=PATIENCE, what="the killed worker replaced")
            assert dep.healer is not None
            event = dep.healer.replaced[0]
            wait_until(lambda: event.successor in routed(dep), timeout=PATIENCE,
                       what="its successor routed")
            worker_back = time.monotonic() - killed
            load.wait_for(20)
        worker_failed = len(load.failures)
        print(f"\nworker docker-killed: replaced after {worker_back:.1f}s (heal_after "
              f"{HEAL_AFTER:g}s, sick for {event.sick_for:.1f}s); {worker_failed} of "
              f"{len(load.results)} requests failed")
        assert (event.pod, event.role) == (victim, "worker")
        assert event.reason.startswith("container exited")  # exit code 137
        assert event.sick_for >= HEAL_AFTER
        assert len(running_workers(docker_engine, dep)) == 2
        labels = docker_engine.inspect_container(event.successor).labels
        assert labels[L.REPLACED] == "1" and labels[L.REPLACED_REASON] == event.reason
        # the head's counter (told over the control channel)
        url = f"http://{dep.head_host}:{dep.head_port}/metrics"
        text = urllib.request.urlopen(url, timeout=10).read().decode()
        assert f'orchestrator_replacements_total{{head="{dep_name}-head",reason="stopped",' \
               f'role="worker"}} 1.0' in text

        # 2. docker stop of the head: recreated on the same port, workers registered again
        head = f"{dep_name}-head"
        with Load(dep.head_host, dep.head_port, timeout=5) as load:
            stopped = time.monotonic()
            docker_engine.stop_container(head, grace=10)
            wait_until(lambda: len(dep.healer.replaced if dep.healer else []) == 2,
                       timeout=PATIENCE, what="the stopped head recreated")
            wait_until(lambda: head_serves(dep), timeout=PATIENCE, what="the head serves")
            head_back = time.monotonic() - stopped
            load.wait_for(20)
        failures = load.failures
        head_failed = len(failures)
        outage = max(r.ended for r in failures) - min(r.started for r in failures) \
            if failures else 0.0
        assert dep.healer is not None
        event = dep.healer.replaced[1]
        print(f"head docker-stopped: serving again after {head_back:.1f}s (heal_after "
              f"{HEAL_AFTER:g}s, seen down for {event.sick_for:.1f}s); {head_failed} of "
              f"{len(load.results)} requests failed, all within {outage:.1f}s while no head "
              "ran (the 2 client threads retried at once on the same port)")
        assert (event.pod, event.role) == (head, "head")
        assert event.sick_for >= HEAL_AFTER
        assert dep.head_port == port  # the same address for every client
        assert routed(dep) == set(running_workers(docker_engine, dep))
        assert docker_engine.inspect_container(head).labels[L.REPLACED] == "1"
        assert len(dep.healer.replaced) == 2  # nothing else was replaced
    assert dep.healer is None  # stopped with the deployment
