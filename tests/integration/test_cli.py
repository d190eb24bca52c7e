"""The `orchestrator` CLI end to end: subprocesses against the real Docker engine.

Every deployment name is unique (`tcli<hex>`) and removed by label in a finalizer, even
when the test fails. One detached deployment is shared by the read-only checks.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from orchestrator import Client
from orchestrator.engine.cleanup import list_owned, remove_owned
from orchestrator.errors import RequestError
from tests.support.paths import ECHO, ROOT
from tests.support.reapers import reapers
from tests.support.waiting import wait_until

if TYPE_CHECKING:
    from orchestrator.engine.docker_engine import DockerEngine

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent
ORCH = BIN / "orchestrator"
EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_ENGINE = 0, 1, 2, 3
DEADLINE = 120.0  # generous: 2 shared cores; never asserted as a duration


def cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("NAME", "TAG", "REPLICAS",
                                                             "IMAGE", "NO_COLOR")}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


def orch(*args: str, env: dict[str, str] | None = None, cwd: Path = ROOT
         ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(ORCH), *args], capture_output=True, text=True, cwd=cwd,
                          env=env or cli_env(), timeout=DEADLINE)


def one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    """The stderr of a failed command: exactly one line, no traceback."""
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("orchestrator: error: ")
    return lines[0]


def write_yaml(folder: Path, name: str, *, tag: str = "v1", replicas: int = 1,
               image: str = "orchestrator-runtime:latest") -> Path:
    """A deployment file whose `uses` is relative to the file (resolved against it)."""
    uses = os.path.relpath(ECHO, folder)
    path = folder / f"{name}.yml"
    path.write_text(f"name: {name}\nuses: {uses}:Echo\nuses_with: {{tag: {tag}}}\n"
                    f"replicas: {replicas}\nimage: {image}\nstop_grace: 1\n"
                    "timeout_ready: 60\n")
    return path


def head_address(name: str) -> tuple[str, int]:
    proc = orch("ps", name, "--json")
    assert proc.returncode == EXIT_OK, proc.stderr
    head = next(r for r in json.loads(proc.stdout) if r["role"] == "head")
    host_port = head["ports"][0].split("->")[0]
    host, _, port = host_port.rpartition(":")
    return host, int(port)


def workers(name: str) -> list[dict[str, Any]]:
    proc = orch("ps", name, "--json")
    assert proc.returncode == EXIT_OK, proc.stderr
    return [r for r in json.loads(proc.stdout) if r["role"] == "worker"]


@pytest.fixture
def unique_name(docker_engine: DockerEngine) -> Iterator[str]:
    """A fresh deployment name, removed by label afterwards whatever happened."""
    name = f"tcli{uuid.uuid4().hex[:8]}"
    yield name
    remove_owned(docker_engine, name, grace=0)


@pytest.fixture(scope="module")
def shared(docker_engine: DockerEngine, runtime_image: str,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One detached deployment (1 replica) for read-only checks."""
    name = f"tcli{uuid.uuid4().hex[:8]}"
    path = write_yaml(tmp_path_factory.mktemp("shared"), name, image=runtime_image)
    try:
        proc = orch("up", "-f", str(path), "--detach")
        assert proc.returncode == EXIT_OK, proc.stderr
        yield name
    finally:
        remove_owned(docker_engine, name, grace=0)


# -- no engine needed ---------------------------------------------------------------------


COMMANDS = ["up", "down", "ps", "logs", "top", "exec", "scale", "rollout", "heal", "ping",
            "export", "images", "images build", "executor", "completion", "version", "demo",
            "config"]


@pytest.mark.parametrize("command", ["", *COMMANDS])
def test_every_command_has_help(command: str) -> None:
    proc = orch(*command.split(), "--help")
    assert proc.returncode == EXIT_OK and "usage: orchestrator" in proc.stdout


def test_version_and_python_dash_m() -> None:
    from orchestrator import __version__

    proc = subprocess.run([sys.executable, "-m", "orchestrator", "version", "--json"],
                          capture_output=True, text=True, cwd=ROOT, timeout=DEADLINE)
    assert proc.returncode == EXIT_OK
    assert json.loads(proc.stdout)["orchestrator"] == __version__
    assert orch("version").stdout.strip() == f"orchestrator {__version__}"


