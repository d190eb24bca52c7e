"""The README's first quickstart command runs this demo: it must work end to end."""

from __future__ import annotations

import subprocess
import sys
import uuid
from typing import TYPE_CHECKING

import pytest

from orchestrator.engine.cleanup import list_owned
from tests.support.paths import ROOT

if TYPE_CHECKING:
    from orchestrator.engine.docker_engine import DockerEngine

pytestmark = pytest.mark.integration


def test_demo_runs_a_sharded_deployment_and_a_rolling_update_without_failures(
    runtime_image: str, docker_engine: DockerEngine
) -> None:
    name = f"tdemo{uuid.uuid4().hex[:6]}"
    try:
        done = subprocess.run(
            [sys.executable, "-m", "orchestrator", "demo", "--name", name, "--replicas", "2"],
            cwd=ROOT, capture_output=True, text=True, timeout=600, check=False,
        )
        out = done.stdout
        assert done.returncode == 0, done.stderr[-2000:] + out[-2000:]
        assert "polling ALL -> 2 docs, one per shard" in out
        assert "served by 4 replicas" in out
        assert ", 0 failed" in out
        assert "answers after the update: {'v2':" in out
        assert "resources left on the engine: 0" in out
    finally:
        assert not list_owned(docker_engine, name)
