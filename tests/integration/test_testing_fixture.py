"""orchestrator.testing: a Deployment as a pytest fixture, as CI users write it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from orchestrator.deployment import Deployment
from orchestrator.engine.cleanup import list_owned
from orchestrator.testing import deployment_fixture
from tests.support.paths import ECHO, ROOT

if TYPE_CHECKING:
    from orchestrator.engine.docker_engine import DockerEngine

pytestmark = pytest.mark.integration

echo = deployment_fixture(uses=f"{ECHO}:Echo", replicas=2, name="fixture", scope="module")
seen: list[str] = []


def test_the_fixture_is_ready_and_uniquely_named(echo: Deployment) -> None:
    assert echo.name.startswith("fixture-") and echo.is_ready
    assert echo.post("/echo", docs=[{"a": 1}])[0]["a"] == 1
    seen.append(echo.name)


def test_module_scope_shares_one_deployment(echo: Deployment) -> None:
    assert seen == [echo.name]


USER_TEST = f"""
from orchestrator.testing import deployment_fixture

echo = deployment_fixture(uses="{ECHO}:Echo")

def test_user(echo):
    open(OUT_PATH, "w").write(echo.name)
    assert echo.post("/echo", docs=[{{}}])
    raise AssertionError("a failing user test must still leave nothing behind")
"""


def test_a_user_suite_leaves_nothing_even_when_its_test_fails(
    tmp_path: Path, runtime_image: str, docker_engine: DockerEngine
) -> None:
    out = tmp_path / "name.txt"
    test_file = tmp_path / "test_user.py"
    test_file.write_text(USER_TEST.replace("OUT_PATH", repr(str(out))))
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(test_file)],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 1, done.stdout[-2000:]
    assert "a failing user test must still leave nothing behind" in done.stdout
    name = out.read_text()
    assert name.startswith("pytest-")
    assert not list_owned(docker_engine, name)


PARALLEL_TEST = f"""
from orchestrator.testing import deployment_fixture

echo = deployment_fixture(uses="{ECHO}:Echo", replicas=2)

def test_user(echo):
    open(OUT_PATH, "w").write(f"{{echo.name}} {{echo.port}}")
    assert len({{d["pod"] for _ in range(4) for d in echo.post("/echo", docs=[{{}}])}}) == 2
"""


def test_suites_run_in_parallel_processes_do_not_clash(
    tmp_path: Path, runtime_image: str, docker_engine: DockerEngine
) -> None:
    """What pytest-xdist does: several test processes at once, each with its own
    deployment from the same fixture: names, networks and head ports never clash."""
    runs = []
    for i in range(3):
        out = tmp_path / f"name{i}.txt"
        test_file = tmp_path / f"test_user{i}.py"
        test_file.write_text(PARALLEL_TEST.replace("OUT_PATH", repr(str(out))))
        runs.append((out, subprocess.Popen(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(test_file)],
            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)})))
    seen = []
    for out, proc in runs:
        stdout, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, stdout[-2000:]
        seen.append(out.read_text().split())
    assert len({name for name, _ in seen}) == 3 and len({port for _, port in seen}) == 3
    for name, _ in seen:
        assert not list_owned(docker_engine, name)
