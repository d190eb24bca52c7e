"""Finding the reaper processes of a deployment (see orchestrator/reaper.py)."""

from __future__ import annotations

from pathlib import Path


def reapers(name: str) -> list[int]:
    """Pids of reaper processes watching deployment `name`."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"orchestrator.reaper" in argv and name.encode() in argv:
                found.append(int(entry.name))
    return found
