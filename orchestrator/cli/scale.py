"""`orchestrator scale NAME N`: start new replicas healthy first; drain removed ones first."""

from __future__ import annotations

import argparse

from orchestrator.cli.base import EXIT_OK, json_flag
from orchestrator.cli.plumbing import attach, console_for, emit_json, open_engine, target_flag
from orchestrator.cli.supervise import ensure_supervisor
from orchestrator.ui import ProgressUI, ok


def add_arguments(p: argparse.ArgumentParser) -> None:
    target_flag(p)
    p.set_defaults(handler=run)
    p.add_argument("name", metavar="NAME")
    p.add_argument("replicas", type=int, metavar="N", help="replicas per shard (>= 1)")
    json_flag(p)


def run(args: argparse.Namespace) -> int:
    """`scale NAME N`."""
    console = console_for(args)
    with open_engine(target=getattr(args, "target", None)) as engine:
        dep = attach(args.name, engine)
        try:
            dep.spec.with_replicas(args.replicas)  # validate before any progress output
            with ProgressUI(console, f"scaling {dep.name} to {args.replicas}") as ui:
                dep.scale_sync(args.replicas, on_progress=ui)
            result = {"name": dep.name, "replicas": dep.spec.replicas, "address": dep.address}
        finally:
            dep.close()
        ensure_supervisor(engine, expected=True)  # a killed one is noticed here
    if args.json:
        emit_json(result)
    else:
        ok(console, f"{args.name}: {args.replicas} replica(s) per shard")
    return EXIT_OK
