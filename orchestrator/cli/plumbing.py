"""Plumbing of the commands that talk to the engine: the engine, the console, JSON output,
progress shown from the library's callbacks, and signal handling of foreground commands."""

from __future__ import annotations

import argparse
import json
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from types import FrameType
from typing import Any

from rich.console import Console

from orchestrator.apply import StepKind
from orchestrator.deployment import Deployment
from orchestrator.engine.base import ContainerEngine
from orchestrator.engine.docker_engine import DockerEngine
from orchestrator.engine.targets import TARGETS, chosen_target, engine_for
from orchestrator.healing import HealReport
from orchestrator.progress import ProgressCallback, ProgressEvent
from orchestrator.ui import ProgressUI, make_console, status


@contextmanager
def open_engine(timeout: int = 60, target: str | None = None) -> Iterator[ContainerEngine]:
    """The engine of `target` (default: $ORCHESTRATOR_TARGET, else Docker), closed on the
    way out. Raises EngineUnavailable, SpecError (an unknown target)."""
    engine = DockerEngine.from_env(timeout=timeout) if chosen_target(target) == "docker" \
        else engine_for(target, timeout=timeout)
    try:
        engine.ping()
        yield engine
    finally:
        engine.close()


def target_flag(p: argparse.ArgumentParser) -> None:
    """`--target docker|swarm`: which engine the command talks to."""
    p.add_argument("--target", choices=TARGETS, default=None,
                   help="docker: this host's engine (default); swarm: a Docker Swarm, "
                   "through the manager DOCKER_HOST names (default: $ORCHESTRATOR_TARGET)")


def console_for(args: argparse.Namespace) -> Console:
    """Progress on stderr; silent with --json or --quiet (results only)."""
    quiet = bool(getattr(args, "json", False) or getattr(args, "quiet", False))
    return make_console(quiet=quiet)


def emit_json(value: object) -> None:
    print(json.dumps(value, indent=2, sort_keys=True), flush=True)


def attach(name: str, engine: ContainerEngine) -> Deployment:
    """A handle on a running deployment. Raises DeploymentNotFound."""
    return Deployment.attach(name, engine=engine)


class ConsoleReporter:
    """The library's progress (`orchestrator.apply.Reporter`) on the console: a spinner
    for a start or a removal, a progress bar for a rollout or a scale (plain lines when
    piped)."""

    def __init__(self, console: Console) -> None:
        self.console = console

    def step(self, kind: StepKind, deployment: str, title: str
             ) -> AbstractContextManager[ProgressCallback]:
        if kind in ("rollout", "scale"):
            return ProgressUI(self.console, title)
        return self._status(title)

    @contextmanager
    def _status(self, title: str) -> Iterator[ProgressCallback]:
        with status(self.console, title):
            yield self.event

    def event(self, event: ProgressEvent) -> None:
        """What converge removed or registered again, one line each."""
        if event.kind in ("added", "stopped") and event.message:
            self.console.print(f"{event.deployment}: {event.pod} {event.message}",
                               markup=False)


def heal_printer(console: Console) -> Callable[[HealReport], None]:
    """One line per thing the heal loop saw or did."""
    def show(report: HealReport) -> None:
        if report.replacements:
            for event in report.replacements:
                console.print(event.line(), markup=False)
            return
        text = {"removed": "removed by another process",
                "failed": f"could not heal: {report.message}",
                "replaced": f"replaced unhealthy {', '.join(report.pods)}",
                "changed": f"{''.join(report.pods)} {report.message}"}[report.kind]
        console.print(f"{report.deployment}: {text}", markup=False)
    return show


# -- signals of foreground commands ---------------------------------------------------------


class Stop(BaseException):
    """SIGINT/SIGTERM arrived in a foreground command (a BaseException: nothing swallows
    it)."""


def install_stop_handlers(stop: threading.Event) -> dict[int, Any]:
    """First SIGINT/SIGTERM interrupts whatever blocks (start included) with `Stop`."""
    def handler(signum: int, frame: FrameType | None) -> None:
        if not stop.is_set():
            stop.set()
            raise Stop

    previous: dict[int, Any] = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        previous[sig] = signal.signal(sig, handler)
    return previous


def ignore_signals_while(action: Callable[[], None], previous: dict[int, Any]) -> None:
    """Run the teardown to its end: a second Ctrl-C must not leave half the pods behind."""
    for sig in previous:
        signal.signal(sig, signal.SIG_IGN)
    action()


def restore_signals(previous: dict[int, Any]) -> None:
    for sig, old in previous.items():
        signal.signal(sig, old)
