"""The supervisor of detached deployments, end to end with the real CLI and engine:
`up -d` starts it, it replaces a `docker kill`ed worker after the CLI has gone (under
load, failed requests counted); a `kill -9`ed supervisor is noticed and restarted by the
next `orchestrator ps`, which then heals again; `down` of the last deployment stops it and
leaves nothing. Each test has its own state directory (ORCHESTRATOR_STATE_DIR), so its
supervisor never meets another run's, and teardown stops it whatever happened."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from orchestrator import supervisor as sv
from orchestrator.cli.supervise import UNIT_NAME, systemd_unit
from orchestrator.control.head import HeadControl
from orchestrator.engine.cleanup import list_owned
from orchestrator.load import Load
from orchestrator.planning import labels as L
from orchestrator.planning.names import network_name
from orchestrator.planning.pods import TOKEN_ENV
from tests.support.paths import ECHO, ROOT
from tests.support.waiting import wait_until

if TYPE_CHECKING:
    from orchestrator.engine.docker_engine import DockerEngine

pytestmark = pytest.mark.integration

ORCH = ROOT / ".venv" / "bin" / "orchestrator"
HEAL_AFTER = 2
PATIENCE = 180.0  # a polling bound on this shared machine, never a sleep


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[sv.Paths]:
    """This test's own supervisor files; its supervisor is stopped afterwards."""
    monkeypatch.setenv(sv.STATE_DIR_ENV, str(tmp_path / "state"))
    paths = sv.Paths.for_engine()
    try:
        yield paths
    finally:
        sv.stop(paths)
        assert not sv.status(paths).running


@pytest.fixture
def detached(state: sv.Paths, dep_name: str, docker_engine: DockerEngine) -> Iterator[str]:
    """The name of the test's detached deployment; removed by `orchestrator down` (which
    holds its lock, so the supervisor cannot replace a pod meanwhile) whatever happened,
    before the supervisor is stopped and the leak check runs."""
    yield dep_name
    if list_owned(docker_engine, dep_name):
        orch("down", dep_name, "--grace", "1")


def orch(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(ORCH), *args], capture_output=True, text=True, cwd=ROOT,
                          env=dict(os.environ), timeout=600)


def up_detached(tmp_path: Path, name: str, image: str) -> None:
    spec = tmp_path / f"{name}.yml"
    spec.write_text(f"name: {name}\nuses: {ECHO}:Echo\nreplicas: 2\nimage: {image}\n"
                    f"heal_after: {HEAL_AFTER}\n")
    proc = orch("up", "-f", str(spec), "-d")
    assert proc.returncode == 0, proc.stderr


def workers(engine: DockerEngine, name: str) -> list[str]:
    return sorted(c.name for c in engine.list_containers(L.for_deployment(name))
                  if c.labels[L.ROLE] == "worker" and c.running)


def head_address(engine: DockerEngine, name: str) -> tuple[str, int]:
    head = engine.inspect_container(f"{name}-head")
    ip, port = head.ports[50051]
    return ("127.0.0.1" if ip in ("0.0.0.0", "") else ip), port


def routed(engine: DockerEngine, name: str) -> set[str]:
    head = engine.inspect_container(f"{name}-head")
    address = f"{head.ip_addresses[network_name(name)]}:50051"
    try:
        with HeadControl(address, head.env[TOKEN_ENV]) as control:
            return {w.worker_id for w in control.list_workers() if w.state == "ready"}
    except Exception:
        return set()


def replaced_by_supervisor(engine: DockerEngine, name: str, victim: str) -> bool:
    now = workers(engine, name)
    return len(now) == 2 and victim not in now and set(now) <= routed(engine, name)


