"""Live reload for local development: `Deployment(reload=True)` and `orchestrator up --watch`.

A thread polls the modification times and sizes of the watched files (no new dependency:
one `stat` per file every `poll` seconds; the executor's folder holds a few files). When
something changed and then stayed unchanged for `debounce` seconds (an editor's save is
often several writes), the workers are replaced by the deployment's normal rolling update:
start-first, health-gated, drained, so requests keep succeeding.

What is watched: the folder of every local executor file (`uses`, `uses_before`,
`uses_after`: the folder is what the pods mount, so a helper module beside the executor
counts), recursively, without hidden folders and `__pycache__`; plus the spec's `watch`
paths. An executor installed in the image or a docker:// image has no file here to watch.

Bad code never replaces good code:
- a Python file that does not compile is refused before anything starts (reported with its
  file, line and the offending text);
- code that compiles but fails to import or start fails the first new replica; the update
  is rolled back and the old replicas keep serving. The pod's traceback is reported, its
  container paths (/opt/uses/...) written as the host's files.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from orchestrator.errors import OrchestratorError, RolloutInProgress, SpecError
from orchestrator.planning.pods import USES_MOUNT
from orchestrator.spec import DeploymentSpec


class Deployment(Protocol):
    """What the watcher needs of a `Deployment` (it never imports the facade)."""

    @property
    def name(self) -> str: ...

    @property
    def spec(self) -> DeploymentSpec: ...

    def rolling_update_sync(self) -> None: ...

POLL = 0.5
DEBOUNCE = 1.0
BUSY_RETRY = 1.0  # another update, scale or heal holds the lock: try again after this
_SKIP_DIRS = {"__pycache__", "node_modules"}

Snapshot = dict[str, tuple[int, int]]  # path -> (mtime_ns, size)
ReportKind = Literal["watching", "changed", "reloaded", "refused", "failed"]


@dataclass(frozen=True)
class ReloadReport:
    """One thing the watcher saw or did.

    - watching: started, on `files` (the roots);
    - changed: these files changed; a reload follows after the debounce;
    - reloaded: every worker now runs the new code;
    - refused: the new code does not compile (`message`: file, line, text); nothing changed;
    - failed: the rolling update failed and was undone (`message`: why, with the pod's
      traceback); the old replicas keep serving.
    """

    deployment: str
    kind: ReportKind
    files: tuple[str, ...] = ()
    message: str = ""


def watched_roots(dep: Deployment) -> list[Path]:
    """The folders of the local executor files, and the spec's `watch` paths."""
    spec = dep.spec
    roots = [Path(u.path).parent for u in (spec.uses, spec.uses_before, spec.uses_after)
             if u is not None and u.kind == "file"]
    roots += [Path(p) for p in spec.watch]
    return sorted(set(roots))


def snapshot(roots: Iterable[Path]) -> Snapshot:
    """mtime and size of every file under `roots` (a vanished file is simply absent)."""
    out: Snapshot = {}
    for root in roots:
        files = [root] if root.is_file() else _files(root)
        for path in files:
            try:
                st = path.stat()
            except OSError:
                continue
            out[str(path)] = (st.st_mtime_ns, st.st_size)
    return out


def _files(root: Path) -> list[Path]:
    found: list[Path] = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".") and d not in _SKIP_DIRS]
        found += [Path(folder) / n for n in names
                  if not n.startswith(".") and not n.endswith((".pyc", ".swp", "~"))]
    return found


def changes(before: Snapshot, after: Snapshot) -> list[str]:
    """Files added, removed or modified between two snapshots."""
    return sorted(p for p in set(before) | set(after) if before.get(p) != after.get(p))


