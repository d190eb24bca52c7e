"""`orchestrator export --to swarm`: the stack runs on the real engine in swarm mode (a
single-node swarm the module sets up and leaves again), with no orchestrator process in the
loop, and Swarm's own start-first update replaces a worker while a client posts."""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator import Client
from orchestrator.cli import main
from orchestrator.control import HeadControl
from tests.support.paths import ECHO
from tests.support.ports import free_port
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

TOKEN = "swarm-token"


def docker(*args: str, check: bool = True, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=300,
                          check=False, env=env)
    if check:
        assert proc.returncode == 0, f"docker {' '.join(args)}: {proc.stderr}"
    return proc.stdout


def _networks() -> set[str]:
    return set(docker("network", "ls", "--format", "{{.Name}}").split())


@pytest.fixture(scope="module")
def swarm() -> Iterator[None]:
    """Swarm mode for this module. An engine already in a swarm is used as it is; one that
    was not is taken out again afterwards, with the docker_gwbridge network swarm made."""
    state = docker("info", "--format", "{{.Swarm.LocalNodeState}}").strip()
    if state == "active":
        yield
        return
    assert state == "inactive", f"the engine's swarm state is {state!r}"
    before = _networks()
    docker("swarm", "init", "--advertise-addr", "127.0.0.1")
    try:
        yield
    finally:
        docker("swarm", "leave", "--force")
        if "docker_gwbridge" not in before:
            docker("network", "rm", "docker_gwbridge", check=False)
        assert _networks() <= before | {"docker_gwbridge"}


@pytest.fixture
def stack(swarm: None, dep_name: str, runtime_image: str, tmp_path: Path
          ) -> Iterator[tuple[Path, int]]:
    """An exported stack file for `dep_name` (2 replicas, head published on a free port);
    `docker stack rm` afterwards, waiting until its containers and network are gone."""
    port = free_port()
    spec = tmp_path / "dep.yml"
    spec.write_text(f"name: {dep_name}\nuses: {ECHO}:Echo\nuses_with: {{tag: swarm}}\n"
                    f"replicas: 2\nimage: {runtime_image}\nstop_grace: 1\n"
                    f"port: {port}\nhost: 0.0.0.0\n")
    out = tmp_path / "stack.yml"
    assert main(["export", "-f", str(spec), "--to", "swarm", "-o", str(out)]) == 0
    secret = subprocess.run(["docker", "secret", "create", f"{dep_name}-token", "-"],
                            input=TOKEN, capture_output=True, text=True, timeout=60,
                            check=False)
    assert secret.returncode == 0, secret.stderr
    try:
        yield out, port
    finally:
        docker("stack", "rm", dep_name, check=False)
        wait_until(lambda: not docker("ps", "-aq", "--filter",
                                      f"label=com.docker.stack.namespace={dep_name}").split()
                   and f"{dep_name}-net" not in _networks(),
                   timeout=120, what="the stack's containers and network removed")
        docker("secret", "rm", f"{dep_name}-token", check=False)


def test_an_exported_swarm_stack_serves_and_survives_a_swarm_update(
        stack: tuple[Path, int], dep_name: str) -> None:
    path, port = stack
    docker("stack", "deploy", "--resolve-image", "never", "-c", str(path), dep_name)
    with Client("127.0.0.1", port) as client, \
            HeadControl(f"127.0.0.1:{port}", TOKEN, timeout=10) as control:
        # a task joins DNS once its HEALTHCHECK passed; the head then finds both workers
        wait_until(lambda: client.is_ready(timeout=1), timeout=180,
                   what="the swarm head to report SERVING")
        wait_until(lambda: {w.state for w in control.list_workers()} == {"ready"}
                   and len(control.list_workers()) == 2,
                   timeout=180, what="both replicas ready at the head")
        docs = [client.post("/echo", docs=[{"i": i}], timeout=10)[0] for i in range(8)]
        assert {d["tag"] for d in docs} == {"swarm"}
        assert {d["replica"] for d in docs} == {0, 1}

        # Swarm's own start-first update of one worker (the update_config we exported),
        # gated by the image's health probe, while a client posts without pause
        service = f"{dep_name}_{dep_name}-s0-r0-g1"
        old_task = docker("ps", "-q", "--filter", f"label=com.docker.swarm.service.name="
                          f"{service}").split()
        ok, failed = [0], [0]
        stop = threading.Event()

        def post() -> None:
            with Client("127.0.0.1", port) as c:
                while not stop.is_set():
                    try:
                        c.post("/echo", docs=[{}], timeout=10)
                        ok[0] += 1
                    except Exception:  # every failure counts
                        failed[0] += 1

        poster = threading.Thread(target=post)
        poster.start()
        try:
            docker("service", "update", "--force", "--detach=false", service)
        finally:
            stop.set()
            poster.join(30)
        assert failed[0] == 0 and ok[0] > 0
        new_task = docker("ps", "-q", "--filter", f"label=com.docker.swarm.service.name="
                          f"{service}").split()
        assert len(new_task) == 1 and new_task != old_task  # the task was replaced
        # the head reached the new task under the same name: both replicas answer again
        wait_until(lambda: {w.state for w in control.list_workers()} == {"ready"},
                   timeout=60, what="the replaced replica ready at the head")
        assert {client.post("/echo", docs=[{}], timeout=10)[0]["replica"]
                for _ in range(8)} == {0, 1}

    # the same defaults as a deployment, but for no-new-privileges, which Swarm cannot set
    # (the image has no setuid files instead; test_images checks that)
    pods = docker("ps", "-q", "--filter", f"label=com.docker.stack.namespace={dep_name}")
    settings = sorted(docker("inspect", "-f", "{{.Config.User}} {{.HostConfig.CapDrop}} "
                             "{{len .HostConfig.PortBindings}}", *pods.split()).splitlines())
    assert settings == ["10001:10001 [ALL] 0", "10001:10001 [ALL] 0", "10001:10001 [ALL] 1"]
    # the control token (it worked above) came from the secret: no container's env has it
    envs = docker("inspect", "-f", "{{json .Config.Env}}", *pods.split())
    assert TOKEN not in envs and "ORCHESTRATOR_TOKEN_FILE" in envs