BAD_FILES = [
    ("name: {n}\nuses: {u}\nreplica: 2\n", "replica", "unknown field"),
    ("name: {n}\nuses: {u}\nreplicas: two\n", "replicas", "must be an integer"),
    ("name: {n}\nuses: {u}\nreplicas: 0\n", "replicas", "must be an integer >= 1"),
    ("name: {n}\nuses: {u}\npolicy: {{max_surge: 100000000000000000000, order: up}}\n",
     "policy.order", "start-first"),
    ("name: {n}\nuses: {u}\nenv: {{A: '${{CLI_TEST_UNSET_VAR?}}'}}\n", "env.A",
     "required variable CLI_TEST_UNSET_VAR is missing a value"),
    ("deployments:\n  - {{name: {n}, uses: {u}}}\n  - {{name: {n}b, uses: {u}, "
     "policy: {{max_surge: -1}}}}\n", "deployments[1].policy.max_surge", ">= 0"),
]


@pytest.mark.parametrize(("text", "path", "problem"), BAD_FILES)
def test_bad_yaml_is_one_line_naming_file_and_field_exit_2(
        tmp_path: Path, text: str, path: str, problem: str) -> None:
    source = tmp_path / "bad.yml"
    source.write_text(text.format(n="tclibad", u=f"{ECHO}:Echo"))
    proc = orch("up", "-f", str(source), "--detach")
    assert proc.returncode == EXIT_USAGE
    line = one_line_error(proc)
    assert re.search(rf"{re.escape(str(source))}(:\d+)?: {re.escape(path)}: ", line), line
    assert problem in line


@pytest.mark.parametrize(
    "args",
    [["down"], ["scale", "x", "two"], ["rollout"], ["ping", "no-port"], ["logs"],
     ["up"], ["nosuchcommand"], ["ps", "--bogus"], ["down", "x", "-f", "app.yml"],
     ["exec", "x", "head"], ["completion", "fish"], ["top", "--interval", "-1"]],
)
def test_usage_errors_exit_2(args: list[str]) -> None:
    proc = orch(*args)
    assert proc.returncode == EXIT_USAGE, proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("args", [["ps"], ["down", "x"], ["scale", "x", "2"],
                                  ["images", "build"], ["top", "--json"],
                                  ["exec", "x", "head", "--", "true"]])
def test_engine_down_exit_3_with_the_reason(tmp_path: Path, args: list[str]) -> None:
    proc = orch(*args, env=cli_env(DOCKER_HOST=f"unix://{tmp_path}/no-docker.sock"))
    assert proc.returncode == EXIT_ENGINE
    line = one_line_error(proc)
    assert "engine unavailable" in line and "no-docker.sock" in line


def test_up_with_engine_down_exit_3(tmp_path: Path) -> None:
    path = write_yaml(tmp_path, "tcliengine")
    proc = orch("up", "-f", str(path), env=cli_env(DOCKER_HOST="tcp://127.0.0.1:1"))
    assert proc.returncode == EXIT_ENGINE and "127.0.0.1:1" in one_line_error(proc)


# -- the shared detached deployment --------------------------------------------------------


def test_ps_json_one_object_per_pod(shared: str, runtime_image: str) -> None:
    proc = orch("ps", shared, "--json")
    assert proc.returncode == EXIT_OK, proc.stderr
    rows = json.loads(proc.stdout)
    assert [(r["role"], r["shard"], r["replica"]) for r in rows] == [
        ("head", None, None), ("worker", 0, 0)]
    for row in rows:
        assert row["deployment"] == shared and row["state"] == "running"
        assert row["health"] == "serving" and row["image"] == runtime_image
        assert row["uptime_seconds"] >= 0 and row["restarts"] == 0
    # the head's own view of its worker
    assert rows[1]["routing"] == "ready" and rows[1]["in_flight"] == 0
    assert rows[1]["failed"] == 0 and rows[1]["served"] >= 0
    assert re.fullmatch(r"127\.0\.0\.1:\d+->50051/tcp", rows[0]["ports"][0])
    assert rows[1]["ports"] == []


