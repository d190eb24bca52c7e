"""`orchestrator executor --uses file.py:Class`: the worker runtime in this process, for
development (Ctrl-C stops it)."""

from __future__ import annotations

import argparse

from orchestrator.runtime.__main__ import main as runtime_main


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.set_defaults(handler=run)
    p.add_argument("--uses", required=True, metavar="FILE.py:Class",
                   help="file.py:Class or pkg.module:Class")
    p.add_argument("--uses-with", metavar="JSON", help="JSON object of __init__ kwargs")
    p.add_argument("--port", type=int, default=50051, help="0 lets the OS pick (default 50051)")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")


def run(args: argparse.Namespace) -> int:
    """`executor --uses ...`."""
    argv = ["worker", "--uses", args.uses, "--port", str(args.port), "--host", args.host,
            "--name", args.uses.rpartition(":")[2] or "executor"]
    if args.uses_with:
        argv += ["--uses-with", args.uses_with]
    return runtime_main(argv)
