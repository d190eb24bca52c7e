"""Keep deployments whole in the foreground: what `orchestrator up` does after start-up and
what `orchestrator heal` does for a detached deployment.

One heal step serves every caller: `heal_once` (control/background.py), which the
background healer of a started `Deployment` and the supervisor's healers run too. Here
one loop drives it: every `poll` seconds, `keep_healthy` calls it on each deployment, with
the given `heal_after` or each deployment's own (its spec's). The deployments' own
background healers are stopped first: this loop is their healer while it runs. It returns
when `stop` is set or when another process removed every deployment it watches
(`orchestrator down`). What happens is reported as `HealReport`s, never printed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

from orchestrator.control.background import (
    HEAL_POLL,
    HealReport,
    ReportKind,
    heal_once,
    heal_poll,
)
from orchestrator.control.healer import FULL_LOOK_EVERY
from orchestrator.deployment import Deployment, running_deployments

__all__ = ["HEAL_POLL", "HealReport", "ReportKind", "heal_once", "heal_poll", "keep_healthy"]


def keep_healthy(deps: Sequence[Deployment], heal_after: float | None, stop: threading.Event,
                 on_report: Callable[[HealReport], None] | None = None, *,
                 poll: float = HEAL_POLL) -> None:
    """Heal `deps` until `stop` is set or none of them runs any more: a look every
    `heal_poll(heal_after, poll)` seconds (the shortest of the deployments'). One removed
    by another process is reported ("removed") and dropped within FULL_LOOK_EVERY looks.

    `heal_after`: seconds for every deployment; None: each one's own `spec.heal_after`.
    0 (or a spec's None) turns replacing off: the loop only waits.
    """
    report = on_report or _ignore
    watched = list(deps)
    for dep in watched:
        stop_own = getattr(dep, "stop_healing", None)
        if stop_own is not None:
            stop_own()  # one healer per deployment in this process: this loop
    afters = {dep.name: _after(dep, heal_after) for dep in watched}
    looks = 0
    while watched and not stop.wait(min(heal_poll(a, poll) for a in afters.values())):
        afters = {dep.name: _after(dep, heal_after) for dep in watched}
        if not any(afters.values()):
            continue
        # which ones another process removed: a listing of every managed container, so
        # only every FULL_LOOK_EVERY-th look (a heal of a removed deployment does nothing)
        running = running_deployments(watched[0].engine) \
            if looks % FULL_LOOK_EVERY == 0 else None
        looks += 1
        for dep in list(watched):
            if running is not None and dep.name not in running:
                report(HealReport(dep.name, "removed"))
                watched.remove(dep)
                continue
            after = afters[dep.name]
            if after:
                heal_once(dep, after, report)


def _after(dep: Deployment, heal_after: float | None) -> float:
    after = dep.spec.heal_after if heal_after is None else heal_after
    return after if after is not None and after > 0 else 0.0


def _ignore(report: HealReport) -> None:
    """Nothing to show."""
