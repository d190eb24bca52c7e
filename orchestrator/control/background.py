"""The background healer: one deployment healed from a daemon thread (see `heal_poll`).

A started `Deployment` runs one (its spec's `heal_after` > 0), and so does every
deployment the supervisor watches: each tick calls the same `Deployment.heal` that a user
can call by hand, under the same lock, so a heal here, a heal by hand, an update in
another process and the supervisor never act at once.

What it sees and does goes out three ways: `HealReport`s to the listeners (the CLI prints
them, the pytest plugin collects them), one `logging` line per replacement on the
`orchestrator.healing` logger (pod, reason, how long it was sick), and the head's
replacement counter (see `control.healer`).

Stopping it never waits for the next tick: `stop` wakes the thread, aborts a pod start
under way (its new container is removed), and waits only for the step in progress.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal, Protocol

from orchestrator.control.healer import Replacement
from orchestrator.errors import OrchestratorError
from orchestrator.progress import ProgressCallback, ProgressEvent

HEAL_POLL = 1.0
"""Seconds between two looks at a deployment, at least (see `heal_poll`)."""
SLOWEST_POLL = 5.0
"""Seconds between two looks, at most."""


def heal_poll(heal_after: float, poll: float = HEAL_POLL) -> float:
    """Seconds between two looks at a deployment healed after `heal_after` seconds: a
    tenth of it, within [`poll`, SLOWEST_POLL]. A replica is replaced `heal_after` seconds
    after a look first saw it sick, so looking more often than that would not replace it
    much sooner: at the default 30 s a look every 3 s replaces it 30-33 s after it fell
    sick, and a deployment of 64 replicas at rest costs a third of the looks (each one an
    engine listing and a call to the head; see docs/scale.md)."""
    return max(poll, min(SLOWEST_POLL, heal_after / 10))
STOP_WAIT = 5.0
"""At most this long, `stop` waits for the step under way (an engine or head call)."""

log = logging.getLogger("orchestrator.healing")

ReportKind = Literal["removed", "failed", "replaced", "changed"]


@dataclass(frozen=True)
class HealReport:
    """One thing a heal loop saw or did to a deployment.

    - removed: another process removed the deployment; it is no longer watched;
    - failed: a heal raised (`message`); the next look tries again;
    - replaced: these unhealthy or gone pods were replaced (`pods`, and `replacements`:
      each with its reason and how long it was sick);
    - changed: heal removed or registered again one pod (`pods`, with its `message`).
    """

    deployment: str
    kind: ReportKind
    pods: tuple[str, ...] = ()
    message: str = ""
    replacements: tuple[Replacement, ...] = ()


class Healable(Protocol):
    """What the loop needs of a deployment (`Deployment` is one)."""

    @property
    def name(self) -> str: ...

    def heal(self, unhealthy_for: float = 30.0, on_progress: ProgressCallback | None = None,
             on_replaced: Callable[[Replacement], None] | None = None) -> list[str]: ...


Listener = Callable[[HealReport], None]


def heal_once(dep: Healable, heal_after: float, report: Listener) -> list[str]:
    """One look at `dep`: replace what has been sick for `heal_after` seconds. Errors are
    reported, not raised (and logged): the next look tries again."""
    replaced: list[Replacement] = []

    def changed(event: ProgressEvent) -> None:
        # a recreated head or uses pod is reported as replaced, with its reason
        if event.kind in ("added", "stopped") and event.message \
                and not event.message.startswith("recreated"):
            report(HealReport(dep.name, "changed", (event.pod,), event.message))

    try:
        pods = dep.heal(heal_after, on_progress=changed, on_replaced=replaced.append)
    except OrchestratorError as exc:
        log.warning("%s: could not heal: %s", dep.name, exc)
        report(HealReport(dep.name, "failed", message=str(exc)))
        return []
    for event in replaced:
        log.warning("%s", event.line())
    names = tuple(pods) + tuple(r.pod for r in replaced if r.pod not in pods)
    if names:
        report(HealReport(dep.name, "replaced", names, replacements=tuple(replaced)))
    return pods


class BackgroundHealer:
    """Heal one deployment from a daemon thread, until `stop`: a look every
    `heal_poll(heal_after, poll)` seconds."""

    def __init__(self, dep: Healable, heal_after: float, *, poll: float = HEAL_POLL,
                 abort: threading.Event | None = None) -> None:
        self.dep = dep
        self.heal_after = heal_after
        self.poll = poll
        self.replaced: list[Replacement] = []
        """Every replacement so far (the pytest plugin reports them)."""
        self._abort = abort
        self._listeners: list[Listener] = []
        self._stop = threading.Event()
        # held during a heal (re-entered by the heal itself): a user's update or heal by
        # hand waits for it instead of being refused the deployment's lock
        self._tick = threading.RLock()
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"healer-{dep.name}")

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def listen(self, listener: Listener) -> None:
        """Also send the reports to `listener` (from the healer's thread)."""
        self._listeners.append(listener)

    def start(self) -> BackgroundHealer:
        self._thread.start()
        return self

    def stop(self, wait: float = STOP_WAIT) -> bool:
        """Stop: no new tick starts; a pod start under way is aborted. Returns False when
        the step under way did not end within `wait` seconds (the thread ends later)."""
        self._stop.set()
        if self._abort is not None:
            self._abort.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(wait)
        return not self._thread.is_alive()

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Wait for the tick under way, and start none meanwhile: an update or scale of
        this process takes the deployment's lock inside, so it is never refused because
        its own healer held the lock for a moment."""
        with self._tick:
            yield

    def _run(self) -> None:
        while not self._stop.wait(heal_poll(self.heal_after, self.poll)):
            with self._tick:
                if self._stop.is_set():
                    return
                try:
                    heal_once(self.dep, self.heal_after, self._report)
                except Exception:  # a bug must not end healing silently
                    log.exception("%s: the healer failed", self.dep.name)

    def _report(self, report: HealReport) -> None:
        if self._stop.is_set() and report.kind == "failed":
            return  # an aborted replacement while closing: nothing went wrong
        self.replaced.extend(report.replacements)
        for listener in list(self._listeners):
            with contextlib.suppress(Exception):  # a listener must never stop healing
                listener(report)