def test_ps_table_and_ping(shared: str) -> None:
    proc = orch("ps")
    assert proc.returncode == EXIT_OK
    header, *lines = proc.stdout.splitlines()
    assert header.split() == ["DEPLOYMENT", "POD", "ROLE", "SHARD", "REPLICA", "STATE",
                              "RESTARTS", "REPLACED", "HEALTH", "ROUTING", "UPTIME", "PORTS",
                              "IMAGE"]
    mine = [line.split() for line in lines if line.startswith(f"{shared} ")]
    assert [(c[2], c[5], c[6], c[7], c[8], c[9]) for c in mine] == [
        ("head", "running", "0", "0", "serving", "-"),
        ("worker", "running", "0", "0", "serving", "ready")]
    host, port = head_address(shared)
    ping = orch("ping", f"{host}:{port}")
    assert ping.returncode == EXIT_OK and "SERVING" in ping.stdout


def test_logs_prefixed_by_pod(shared: str) -> None:
    proc = orch("logs", shared)
    assert proc.returncode == EXIT_OK
    prefixes = {line.split(" | ")[0].strip() for line in proc.stdout.splitlines()}
    assert prefixes == {f"{shared}-head", f"{shared}-s0-r0-g1"}
    one = orch("logs", shared, "--pod", "head", "--tail", "1")
    assert one.returncode == EXIT_OK
    (line,) = one.stdout.splitlines()
    assert line.startswith(f"{shared}-head | ")
    bad = orch("logs", shared, "--pod", "nope")
    assert bad.returncode == EXIT_FAILURE and f"{shared}-head" in one_line_error(bad)


def test_quiet_ps_lists_pod_names_only(shared: str) -> None:
    proc = orch("ps", shared, "-q")
    assert proc.returncode == EXIT_OK and proc.stderr == ""
    assert proc.stdout.splitlines() == [f"{shared}-head", f"{shared}-s0-r0-g1"]


def test_top_json_is_one_sample_per_pod(shared: str) -> None:
    proc = orch("top", shared, "--json")
    assert proc.returncode == EXIT_OK, proc.stderr
    rows = json.loads(proc.stdout)
    assert [(r["pod"], r["role"], r["state"]) for r in rows] == [
        (f"{shared}-head", "head", "running"), (f"{shared}-s0-r0-g1", "worker", "running")]
    for row in rows:
        assert 0 < row["memory_bytes"] < row["memory_limit_bytes"]
        assert 0 < row["memory_percent"] < 100 and row["cpu_percent"] >= 0
        assert row["restarts"] == 0
    assert rows[0]["in_flight"] is None and rows[1]["in_flight"] == 0  # the head's count
    table = orch("top", shared, "--no-stream")
    assert table.returncode == EXIT_OK, table.stderr
    header, *lines = table.stdout.splitlines()
    assert header.split()[:4] == ["POD", "ROLE", "STATE", "CPU"] and "IN-FLIGHT" in header
    assert [line.split()[0] for line in lines] == [r["pod"] for r in rows]


def test_exec_runs_in_a_pod_with_its_exit_code(shared: str) -> None:
    proc = orch("exec", shared, "head", "--", "sh", "-c", "echo out-$((40+2)); exit 3")
    assert (proc.returncode, proc.stdout, proc.stderr) == (3, "out-42\n", "")
    worker = orch("exec", shared, f"{shared}-s0-r0-g1", "--", "id", "-u")
    assert worker.returncode == EXIT_OK and worker.stdout.strip() != "0"  # not root
    missing = orch("exec", shared, "head", "--", "no-such-command")
    assert missing.returncode == 127 and "no-such-command" in missing.stdout
    bad = orch("exec", shared, "nope", "--", "true")
    assert bad.returncode == EXIT_FAILURE and f"{shared}-head" in one_line_error(bad)