def test_supervisor_heals_detached_deployments_survives_kill_9_and_goes_with_down(
        state: sv.Paths, tmp_path: Path, detached: str, docker_engine: DockerEngine,
        runtime_image: str) -> None:
    dep_name = detached
    up_detached(tmp_path, dep_name, runtime_image)  # the CLI has exited
    first = sv.status(state)
    assert first.running and first.pid is not None
    labels = docker_engine.inspect_container(f"{dep_name}-head").labels
    assert labels[L.SUPERVISED] == "true"

    # 1. docker kill of a worker: the supervisor replaces it
    host, port = head_address(docker_engine, dep_name)
    victim = workers(docker_engine, dep_name)[0]
    with Load(host, port) as load:
        killed = time.monotonic()
        docker_engine.kill_container(victim)
        wait_until(lambda: replaced_by_supervisor(docker_engine, dep_name, victim),
                   timeout=PATIENCE, what="the supervisor replaced the worker")
        took = time.monotonic() - killed
        load.wait_for(20)
    print(f"\nsupervisor: docker-killed worker replaced and routed after {took:.1f}s "
          f"(heal_after {HEAL_AFTER}s); {len(load.failures)} of {len(load.results)} "
          "requests failed")
    wait_until(lambda: f"replaced worker {victim}" in sv.tail(state, 50),
               timeout=PATIENCE, what="the replacement in the supervisor's log")
    line = next(x for x in sv.tail(state, 50).splitlines() if f"replaced worker {victim}" in x)
    assert "container exited, exit code 137" in line and "sick for" in line
    rows = json.loads(orch("ps", dep_name, "--json").stdout)
    assert sorted(r["replaced"] for r in rows if r["role"] == "worker") == [0, 1]

    # 2. kill -9 of the supervisor, then docker kill of a worker: `ps` restarts it
    os.kill(first.pid, signal.SIGKILL)
    wait_until(lambda: not sv.status(state).running, what="the supervisor is dead")
    assert sv.status(state).stale
    victim = workers(docker_engine, dep_name)[0]
    docker_engine.kill_container(victim)
    ps = orch("ps")
    assert ps.returncode == 0, ps.stderr
    assert "warning: the supervisor was not running" in ps.stderr
    assert f"pid {first.pid} was killed or died" in ps.stderr
    second = sv.status(state)
    assert second.running and second.pid != first.pid
    wait_until(lambda: replaced_by_supervisor(docker_engine, dep_name, victim),
               timeout=PATIENCE, what="the restarted supervisor replaced the worker")
    assert "supervisor: running" in orch("ps").stderr  # ps shows it

    # 3. down of the last deployment: the supervisor goes, nothing is left
    down = orch("down", dep_name)
    assert down.returncode == 0, down.stderr
    assert not sv.status(state).running
    assert not state.pid.exists()
    assert not list_owned(docker_engine, dep_name)


def test_supervise_commands(state: sv.Paths, tmp_path: Path) -> None:
    assert "supervisor: not running" in orch("supervise", "status").stdout
    started = orch("supervise", "start", "--stay")
    assert started.returncode == 0, started.stderr
    now = sv.status(state)
    assert now.running and now.stay
    status = json.loads(orch("supervise", "status", "--json").stdout)
    assert status["running"] and status["pid"] == now.pid
    assert "supervisor started" in orch("supervise", "logs").stdout
    assert orch("supervise", "stop").stdout.strip() == "supervisor stopped"
    assert not sv.status(state).running


def test_systemd_unit_verifies(tmp_path: Path) -> None:
    """The unit passes `systemd-analyze verify` (skipped only where the tool is absent)."""
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not installed here")
    printed = orch("supervise", "--systemd")
    assert printed.returncode == 0
    assert printed.stdout == systemd_unit()
    proc = orch("supervise", "--systemd", "--install", "--unit-dir", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    unit = tmp_path / UNIT_NAME
    assert unit.read_text() == printed.stdout
    check = subprocess.run([tool, "verify", str(unit)], capture_output=True, text=True,
                           timeout=120)
    problems = [line for line in (check.stdout + check.stderr).splitlines()
                if UNIT_NAME in line]
    assert check.returncode == 0 and not problems, check.stdout + check.stderr
