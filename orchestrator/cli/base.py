"""What every command shares and `orchestrator --help` needs: exit codes, the usage error.

Kept free of heavy imports (no docker, grpc or rich): the parser is assembled from here.
"""

from __future__ import annotations

import argparse
import sys

from orchestrator.errors import SpecError

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_ENGINE = 3

EPILOG = """exit codes: 0 ok, 1 runtime failure, 2 usage or spec error, 3 engine unavailable.
The engine is found like `docker` finds it (DOCKER_HOST or /var/run/docker.sock)."""


class UsageError(SpecError):
    """A command line that parses but makes no sense (exit 2)."""


def fail(message: str, code: int) -> int:
    """Print the one error line and return the exit code."""
    print(f"orchestrator: error: {message}", file=sys.stderr, flush=True)
    return code


def json_flag(p: argparse.ArgumentParser) -> None:
    """`--json`: results on stdout as JSON."""
    p.add_argument("--json", action="store_true", help="machine-readable output on stdout")


def quiet_flag(p: argparse.ArgumentParser) -> None:
    """`-q/--quiet`: results only (stdout and the exit code), no progress on stderr."""
    p.add_argument("-q", "--quiet", action="store_true",
                   help="results only: no progress or success lines on stderr")


def env_flags(p: argparse.ArgumentParser) -> None:
    """`--env-file FILE` and `--env KEY=VALUE` (both repeatable): the variables a deployment
    file is interpolated with, in Compose's order (see `orchestrator.config`)."""
    p.add_argument("--env-file", action="append", dest="env_files", metavar="FILE",
                   help="read variables from this file instead of the .env beside the YAML "
                   "(repeatable; a later file wins); the shell's variables win over it")
    p.add_argument("--env", action="append", default=[], dest="env", metavar="KEY=VALUE",
                   help="set a variable for the file, over the shell's and the env files' "
                   "(repeatable; KEY alone passes the shell's KEY on)")