def test_exec_it_gets_a_terminal(shared: str) -> None:
    """-it hands the terminal to `docker exec -it`: the command sees a TTY and its input."""
    import pty  # POSIX only, like the CLI's -it

    controller, terminal = pty.openpty()
    proc = subprocess.Popen(
        [str(ORCH), "exec", "-it", shared, "head", "--", "sh", "-c",
         "read line; tty; echo got-$line; exit 4"],
        stdin=terminal, stdout=terminal, stderr=terminal, cwd=ROOT, env=cli_env(),
        start_new_session=True)
    os.close(terminal)
    os.write(controller, b"hello\n")
    seen = b""
    while True:
        try:
            chunk = os.read(controller, 4096)
        except OSError:  # EIO: every writer of the terminal has gone
            break
        if not chunk:
            break
        seen += chunk
    os.close(controller)
    assert proc.wait(timeout=DEADLINE) == 4, seen
    text = seen.decode(errors="replace")
    assert "got-hello" in text and "/dev/pts/" in text


def test_logs_timestamps_and_since(shared: str) -> None:
    stamped = orch("logs", shared, "-t")
    assert stamped.returncode == EXIT_OK
    lines = [line.split(" | ", 1)[1].split(" ", 1) for line in stamped.stdout.splitlines()]
    times = [datetime.fromisoformat(stamp) for stamp, _ in lines]
    assert len(times) >= 2 and all(t.tzinfo is not None for t in times)
    assert times == sorted(times)  # interleaved by when each line was written
    later = [text for t, (_, text) in zip(times, lines, strict=True) if t >= times[-1]]
    since = orch("logs", shared, "--since", lines[-1][0])
    assert since.returncode == EXIT_OK
    assert [line.split(" | ", 1)[1] for line in since.stdout.splitlines()] == later
    assert len(later) < len(lines)  # the earlier lines are left out
    hour = orch("logs", shared, "--since", "1h")
    assert hour.returncode == EXIT_OK and len(hour.stdout.splitlines()) == len(lines)
    bad = orch("logs", shared, "--since", "yesterday-ish")
    assert bad.returncode == EXIT_USAGE and "--since" in one_line_error(bad)


def test_logs_follow_streams_until_ctrl_c(shared: str) -> None:
    proc = subprocess.Popen([str(ORCH), "logs", shared, "-f", "--tail", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=ROOT, env=cli_env())
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()  # blocks until a pod's stream delivers a line
        assert first.startswith(f"{shared}-")
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=DEADLINE)
        assert proc.returncode == EXIT_OK and "Traceback" not in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_unknown_deployment_exit_1_lists_running_names(shared: str) -> None:
    for args in (["ps", "tclinope"], ["scale", "tclinope", "2"], ["down", "tclinope"],
                 ["rollout", "tclinope", "--set", "tag=x"], ["logs", "tclinope"]):
        proc = orch(*args)
        assert proc.returncode == EXIT_FAILURE, (args, proc.stderr)
        line = one_line_error(proc)
        assert "'tclinope'" in line and shared in line


def test_spec_error_on_a_running_deployment_exit_2(shared: str) -> None:
    proc = orch("scale", shared, "0")
    assert proc.returncode == EXIT_USAGE and "replicas" in one_line_error(proc)
    nothing = orch("rollout", shared)
    assert nothing.returncode == EXIT_USAGE and "nothing to roll out" in nothing.stderr


# -- lifecycle ------------------------------------------------------------------------------


@pytest.fixture
def second_image(docker_engine: DockerEngine, runtime_image: str) -> Iterator[str]:
    """Another tag of the runtime image: enough to roll out to 'a new image'."""
    tag = f"orchestrator-runtime:cli-{uuid.uuid4().hex[:8]}"
    docker_engine.tag_image(runtime_image, tag)
    yield tag
    docker_engine.remove_image(tag)


