"""Crash safety: a process that dies without closing its deployment leaves nothing behind."""

from __future__ import annotations

import subprocess
import sys
from typing import TYPE_CHECKING

import pytest

from orchestrator.engine.cleanup import list_owned, remove_owned
from tests.support.paths import ECHO, ROOT
from tests.support.reapers import reapers
from tests.support.waiting import wait_until

if TYPE_CHECKING:
    from orchestrator.engine.docker_engine import DockerEngine

pytestmark = pytest.mark.integration

OWNER = """
import os, signal, sys
from orchestrator.deployment import Deployment
dep = Deployment(name=sys.argv[1], uses=sys.argv[2], replicas=2, image=sys.argv[3])
dep.start()
if sys.argv[4] == "detach":
    dep.detach()
    dep.close()
print("READY", flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def run_owner(name: str, runtime_image: str, mode: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", OWNER, name, f"{ECHO}:Echo", runtime_image, mode],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )


def test_sigkilled_owner_is_reaped(
    runtime_image: str, dep_name: str, docker_engine: DockerEngine
) -> None:
    done = run_owner(dep_name, runtime_image, "stay")
    assert done.returncode == -9 and "READY" in done.stdout, done.stderr[-2000:]
    # The owner is gone; its reaper removes the containers and the network.
    wait_until(lambda: not list_owned(docker_engine, dep_name), timeout=60,
               what=f"the reaper removes {dep_name}")
    wait_until(lambda: not reapers(dep_name), timeout=30, what="the reaper exits")


def test_a_detached_deployment_outlives_its_owner(
    runtime_image: str, dep_name: str, docker_engine: DockerEngine
) -> None:
    done = run_owner(dep_name, runtime_image, "detach")
    assert done.returncode == -9 and "READY" in done.stdout, done.stderr[-2000:]
    try:
        # The reaper was told "detach": it exits without touching anything.
        wait_until(lambda: not reapers(dep_name), timeout=30, what="the reaper exits")
        owned = list_owned(docker_engine, dep_name)
        assert len(owned.containers) == 3 and all(c.running for c in owned.containers)
    finally:
        remove_owned(docker_engine, dep_name, grace=0)
