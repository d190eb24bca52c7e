"""`orchestrator demo`: what `scripts/demo` runs (see orchestrator/demo.py)."""

from __future__ import annotations

import argparse
import contextlib
import os

from orchestrator.demo import run as run_demo


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.set_defaults(handler=run)
    p.add_argument("--name", default="demo", help="deployment name (default demo)")
    p.add_argument("--replicas", type=int, default=3, help="replicas per shard (default 3)")
    p.add_argument("--shards", type=int, default=2, help="shards (default 2)")


def run(args: argparse.Namespace) -> int:
    """`demo [--name N] [--replicas R] [--shards S]`."""
    if not args.quiet:
        return run_demo(args.name, args.replicas, args.shards)
    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
        return run_demo(args.name, args.replicas, args.shards)  # the exit code says it all