def test_detached_up_ps_scale_rollout_logs_down(
        unique_name: str, runtime_image: str, second_image: str, tmp_path: Path,
        docker_engine: DockerEngine) -> None:
    name = unique_name
    up = orch("up", "-f", str(write_yaml(tmp_path, name, image=runtime_image)), "-d", "--json")
    assert up.returncode == EXIT_OK, up.stderr
    (summary,) = json.loads(up.stdout)
    assert summary["name"] == name and summary["action"] == "started"

    scale = orch("scale", name, "2")
    assert scale.returncode == EXIT_OK, scale.stderr
    assert [(w["replica"], w["health"]) for w in workers(name)] == [(0, "serving"),
                                                                    (1, "serving")]

    rollout = orch("rollout", name, "--image", second_image, "--set", "tag=v2")
    assert rollout.returncode == EXIT_OK, rollout.stderr
    now = workers(name)
    assert len(now) == 2 and {w["image"] for w in now} == {second_image}
    assert {w["generation"] for w in now} == {2}
    with Client(*head_address(name)) as client:
        docs = client.post("/echo", docs=[{"i": i} for i in range(4)])
    assert {d["tag"] for d in docs} == {"v2"}

    logs = orch("logs", name, "--tail", "5")
    assert logs.returncode == EXIT_OK
    assert {line.split(" | ")[0].strip() for line in logs.stdout.splitlines()} == \
        {f"{name}-head", *(w["pod"] for w in now)}

    down = orch("down", name)
    assert down.returncode == EXIT_OK, down.stderr
    assert not list_owned(docker_engine, name)


def test_down_with_the_file_that_up_took(tmp_path: Path, runtime_image: str,
                                         docker_engine: DockerEngine) -> None:
    """`down -f FILE` removes every deployment of the file; one that is not running is
    named, not an error; a deployment not in the file stays."""
    first, second, absent, other = (f"tcli{uuid.uuid4().hex[:8]}" for _ in range(4))
    uses = os.path.relpath(ECHO, tmp_path)

    def entry(name: str) -> str:
        return (f"  - {{name: {name}, uses: '{uses}:Echo', image: {runtime_image}, "
                "stop_grace: 1, timeout_ready: 60}\n")

    running = tmp_path / "running.yml"
    running.write_text("deployments:\n" + entry(first) + entry(second))
    wider = tmp_path / "wider.yml"
    wider.write_text("deployments:\n" + entry(first) + entry(absent) + entry(second))
    alone = write_yaml(tmp_path, other, image=runtime_image)
    try:
        for path in (running, alone):
            up = orch("up", "-f", str(path), "-d", "-q")
            assert up.returncode == EXIT_OK, up.stderr
            assert up.stderr == "" and up.stdout == ""  # quiet: results only, and up has none
        down = orch("down", "-f", str(wider), "--json")
        assert down.returncode == EXIT_OK, down.stderr
        result = json.loads(down.stdout)
        assert result["not_running"] == [absent]
        assert sorted(result["removed"]["containers"]) == sorted(
            f"{name}-{pod}" for name in (first, second) for pod in ("head", "s0-r0-g1"))
        assert not list_owned(docker_engine, first) and not list_owned(docker_engine, second)
        assert list_owned(docker_engine, other).containers  # not in the file: untouched
        again = orch("down", "-f", str(wider))
        assert again.returncode == EXIT_OK
        assert f"not running: {second}, {absent}, {first}" in again.stderr
    finally:
        for name in (first, second, other):
            remove_owned(docker_engine, name, grace=0)


# -- foreground up --------------------------------------------------------------------------


@dataclass
class Foreground:
    """A foreground `up` subprocess whose stderr is collected by a thread."""

    proc: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)

    def read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)

    def wait_for(self, text: str) -> None:
        deadline = time.monotonic() + DEADLINE
        while not any(text in line for line in self.lines):
            if self.proc.poll() is not None and not any(text in line for line in self.lines):
                raise AssertionError(f"up exited {self.proc.returncode}: {''.join(self.lines)}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no {text!r} in time: {''.join(self.lines)}")
            time.sleep(0.05)


@pytest.fixture
def foreground(unique_name: str, runtime_image: str, tmp_path: Path) -> Iterator[Foreground]:
    with running_up(write_yaml(tmp_path, unique_name, image=runtime_image)) as fg:
        yield fg


