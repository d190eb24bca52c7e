"""Live reload on the real engine: an edit of the executor's file under load is rolled out
with zero failed requests; code that does not compile is kept out (file and line reported)
and code that fails at import is rolled back, the old replicas serving throughout; and
`orchestrator up --watch` does the same from the command line."""

from __future__ import annotations

import signal
import textwrap
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from orchestrator.client import Client
from orchestrator.deployment import Deployment
from orchestrator.load import Load
from orchestrator.reload import ReloadReport, print_report
from tests.integration.test_cli import DEADLINE, running_up
from tests.support.waiting import wait_until

if TYPE_CHECKING:
    from orchestrator.engine.docker_engine import DockerEngine

pytestmark = pytest.mark.integration


LIVE = '''\
from orchestrator import Executor, requests

VERSION = "{version}"


class Live(Executor):
    @requests(on="/echo")
    def echo(self, docs, **kwargs):
        for d in docs:
            d["version"] = VERSION
'''


def code_folder(tmp_path: Path, version: str = "v1") -> Path:
    """A folder the pods can read (uid 10001), holding live.py."""
    folder = tmp_path / "code"
    folder.mkdir()
    for p in (tmp_path, folder):
        p.chmod(0o755)
    write(folder / "live.py", LIVE.format(version=version))
    return folder


def write(path: Path, text: str) -> None:
    """As an editor saves: a new file renamed over the old one."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.chmod(0o644)
    tmp.replace(path)


def worker_names(dep: Deployment) -> set[str]:
    dep.update_pod_args()
    return {a.name for a in dep.all_args if a.role == "worker"}


def versions(load: Load, after: float) -> set[str]:
    return {d["version"] for r in load.after(after) for d in r.docs}


def test_an_edit_under_load_is_rolled_out_with_zero_failed_requests(
        own_image: str, dep_name: str, tmp_path: Path) -> None:
    folder = code_folder(tmp_path)
    reports: list[ReloadReport] = []
    with Deployment(name=dep_name, uses=f"{folder}/live.py:Live", replicas=2, reload=True,
                    image=own_image, stop_grace=1) as dep:
        reloader = dep.watch(on_report=reports.append)  # the running watcher, our printer
        before = worker_names(dep)
        with Load(dep.head_host, dep.head_port) as load:
            assert versions(load, 0) == {"v1"}
            write(folder / "live.py", LIVE.format(version="v2"))
            wait_until(lambda: reloader.reloads >= 1 or any(
                r.kind in ("refused", "failed") for r in reports), timeout=DEADLINE * 3,
                what="the edit rolled out")
            assert reloader.reloads == 1, reports
            done = time.monotonic()
            load.wait_for(10)
        assert load.failures == []
        assert versions(load, done) == {"v2"}
        assert worker_names(dep).isdisjoint(before)  # every worker replaced
        kinds = [r.kind for r in reports]
        assert kinds.index("changed") < kinds.index("reloaded")
        assert str(folder / "live.py") in next(r for r in reports if r.kind == "changed").files


def test_broken_code_is_kept_out_and_the_old_replicas_keep_serving(
        own_image: str, dep_name: str, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    folder = code_folder(tmp_path)
    live = folder / "live.py"
    reports: list[ReloadReport] = []
    with Deployment(name=dep_name, uses=f"{live}:Live", replicas=2, image=own_image,
                    stop_grace=1, timeout_ready=60) as dep:
        dep.watch(on_report=reports.append, debounce=0.5)  # watching without reload=True
        before = worker_names(dep)
        with Load(dep.head_host, dep.head_port) as load:
            # 1. a syntax error: refused before anything starts
            broken = LIVE.format(version="v2") + "\ndef broken(:\n    pass\n"
            write(live, broken)
            wait_until(lambda: any(r.kind == "refused" for r in reports),
                       timeout=DEADLINE, what="the syntax error reported")
            load.wait_for(5)
            # 2. compiles, but fails at import: the update's first new replica fails, the
            #    update is rolled back
            bad = LIVE.format(version="v3") + "\nraise RuntimeError('broken at import')\n"
            write(live, bad)
            wait_until(lambda: any(r.kind == "failed" for r in reports),
                       timeout=DEADLINE * 3, what="the import error reported")
            load.wait_for(5)
        assert load.failures == []
        assert versions(load, 0) == {"v1"}  # the old code served every request
        assert worker_names(dep) == before
    refused = next(r for r in reports if r.kind == "refused")
    at = broken.splitlines().index("def broken(:") + 1
    assert refused.message.startswith(f"{live}:{at}: SyntaxError")
    assert "def broken(:" in refused.message
    failed = next(r for r in reports if r.kind == "failed")
    line = bad.splitlines().index("raise RuntimeError('broken at import')") + 1
    assert f'File "{live}", line {line}' in failed.message  # the host's path, not /opt/uses
    assert "broken at import" in failed.message and "rolled back" in failed.message
    print_report(refused)  # what a library user sees by default
    err = capsys.readouterr().err
    assert f"[reload {dep_name}] new code refused" in err and f"{live}:{at}" in err


def test_up_watch_reloads_on_an_edit(own_image: str, dep_name: str, tmp_path: Path,
                                     docker_engine: DockerEngine) -> None:
    folder = code_folder(tmp_path)
    app = folder / "app.yml"
    app.write_text(textwrap.dedent(f"""\
        name: {dep_name}
        uses: live.py:Live
        replicas: 2
        image: {own_image}
        stop_grace: 1
    """))
    with running_up(app, "--watch", "--heal-after", "0") as fg:
        fg.wait_for("[reload]")
        (line,) = [x for x in fg.lines if "ready at" in x]
        host, port = line.split("ready at ")[1].split()[0].rsplit(":", 1)
        with Client(host, int(port)) as client:
            assert client.post("/echo", docs=[{}])[0]["version"] == "v1"
            write(folder / "live.py", LIVE.format(version="v2"))
            fg.wait_for("every worker runs the new code")
            assert {client.post("/echo", docs=[{}])[0]["version"] for _ in range(4)} == {"v2"}
        fg.proc.send_signal(signal.SIGINT)
        fg.wait_for("stopped and removed")
        assert fg.proc.wait(timeout=DEADLINE) == 0
