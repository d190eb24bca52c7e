"""The supervisor: one host process per engine that heals the detached deployments.

`orchestrator up --detach` labels what it starts `orchestrator.supervised=true` (when its
`heal_after` is set) and makes sure the supervisor runs. The supervisor looks at the
engine every `SCAN` seconds, attaches to every deployment whose labels ask for healing
and heals each one from a background healer thread, exactly as a started `Deployment`
heals itself (same `heal`, same lock: converge, recreate a stopped head or uses pod,
replace sick workers start-first). It exits once no such deployment is left (unless
`--stay`, as under systemd), and `orchestrator down` of the last one stops it at once.

Files (one set per engine, keyed by DOCKER_HOST), in `$ORCHESTRATOR_STATE_DIR`, else
`$XDG_STATE_HOME/orchestrator`, else `~/.local/state/orchestrator`:

- `supervisor-<engine>.lock`: held (flock) for the supervisor's whole life, so "is it
  running?" never trusts a stale pid: a killed supervisor releases it with its last
  breath, and a second one refuses to start;
- `supervisor-<engine>.pid`: its pid (and whether it stays when idle), for stop/status;
- `supervisor-<engine>.log`: its stdout/stderr, one line per replacement.

Not `$XDG_RUNTIME_DIR`: it is created at login and removed at logout, so a supervisor
started at boot by systemd and a CLI run from a login shell would not agree on where to
look. It runs on the host beside the engine: no container gets the Docker socket.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING

from orchestrator import labels as L
from orchestrator.errors import OrchestratorError

if TYPE_CHECKING:
    from orchestrator.deployment import Deployment
    from orchestrator.engine.base import ContainerEngine

STATE_DIR_ENV = "ORCHESTRATOR_STATE_DIR"
SCAN = 1.0
"""Seconds between two looks at the engine for supervised deployments."""
START_WAIT = 30.0
STOP_WAIT = 30.0

log = logging.getLogger("orchestrator.supervisor")


# -- where its files are -----------------------------------------------------------------


def state_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Where the supervisor's pid, lock and log files live (see the module docstring)."""
    env = os.environ if environ is None else environ
    if env.get(STATE_DIR_ENV):
        return Path(env[STATE_DIR_ENV])
    base = Path(env["XDG_STATE_HOME"]) if env.get("XDG_STATE_HOME") \
        else Path(env.get("HOME") or Path.home()) / ".local" / "state"
    return base / "orchestrator"


def engine_key(environ: Mapping[str, str] | None = None) -> str:
    """A short, file-name-safe name of the engine this process talks to (DOCKER_HOST)."""
    env = os.environ if environ is None else environ
    host = env.get("DOCKER_HOST", "")
    if not host:
        return "default"
    return hashlib.sha256(host.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Paths:
    """The supervisor's files for one engine."""

    lock: Path
    pid: Path
    log: Path

    @classmethod
    def for_engine(cls, environ: Mapping[str, str] | None = None) -> Paths:
        base = state_dir(environ) / f"supervisor-{engine_key(environ)}"
        return cls(lock=base.with_suffix(".lock"), pid=base.with_suffix(".pid"),
                   log=base.with_suffix(".log"))


# -- is it running? start, stop --------------------------------------------------------


@dataclass(frozen=True)
class Status:
    """What the files say. `stale`: a pid file without a live supervisor: it was killed
    (or the machine rebooted) without cleaning up."""

    running: bool
    pid: int | None
    stay: bool
    stale: bool
    paths: Paths

    def describe(self) -> str:
        if self.running:
            stays = ", stays when idle" if self.stay else ""
            return f"running (pid {self.pid}{stays}; log {self.paths.log})"
        if self.stale:
            return f"not running (pid {self.pid} died without cleaning up)"
        return "not running"


def status(paths: Paths | None = None) -> Status:
    """Is the supervisor of this engine running? Asked of its lock, not of a pid."""
    paths = paths or Paths.for_engine()
    pid, stay = _read_pid(paths.pid)
    running = _lock_held(paths.lock)
    return Status(running=running, pid=pid, stay=stay,
                  stale=not running and pid is not None, paths=paths)


def _read_pid(path: Path) -> tuple[int | None, bool]:
    try:
        data = json.loads(path.read_text())
        return int(data["pid"]), bool(data.get("stay", False))
    except (OSError, ValueError, KeyError, TypeError):
        return None, False


def _lock_held(path: Path) -> bool:
    try:
        handle = open(path, "a")  # noqa: SIM115 - closed below
    except OSError:
        return False
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        handle.close()  # closing releases a lock we may have taken
    return False


def start(paths: Paths | None = None, *, stay: bool = False) -> Status:
    """Start the supervisor of this engine in the background (its own session, output to
    its log file) unless one runs; returns once it holds its lock.

    Raises:
        OrchestratorError: it exited at once (its log's last lines are in the message).
    """
    paths = paths or Paths.for_engine()
    now = status(paths)
    if now.running:
        return now
    paths.log.parent.mkdir(parents=True, exist_ok=True)
    with open(paths.log, "a") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "orchestrator.supervisor", *(["--stay"] if stay else [])],
            stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True,
            env={**os.environ, STATE_DIR_ENV: str(paths.log.parent)}, cwd="/")
    deadline = time.monotonic() + START_WAIT
    while time.monotonic() < deadline:
        now = status(paths)
        if now.running and now.pid is not None:
            return now
        if process.poll() is not None:  # exited: another one won the lock, or it failed
            now = status(paths)
            if now.running:
                return now
            raise OrchestratorError(f"the supervisor exited at once: {tail(paths, 5)}")
        time.sleep(0.05)
    raise OrchestratorError(f"the supervisor did not start within {START_WAIT:g}s: "
                            f"{tail(paths, 5)}")