@contextmanager
def running_up(path: Path, *flags: str) -> Iterator[Foreground]:
    """A foreground `up -f PATH` once it is ready; killed afterwards if still running."""
    with running(["up", "-f", str(path), *flags], "ready at") as fg:
        yield fg


@contextmanager
def running(args: list[str], ready: str) -> Iterator[Foreground]:
    """`orchestrator ARGS` in the foreground once its stderr says `ready`; killed
    afterwards if still running."""
    proc = subprocess.Popen([str(ORCH), *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            cwd=ROOT, env=cli_env())
    fg = Foreground(proc)
    reader = threading.Thread(target=fg.read, daemon=True)
    reader.start()
    try:
        fg.wait_for(ready)
        yield fg
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=DEADLINE)
        reader.join(timeout=DEADLINE)
        assert proc.stderr is not None
        proc.stderr.close()


def test_foreground_up_replaces_a_worker_that_is_gone(
        unique_name: str, runtime_image: str, tmp_path: Path,
        docker_engine: DockerEngine) -> None:
    path = write_yaml(tmp_path, unique_name, image=runtime_image, replicas=2)
    with running_up(path, "--heal-after", "1") as fg:
        (gone, *_) = [w["pod"] for w in workers(unique_name)]
        docker_engine.remove_container(gone, force=True)  # behind the CLI's back
        fg.wait_for(f"replaced worker {gone}")
        now = [w["pod"] for w in workers(unique_name)]
        assert len(now) == 2 and gone not in now
        with Client(*head_address(unique_name)) as client:
            assert client.post("/echo", docs=[{}], timeout=10)[0]["tag"] == "v1"
        fg.proc.send_signal(signal.SIGINT)
        assert fg.proc.wait(timeout=DEADLINE) == EXIT_OK, "".join(fg.lines)
    assert not list_owned(docker_engine, unique_name)


def test_heal_keeps_a_detached_deployment_whole_until_it_is_removed(
        unique_name: str, runtime_image: str, tmp_path: Path,
        docker_engine: DockerEngine) -> None:
    """`up -d` returns; `heal NAME` then does what a foreground `up` does after start-up,
    and exits 0 by itself once another process took the deployment down."""
    path = write_yaml(tmp_path, unique_name, image=runtime_image, replicas=2)
    assert orch("up", "-f", str(path), "-d").returncode == EXIT_OK
    try:
        with running(["heal", unique_name, "--after", "1"], "replacing") as fg:
            (gone, *_) = [w["pod"] for w in workers(unique_name)]
            docker_engine.remove_container(gone, force=True)  # behind everyone's back
            fg.wait_for(f"replaced worker {gone}")
            now = [w["pod"] for w in workers(unique_name)]
            assert len(now) == 2 and gone not in now
            with Client(*head_address(unique_name)) as client:
                assert client.post("/echo", docs=[{}], timeout=10)[0]["tag"] == "v1"
            assert orch("down", unique_name, "--grace", "1").returncode == EXIT_OK
            fg.wait_for(f"{unique_name}: removed by another process")
            assert fg.proc.wait(timeout=DEADLINE) == EXIT_OK, "".join(fg.lines)
    finally:
        remove_owned(docker_engine, unique_name, grace=0)
    assert not list_owned(docker_engine, unique_name)


def test_heal_of_an_unknown_deployment_exit_1_and_a_bad_after_exit_2(shared: str) -> None:
    unknown = orch("heal", "no-such-deployment")
    assert unknown.returncode == 1 and shared in unknown.stderr  # it lists what runs
    bad = orch("heal", shared, "--after", "0")
    assert bad.returncode == 2 and "--after" in bad.stderr


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_foreground_up_tears_down_on_signal_exit_0(
        foreground: Foreground, unique_name: str, docker_engine: DockerEngine,
        sig: signal.Signals) -> None:
    assert list_owned(docker_engine, unique_name).containers
    foreground.proc.send_signal(sig)
    assert foreground.proc.wait(timeout=DEADLINE) == EXIT_OK, "".join(foreground.lines)
    assert not list_owned(docker_engine, unique_name)


