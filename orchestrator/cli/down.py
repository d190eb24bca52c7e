"""`orchestrator down NAME | --all | -f FILE`: remove by label; works after the starter was
killed."""

from __future__ import annotations

import argparse

from orchestrator.apply import held_locks, remove
from orchestrator.cli.base import EXIT_OK, UsageError, json_flag
from orchestrator.cli.plumbing import (
    ConsoleReporter,
    console_for,
    emit_json,
    open_engine,
    target_flag,
)
from orchestrator.cli.supervise import stop_if_idle
from orchestrator.config import load_file
from orchestrator.deployment import running_deployments
from orchestrator.ui import ok


def add_arguments(p: argparse.ArgumentParser) -> None:
    target_flag(p)
    p.set_defaults(handler=run)
    p.add_argument("name", nargs="?", metavar="NAME", help="deployment name")
    p.add_argument("--all", action="store_true", help="every deployment on this engine")
    p.add_argument("-f", "--file", help="every deployment of this YAML file (those not "
                   "running are listed, not an error)")
    p.add_argument("--grace", type=float, default=10.0, metavar="SECONDS",
                   help="SIGTERM-to-SIGKILL grace per pod (default 10)")
    json_flag(p)


def run(args: argparse.Namespace) -> int:
    """`down NAME | --all | -f FILE`."""
    if sum((bool(args.name), args.all, args.file is not None)) != 1:
        raise UsageError("give exactly one of NAME, --all or -f FILE")
    names = _targets(args)
    console = console_for(args)
    with open_engine(target=getattr(args, "target", None)) as engine:
        with held_locks(names if names is not None else running_deployments(engine)):
            gone = remove(engine, names, grace=args.grace, reporter=ConsoleReporter(console),
                          missing_ok=args.file is not None)
        stop_if_idle(engine)  # the last detached deployment went: so does the supervisor
    if args.json:
        result: dict[str, object] = {"removed": {"containers": list(gone.containers),
                                                 "networks": list(gone.networks)}}
        if args.file is not None:
            result["not_running"] = list(gone.not_running)
        emit_json(result)
        return EXIT_OK
    removed_of = [n for n in names or () if n not in gone.not_running]
    where = f" of {', '.join(removed_of)}" if removed_of else ""
    ok(console, f"removed {len(gone.containers)} container(s) and {len(gone.networks)} "
                f"network(s){where}")
    if gone.not_running:
        console.print(f"not running: {', '.join(gone.not_running)}", markup=False)
    return EXIT_OK


def _targets(args: argparse.Namespace) -> list[str] | None:
    """The deployment names to remove; None: every one."""
    if args.all:
        return None
    if args.file is None:
        return [args.name]
    # the last one first (`up` starts them in the file's order); external deployments run
    # elsewhere: `up` started nothing of them
    return [cfg.spec.name for cfg in reversed(load_file(args.file)) if not cfg.spec.external]
