"""`orchestrator rollout`: rolling updates and their history, in kubectl's terms.

    orchestrator rollout NAME [--image IMG] [--set K=V ...]   a rolling update
    orchestrator rollout history NAME [--json]                the last 10 revisions
    orchestrator rollout undo NAME [--to-revision N]          back to an earlier revision
    orchestrator rollout restart NAME                         every replica replaced

Every one of them replaces replicas start-first and drained, with zero failed requests.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

import yaml

from orchestrator.cli.base import EXIT_OK, UsageError, json_flag
from orchestrator.cli.plumbing import attach, console_for, emit_json, open_engine, target_flag
from orchestrator.ui import ProgressUI, ok

ACTIONS = ("history", "undo", "restart")
USAGE = """orchestrator rollout NAME [--image IMG] [--set KEY=VALUE ...] [--json]
       orchestrator rollout history NAME [--json]
       orchestrator rollout undo NAME [--to-revision N] [--json]
       orchestrator rollout restart NAME [--json]"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    target_flag(p)
    p.set_defaults(handler=run)
    p.usage = USAGE
    p.add_argument("name", metavar="NAME|ACTION",
                   help="the deployment; or history, undo or restart, then the deployment")
    p.add_argument("target", metavar="NAME", nargs="?",
                   help="the deployment, after history, undo or restart")
    p.add_argument("--image", metavar="IMG", help="new runtime image for the workers")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="sets",
                   help="set a uses_with key (value read as a YAML scalar); repeatable")
    p.add_argument("--to-revision", type=int, metavar="N", dest="to_revision",
                   help="undo: the revision to go back to (default: the one before)")
    json_flag(p)


def run(args: argparse.Namespace) -> int:
    """`rollout [ACTION] NAME ...`."""
    action = _action(args)
    if action != "update":
        from orchestrator.cli import history

        return history.run(action, args)
    return _update(args)


def _action(args: argparse.Namespace) -> str:
    """'update', or the action named before the deployment; moves the name into place.

    Raises:
        UsageError: an unknown action, or options that belong to another action.
    """
    action = "update"
    if args.target is not None:
        if args.name not in ACTIONS:
            raise UsageError(f"rollout {args.name} {args.target}: expected "
                             f"{', '.join(ACTIONS)} before the deployment's name")
        action, args.name = args.name, args.target
    if action != "update" and (args.image is not None or args.sets):
        raise UsageError(f"rollout {action}: --image and --set belong to a rolling update "
                         "(`orchestrator rollout NAME --set KEY=VALUE`)")
    if action != "undo" and args.to_revision is not None:
        raise UsageError("--to-revision belongs to `orchestrator rollout undo NAME`")
    return action


def _update(args: argparse.Namespace) -> int:
    """`rollout NAME --image/--set`."""
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
