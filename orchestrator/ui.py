"""Terminal feedback for the CLI: spinners and progress bars on a TTY, plain lines otherwise.

Progress goes to stderr so stdout stays clean for results (tables, `--json`). Colour
and animation only when stderr is a terminal (and NO_COLOR is unset): in CI logs and
pipes every step is one plain, greppable line.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from orchestrator.progress import ProgressEvent

_STYLE = {"failed": "red", "rollback": "yellow", "done": "green", "healthy": "green"}


def make_console(stream: IO[str] | None = None, *, quiet: bool = False) -> Console:
    """A console on `stream` (stderr by default) that colours only a real terminal."""
    stream = stream or sys.stderr
    tty = stream.isatty()
    return Console(file=stream, force_terminal=tty, no_color=not tty or "NO_COLOR" in os.environ,
                   highlight=False, quiet=quiet, soft_wrap=True)


class ProgressUI:
    """Feeds `ProgressEvent`s of a rollout or scale into a progress bar (or plain lines)."""

    def __init__(self, console: Console, title: str) -> None:
        self.console = console
        self.title = title
        self._progress: Progress | None = None
        self._task: TaskID | None = None

    @property
    def animated(self) -> bool:
        return self.console.is_terminal and not self.console.quiet

    def __enter__(self) -> ProgressUI:
        if self.animated:
            self._progress = Progress(
                SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn(),
                MofNCompleteColumn(), TextColumn("{task.fields[step]}"), TimeElapsedColumn(),
                console=self.console, transient=False,
            )
            self._progress.start()
            self._task = self._progress.add_task(escape(self.title), total=None, step="")
        else:
            self.console.print(f"{self.title} ...", markup=False)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def __call__(self, event: ProgressEvent) -> None:
        """The `on_progress` callback: one event, one update."""
        step = describe(event)
        if self._progress is not None and self._task is not None:
            total = event.total or None
            self._progress.update(self._task, completed=event.done, total=total,
                                  step=escape(step))
            if event.kind in ("failed", "rollback"):
                self._progress.console.print(f"[{_STYLE[event.kind]}]{escape(step)}")
        else:
            self.console.print(f"  [{event.done}/{event.total}] {step}", markup=False)


def describe(event: ProgressEvent) -> str:
    """One human line for an event: 'healthy s0-r1 (shard 0 replica 1)'."""
    where = ""
    if event.shard is not None:
        where = f" (shard {event.shard}" + (
            f" replica {event.replica})" if event.replica is not None else ")")
    text = f"{event.kind} {event.pod}{where}".replace("  ", " ").strip()
    return f"{text}: {event.message}" if event.message else text


@contextmanager
def status(console: Console, message: str) -> Iterator[None]:
    """A spinner while a blocking step runs (start, teardown); a plain line when piped."""
    if console.is_terminal and not console.quiet:
        with console.status(message):
            yield
    else:
        console.print(f"{message} ...", markup=False)
        yield


def ok(console: Console, message: str) -> None:
    """A success line (green on a terminal)."""
    if console.is_terminal:
        console.print(f"[green]✔[/green] {escape(message)}")
    else:
        console.print(message, markup=False)
