"""`orchestrator rollout NAME [--image IMG] [--set k=v ...]`: a rolling update with zero
failed requests."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

import yaml

from orchestrator.cli.base import EXIT_OK, UsageError, json_flag
from orchestrator.cli.plumbing import attach, console_for, emit_json, open_engine, target_flag
from orchestrator.ui import ProgressUI, ok


def add_arguments(p: argparse.ArgumentParser) -> None:
    target_flag(p)
    p.set_defaults(handler=run)
    p.add_argument("name", metavar="NAME")
    p.add_argument("--image", metavar="IMG", help="new runtime image for the workers")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="sets",
                   help="set a uses_with key (value read as a YAML scalar); repeatable")
    json_flag(p)


def run(args: argparse.Namespace) -> int:
    """`rollout NAME ...`."""
    sets = parse_sets(args.sets)
    if not sets and args.image is None:
        raise UsageError("nothing to roll out: give --image IMG and/or --set KEY=VALUE")
    console = console_for(args)
    with open_engine(target=getattr(args, "target", None)) as engine:
        dep = attach(args.name, engine)
        try:
            changes: dict[str, Any] = {}
            if args.image is not None:
                changes["image"] = args.image
            if sets:
                changes["uses_with"] = {**dep.spec.uses_with, **sets}
            dep.spec.evolve(**changes)  # validate before any progress output
            with ProgressUI(console, f"rolling update of {dep.name}") as ui:
                dep.rolling_update_sync(on_progress=ui, **changes)
            result = {"name": dep.name, "image": dep.spec.image,
                      "uses_with": dict(dep.spec.uses_with), "address": dep.address}
        finally:
            dep.close()
    if args.json:
        emit_json(result)
    else:
        ok(console, f"{args.name}: rolled out (image {result['image']})")
    return EXIT_OK


def parse_sets(items: Sequence[str]) -> dict[str, Any]:
    """`["tag=v2", "n=3"]` -> `{"tag": "v2", "n": 3}` (values read as YAML scalars).

    Raises:
        UsageError: an item has no '=' or an empty key.
    """
    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--set {item!r}: expected KEY=VALUE")
        try:
            value = yaml.safe_load(text) if text else ""
        except yaml.YAMLError:
            value = text
        out[key.strip()] = value if isinstance(value, str | int | float | bool) \
            or value is None else text
    return out
