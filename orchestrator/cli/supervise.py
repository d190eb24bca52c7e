"""`orchestrator supervise status|start|stop|logs` and `supervise --systemd [--install]`:
the supervisor that heals detached deployments (orchestrator/supervisor.py); plus the
checks `up -d`, `ps`, `scale` and `down` make of it."""

from __future__ import annotations

import argparse
import getpass
import os
import shlex
import sys
import time
from pathlib import Path

from orchestrator import supervisor as sv
from orchestrator.cli.base import EXIT_FAILURE, EXIT_OK, UsageError, json_flag
from orchestrator.cli.plumbing import emit_json
from orchestrator.engine.base import ContainerEngine
from orchestrator.errors import OrchestratorError

UNIT_NAME = "orchestrator-supervisor.service"
UNIT_DIR = Path("/etc/systemd/system")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.set_defaults(handler=run)
    p.add_argument("action", nargs="?", choices=("status", "start", "stop", "logs"),
                   help="status (default), start, stop, or logs (its log file)")
    p.add_argument("--stay", action="store_true",
                   help="start: keep running when no deployment is left (as under systemd)")
    p.add_argument("-n", "--tail", type=int, default=50, metavar="N",
                   help="logs: the last N lines (default 50)")
    p.add_argument("-f", "--follow", action="store_true", help="logs: keep printing")
    p.add_argument("--systemd", action="store_true",
                   help="print a systemd unit that starts the supervisor at boot, after "
                   "docker.service")
    p.add_argument("--install", action="store_true",
                   help="with --systemd: write the unit to --unit-dir and say how to enable it")
    p.add_argument("--unit-dir", type=Path, default=UNIT_DIR, metavar="DIR",
                   help=f"with --install: where the unit goes (default {UNIT_DIR})")
    json_flag(p)


def run(args: argparse.Namespace) -> int:
    """`supervise [status|start|stop|logs]` or `supervise --systemd [--install]`."""
    if args.systemd:
        return _systemd(args)
    if args.install:
        raise UsageError("--install goes with --systemd", field="--install")
    action = args.action or "status"
    paths = sv.Paths.for_engine()
    if action == "logs":
        return _logs(paths, args.tail, args.follow)
    if action == "start":
        now = sv.start(paths, stay=args.stay)
    elif action == "stop":
        was = sv.stop(paths)
        now = sv.status(paths)
        if not args.json:
            print("supervisor stopped" if was else "supervisor was not running", flush=True)
            return EXIT_OK
    else:
        now = sv.status(paths)
    if args.json:
        emit_json({"running": now.running, "pid": now.pid, "stay": now.stay,
                   "stale": now.stale, "log": str(paths.log), "lock": str(paths.lock)})
    else:
        print(f"supervisor: {now.describe()}", flush=True)
    return EXIT_OK if now.running or action != "start" else EXIT_FAILURE


def _logs(paths: sv.Paths, lines: int, follow: bool) -> int:
    try:
        handle = open(paths.log, errors="replace")  # noqa: SIM115 - closed below
    except OSError:
        print(f"no supervisor log yet ({paths.log})", file=sys.stderr, flush=True)
        return EXIT_OK
    with handle:
        for line in handle.read().splitlines()[-lines:] if lines > 0 else []:
            print(line, flush=True)
        while follow:
            line = handle.readline()
            if line:
                print(line, end="", flush=True)
            else:
                time.sleep(0.2)
    return EXIT_OK


# -- systemd ------------------------------------------------------------------------------


def systemd_unit(environ: dict[str, str] | None = None, *, user: str | None = None,
                 python: str | None = None) -> str:
    """The unit: the supervisor of this engine at boot, after the engine, restarted on
    failure, staying when idle; the same state directory as this user's CLI."""
    env = dict(os.environ if environ is None else environ)
    state = sv.state_dir(env)
    lines = [f"Environment={shlex.quote(f'{sv.STATE_DIR_ENV}={state}')}"]
    if env.get("DOCKER_HOST"):
        lines.append(f"Environment={shlex.quote('DOCKER_HOST=' + env['DOCKER_HOST'])}")
    exe = python or sys.executable
    return "\n".join([
        "[Unit]",
        "Description=orchestrator supervisor: heals detached deployments (orchestrator up -d)",
        "After=docker.service network-online.target",
        "Wants=docker.service network-online.target",
        "",
        "[Service]",
        "Type=simple",
        f"User={user or getpass.getuser()}",
        *lines,
        f"ExecStart={exe} -m orchestrator.supervisor --stay",
        "Restart=on-failure",
        "RestartSec=2",
        "",
        "[Install]",
        "WantedBy=multi-user.target",
        "",
    ])


def _systemd(args: argparse.Namespace) -> int:
    unit = systemd_unit()
    if not args.install:
        print(unit, end="", flush=True)
        return EXIT_OK
    target = args.unit_dir / UNIT_NAME
    try:
        args.unit_dir.mkdir(parents=True, exist_ok=True)
        target.write_text(unit)
    except OSError as exc:
        raise OrchestratorError(f"cannot write {target}: {exc} (run it as root, or pass "
                                "--unit-dir)") from exc
    print(f"wrote {target}\nenable it with: systemctl daemon-reload && "
          f"systemctl enable --now {UNIT_NAME}", flush=True)
    return EXIT_OK


# -- what up -d, ps, scale and down do --------------------------------------------------


def ensure_supervisor(engine: ContainerEngine, *, expected: bool = False,
                      quiet: bool = False) -> sv.Status | None:
    """Start the supervisor when a deployment on `engine` asks for it and none runs.

    A dead one (its pid file outlived it: killed, OOM) is restarted with a warning;
    `expected`: the caller (`ps`, `scale`) expected it to run, so any start is warned
    about. Messages go to stderr (`quiet`: warnings only). Returns its status (None:
    nothing to supervise).
    """
    try:
        if not sv.wanted_names(engine):
            return None
        paths = sv.Paths.for_engine()
        before = sv.status(paths)
        if before.running:
            return before
        now = sv.start(paths)
    except OrchestratorError as exc:
        _say(f"warning: the supervisor could not be started: {exc}")
        return None
    if before.stale or expected:
        why = f"pid {before.pid} was killed or died" if before.stale else "it was not running"
        _say(f"warning: the supervisor was not running ({why}); restarted it "
             f"(pid {now.pid}; log {paths.log})")
    elif not quiet:
        _say(f"supervisor started (pid {now.pid}): it heals detached deployments; "
             "`orchestrator supervise status`")
    return now


def stop_if_idle(engine: ContainerEngine) -> bool:
    """`down`: once no deployment on `engine` asks for it, stop the supervisor (one under
    systemd, which stays when idle, is left alone). Returns whether it was stopped."""
    try:
        if sv.wanted_names(engine):
            return False
    except OrchestratorError:
        return False
    paths = sv.Paths.for_engine()
    now = sv.status(paths)
    if not now.running or now.stay:
        return False
    return sv.stop(paths)


def supervisor_line(engine: ContainerEngine) -> str | None:
    """`ps`: one line on whether the supervisor runs (None: nothing asks for it and none
    runs)."""
    names = sv.wanted_names(engine)
    now = sv.status()
    if not names and not now.running:
        return None
    what = f"{len(names)} detached deployment(s) to heal" if names else "nothing to heal"
    return f"supervisor: {now.describe()}; {what}"


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