def stop(paths: Paths | None = None, *, wait: float = STOP_WAIT) -> bool:
    """SIGTERM the supervisor and wait until it has let go of its lock (SIGKILL after
    `wait` seconds). Returns whether one was running."""
    paths = paths or Paths.for_engine()
    now = status(paths)
    if not now.running or now.pid is None:
        with contextlib.suppress(OSError):
            paths.pid.unlink()
        return False
    for sig, patience in ((signal.SIGTERM, wait), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(now.pid, sig)
        deadline = time.monotonic() + patience
        while time.monotonic() < deadline:
            if not _lock_held(paths.lock):
                with contextlib.suppress(OSError):
                    paths.pid.unlink()
                return True
            time.sleep(0.05)
    return True


def tail(paths: Paths, lines: int) -> str:
    """The last lines of the supervisor's log ("" when it has none)."""
    try:
        text = paths.log.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


# -- which deployments ask for it ------------------------------------------------------


def supervised_filter() -> dict[str, str]:
    return {**L.managed(), L.SUPERVISED: "true"}


def wanted_names(engine: ContainerEngine) -> set[str]:
    """Deployments on the engine whose labels ask the supervisor to heal them."""
    return {c.labels[L.DEPLOYMENT]
            for c in engine.list_containers(supervised_filter(), brief=True)
            if L.DEPLOYMENT in c.labels}


# -- the daemon ---------------------------------------------------------------------------


class Supervisor:
    """The daemon's loop: attach to each supervised deployment and heal it in the
    background; drop the ones that are gone; leave when none is left (unless `stay`)."""

    def __init__(self, paths: Paths, *, stay: bool = False, scan: float = SCAN,
                 engine: ContainerEngine | None = None,
                 attach: Callable[[str], Deployment] | None = None) -> None:
        if engine is None:
            from orchestrator.engine.docker_engine import DockerEngine

            engine = DockerEngine.from_env()
        self.paths = paths
        self.stay = stay
        self.scan = scan
        self.stop = threading.Event()
        self.engine = engine
        self.attach = attach or self._attach
        self.watched: dict[str, Deployment] = {}
        self._lock: IO[str] | None = None

    # -- the lock and pid file --------------------------------------------------------
    def claim(self) -> bool:
        """Take the lock and write the pid file; False when another supervisor runs."""
        self.paths.lock.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.paths.lock, "a")  # noqa: SIM115 - held for life
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return False
        self._lock = handle
        tmp = self.paths.pid.with_suffix(".pid.tmp")
        tmp.write_text(json.dumps({"pid": os.getpid(), "stay": self.stay}))
        tmp.replace(self.paths.pid)
        return True

    def release(self) -> None:
        with contextlib.suppress(OSError):
            if _read_pid(self.paths.pid)[0] == os.getpid():
                self.paths.pid.unlink()
        handle, self._lock = self._lock, None
        if handle is not None:
            handle.close()

    # -- the loop ---------------------------------------------------------------------
    def run(self) -> int:
        if not self.claim():
            log.info("another supervisor runs for this engine; exiting")
            return 0
        log.info("supervisor started (pid %d, engine %s)", os.getpid(),
                 os.environ.get("DOCKER_HOST") or "default")
        try:
            while not self.stop.is_set():
                if not self.look() and not self.stay and self.leave():
                    break
                self.stop.wait(self.scan)
        finally:
            for name in list(self.watched):
                self.drop(name, "supervisor stopping")
            self.release()
            self.engine.close()
            log.info("supervisor stopped")
        return 0

    def look(self) -> bool:
        """Attach to new supervised deployments, drop the gone ones. True while any is
        left (an engine that does not answer counts as "some": try again later)."""
        try:
            names = wanted_names(self.engine)
        except OrchestratorError as exc:
            log.warning("cannot list the deployments: %s", exc)
            return True
        for name in sorted(set(self.watched) - names):
            self.drop(name, "removed")
        for name in sorted(names - set(self.watched)):
            self.add(name)
        for dep in self.watched.values():
            healer = dep.healer
            if healer is not None and dep.spec.heal_after:  # an update may change it
                healer.heal_after = dep.spec.heal_after
        return bool(names)

    def _attach(self, name: str) -> Deployment:
        from orchestrator.deployment import Deployment

        return Deployment.attach(name, engine=self.engine)

    def add(self, name: str) -> None:
        try:
            dep = self.attach(name)
        except OrchestratorError as exc:  # half-started or half-removed: next look
            log.info("%s: not attached yet: %s", name, exc)
            return
        self.watched[name] = dep
        if dep.start_healing() is None:
            log.info("%s: heal_after is off; not healing it", name)
        else:
            log.info("%s: healing pods sick or gone for %gs", name, dep.spec.heal_after or 0)

    def drop(self, name: str, why: str) -> None:
        dep = self.watched.pop(name)
        dep.close()  # an attached handle: stops its healer, leaves the pods alone
        log.info("%s: no longer healed (%s)", name, why)

    def leave(self) -> bool:
        """Nothing left to heal: let go of the lock, then look once more, so that an
        `up -d` that saw this supervisor running just before is never left unhealed."""
        self.release()
        try:
            left = wanted_names(self.engine)
        except OrchestratorError:
            left = set()
        if left and self.claim():
            return False
        log.info("no supervised deployment left; exiting")
        return True


def main(argv: list[str]) -> int:
    stay = "--stay" in argv
    logging.basicConfig(stream=sys.stderr, level=logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    supervisor = Supervisor(Paths.for_engine(), stay=stay)

    def on_signal(signum: int, frame: object) -> None:
        supervisor.stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_signal)
    return supervisor.run()


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
