"""`orchestrator up -f FILE [-d]`: start what is not running, roll out what changed; in the
foreground, keep the replicas healthy until Ctrl-C, then remove everything."""

from __future__ import annotations

import argparse
import threading

from rich.console import Console

from orchestrator.apply import Applied, apply_each, leave_running, tear_down
from orchestrator.cli.base import EXIT_OK, json_flag
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
from orchestrator.config import DeploymentConfig, load_file
from orchestrator.healing import keep_healthy
from orchestrator.ui import ok


def add_arguments(p: argparse.ArgumentParser) -> None:
    target_flag(p)
    p.set_defaults(handler=run)
    p.add_argument("-f", "--file", required=True, help="deployment YAML file")
    p.add_argument("-d", "--detach", action="store_true",
                   help="return once ready and leave the deployment running")
    p.add_argument("--heal-after", type=float, default=30.0, metavar="SECONDS",
                   help="in the foreground, replace a worker replica that has been unhealthy "
                   "or gone for this long, start-first (default 30; 0 turns it off)")
    json_flag(p)


def run(args: argparse.Namespace) -> int:
    """`up -f FILE [--detach]`: start what is not running, roll out what changed."""
    configs = load_file(args.file)
    console = console_for(args)
    if args.detach:
        return _detached(configs, args, console)
    return _foreground(configs, args, console)


def _detached(configs: list[DeploymentConfig], args: argparse.Namespace,
              console: Console) -> int:
    done: list[Applied] = []
    with open_engine(target=getattr(args, "target", None)) as engine:
        try:
            for item in apply_each(configs, engine, ConsoleReporter(console)):
                done.append(item)  # kept as they come: a later failure still leaves them
            _report(done, args, console)
        finally:
            leave_running(done)  # labels let a later process find them
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
