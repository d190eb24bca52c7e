"""`orchestrator rollout history|undo|restart NAME`: the rollout history, in kubectl's terms.

The parsing is `orchestrator.cli.rollout`'s (the same `rollout` command); this module
calls `Deployment.rollout_history`, `undo` and `restart` and prints.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from typing import Any

from orchestrator.cli.base import EXIT_OK
from orchestrator.cli.plumbing import attach, console_for, emit_json, open_engine
from orchestrator.cli.ps import align
from orchestrator.deployment import Deployment
from orchestrator.planning.history import Revision, current
from orchestrator.ui import ProgressUI, ok


def run(action: str, args: argparse.Namespace) -> int:
    """`rollout history|undo|restart NAME`."""
    console = console_for(args)
    with open_engine() as engine:
        dep = attach(args.name, engine)
        try:
            if action == "history":
                revisions = dep.rollout_history()
                running = current(revisions, dep.spec.worker_hash())
                if args.json:
                    emit_json([_row(r, running) for r in revisions])
                else:
                    print(format_history(revisions, running), flush=True)
                return EXIT_OK
            title = f"{'undo' if action == 'undo' else 'restart'} of {dep.name}"
            with ProgressUI(console, title) as ui:
                if action == "undo":
                    rev = dep.undo_sync(args.to_revision, on_progress=ui)
                else:
                    rev = dep.restart_sync(on_progress=ui)
            _report(dep, action, rev, args, console)
        finally:
            dep.close()
    return EXIT_OK


def _report(dep: Deployment, action: str, rev: Revision | None, args: argparse.Namespace,
            console: Any) -> None:
    if args.json:
        emit_json({"name": dep.name, "revision": None if rev is None else _row(rev, rev),
                   "address": dep.address})
    elif rev is None:
        ok(console, f"{dep.name}: already runs that revision's spec; nothing replaced")
    elif action == "undo":
        ok(console, f"{dep.name}: {rev.change.split(':')[0]}, rolled out as revision "
                    f"{rev.number}")
    else:
        ok(console, f"{dep.name}: every replica replaced (revision {rev.number})")


def _row(rev: Revision, running: Revision | None) -> dict[str, Any]:
    return {**rev.summary(), "running": running is not None and running.number == rev.number}


def format_history(revisions: Sequence[Revision], running: Revision | None) -> str:
    """REVISION, WHEN, OUTCOME, CHANGE, NOTE columns; '*' marks the revision that runs."""
    table = [["REVISION", "WHEN", "OUTCOME", "CHANGE", "NOTE"]]
    for rev in revisions:
        mark = "*" if running is not None and rev.number == running.number else ""
        table.append([f"{rev.number}{mark}", format_when(rev.at), rev.outcome, rev.change,
                      rev.note or "-"])
    return align(table)


def format_when(at: float) -> str:
    """Local time to the second; '-' when unknown."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at)) if at > 0 else "-"
