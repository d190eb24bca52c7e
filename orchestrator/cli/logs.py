"""`orchestrator logs NAME [--pod P] [-f] [--tail N] [--since WHEN] [-t]`: lines prefixed by
pod, like compose."""

from __future__ import annotations

import argparse
import os
import queue
import re
import sys
import threading
from datetime import UTC, datetime, timedelta

from orchestrator.cli.base import EXIT_OK, UsageError
from orchestrator.cli.plumbing import open_engine, target_flag
from orchestrator.engine.base import ContainerEngine, ContainerInfo, LogLine
from orchestrator.errors import OrchestratorError
from orchestrator.status import list_pods, select_pods


def add_arguments(p: argparse.ArgumentParser) -> None:
    target_flag(p)
    p.set_defaults(handler=run)
    p.add_argument("name", metavar="NAME")
    p.add_argument("--pod", metavar="POD", help="one pod: its container name or the part "
                   "after 'NAME-' (e.g. head, s0-r0-g1)")
    p.add_argument("-f", "--follow", action="store_true", help="keep streaming (Ctrl-C stops)")
    p.add_argument("--tail", type=int, metavar="N", help="only the last N lines of each pod")
    p.add_argument("--since", metavar="WHEN", help="only lines written since WHEN: a "
                   "duration back from now (10m, 1h30m, 45s) or a time (2026-11-29T07:00:00, "
                   "local unless it gives its zone)")
    p.add_argument("-t", "--timestamps", action="store_true",
                   help="show when each line was written (the engine's time, UTC)")


def run(args: argparse.Namespace) -> int:
    """`logs NAME ...`."""
    if args.tail is not None and args.tail < 0:
        raise UsageError("--tail must be >= 0")
    since = None if args.since is None else parse_since(args.since, datetime.now(UTC))
    with open_engine(target=getattr(args, "target", None)) as engine:
        pods = select_pods(list_pods(engine, args.name), args.name, args.pod)
        width = max(len(p.name) for p in pods)
        colour = sys.stdout.isatty() and "NO_COLOR" not in os.environ
        prefixes = {p.name: _prefix(p.name, width, i, colour) for i, p in enumerate(pods)}
        if args.follow:
            _follow(engine, pods, prefixes, args.tail, since, args.timestamps)
        else:
            # Interleaved by the time each line was written, like compose.
            timed = [(line, order, pod.name)
                     for order, pod in enumerate(pods)
                     for line in engine.log_lines(pod.id, tail=args.tail, since=since)]
            for line, _, pod_name in sorted(timed, key=lambda t: (t[0].time, t[1])):
                print(f"{prefixes[pod_name]}{_shown(line, args.timestamps)}")
    sys.stdout.flush()
    return EXIT_OK


_COLOURS = (36, 33, 32, 35, 34, 91, 92, 93, 94, 95, 96)


def _prefix(name: str, width: int, index: int, colour: bool) -> str:
    text = f"{name.ljust(width)} | "
    return f"\x1b[{_COLOURS[index % len(_COLOURS)]}m{text}\x1b[0m" if colour else text


def parse_since(text: str, now: datetime) -> datetime:
    """`--since`: a duration back from `now` ('10m', '1h30m', '45s', '2d') or a time
    (ISO 8601; local time unless it gives its zone).

    Raises:
        UsageError: neither.
    """
    parts = _DURATION.fullmatch(text.strip())
    if parts and any(parts.groups()):
        days, hours, minutes, seconds = (float(g or 0) for g in parts.groups())
        return now - timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise UsageError(f"--since {text!r}: give a duration such as 10m, 1h30m or 45s, or a "
                         "time such as 2026-11-29T07:00:00") from None
    return when if when.tzinfo is not None else when.astimezone()


_DURATION = re.compile(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+(?:\.\d+)?)s)?")


def _shown(line: LogLine, timestamps: bool) -> str:
    if not timestamps:
        return line.text
    return f"{line.time.astimezone(UTC).isoformat(timespec='microseconds')} {line.text}"


def _follow(engine: ContainerEngine, pods: list[ContainerInfo], prefixes: dict[str, str],
            tail: int | None, since: datetime | None, timestamps: bool) -> None:
    """Interleave every pod's stream in arrival order until all end or Ctrl-C."""
    lines: queue.Queue[tuple[str, str | None]] = queue.Queue()

    def pump(pod: ContainerInfo) -> None:
        try:
            for line in engine.follow_logs(pod.id, tail=tail, since=since):
                lines.put((pod.name, _shown(line, timestamps)))
        except OrchestratorError as exc:
            lines.put((pod.name, f"[log stream ended: {exc}]"))
        finally:
            lines.put((pod.name, None))

    for pod in pods:
        threading.Thread(target=pump, args=(pod,), daemon=True).start()
    open_streams = len(pods)
    try:
        while open_streams:
            pod_name, line = lines.get()
            if line is None:
                open_streams -= 1
            else:
                print(f"{prefixes[pod_name]}{line}", flush=True)
    except KeyboardInterrupt:
        pass  # Ctrl-C is how one stops following: not an error
