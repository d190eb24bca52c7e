"""Live reload's watcher without an engine: snapshots, the debounce, compile checks, the
host paths in a pod's traceback, and the loop around a stand-in deployment."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import pytest

from orchestrator.errors import RolloutError, RolloutInProgress, SpecError
from orchestrator.reload import (
    Reloader,
    ReloadReport,
    changes,
    compile_errors,
    host_paths,
    snapshot,
    watched_roots,
)
from orchestrator.spec import DeploymentSpec
from tests.support.waiting import wait_until


class FakeDeployment:
    """What the watcher needs: a name, a spec, and a rolling update that can fail."""

    def __init__(self, spec: DeploymentSpec) -> None:
        self.name = spec.name
        self.spec = spec
        self.updates = 0
        self.fail_with: list[Exception] = []
        self.lock = threading.Lock()

    def rolling_update_sync(self) -> None:
        with self.lock:
            self.updates += 1
            if self.fail_with:
                raise self.fail_with.pop(0)


@pytest.fixture
def code(tmp_path: Path) -> Path:
    folder = tmp_path / "code"
    (folder / "pkg").mkdir(parents=True)
    (folder / "live.py").write_text("class Live: ...\n")
    (folder / "pkg" / "helper.py").write_text("X = 1\n")
    (folder / "__pycache__").mkdir()
    (folder / "__pycache__" / "live.cpython-311.pyc").write_bytes(b"x")
    return folder


def spec_of(code: Path, **fields: Any) -> DeploymentSpec:
    return DeploymentSpec.from_fields(name="r", uses=f"{code / 'live.py'}:Live", **fields)


def touch(path: Path, text: str) -> None:
    path.write_text(text)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))  # coarse clocks


def test_the_executor_folder_is_watched_recursively_without_caches(code: Path) -> None:
    dep = FakeDeployment(spec_of(code, watch=[str(code / "pkg")]))
    assert watched_roots(dep) == [code, code / "pkg"]
    seen = snapshot(watched_roots(dep))
    assert set(seen) == {str(code / "live.py"), str(code / "pkg" / "helper.py")}
    touch(code / "pkg" / "helper.py", "X = 2\n")
    (code / "new.py").write_text("")
    assert changes(seen, snapshot([code])) == [str(code / "new.py"),
                                              str(code / "pkg" / "helper.py")]


def test_reload_needs_something_to_watch() -> None:
    with pytest.raises(SpecError) as info:
        DeploymentSpec.from_fields(name="r", uses="pkg.m:E", reload=True)
    assert info.value.field == "reload"


def test_compile_errors_name_file_line_and_text(tmp_path: Path) -> None:
    good, bad = tmp_path / "good.py", tmp_path / "bad.py"
    good.write_text("x = 1\n")
    bad.write_text("x = 1\n\ndef f(:\n    pass\n")
    assert compile_errors([str(good), str(tmp_path / "gone.py"), "notes.txt"]) is None
    error = compile_errors([str(good), str(bad)])
    assert error is not None and error.startswith(f"{bad}:3: SyntaxError: ")
    assert error.endswith("def f(:")


def test_a_pods_traceback_names_the_hosts_files(code: Path) -> None:
    dep = FakeDeployment(spec_of(code))
    text = 'File "/opt/uses/live.py", line 4, in <module>'
    assert host_paths(text, dep) == f'File "{code}/live.py", line 4, in <module>'


def test_the_watcher_debounces_refuses_bad_code_and_retries_when_busy(code: Path) -> None:
    dep = FakeDeployment(spec_of(code))
    reports: list[ReloadReport] = []
    watcher = Reloader(dep, reports.append, poll=0.02, debounce=0.1)
    watcher.start()
    try:
        assert reports[0].kind == "watching"
        for i in range(3):  # a burst of saves: one reload
            touch(code / "live.py", f"class Live: v = {i}\n")
        wait_until(lambda: watcher.reloads == 1, what="one reload")
        assert dep.updates == 1
        touch(code / "live.py", "class Live(:\n")
        wait_until(lambda: any(r.kind == "refused" for r in reports), what="refused")
        assert dep.updates == 1  # nothing was rolled out
        dep.fail_with = [RolloutInProgress("busy"),
                         RolloutError("rolled back: File \"/opt/uses/live.py\", line 1")]
        touch(code / "live.py", "raise RuntimeError\n")
        wait_until(lambda: any(r.kind == "failed" for r in reports), what="failed")
        assert dep.updates == 3  # busy once, then the failed update
        failed = next(r for r in reports if r.kind == "failed")
        assert f'"{code}/live.py", line 1' in failed.message
        touch(code / "live.py", "class Live: ...\n")
        wait_until(lambda: watcher.reloads == 2, what="the fix rolled out")
    finally:
        watcher.stop()
    assert not watcher.alive
    kinds = [r.kind for r in reports]
    assert kinds.count("reloaded") == 2 and kinds.count("changed") == 4
