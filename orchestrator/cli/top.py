"""`orchestrator top [NAME] [--json] [--no-stream]`: CPU, memory, restarts and requests in
flight per pod, refreshed in place like `docker stats` (Ctrl-C stops)."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

from orchestrator.cli.base import EXIT_OK, UsageError, json_flag
from orchestrator.cli.plumbing import emit_json, open_engine
from orchestrator.cli.ps import align, dash
from orchestrator.engine.base import ContainerEngine
from orchestrator.status import PodUsage, deployment_usage

_CLEAR = "\x1b[H\x1b[2J"  # cursor home, clear screen: redraw in place on a terminal


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.set_defaults(handler=run)
    p.add_argument("name", nargs="?", metavar="NAME", help="only this deployment")
    json_flag(p)
    p.add_argument("--no-stream", action="store_true",
                   help="print one sample and exit (--json always does)")
    p.add_argument("--interval", type=float, default=1.0, metavar="SECONDS",
                   help="pause between two samples (default 1; a sample itself takes "
                   "about a second)")


def run(args: argparse.Namespace) -> int:
    """`top [NAME]`: one sample with --json or --no-stream, else until Ctrl-C."""
    if args.interval < 0:
        raise UsageError("must be a number of seconds >= 0", field="--interval")
    with open_engine() as engine:
        if args.json:
            emit_json([pod.to_dict() for pod in deployment_usage(engine, args.name)])
        elif args.no_stream:
            print(format_usage(deployment_usage(engine, args.name),
                               with_deployment=not args.name), flush=True)
        else:
            _live(engine, args.name, args.interval)
    return EXIT_OK


def _live(engine: ContainerEngine, name: str | None, interval: float) -> None:
    """Redraw in place on a terminal; elsewhere, one table after the other."""
    redraw = sys.stdout.isatty()
    try:
        while True:
            table = format_usage(deployment_usage(engine, name), with_deployment=not name)
            print(f"{_CLEAR if redraw else ''}{table}{'' if redraw else chr(10)}", flush=True)
            time.sleep(interval)
    except KeyboardInterrupt:
        pass  # Ctrl-C is how one stops watching: not an error


def format_usage(rows: Sequence[PodUsage], *, with_deployment: bool) -> str:
    """Aligned columns: POD ROLE STATE CPU % MEM USAGE / LIMIT MEM % RESTARTS IN-FLIGHT."""
    headers = ["POD", "ROLE", "STATE", "CPU %", "MEM USAGE / LIMIT", "MEM %", "RESTARTS",
               "IN-FLIGHT"]
    if with_deployment:
        headers.insert(0, "DEPLOYMENT")
    table = [headers]
    for r in rows:
        percent = r.memory_percent
        cells = [r.pod, r.role, r.state, f"{r.cpu_percent:.2f}%",
                 f"{format_bytes(r.memory_bytes)} / {format_bytes(r.memory_limit_bytes)}",
                 "-" if percent is None else f"{percent:.2f}%", str(r.restarts),
                 dash(r.in_flight)]
        table.append([r.deployment, *cells] if with_deployment else cells)
    return align(table)


def format_bytes(count: int) -> str:
    """'512B', '12.3KiB', '45.6MiB', '7.8GiB' (binary units, as `docker stats`)."""
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{int(value)}{unit}" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    raise AssertionError("unreachable")
