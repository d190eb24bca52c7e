"""`python -m orchestrator.runtime` as the image runs it: real subprocesses."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import sysconfig
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator import Client
from tests.support.ports import free_port
from tests.unit.runtime.harness import ROOT, wait_until

TIMEOUT = 30


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "orchestrator.runtime", *args], cwd=ROOT, text=True,
        capture_output=True, timeout=TIMEOUT, env={**os.environ, **(env or {})},
    )


@pytest.fixture
def spawn() -> Iterator[Any]:
    procs: list[subprocess.Popen[str]] = []

    def start(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        p = subprocess.Popen(
            [sys.executable, "-m", "orchestrator.runtime", *args], cwd=ROOT, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, **(env or {})},
        )
        procs.append(p)
        return p

    yield start
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.communicate(timeout=TIMEOUT)


@pytest.mark.parametrize("role", ["worker", "head", "probe"])
def test_help(role: str) -> None:
    res = run(role, "--help")
    assert res.returncode == 0
    assert "--port" in res.stdout


@pytest.mark.parametrize(
    ("uses", "needle"),
    [
        ("no_such_module_xyz:Echo", "cannot import 'no_such_module_xyz'"),
        ("executors.echo:Nope", "has no class 'Nope'"),
        ("executors.echo:Broken", "__init__ raised RuntimeError: broken on purpose"),
        ("executors/missing.py:Echo", "no such file"),
        ("executors.echo", "must look like"),
    ],
)
def test_executor_load_failure_exits_3_with_one_clear_line(uses: str, needle: str) -> None:
    res = run("worker", "--uses", uses, "--port", str(free_port()))
    assert res.returncode == 3, res.stderr
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("orchestrator.runtime: worker: cannot load executor:")
    assert uses in last and needle in last


def test_usage_errors_exit_2() -> None:
    no_uses = run("worker", env={"ORCHESTRATOR_USES": ""})
    assert no_uses.returncode == 2 and "ORCHESTRATOR_USES" in no_uses.stderr
    bad_polling = run("head", "--shards", "1", "--polling", "SOME")
    assert bad_polling.returncode == 2 and "'SOME' is not ANY or ALL" in bad_polling.stderr
    bad_with = run("worker", "--uses", "executors.echo:Echo", "--uses-with", "[1]")
    assert bad_with.returncode == 2 and "uses_with" in bad_with.stderr


@pytest.mark.parametrize("argv", [
    ["worker"],
    ["worker", "--uses", "executors.echo:Echo", "--port", "50052", "--shard-id", "1",
     "--replica-id=2", "--grace", "0.5", "--uses-with", '{"tag": "v1"}', "--name", "w"],
    ["head", "--shards", "2", "--worker", "0=a:1", "--worker=1=b:2", "--http", "--polling",
     '{"/index":"ALL","*":"ANY"}', "--health-interval", "0.25", "--timeout-send", "100"],
    ["head", "--shards=1", "--state", "/tmp/s", "--tls-cert", "c", "--tls-key", "k",
     "--max-message-bytes", "1024", "--host", "127.0.0.1"],
    ["probe"],
    ["probe", "--port", "7", "--timeout", "3", "--tls", "--tls-cert", "c", "--tls-key", "k"],
])
def test_the_quick_parser_reads_what_argparse_reads(argv: list[str]) -> None:
    from orchestrator.runtime.__main__ import _parser, parse

    quick = parse(argv)
    assert quick is not None
    assert vars(quick) == vars(_parser().parse_args(argv))


@pytest.mark.parametrize("argv", [
    [], ["nope"], ["worker", "--help"], ["worker", "-h"], ["head"],  # --shards missing
    ["worker", "--port", "x"], ["worker", "--port"], ["worker", "--port", "--host"],
    ["worker", "--prt", "1"], ["head", "--shard", "1"],  # argparse takes abbreviations
    ["head", "--shards", "1", "--http=yes"], ["worker", "--port", "-1"], ["worker", "extra"],
])
def test_anything_unusual_is_left_to_argparse(argv: list[str]) -> None:
    """help, errors and the forms argparse alone knows: the runtime then gives argparse's
    own answer (usage, exit 2)."""
    from orchestrator.runtime.__main__ import parse

    assert parse(argv) is None


def test_a_worker_starts_without_the_imports_it_does_not_need() -> None:
    """Every pod pays for what its runtime imports: argparse (0.4 MB) only for help and
    errors; pathlib (0.5 MB with urllib.parse and ipaddress), dataclasses and the head's
    configuration (0.4 MB), hashlib and queue (0.1 MB each) never. Run with -S: here the
    editable install's .pth imports pathlib at start-up; the image installs a wheel."""
    code = (f"import sys; sys.path.append({sysconfig.get_paths()['purelib']!r}); "
            "from orchestrator.runtime.__main__ import parse, ROLES; "
            "from orchestrator.runtime import worker, loader, worker_config; "
            "parse(['worker', '--uses', 'executors.echo:Echo']); "
            "loader.load_executor('executors/echo.py:Echo'); "
            "bad = {'argparse', 'pathlib', 'dataclasses', 'hashlib', 'queue', "
            "'orchestrator.runtime.config'} & "
            "set(sys.modules); sys.exit(9 if bad else 0)")
    assert subprocess.run([sys.executable, "-S", "-c", code], cwd=ROOT, timeout=TIMEOUT
                          ).returncode == 0


