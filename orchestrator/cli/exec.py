"""`orchestrator exec NAME POD [-i] [-t] -- CMD...`: run a command in one pod, like
`docker exec` / `kubectl exec`; exits with the command's exit code.

Without -i the command runs through the engine API and its output is printed when it
ends. With -i (stdin attached, usually with -t: `-it` for a shell) this process becomes
`docker exec -i [-t] CONTAINER CMD...`: the Docker SDK can allocate a TTY but leaves the
terminal to its caller (raw mode, window size and its changes, stdin pumping, the detach
keys), which the docker CLI already does right; it talks to the same engine (DOCKER_HOST
is inherited).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys

from orchestrator.cli.plumbing import open_engine
from orchestrator.errors import OrchestratorError
from orchestrator.status import list_pods, select_pods


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.set_defaults(handler=run)
    p.add_argument("name", metavar="NAME", help="deployment name")
    p.add_argument("pod", metavar="POD", help="its container name or the part after 'NAME-' "
                   "(e.g. head, s0-r0-g1; `orchestrator ps NAME` lists them)")
    p.add_argument("command", nargs="+", metavar="CMD",
                   help="the command and its arguments, after `--`")
    p.add_argument("-i", "--interactive", action="store_true",
                   help="keep stdin attached (needs the docker CLI; -it for a shell)")
    p.add_argument("-t", "--tty", action="store_true", help="allocate a pseudo-terminal")


def run(args: argparse.Namespace) -> int:
    """`exec NAME POD -- CMD...`: the command's exit code."""
    with open_engine() as engine:
        pod = select_pods(list_pods(engine, args.name), args.name, args.pod)[0]
        if not args.interactive:
            result = engine.exec_container(pod.id, args.command, tty=args.tty)
            sys.stdout.write(result.output)
            sys.stdout.flush()
            return result.exit_code
        if not pod.running:
            raise OrchestratorError(f"pod {pod.name!r} is not running ({pod.status})")
    docker = shutil.which("docker")
    if docker is None:
        raise OrchestratorError("exec -i needs the docker CLI on PATH (without -i the "
                                "command runs through the engine API)")
    flags = ["-i", "-t"] if args.tty else ["-i"]
    sys.stdout.flush()
    os.execv(docker, ["docker", "exec", *flags, pod.id, *args.command])  # never returns