def test_kill_9_of_foreground_up_is_reaped(
        foreground: Foreground, unique_name: str, docker_engine: DockerEngine) -> None:
    assert len(list_owned(docker_engine, unique_name).containers) == 2
    foreground.proc.kill()  # SIGKILL: no handler, no teardown in the CLI process
    foreground.proc.wait(timeout=DEADLINE)
    # its reaper saw the pipe close and removes the pods and the network
    wait_until(lambda: not list_owned(docker_engine, unique_name), timeout=DEADLINE,
               what=f"the reaper removes {unique_name}")
    wait_until(lambda: not reapers(unique_name), timeout=DEADLINE, what="the reaper exits")


def test_detached_up_outlives_the_cli_process(
        unique_name: str, runtime_image: str, tmp_path: Path,
        docker_engine: DockerEngine) -> None:
    path = write_yaml(tmp_path, unique_name, image=runtime_image)
    up = orch("up", "-f", str(path), "-d")
    assert up.returncode == EXIT_OK, up.stderr
    try:
        wait_until(lambda: not reapers(unique_name), timeout=DEADLINE,
                   what="the reaper, told to detach, exits")
        owned = list_owned(docker_engine, unique_name)
        assert len(owned.containers) == 2 and all(c.running for c in owned.containers)
    finally:
        assert orch("down", unique_name, "--grace", "1").returncode == EXIT_OK


# -- re-running up with a changed spec ---------------------------------------------------


@dataclass
class Traffic:
    """A client posting continuously from a thread; records every answer and failure."""

    address: tuple[str, int]
    tags: list[tuple[float, str]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        with Client(*self.address) as client:
            while not self.stop.is_set():
                try:
                    (doc,) = client.post("/echo", docs=[{"n": len(self.tags)}], timeout=10)
                    self.tags.append((time.monotonic(), doc["tag"]))
                except RequestError as exc:
                    self.failures.append(repr(exc))


def test_up_again_with_changed_spec_rolls_out_with_zero_failed_requests(
        unique_name: str, runtime_image: str, tmp_path: Path) -> None:
    first = write_yaml(tmp_path, unique_name, tag="v1", replicas=2, image=runtime_image)
    assert orch("up", "-f", str(first), "-d").returncode == EXIT_OK
    traffic = Traffic(head_address(unique_name))
    thread = threading.Thread(target=traffic.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: len(traffic.tags) >= 20, timeout=DEADLINE, what="v1 answers")
        changed = write_yaml(tmp_path, unique_name, tag="v2", replicas=2, image=runtime_image)
        began = time.monotonic()
        again = orch("up", "-f", str(changed), "-d", "--json")
        finished = time.monotonic()
        assert again.returncode == EXIT_OK, again.stderr
        count_at_end = len(traffic.tags)
        wait_until(lambda: len(traffic.tags) >= count_at_end + 20, timeout=DEADLINE,
                   what="answers after the update")
    finally:
        traffic.stop.set()
        thread.join(timeout=DEADLINE)
    assert json.loads(again.stdout)[0]["action"] == "updated"
    assert traffic.failures == []
    tags = [tag for _, tag in traffic.tags]
    assert tags[0] == "v1" and {"v1", "v2"} >= set(tags)
    during = [tag for at, tag in traffic.tags if began < at < finished]
    assert len(during) >= 10  # the client really ran throughout the rollout
    after = [tag for at, tag in traffic.tags if at > finished]
    assert len(after) >= 20 and set(after) == {"v2"}
    assert [w["generation"] for w in workers(unique_name)] == [2, 2]
    same = orch("up", "-f", str(changed), "-d", "--json")
    assert json.loads(same.stdout)[0]["action"] == "unchanged"


# -- executor, images --------------------------------------------------------------


def test_executor_in_process_serves_and_stops_on_ctrl_c() -> None:
    proc = subprocess.Popen([str(ORCH), "executor", "--uses", "executors/echo.py:Echo",
                             "--port", "0", "--uses-with", '{"tag": "dev"}'],
                            stderr=subprocess.PIPE, text=True, cwd=ROOT, env=cli_env())
    try:
        assert proc.stderr is not None
        port = _serving_port(proc.stderr)
        assert orch("ping", f"127.0.0.1:{port}").returncode == EXIT_OK
        with Client("127.0.0.1", port) as client:
            assert client.post("/echo", docs=[{}])[0]["tag"] == "dev"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=DEADLINE) == EXIT_OK
        assert orch("ping", f"127.0.0.1:{port}", "--timeout", "0.5").returncode == EXIT_FAILURE
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()


