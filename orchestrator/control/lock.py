"""One start, update, scale or heal of a deployment at a time, on this host.

A file lock (`flock`) in the temp directory, named after the deployment: held by a start
until its workers are registered, and by every update, scale, heal and converge, in this
process or any other. A second taker is refused at once, never queued.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
from typing import IO

from orchestrator.errors import OrchestratorError


class DeploymentLock:
    """The lock of the deployment `name`. Not reentrant: `acquire` while held raises."""

    def __init__(self, name: str, directory: str | None = None) -> None:
        self.path = os.path.join(directory or tempfile.gettempdir(),
                                 f"orchestrator-{name}.rollout.lock")
        self._handle: IO[str] | None = None

    @property
    def held(self) -> bool:
        """Held by this object (so by this process)."""
        return self._handle is not None

    def acquire(self, busy: OrchestratorError) -> None:
        """Take the lock, or raise `busy` when anyone (this object included) holds it.

        Blocking: a file open and a non-blocking flock; callers on an event loop run it in
        a thread with the rest of the operation.
        """
        if not self.try_acquire():
            raise busy

    def try_acquire(self) -> bool:
        """Take the lock if nobody (this object included) holds it; True when taken."""
        if self._handle is not None:
            return False
        handle = open(self.path, "a")  # noqa: SIM115 - held until release
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return False
        self._handle = handle
        return True

    def release(self) -> None:
        """Let the next taker in (a no-op when not held)."""
        handle, self._handle = self._handle, None
        if handle is not None:
            fcntl.flock(handle, fcntl.LOCK_UN)
            handle.close()
