"""One start, update, scale or heal of a deployment at a time, on this host.

A file lock (`flock`) in the temp directory, named after the deployment: held by a start
until its workers are registered, and by every update, scale, heal and converge, in this
process or any other. The holder writes its pid and what it is doing (`start`, `update`,
`heal`) into the file, so that a refusal can name it.

A second taker is refused at once, never queued, with one exception: an update may wait
a bounded time behind a heal (the supervisor's, or a background healer's), which is work
the user did not start and which ends on its own.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
import time
from collections.abc import Callable, Collection
from typing import IO, NamedTuple

from orchestrator.errors import OrchestratorError

START = "start"
UPDATE = "update"
HEAL = "heal"
STOP = "stop"

HEAL_WAIT = 60.0
"""How long an update waits behind a heal before it is refused (a heal that replaces a pod
waits for the new one's readiness; one that takes longer is refused as before)."""


UNSAID_WAIT = 0.2
"""A lock held by someone whose file says nothing is looked at again for this long: its
holder is letting go (the file is emptied just before) or has just taken it."""


class Holder(NamedTuple):
    """Who holds a lock, as its file says."""

    pid: int
    purpose: str

    def __str__(self) -> str:
        return f"{self.purpose or 'held'} by process {self.pid}"


class DeploymentLock:
    """The lock of the deployment `name`. Not reentrant: `acquire` while held raises."""

    def __init__(self, name: str, directory: str | None = None) -> None:
        self.path = os.path.join(directory or tempfile.gettempdir(),
                                 f"orchestrator-{name}.rollout.lock")
        self._handle: IO[str] | None = None
        self._purpose = ""

    @property
    def held(self) -> bool:
        """Held by this object (so by this process)."""
        return self._handle is not None

    def acquire(self, busy: OrchestratorError | Callable[[Holder | None], OrchestratorError],
                purpose: str = "", *, behind: Collection[str] = (),
                wait: float = 0.0) -> None:
        """Take the lock, or raise `busy` when anyone (this object included) holds it.

        `busy` may be a function of the holder (None when its file does not say), so that
        the error names it. While the holder's purpose is one of `behind`, wait for it to
        let go, for at most `wait` seconds; any other holder is refused at once.

        Blocking: a file open and a non-blocking flock; callers on an event loop run it in
        a thread with the rest of the operation.
        """
        if self.held:  # by this object: nothing to wait for
            raise busy if isinstance(busy, OrchestratorError) else busy(None)
        started = time.monotonic()
        unsaid_since: float | None = None  # since when its file has said nothing
        while not self.try_acquire(purpose):
            holder = self.holder()
            now = time.monotonic()
            if holder is None:
                unsaid_since = now if unsaid_since is None else unsaid_since
                if now - unsaid_since < UNSAID_WAIT:
                    time.sleep(0.01)  # letting go (its file is emptied first), or just taken
                    continue
            else:
                unsaid_since = None
            if holder is None or holder.purpose not in behind or now - started >= wait:
                raise busy if isinstance(busy, OrchestratorError) else busy(holder)
            time.sleep(0.1)  # polling the lock itself: flock has no timed wait

    def try_acquire(self, purpose: str = "") -> bool:
        """Take the lock if nobody (this object included) holds it; True when taken."""
        if self._handle is not None:
            return False
        handle = open(self.path, "a")  # noqa: SIM115 - held until release
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return False
        os.ftruncate(handle.fileno(), 0)
        handle.write(f"{os.getpid()} {purpose}\n")
        handle.flush()
        self._handle, self._purpose = handle, purpose
        return True

    def holder(self) -> Holder | None:
        """Who holds the lock, as its file says; None when it says nothing (nobody holds
        it, or a holder of an older version, or one that has not written yet).

        Meaningful after `try_acquire` was refused: a holder that was killed leaves its
        words behind (the kernel lets go of its lock, the file stays as it was).
        """
        if self._handle is not None:
            return Holder(os.getpid(), self._purpose)
        try:
            with open(self.path) as handle:  # read only: taking it, even shared, would
                text = handle.read()         # refuse a taker at that moment
        except OSError:
            return None
        pid, _, purpose = text.strip().partition(" ")
        return Holder(int(pid), purpose) if pid.isdigit() else None

    def release(self) -> None:
        """Let the next taker in (a no-op when not held)."""
        handle, self._handle = self._handle, None
        if handle is not None:
            os.ftruncate(handle.fileno(), 0)  # nobody holds it: the file says so
            fcntl.flock(handle, fcntl.LOCK_UN)
            handle.close()
