"""Keep deployments whole in the foreground: what `orchestrator up` does after start-up and
what `orchestrator heal` does for a detached deployment.

Every `poll` seconds, `keep_healthy` calls `Deployment.heal` on each deployment: worker
replicas unhealthy or gone for `heal_after` seconds are replaced, start-first. It returns
when `stop` is set or when another process removed every deployment it watches
(`orchestrator down`). What happens is reported as `HealReport`s, never printed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from orchestrator.deployment import Deployment, running_deployments
from orchestrator.errors import OrchestratorError
from orchestrator.progress import ProgressEvent

HEAL_POLL = 1.0  # seconds between two looks at the replicas

ReportKind = Literal["removed", "failed", "replaced", "changed"]


@dataclass(frozen=True)
class HealReport:
    """One thing the loop saw or did to a deployment.

    - removed: another process removed the deployment; it is no longer watched;
    - failed: a heal raised (`message`); the next look tries again;
    - replaced: these unhealthy or gone replicas were replaced (`pods`);
    - changed: heal removed or registered again one pod (`pods`, with its `message`).
    """

    deployment: str
    kind: ReportKind
    pods: tuple[str, ...] = ()
    message: str = ""


def keep_healthy(deps: Sequence[Deployment], heal_after: float, stop: threading.Event,
                 on_report: Callable[[HealReport], None] | None = None, *,
                 poll: float = HEAL_POLL) -> None:
    """Heal `deps` every `poll` seconds until `stop` is set or none of them runs any more.

    `heal_after` <= 0 turns replacing off: the loop only waits for `stop`.
    """
    report = on_report or _ignore
    watched = list(deps)
    while watched and not stop.wait(poll):
        if heal_after <= 0:
            continue
        running = running_deployments(watched[0].engine)
        for dep in list(watched):
            if dep.name not in running:
                report(HealReport(dep.name, "removed"))
                watched.remove(dep)
                continue
            heal_once(dep, heal_after, report)


def heal_once(dep: Deployment, heal_after: float, report: Callable[[HealReport], None]
              ) -> list[str]:
    """One look at `dep`: replace what has been sick for `heal_after` seconds. An
    `OrchestratorError` is reported, not raised."""
    def changed(event: ProgressEvent) -> None:
        if event.kind in ("added", "stopped") and event.message:
            report(HealReport(dep.name, "changed", (event.pod,), event.message))

    try:
        replaced = dep.heal(heal_after, on_progress=changed)
    except OrchestratorError as exc:
        report(HealReport(dep.name, "failed", message=str(exc)))
        return []
    if replaced:
        report(HealReport(dep.name, "replaced", tuple(replaced)))
    return replaced


def _ignore(report: HealReport) -> None:
    """Nothing to show."""
