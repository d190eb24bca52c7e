"""The head's worker list, kept in a file so that the head survives its own restart.

Workers join a head at run time (the orchestrator's AddWorker calls), not through its
command line. A head that restarts in the same container (a crash under the `on-failure`
restart policy, an OOM kill, the engine restarting its containers) keeps its command line
and its writable layer, but not its memory: without this file it would come back with no
workers and report NOT_SERVING until someone registered them again.

The head rewrites the file after every change of membership (add, remove, drain), by
writing a temporary file and renaming it over the old one, so a crash mid-write leaves the
previous list. At start, a readable file replaces the `--worker` arguments: it records every
later add and remove. A file that is missing means a first start; one that cannot be read
or parsed is reported on stderr and ignored, never a reason not to start.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass

VERSION = 1


@dataclass(frozen=True)
class Member:
    """One registered worker as the head last knew it."""

    shard: int
    address: str
    worker_id: str = ""
    draining: bool = False


class StateError(ValueError):
    """The file exists but does not hold a worker list of this version."""


def load(path: str | os.PathLike[str]) -> list[Member] | None:
    """The members saved at `path`; None when there is no file (a first start).

    Raises:
        StateError: the file is unreadable or not a worker list of this version.
    """
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StateError(f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        data = json.loads(text)
        ours = isinstance(data, dict) and data.get("version") == VERSION
        members = [_member(item) for item in data["workers"]] if ours else None
    except (ValueError, KeyError, TypeError) as exc:
        raise StateError(f"{path} is not a worker list: {exc}") from exc
    if members is None:
        raise StateError(f"{path} is not a version-{VERSION} worker list")
    return members


def _member(item: object) -> Member:
    if not isinstance(item, dict):
        raise TypeError(f"worker entry {item!r} is not an object")
    shard, address = item["shard"], item["address"]
    worker_id, draining = item.get("id", ""), item.get("draining", False)
    if not isinstance(shard, int) or isinstance(shard, bool) or shard < 0 \
            or not isinstance(address, str) or not address \
            or not isinstance(worker_id, str) or not isinstance(draining, bool):
        raise TypeError(f"worker entry {item!r} has a wrong field")
    return Member(shard, address, worker_id, draining)


def save(path: str | os.PathLike[str], members: list[Member]) -> None:
    """Replace the file at `path` with `members`, atomically (write, fsync, rename).

    Raises:
        OSError: the file cannot be written.
    """
    folder, name = os.path.split(os.fspath(path))
    data = {"version": VERSION, "workers": [
        {"shard": m.shard, "address": m.address, "id": m.worker_id, "draining": m.draining}
        for m in members
    ]}
    tmp = os.path.join(folder, f".{name}.tmp")
    with open(tmp, "w", encoding="utf-8") as out:
        json.dump(data, out, separators=(",", ":"))
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)


def warn(line: str) -> None:
    """One line on stderr: it ends up in the container's log."""
    print(f"orchestrator.runtime: {line}", file=sys.stderr, flush=True)