def compile_errors(files: Iterable[str]) -> str | None:
    """The first Python file among `files` that does not compile: 'FILE:LINE: message',
    then the offending line; None when all compile."""
    for name in sorted(files):
        if not name.endswith(".py"):
            continue
        try:
            source = Path(name).read_bytes()
        except OSError:
            continue  # removed: the import will say what is missing
        try:
            compile(source, name, "exec", dont_inherit=True)
        except SyntaxError as exc:
            where = f"{exc.filename or name}:{exc.lineno or '?'}"
            text = (exc.text or "").rstrip()
            return f"{where}: {type(exc).__name__}: {exc.msg}" + (f"\n    {text}" if text else "")
    return None


def host_paths(message: str, dep: Deployment) -> str:
    """A pod's traceback names /opt/uses/FILE: write the host's path instead."""
    uses = dep.spec.uses
    if uses.kind != "file":
        return message
    return message.replace(f"{USES_MOUNT}/", f"{Path(uses.path).parent}/")


def print_report(report: ReloadReport) -> None:
    """The default `on_report` of a library user: one line (plus the error) on stderr."""
    what = {"watching": "watching " + ", ".join(report.files),
            "changed": "changed: " + ", ".join(report.files),
            "reloaded": "reloaded: every worker runs the new code",
            "refused": "new code refused, the old replicas keep serving",
            "failed": "reload failed and was undone, the old replicas keep serving"}
    line = f"[reload {report.deployment}] {what[report.kind]}"
    if report.message:
        line += f"\n{report.message}"
    print(line, file=sys.stderr, flush=True)


class Reloader:
    """Watches one deployment's code and rolls its workers out when it changes."""

    def __init__(self, dep: Deployment, on_report: Callable[[ReloadReport], None], *,
                 poll: float = POLL, debounce: float = DEBOUNCE) -> None:
        self.dep = dep
        self.on_report = on_report
        self.poll = poll
        self.debounce = debounce
        self.roots = watched_roots(dep)
        if not self.roots:
            raise SpecError("live reload needs a local executor file (uses: file.py:Class) "
                            "or paths to watch (watch: [...]); an executor installed in "
                            "the image or a docker:// image has nothing here to watch",
                            field="reload")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"reload-{dep.name}",
                                        daemon=True)
        self.reloads = 0  # completed reloads (tests wait on it)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def start(self) -> None:
        self._seen = snapshot(self.roots)
        self._thread.start()
        self._report("watching", tuple(str(r) if r.exists() else f"{r} (missing)"
                                       for r in self.roots))

    def stop(self) -> None:
        """Stop watching; a reload under way finishes first (it holds the rollout lock)."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join()

    def _report(self, kind: ReportKind, files: tuple[str, ...] = (), message: str = ""
                ) -> None:
        with contextlib.suppress(Exception):  # a printer must never stop the watcher
            self.on_report(ReloadReport(self.dep.name, kind, files, message))

    def _run(self) -> None:
        while not self._stop.wait(self.poll):
            changed = self._settled_changes()
            if changed:
                self.reload(changed)

    def _settled_changes(self) -> list[str]:
        """What changed since the last look, once nothing changed for `debounce` seconds."""
        now = snapshot(self.roots)
        changed = set(changes(self._seen, now))
        if not changed:
            return []
        self._seen = now
        quiet_since = time.monotonic()
        while not self._stop.wait(self.poll):
            now = snapshot(self.roots)
            more = changes(self._seen, now)
            if more:
                changed.update(more)
                self._seen = now
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since >= self.debounce:
                return sorted(changed)
        return []

    def reload(self, changed: list[str]) -> bool:
        """Check the changed code, then replace every worker. True when it was done."""
        self._report("changed", tuple(changed))
        error = compile_errors(changed)
        if error is not None:
            self._report("refused", tuple(changed), error)
            return False
        while not self._stop.is_set():
            try:
                self.dep.rolling_update_sync()
            except RolloutInProgress:  # an update, scale or heal runs: wait for it
                self._stop.wait(BUSY_RETRY)
                continue
            except OrchestratorError as exc:
                self._report("failed", tuple(changed), host_paths(str(exc), self.dep))
                return False
            self.reloads += 1
            self._report("reloaded", tuple(changed))
            return True
        return False