def _serving_port(stream: Any) -> int:
    """Read the executor's stderr until it says where it listens (readline blocks)."""
    seen = []
    for line in stream:
        seen.append(line)
        match = re.search(r"serving on port (\d+)", line)
        if match:
            return int(match.group(1))
    raise AssertionError(f"the executor exited without serving: {''.join(seen)}")


def test_images_build_uses_the_pipeline(runtime_image: str) -> None:
    proc = orch("images", "build")
    assert proc.returncode == EXIT_OK, proc.stderr[-2000:]
    assert re.match(rf"{re.escape(runtime_image)} = orchestrator-runtime:[0-9a-f]{{12}} ",
                    proc.stdout)


@pytest.mark.parametrize(("sig", "cut_at", "then"), [
    # the new r0 routes, the old one drains
    (signal.SIGKILL, "draining {name}-s0-r0", ["up"]),
    # r0 replaced and retiring in the background, r1's replacement being created
    (signal.SIGKILL, "starting {name}-s0-r1", ["rollout", "{name}", "--set", "tag=v2"]),
    # Ctrl-C: the step under way ends (r1's replacement is added), nothing after it
    (signal.SIGINT, "starting {name}-s0-r1", ["rollout", "{name}", "--set", "tag=v2"]),
])
def test_a_rollout_killed_midway_is_finished_by_the_next_command(
        unique_name: str, runtime_image: str, tmp_path: Path, docker_engine: DockerEngine,
        sig: signal.Signals, cut_at: str, then: list[str]) -> None:
    """`kill -9` of `orchestrator rollout` mid-way (a CI job's timeout, a lost SSH session)
    leaves replicas created, draining or stopped but never removed; Ctrl-C leaves a slot
    with both its old and its new replica. The next command cleans up and finishes the
    update, with the replica count unchanged; a client posts without pause throughout."""
    from orchestrator.load import Load

    # heal_after 0: no supervisor, which would itself converge what the killed rollout
    # left (see test_supervisor); here the next command must find it and finish it
    path = write_yaml(tmp_path, unique_name, image=runtime_image, replicas=3)
    path.write_text(path.read_text() + "heal_after: 0\n")
    assert orch("up", "-f", str(path), "-d").returncode == EXIT_OK
    with Load(*head_address(unique_name)) as load:
        load.wait_for(20)
        with running(["rollout", unique_name, "--set", "tag=v2"],
                     cut_at.format(name=unique_name)) as fg:
            fg.proc.send_signal(sig)
            code = fg.proc.wait(timeout=DEADLINE)
        assert code == (130 if sig == signal.SIGINT else -signal.SIGKILL)
        load.wait_for(20)
        if then == ["up"]:
            write_yaml(tmp_path, unique_name, image=runtime_image, replicas=3, tag="v2")
            path.write_text(path.read_text() + "heal_after: 0\n")
            done = orch("up", "-f", str(path), "-d")
        else:
            done = orch(*(arg.format(name=unique_name) for arg in then))
        assert done.returncode == EXIT_OK, done.stderr
        if sig == signal.SIGKILL:
            assert "left behind by an interrupted update or scale" in done.stdout + done.stderr
        finished = time.monotonic()
        load.wait_for(20)
    assert load.failures == [], load.failures[:3]
    assert {d["tag"] for r in load.after(finished) for d in r.docs} == {"v2"}
    pods = workers(unique_name)
    assert len(pods) == 3 and {p["state"] for p in pods} == {"running"}
    assert {p["routing"] for p in pods} == {"ready"}
    assert len(list_owned(docker_engine, unique_name).containers) == 4  # head + 3, no debris
