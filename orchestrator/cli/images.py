"""`orchestrator images build [--force]`: the cached runtime image pipeline."""

from __future__ import annotations

import argparse
from typing import Any

from orchestrator.cli.base import EPILOG, EXIT_OK, quiet_flag
from orchestrator.cli.plumbing import open_engine
from orchestrator.images import prepare_runtime_image
from orchestrator.ui import make_console

_BUILD_TIMEOUT = 900  # seconds for one engine call: a docker build can be slow


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="images_command", required=True, metavar="COMMAND")
    build = sub.add_parser("build", help="build the runtime image if its inputs changed",
                           description="Build the runtime image if its inputs changed "
                           "(a cached build takes well under a second).", epilog=EPILOG)
    build.set_defaults(handler=run_build)
    build.add_argument("--force", action="store_true", help="rebuild even when cached")
    build.add_argument("--tag", help="tag to point at the image "
                       "(default orchestrator-runtime:latest)")
    build.add_argument("--base", help="base image (default: python:3.11-slim, else "
                       "debootstrap of the host's distribution)")
    quiet_flag(build)


def run_build(args: argparse.Namespace) -> int:
    """`images build [--force] [--tag T] [--base B]`."""
    console = make_console(quiet=args.quiet)
    options: dict[str, Any] = {"force": args.force, "base": args.base}
    if args.tag:
        options["tag"] = args.tag
    with open_engine(timeout=_BUILD_TIMEOUT) as engine:
        result = prepare_runtime_image(
            engine, log=lambda line: console.print(line, markup=False), **options)
    state = "cached" if result.cached else "built"
    print(f"{result.ref} = {result.hash_ref} ({state}, base {result.base})", flush=True)
    return EXIT_OK
