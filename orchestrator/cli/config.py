"""`orchestrator config -f FILE [--json]`: validate a deployment file and print the spec it
resolves to, like `docker compose config`; `orchestrator config --schema`: the file
format's JSON Schema (generated from the spec's fields, for editors and CI checks).

The resolved file has every field explicit, variables substituted, paths absolute and a
Jina file translated into our format; it loads again with the same result. Values of
secret-looking keys under `env` and `uses_with` (TOKEN, PASSWORD, API_KEY, ...) are
redacted. Exit 0 when the file is valid, 2 (one line naming the file, line and field)
when it is not.
"""

from __future__ import annotations

import argparse
import json
import sys

from orchestrator.cli.base import EXIT_OK, UsageError, env_flags, json_flag
from orchestrator.config import render, resolve_file
from orchestrator.schema import config_schema


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.set_defaults(handler=run)
    p.add_argument("-f", "--file", help="deployment YAML file to validate and resolve")
    p.add_argument("--schema", action="store_true",
                   help="print the JSON Schema of deployment files instead")
    env_flags(p)
    json_flag(p)


def run(args: argparse.Namespace) -> int:
    """`config -f FILE [--json]` or `config --schema`."""
    if args.schema:
        if args.file is not None:
            raise UsageError("config: give -f FILE or --schema, not both")
        sys.stdout.write(json.dumps(config_schema(), indent=2) + "\n")
        return EXIT_OK
    if args.file is None:
        raise UsageError("config: give -f FILE (the file to check) or --schema")
    loaded = resolve_file(args.file, env=args.env, env_files=args.env_files)
    if not args.quiet:
        for warning in loaded.warnings:
            print(f"orchestrator: warning: {warning}", file=sys.stderr, flush=True)
    sys.stdout.write(render(loaded, as_json=args.json))
    return EXIT_OK
