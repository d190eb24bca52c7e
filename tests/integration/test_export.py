"""`orchestrator export --to compose`: the exported file runs on the real engine through
Debian's docker-compose v1, with no orchestrator process in the loop."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from orchestrator import Client
from orchestrator.cli import main
from orchestrator.control import HeadControl
from orchestrator.engine.cleanup import list_owned, remove_owned
from tests.support.paths import ECHO
from tests.support.waiting import wait_until

if TYPE_CHECKING:
    from orchestrator.engine.docker_engine import DockerEngine

pytestmark = pytest.mark.integration

TOKEN = "exported-token"


@pytest.fixture
def stack(dep_name: str, runtime_image: str, tmp_path: Path,
          docker_engine: DockerEngine) -> Iterator[tuple[Path, dict[str, str]]]:
    """An exported Compose file for `dep_name` (2 replicas); `docker-compose down` and a
    label sweep afterwards, whatever the test did."""
    spec = tmp_path / "dep.yml"
    spec.write_text(f"name: {dep_name}\nuses: {ECHO}:Echo\nuses_with: {{tag: exported}}\n"
                    f"replicas: 2\nimage: {runtime_image}\nstop_grace: 1\n")
    out = tmp_path / "compose.yml"
    assert main(["export", "-f", str(spec), "--to", "compose", "-o", str(out)]) == 0
    env = {**os.environ, "ORCHESTRATOR_TOKEN": TOKEN}
    try:
        yield out, env
    finally:
        compose(out, dep_name, env, "down", "-v", "-t", "1")
        remove_owned(docker_engine, dep_name, grace=0)


def compose(path: Path, project: str, env: dict[str, str], *args: str) -> str:
    proc = subprocess.run(["docker-compose", "-f", str(path), "-p", project, *args],
                          capture_output=True, text=True, env=env, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_an_exported_compose_file_serves_with_the_same_defaults(
        stack: tuple[Path, dict[str, str]], dep_name: str, docker_engine: DockerEngine,
        capsys: pytest.CaptureFixture[str]) -> None:
    path, env = stack
    compose(path, dep_name, env, "up", "-d")
    published = compose(path, dep_name, env, "port", f"{dep_name}-head", "50051").strip()
    host, _, port = published.rpartition(":")
    assert host == "127.0.0.1"
    with Client(host, int(port)) as client, \
            HeadControl(published, TOKEN, timeout=10) as control:  # the token came from env
        wait_until(lambda: client.is_ready(timeout=1), timeout=120,
                   what="the exported head to report SERVING")
        # the workers were given on the head's command line, not added by any orchestrator
        wait_until(lambda: {w.state for w in control.list_workers()} == {"ready"},
                   timeout=120, what="both replicas ready at the head")
        workers = control.list_workers()
        docs = [client.post("/echo", docs=[{"i": i}], timeout=10)[0] for i in range(8)]
    assert sorted(w.address for w in workers) == [f"{dep_name}-s0-r{r}-g1:50051"
                                                  for r in (0, 1)]
    assert {d["tag"] for d in docs} == {"exported"}
    assert {d["replica"] for d in docs} == {0, 1}  # the head balances over both replicas

    pods = docker_engine.list_containers({"orchestrator.deployment": dep_name})
    assert len(pods) == 3
    for pod in pods:
        settings = subprocess.run(
            ["docker", "inspect", "-f",
             "{{.Config.User}} {{.HostConfig.CapDrop}} {{.HostConfig.SecurityOpt}} "
             "{{len .HostConfig.PortBindings}}", pod.id],
            capture_output=True, text=True, check=True).stdout.split()
        bindings = "1" if pod.labels["orchestrator.role"] == "head" else "0"  # head only
        assert settings == ["10001:10001", "[ALL]", "[no-new-privileges:true]", bindings]

    # the stack carries the orchestrator's labels: `ps` lists it and `down` removes it all
    assert main(["ps", dep_name, "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert sorted(p["role"] for p in listed) == ["head", "worker", "worker"]
    assert main(["down", dep_name, "--grace", "1"]) == 0
    assert not list_owned(docker_engine, dep_name)
