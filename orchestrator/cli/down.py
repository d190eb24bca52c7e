"""`orchestrator down NAME | --all`: remove by label; works after the starter was killed."""

from __future__ import annotations

import argparse

from orchestrator.apply import remove
from orchestrator.cli.base import EXIT_OK, UsageError, json_flag
from orchestrator.cli.plumbing import ConsoleReporter, console_for, emit_json, open_engine
from orchestrator.ui import ok


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.set_defaults(handler=run)
    p.add_argument("name", nargs="?", metavar="NAME", help="deployment name")
    p.add_argument("--all", action="store_true", help="every deployment on this engine")
    p.add_argument("--grace", type=float, default=10.0, metavar="SECONDS",
                   help="SIGTERM-to-SIGKILL grace per pod (default 10)")
    json_flag(p)


def run(args: argparse.Namespace) -> int:
    """`down NAME | --all`."""
    if bool(args.name) == bool(args.all):
        raise UsageError("give exactly one of NAME or --all")
    console = console_for(args)
    target = None if args.all else args.name
    with open_engine() as engine:
        gone = remove(engine, None if target is None else [target], grace=args.grace,
                      reporter=ConsoleReporter(console))
    if args.json:
        emit_json({"removed": {"containers": list(gone.containers),
                               "networks": list(gone.networks)}})
    else:
        ok(console, f"removed {len(gone.containers)} container(s) and {len(gone.networks)} "
                    f"network(s){' of ' + target if target else ''}")
    return EXIT_OK
