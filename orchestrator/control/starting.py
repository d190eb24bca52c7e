"""A `noblock_on_start` start: the pods are brought up in a thread, and the caller goes
on once the containers exist; `Deployment.wait_start_success` joins it."""

from __future__ import annotations

import threading
from collections.abc import Callable

from orchestrator.planning.pods import PodPlan

BringUp = Callable[[Callable[[PodPlan], None]], None]
"""`Lifecycle.bring_up`: creates and readies every pod, telling a callback of each one
created."""


class Starting:
    """A start running in a thread: `created` is set once `expected` containers exist (or
    the start ended), `error` is what it raised."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.count = 0
        self.created = threading.Event()
        self.error: BaseException | None = None
        self.thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def launch(self, bring_up: BringUp, name: str) -> None:
        """Start `bring_up` in a daemon thread; return once `expected` pods are created."""
        self.thread = threading.Thread(target=self.run, args=(bring_up,),
                                       name=f"start-{name}", daemon=True)
        self.thread.start()
        self.created.wait()

    def one_created(self, _plan: PodPlan) -> None:
        with self._lock:
            self.count += 1
            if self.count >= self.expected:
                self.created.set()

    def run(self, bring_up: BringUp) -> None:
        try:
            bring_up(self.one_created)
        except BaseException as exc:  # handed to wait_start_success
            self.error = exc
        finally:
            self.created.set()

    def join(self) -> None:
        if self.thread is not None:
            self.thread.join()
