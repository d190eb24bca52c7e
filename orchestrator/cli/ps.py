"""`orchestrator ps [NAME] [--json]`: one row per pod; health asked over gRPC right now."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from orchestrator.cli.base import EXIT_OK
from orchestrator.cli.plumbing import emit_json, open_engine, target_flag
from orchestrator.cli.supervise import ensure_supervisor, supervisor_line
from orchestrator.engine.base import ContainerInfo
from orchestrator.status import deployment_status, pod_statuses


def add_arguments(p: argparse.ArgumentParser) -> None:
    target_flag(p)
    p.set_defaults(handler=run)
    p.add_argument("name", nargs="?", metavar="NAME", help="only this deployment")
    p.add_argument("--json", action="store_true", help="a JSON array, one object per pod")


def run(args: argparse.Namespace) -> int:
    """`ps [NAME] [--json | -q]`."""
    with open_engine(target=getattr(args, "target", None)) as engine:
        rows = [pod.to_dict() for pod in deployment_status(engine, args.name)]
        ensure_supervisor(engine, expected=True)  # a killed one is noticed and restarted
        line = supervisor_line(engine)
    if line is not None and not args.quiet and not args.json:
        print(line, file=sys.stderr, flush=True)
    if args.json:
        emit_json(rows)
    elif args.quiet:  # like `docker ps -q`: the names only
        print("\n".join(row["pod"] for row in rows), flush=True)
    else:
        print(format_table(rows, with_deployment=not args.name), flush=True)
    return EXIT_OK


def format_table(rows: Sequence[Mapping[str, Any]], *, with_deployment: bool) -> str:
    """Aligned plain-text columns of `PodStatus.to_dict()` rows (greppable; no colour)."""
    headers = ["POD", "ROLE", "SHARD", "REPLICA", "STATE", "RESTARTS", "REPLACED", "HEALTH",
               "ROUTING", "UPTIME", "PORTS", "IMAGE"]
    if with_deployment:
        headers.insert(0, "DEPLOYMENT")
    gpus = any(r.get("gpus") for r in rows)  # the column shows only where GPUs are used
    if gpus:
        headers.insert(-1, "GPUS")
    nodes = any(r.get("node") for r in rows)  # a Swarm: where each pod runs
    if nodes:
        headers.insert(headers.index("STATE"), "NODE")
    table = [headers]
    for r in rows:
        cells = [r["pod"], r["role"], dash(r["shard"]), dash(r["replica"]), r["state"],
                 str(r["restarts"]), str(r.get("replaced", 0)), r["health"],
                 dash(r["routing"]),
                 format_uptime(r["uptime_seconds"]), ",".join(r["ports"]) or "-", r["image"]]
        if gpus:
            cells.insert(-1, dash(r.get("gpus")))
        if nodes:
            cells.insert(4, r.get("node") or "-")
        table.append([r["deployment"], *cells] if with_deployment else cells)
    return align(table)


def align(table: Sequence[Sequence[str]]) -> str:
    """Columns padded to their widest cell, two spaces apart, no trailing blanks."""
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True))
                     .rstrip() for row in table)


def dash(value: object) -> str:
    return "-" if value is None else str(value)


def format_uptime(seconds: float | None) -> str:
    """'45s', '3m12s', '2h05m', '3d04h'."""
    if seconds is None:
        return "-"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def pod_rows(pods: Sequence[ContainerInfo], now: datetime | None = None
             ) -> list[dict[str, Any]]:
    """`ps --json`'s objects for a listing (see `orchestrator.status.pod_statuses`)."""
    return [pod.to_dict() for pod in pod_statuses(pods, now)]
