"""What a started deployment can run beside its pods: healing (by hand or from a
background thread) and live reload."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from orchestrator.control.background import HEAL_POLL, BackgroundHealer, HealReport
from orchestrator.control.healer import Replacement
from orchestrator.facade.handle import Handle
from orchestrator.progress import ProgressCallback

if TYPE_CHECKING:
    from orchestrator.reload import Reloader, ReloadReport


class BackgroundApi(Handle):
    """`heal`, the background healer, and live reload (`watch`)."""

    def heal(self, unhealthy_for: float = 30.0,
             on_progress: ProgressCallback | None = None,
             on_replaced: Callable[[Replacement], None] | None = None) -> list[str]:
        """Replace the worker replicas that have been sick for `unhealthy_for` seconds: the
        head routes around them (health check failing, or not answering) or their container
        is not running (it exited for good, or was removed behind our back). Replacement is
        start-first, like a rolling update of just those replicas.

        One call looks once and remembers since when each replica has been sick;
        `orchestrator up` in the foreground calls it every `heal_after / 10` seconds (1 to
        5). It holds the same lock as an update or scale, and first takes over what another
        process changed (its spec and pods, from the labels), so it never replaces replicas
        another process retired.
        Returns the names of the replaced pods (none while another update or scale runs).
        Like an update or scale, it first finishes what an interrupted one left behind
        (see `converge`). A head whose container has stayed stopped or gone for
        `unhealthy_for` seconds is recreated first (its workers are not replaced), then a
        uses_before / uses_after pod in the same state. Blocking: from async code, use
        `await asyncio.to_thread(dep.heal, ...)` (it also works on a loop's thread, but
        blocks that loop while it runs).

        Every pod replaced or recreated goes to `on_replaced` (pod, reason, how long it was
        sick), is counted in the head's metrics and in its labels (`ps`: REPLACED).

        Raises:
            RolloutError: a replacement failed (it was undone; the sick replica remains).
            EngineUnavailable, RequestError: the engine or the head does not answer.
        """
        if not self.state.started or self.spec.external:
            return []
        try:
            with self._healer_paused():  # one heal at a time in this process
                if self._lock.held:  # an update or scale of this process is under way
                    return []
                return self._parts().healer.heal(unhealthy_for, on_progress, on_replaced)
        finally:
            self.update_pod_args()

    def start_healing(self, heal_after: float | None = None, *, poll: float = HEAL_POLL,
                      on_report: Callable[[HealReport], None] | None = None
                      ) -> BackgroundHealer | None:
        """Heal this deployment from a daemon thread, every `poll` seconds, with `heal`'s
        logic and lock, until it is closed (or `stop_healing`). A started deployment does
        this by itself when its `heal_after` is set (the default: 30 s); call it on an
        attached handle to heal a deployment another process started.

        `heal_after`: seconds (None: the spec's; 0: stop healing). `on_report` receives
        what the healer did (`HealReport`), from its thread; every replacement is also
        logged on the `orchestrator.healing` logger. Calling it again while it heals
        changes `heal_after` and adds the listener. Returns the healer (None: off).
        """
        after = self.spec.heal_after if heal_after is None else heal_after
        if not after or after <= 0 or not self.state.started or self.spec.external:
            self.stop_healing()
            return None
        healer = self._healer
        if healer is None or not healer.running:
            healer = BackgroundHealer(self, after, poll=poll, abort=self._parts().act.abort)
            self._healer = healer.start()
        healer.heal_after = after
        if on_report is not None:
            healer.listen(on_report)
        return healer

    def stop_healing(self) -> None:
        """Stop the background healer (if any); a replacement under way is aborted and its
        new pod removed. Waits only for the step under way (an engine or head call)."""
        healer, self._healer = self._healer, None
        if healer is not None and healer.stop() and self._parts_ is not None:
            # its step has ended: later starts of this handle (a foreground heal loop, an
            # update, a healer started again) must not find the abort still raised
            self._parts_.act.abort.clear()

    @property
    def healer(self) -> BackgroundHealer | None:
        """The background healer while it runs (its `replaced` lists what it did)."""
        return self._healer

    @contextlib.contextmanager
    def _healer_paused(self) -> Iterator[None]:
        healer = self._healer
        if healer is None:
            yield
            return
        with healer.paused():
            yield

    def watch(self, on_report: Callable[[ReloadReport], None] | None = None,
              **options: Any) -> Reloader:
        """Live reload (what `reload=True` and `orchestrator up --watch` start): when the
        executor's file, its folder, or a path of `watch` changes, every worker is replaced
        by the usual zero-downtime rolling update, after a debounce. Code that does not
        compile is kept out (the error is reported with file and line, nothing changes);
        code that fails to import or start is rolled back by the update, and the old
        replicas keep serving. Reports go to `on_report` (default: printed on stderr).
        Idempotent: a second call returns the running watcher (with this `on_report`).
        `options`: `poll` and `debounce`, in seconds.

        Raises:
            SpecError: naming `reload`: nothing to watch (an executor installed in the
                image or a docker:// image, and no `watch` paths).
        """
        from orchestrator.reload import Reloader, print_report

        if self._reloader is None or not self._reloader.alive:
            self._reloader = Reloader(self, on_report or print_report, **options)
            self._reloader.start()
        elif on_report is not None:
            self._reloader.on_report = on_report
        return self._reloader

    def stop_watching(self) -> None:
        """Stop live reload (also done on close)."""
        reloader, self._reloader = self._reloader, None
        if reloader is not None:
            reloader.stop()
