"""`orchestrator up -f FILE [-d]`: start what is not running, roll out what changed; in the
foreground, keep the replicas healthy until Ctrl-C, then remove everything."""

from __future__ import annotations

import argparse
import threading
from collections.abc import Callable

from rich.console import Console

from orchestrator.apply import (
    Applied,
    apply_each,
    leave_running,
    open_supervised,
    tear_down,
    with_heal_after,
)
from orchestrator.cli.base import EXIT_OK, UsageError, env_flags, json_flag
from orchestrator.cli.plumbing import (
    ConsoleReporter,
    Stop,
    console_for,
    emit_json,
    heal_printer,
    ignore_signals_while,
    install_stop_handlers,
    open_engine,
    restore_signals,
    target_flag,
)
from orchestrator.cli.supervise import ensure_supervisor
from orchestrator.config import DeploymentConfig, load_file
from orchestrator.errors import SpecError
from orchestrator.healing import keep_healthy
from orchestrator.reload import ReloadReport
from orchestrator.ui import ok


def add_arguments(p: argparse.ArgumentParser) -> None:
    target_flag(p)
    p.set_defaults(handler=run)
    p.add_argument("-f", "--file", required=True, help="deployment YAML file")
    p.add_argument("-d", "--detach", action="store_true",
                   help="return once ready and leave the deployment running")
    p.add_argument("--heal-after", type=float, default=None, metavar="SECONDS",
                   help="replace a pod that has been unhealthy or gone for this long, "
                   "start-first (default: each deployment's heal_after, 30 unless the file "
                   "says otherwise; 0 turns it off). With --detach it is stored with the "
                   "deployment, and the supervisor heals it")
    env_flags(p)
    p.add_argument("--watch", action="store_true",
                   help="live reload: when an executor's file or folder (or a path of the "
                   "file's watch:) changes, replace the workers by a zero-downtime rolling "
                   "update; code that does not compile or start is kept out")
    json_flag(p)


def run(args: argparse.Namespace) -> int:
    """`up -f FILE [--detach] [--watch]`: start what is not running, roll out what changed."""
    if getattr(args, "watch", False) and args.detach:
        raise UsageError("--watch runs in the foreground; it cannot be used with --detach",
                         field="watch")
    configs = load_file(args.file, env=args.env, env_files=args.env_files)
    console = console_for(args)
    if args.detach:
        return _detached(configs, args, console)
    return _foreground(configs, args, console)


def _detached(configs: list[DeploymentConfig], args: argparse.Namespace,
              console: Console) -> int:
    if args.heal_after is not None:
        configs = [with_heal_after(cfg, args.heal_after) for cfg in configs]
    done: list[Applied] = []
    with open_engine(target=getattr(args, "target", None)) as engine:
        try:
            for item in apply_each(configs, engine, ConsoleReporter(console),
                                   opener=open_supervised):
                done.append(item)  # kept as they come: a later failure still leaves them
            _report(done, args, console)
        finally:
            leave_running(done)  # labels let a later process find them
            ensure_supervisor(engine, quiet=args.quiet or args.json)
    return EXIT_OK


def _foreground(configs: list[DeploymentConfig], args: argparse.Namespace,
                console: Console) -> int:
    done: list[Applied] = []
    stop = threading.Event()
    previous = install_stop_handlers(stop)
    reporter = ConsoleReporter(console)
    try:
        with open_engine(target=getattr(args, "target", None)) as engine:
            try:
                for item in apply_each(configs, engine, reporter):
                    done.append(item)  # kept as they come: all are removed on the way out
                _report(done, args, console)
                _watch(done, getattr(args, "watch", False), console)
                console.print("press Ctrl-C to stop and remove everything", markup=False)
                keep_healthy([item.deployment for item in done], args.heal_after, stop,
                             heal_printer(console))
            except Stop:
                pass
            finally:
                ignore_signals_while(lambda: tear_down(done, engine, reporter), previous)
    except Stop:  # arrived before the engine was open: nothing to remove
        pass
    finally:
        restore_signals(previous)
    ok(console, "stopped and removed")
    return EXIT_OK


_SAID = {"started": "ready", "updated": "updated, ready", "scaled": "scaled, ready",
         "unchanged": "up to date"}


def _report(done: list[Applied], args: argparse.Namespace, console: Console) -> None:
    if args.json:
        emit_json([item.summary() for item in done])
        return
    for item in done:
        s = item.summary()
        ok(console, f"{s['name']}: {_SAID[item.action]} at {s['address']} "
                    f"({s['shards']} shard(s) x {s['replicas']} replica(s))")
        for note in item.notes:
            console.print(f"  note: {note}", markup=False)


def _watch(done: list[Applied], wanted: bool, console: Console) -> None:
    """Live reload of every deployment (`--watch`), or of those whose file says
    `reload: true` (which their handle started already; here it reports to the console)."""
    for item in done:
        dep = item.deployment
        if not (wanted or dep.spec.reload):
            continue
        try:
            dep.watch(on_report=_reload_printer(console))
        except SpecError as exc:
            console.print(f"  note: {dep.name}: not watched: {exc}", markup=False)


def _reload_printer(console: Console) -> Callable[[ReloadReport], None]:
    def show(report: ReloadReport) -> None:
        head = f"[reload] {report.deployment}: "
        if report.kind == "watching":
            console.print(head + "watching " + ", ".join(report.files), markup=False)
        elif report.kind == "changed":
            console.print(head + "changed " + ", ".join(report.files), markup=False)
        elif report.kind == "reloaded":
            ok(console, head + "every worker runs the new code")
        else:
            what = "not reloaded: the code does not compile" if report.kind == "refused" \
                else "reload failed and was undone"
            console.print(f"{head}{what}; the old replicas keep serving\n{report.message}",
                          markup=False, style="red")
    return show
