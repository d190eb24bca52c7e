"""The `orchestrator` command line (also `python -m orchestrator`).

Exit codes (documented in the README and in `orchestrator --help`):

    0  ok
    1  runtime failure (a pod failed, a rollout failed, an unknown deployment name)
    2  usage or spec error (bad flags, bad YAML, a bad field)
    3  the container engine is unavailable

A mistake of the user's never prints a traceback: it prints one line (`orchestrator:
error: ...`) and the exit code says which kind of failure it was. Set
ORCHESTRATOR_DEBUG=1 to see the traceback of an unexpected error.

Detached deployments are found again through the engine's labels only
(`Deployment.attach`), so every command works from a fresh process, also after the
process that started the deployment was killed.

One module per command group (`up`, `down`, `ps`, `logs`, ...), each with
`add_arguments(parser)` and a handler: they parse, call the library (`orchestrator.apply`,
`orchestrator.status`, `orchestrator.healing`, `Deployment`) and print. This module lists
the commands (`COMMANDS`) and imports a command's module only when that command runs (or
when the whole parser is wanted): the modules import docker, grpc and rich, and
`orchestrator --help` should not pay for them.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any

from orchestrator import __version__
from orchestrator.cli.base import (
    EPILOG,
    EXIT_ENGINE,
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_USAGE,
    UsageError,
    fail,
    quiet_flag,
)
from orchestrator.errors import EngineUnavailable, OrchestratorError, SpecError

__all__ = ["COMMANDS", "EXIT_ENGINE", "EXIT_FAILURE", "EXIT_OK", "EXIT_USAGE", "Command",
           "UsageError", "build_parser", "main"]


@dataclass(frozen=True)
class Command:
    """One sub-command: its module under `orchestrator.cli`, the function there that adds
    its arguments (and sets its handler), and its one-line help."""

    name: str
    module: str
    help: str
    adder: str = "add_arguments"
    description: str | None = None  # default: the help line
    group: bool = False  # its own sub-commands take the common options, not itself


COMMANDS = (
    Command("up", "up", "start (or update) the deployments of a YAML file"),
    Command("down", "down", "tear deployments down, by name, by file or --all (label based)"),
    Command("ps", "ps", "list the pods of one or every deployment"),
    Command("logs", "logs", "show the pods' logs, prefixed by pod"),
    Command("top", "top", "CPU, memory, restarts and requests in flight per pod, live like "
            "`docker stats`"),
    Command("exec", "exec", "run a command in a pod (`-it` for an interactive shell)"),
    Command("scale", "scale", "change the replicas per shard, with no downtime"),
    Command("rollout", "rollout", "rolling update to a new image or uses_with; history, "
            "undo and restart"),
    Command("heal", "heal", "keep replacing worker replicas that stay unhealthy or gone, "
            "start-first (for a detached `up`)"),
    Command("ping", "misc", "gRPC health check of HOST:PORT (exit 0 serving, 1 not)",
            adder="add_ping_arguments"),
    Command("config", "config", "validate a deployment file and print the spec it resolves "
            "to (secrets redacted), or --schema: its JSON Schema"),
    Command("export", "export", "write the deployments of a YAML file as a Compose file, a "
            "Swarm stack or Kubernetes manifests"),
    Command("images", "images", "runtime image pipeline",
            description="Build the runtime image (no registry needed).", group=True),
    Command("executor", "executor", "serve one executor in this process, for development"),
    Command("completion", "completion", "print a shell completion script (bash or zsh), "
            "generated from this parser"),
    Command("version", "misc", "print the version", adder="add_version_arguments"),
    Command("demo", "demo", "the quickstart demo: a 3x2 deployment, requests and a rolling "
            "update under load"),
    Command("supervise", "supervise", "the supervisor that heals detached deployments: "
            "status, start, stop, logs; --systemd prints a unit for boot"),
)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit code (the console script exits with it)."""
    words = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(only=_command_in(words))
    args = parser.parse_args(words)  # exits 2 on a usage error, 0 on --help
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except SpecError as exc:
        return fail(str(exc), EXIT_USAGE)
    except EngineUnavailable as exc:
        return fail(f"engine unavailable: {exc}", EXIT_ENGINE)
    except OrchestratorError as exc:
        return fail(str(exc), EXIT_FAILURE)
    except KeyboardInterrupt:
        return fail("interrupted", 130)
    except Exception as exc:  # the last guard: a bug must still not dump on the user
        if os.environ.get("ORCHESTRATOR_DEBUG"):
            raise
        return fail(f"internal error: {type(exc).__name__}: {exc} "
                    "(set ORCHESTRATOR_DEBUG=1 for the traceback)", EXIT_FAILURE)


def _command_in(words: Sequence[str]) -> set[str]:
    """The command a command line runs (the first word that is not an option; the top
    level has no option that takes a value), as a set: empty when there is none."""
    first = next((w for w in words if not w.startswith("-")), None)
    return {first} if first is not None else set()


def build_parser(only: Collection[str] | None = None) -> argparse.ArgumentParser:
    """The whole command line: one sub-parser per command, each with --help.

    `only`: fill in the arguments of just these commands (the others are listed, with no
    arguments), so that running one command imports only its module.
    """
    parser = argparse.ArgumentParser(
        prog="orchestrator", epilog=EPILOG,
        description="Run Jina-style Deployments (head + shards x replicas) on Docker.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"orchestrator {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        p = sub.add_parser(command.name, help=command.help, epilog=EPILOG,
                           description=command.description or command.help)
        if only is None or command.name in only:
            # The one deferred import of the CLI: see the module docstring.
            module = importlib.import_module(f"orchestrator.cli.{command.module}")
            getattr(module, command.adder)(p)
            if not command.group:
                quiet_flag(p)
    return parser


# Names tests and older callers import from `orchestrator.cli`; loaded on first use.
_MOVED = {
    "format_table": "orchestrator.cli.ps",
    "format_uptime": "orchestrator.cli.ps",
    "pod_rows": "orchestrator.cli.ps",
    "parse_since": "orchestrator.cli.logs",
    "parse_sets": "orchestrator.cli.rollout",
    "parse_address": "orchestrator.cli.misc",
    "spec_changes": "orchestrator.apply",
    "HEAD_FIELDS": "orchestrator.apply",
}


def __getattr__(name: str) -> Any:
    if name in _MOVED:
        return getattr(importlib.import_module(_MOVED[name]), name)
    raise AttributeError(f"module 'orchestrator.cli' has no attribute {name!r}")
