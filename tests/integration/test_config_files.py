"""Deployment files on the real engine: a Jina file in the form of Jina's documentation runs
with `orchestrator up`, its variables read from the .env file beside it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from orchestrator import Client
from orchestrator.engine.cleanup import list_owned, remove_owned
from tests.support.paths import ECHO, ROOT

if TYPE_CHECKING:
    from orchestrator.engine.docker_engine import DockerEngine

pytestmark = pytest.mark.integration

ORCH = Path(sys.executable).parent / "orchestrator"
DEADLINE = 180.0  # generous: 2 shared cores; never asserted as a duration


def orch(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("TAG", "NAME")}
    return subprocess.run([str(ORCH), *args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=DEADLINE)


def test_the_jina_example_runs_with_up_and_reads_the_dotenv_beside_it(
        dep_name: str, runtime_image: str, tmp_path: Path,
        docker_engine: DockerEngine) -> None:
    text = (ROOT / "examples" / "jina-deployment.yml").read_text()
    text = text.replace("name: jina-echo", f"name: {dep_name}")
    text = text.replace("../executors/echo.py", os.path.relpath(ECHO, tmp_path))
    text += f"  image: {runtime_image}\n  stop_grace: 1\n"  # our own fields pass through
    source = tmp_path / "jina.yml"
    source.write_text(text)
    (tmp_path / ".env").write_text("TAG=from-dotenv\n")
    try:
        up = orch("up", "-f", str(source), "--detach", "--json", cwd=ROOT)
        assert up.returncode == 0, up.stderr
        (summary,) = json.loads(up.stdout)
        assert (summary["name"], summary["replicas"]) == (dep_name, 2)
        ps = orch("ps", dep_name, "--json", cwd=ROOT)
        assert ps.returncode == 0, ps.stderr
        pods = json.loads(ps.stdout)
        assert sorted(p["role"] for p in pods) == ["head", "worker", "worker"]
        head = next(p for p in pods if p["role"] == "head")
        host, _, port = head["ports"][0].split("->")[0].rpartition(":")
        with Client(host, int(port)) as client:
            docs = client.post("/echo", docs=[{"i": i} for i in range(4)])
        assert [d["i"] for d in docs] == [0, 1, 2, 3]
        assert {d["tag"] for d in docs} == {"from-dotenv"}
        down = orch("down", dep_name, cwd=ROOT)
        assert down.returncode == 0, down.stderr
        assert not list_owned(docker_engine, dep_name)
    finally:
        remove_owned(docker_engine, dep_name, grace=0)