GATE = """
import time
from pathlib import Path
from orchestrator import Executor, requests

class Gate(Executor):
    def __init__(self, marker: str, **kwargs):
        super().__init__(**kwargs)
        self.marker = Path(marker)

    @requests
    def hold(self, docs, **kwargs):
        self.marker.write_text("started")
        time.sleep(1.0)
        return [{"done": True, "name": self.runtime_args.name}]
"""


def test_sigterm_lets_in_flight_finish_then_exits_0(spawn: Any, tmp_path: Path) -> None:
    (tmp_path / "gate.py").write_text(GATE)
    marker = tmp_path / "started"
    port = free_port()
    p = spawn("worker", "--port", str(port), "--host", "127.0.0.1", "--name", "gate-0",
              "--grace", "10", env={"ORCHESTRATOR_USES": f"{tmp_path}/gate.py:Gate",
                                    "ORCHESTRATOR_USES_WITH": f'{{"marker": "{marker}"}}'})
    out: list[Any] = []
    with Client("127.0.0.1", port) as c:
        wait_until(lambda: c.is_ready(timeout=0.5) or p.poll() is not None, TIMEOUT, "ready")
        assert run("probe", "--port", str(port)).returncode == 0
        t = threading.Thread(target=lambda: out.extend(c.post("/x", [{}], timeout=TIMEOUT)))
        t.start()
        wait_until(marker.exists, TIMEOUT, "call in flight")
        p.send_signal(signal.SIGTERM)
        wait_until(lambda: not c.is_ready(timeout=0.2), TIMEOUT, "NOT_SERVING after SIGTERM")
        assert p.poll() is None  # still finishing the in-flight call
        t.join(TIMEOUT)
    assert p.wait(TIMEOUT) == 0
    assert out == [{"done": True, "name": "gate-0"}]
    assert run("probe", "--port", str(port), "--timeout", "0.5").returncode == 1


def test_head_cli_routes_to_initial_workers(spawn: Any) -> None:
    wport, hport = free_port(), free_port()
    spawn("worker", "--uses", "executors.echo:Echo", "--port", str(wport), "--host", "127.0.0.1",
          "--uses-with", '{"tag": "cli"}')
    head = spawn("head", "--shards", "1", "--port", str(hport), "--host", "127.0.0.1",
                 "--worker", f"0=127.0.0.1:{wport}", "--health-interval", "0.1",
                 env={"ORCHESTRATOR_TOKEN": "t"})
    with Client("127.0.0.1", hport) as c:
        wait_until(lambda: c.is_ready(timeout=0.5) or head.poll() is not None, TIMEOUT, "head")
        assert c.post("/echo", [{"i": 1}])[0]["tag"] == "cli"
    head.send_signal(signal.SIGTERM)
    assert head.wait(TIMEOUT) == 0


def test_head_reads_its_token_from_a_file(spawn: Any, tmp_path: Path) -> None:
    """ORCHESTRATOR_TOKEN_FILE (a mounted secret) instead of the environment."""
    from orchestrator.control import HeadControl
    from orchestrator.errors import RequestError

    secret = tmp_path / "token"
    secret.write_text("from-a-file\n")
    port = free_port()
    head = spawn("head", "--shards", "1", "--port", str(port), "--host", "127.0.0.1",
                 env={"ORCHESTRATOR_TOKEN": "", "ORCHESTRATOR_TOKEN_FILE": str(secret)})
    with HeadControl(f"127.0.0.1:{port}", "from-a-file", timeout=5) as control:
        wait_until(lambda: _lists(control) or head.poll() is not None, TIMEOUT, "head up")
        assert control.list_workers() == []
    with HeadControl(f"127.0.0.1:{port}", "from-the-env", timeout=5) as wrong, \
            pytest.raises(RequestError):
        wrong.list_workers()


def _lists(control: Any) -> bool:
    from orchestrator.errors import RequestError

    try:
        control.list_workers()
    except RequestError:
        return False
    return True


@pytest.mark.parametrize(("env", "needle"), [
    ({"ORCHESTRATOR_TOKEN": "t", "ORCHESTRATOR_TOKEN_FILE": "/etc/hostname"}, "not both"),
    ({"ORCHESTRATOR_TOKEN_FILE": "/no/such/file"}, "cannot read /no/such/file"),
    ({"ORCHESTRATOR_TOKEN_FILE": "/dev/null"}, "/dev/null is empty"),
])
def test_a_bad_token_file_fails_the_head_at_start_exit_2(env: dict[str, str],
                                                         needle: str) -> None:
    res = run("head", "--shards", "1", "--port", str(free_port()), "--host", "127.0.0.1",
              env={"ORCHESTRATOR_TOKEN": "", **env})
    assert res.returncode == 2
    assert "ORCHESTRATOR_TOKEN_FILE" in res.stderr and needle in res.stderr
