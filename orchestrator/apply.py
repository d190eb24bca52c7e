"""Bring a deployment file (or spec) to the engine, like `orchestrator up` does.

For each deployment of the file: start it when nothing of it runs; otherwise finish what
a killed update left behind (`Deployment.converge`), then roll out what changed (any field
but `replicas`, through a zero-downtime rolling update), scale to the file's replicas, and
finish an update to this very spec that was cut short. Fields that shape the head
(`HEAD_FIELDS`) cannot change on a running deployment: that is refused, naming the field.

The deciding part is pure (`decide`: running spec + wanted spec + outdated pods ->
`Decision`), table-tested; `apply_each` carries it out through `Deployment`'s public API
and returns what it did (`Applied`), never printing. Progress goes to a `Reporter`: each
blocking step (start, rolling update, scale, removal) opens with `step`, whose callback
receives that step's `ProgressEvent`s; loose events (converge's) go to `event`.

Level-triggered, like a controller: nothing is remembered between runs, so running the
same file again after a crash sees the world as it is and finishes the job.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Protocol

from orchestrator.config import DeploymentConfig
from orchestrator.control.lock import STOP, DeploymentLock
from orchestrator.deployment import Deployment, running_deployments
from orchestrator.engine.base import ContainerEngine
from orchestrator.engine.cleanup import Owned, list_owned, remove_owned
from orchestrator.errors import ConfigError, DeploymentNotFound, RolloutInProgress
from orchestrator.progress import ProgressCallback, ProgressEvent
from orchestrator.spec import DeploymentSpec
from orchestrator.tls import TLS_FIELDS

# Fields a rolling update cannot change: they shape the head, not the workers.
HEAD_FIELDS: tuple[str, ...] = ("shards", "polling", "port", "host", "uses_before",
                                 "uses_after", "external", "protocol", "timeout_send")
HEAD_FIELDS += TLS_FIELDS  # the head's certificate, and this process's way to reach it

Action = Literal["started", "updated", "scaled", "unchanged"]
StepKind = Literal["start", "rollout", "scale", "remove"]


class Reporter(Protocol):
    """Where apply and teardown report progress (the CLI draws spinners and bars)."""

    def step(self, kind: StepKind, deployment: str, title: str
             ) -> AbstractContextManager[ProgressCallback]:
        """A blocking step begins; the context's value receives its events; exit ends it."""

    def event(self, event: ProgressEvent) -> None:
        """An event outside any step (what converge removed or registered again)."""


class Silent:
    """A `Reporter` that reports nothing (the default)."""

    def step(self, kind: StepKind, deployment: str, title: str
             ) -> AbstractContextManager[ProgressCallback]:
        return nullcontext(_ignore)

    def event(self, event: ProgressEvent) -> None:
        """Nothing to show."""


def _ignore(event: ProgressEvent) -> None:
    """Drop the event."""


# -- deciding (pure) --------------------------------------------------------------------


def spec_changes(current: DeploymentSpec, wanted: DeploymentSpec) -> dict[str, Any]:
    """Fields of `wanted` that differ from the running `current` (as `from_fields` values).

    A port the file leaves to the engine is not a change: the running head keeps its own.
    """
    have, want = current.to_fields(), wanted.to_fields()
    if wanted.port is None:
        have.pop("port", None)
    return {key: want.get(key) for key in sorted(set(have) | set(want))
            if have.get(key) != want.get(key)}


@dataclass(frozen=True)
class Decision:
    """What to do to a running deployment: roll these fields, then scale to `replicas`."""

    roll: Mapping[str, Any] = field(default_factory=dict)
    replicas: int | None = None
    notes: tuple[str, ...] = ()

    @property
    def action(self) -> Action:
        if self.roll:
            return "updated"
        return "scaled" if self.replicas is not None else "unchanged"


def decide(current: DeploymentSpec, cfg: DeploymentConfig, outdated: Sequence[str] = ()
           ) -> Decision:
    """The update that brings a deployment running `current` to the file's `cfg.spec`.

    `outdated`: its worker pods that run another spec (`Deployment.outdated()`): when the
    spec itself did not change, they are what a cut-short update left, and a scale to the
    same count replaces them.

    Raises:
        ConfigError: the file changes a field of `HEAD_FIELDS`; names the file and field.
    """
    changes = spec_changes(current, cfg.spec)
    frozen = sorted(set(changes) & set(HEAD_FIELDS))
    if frozen:
        raise ConfigError(cfg.source, _field_path(cfg.path, frozen[0]),
                          f"cannot change on the running deployment {current.name!r} (it "
                          f"shapes the head); run `orchestrator down {current.name}` first")
    notes: list[str] = []
    for key in ("noblock_on_start", "reload", "watch"):  # how a process runs it: no rollout
        changes.pop(key, None)
    replicas = changes.pop("replicas", None)
    if not changes and replicas is None and outdated:
        notes.append(f"finishing an interrupted update: {len(outdated)} replica(s) ran an "
                     "older spec")
        replicas = current.replicas
    if changes.pop("policy", None) is not None:
        notes.append("the new policy applies to this file's rollouts")
    return Decision(roll=changes, replicas=None if replicas is None else int(replicas),
                    notes=tuple(notes))


def _field_path(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def pod_count(spec: DeploymentSpec) -> int:
    """Pods a start creates: the head, the workers, uses_before and uses_after."""
    return 1 + spec.shards * spec.replicas + (spec.uses_before is not None) \
        + (spec.uses_after is not None)


# -- doing ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Applied:
    """What apply did to one deployment. `started_here`: this handle started it (closing
    the handle removes it unless detached); otherwise it is an attached handle."""

    deployment: Deployment
    action: Action
    started_here: bool
    notes: tuple[str, ...] = ()

    def summary(self) -> dict[str, Any]:
        """JSON-able: name, action, address, replicas, shards, image, notes."""
        dep = self.deployment
        return {"name": dep.name, "action": self.action, "address": dep.address,
                "replicas": dep.spec.replicas, "shards": dep.spec.shards,
                "image": dep.spec.image, "notes": list(self.notes)}


Opener = Callable[[DeploymentConfig, ContainerEngine], Deployment]
Attacher = Callable[[str, ContainerEngine], Deployment]


def open_new(cfg: DeploymentConfig, engine: ContainerEngine) -> Deployment:
    """A new, not yet started handle for the file's deployment. A reaper removes what this
    process starts if it dies without a word (kill -9); `detach` tells it to leave it."""
    # our own field names as keyword arguments (`args` would read Jina's names and units)
    return Deployment(engine=engine, base_dir=cfg.base_dir, reaper=True, **cfg.fields)


def open_supervised(cfg: DeploymentConfig, engine: ContainerEngine) -> Deployment:
    """`open_new` for `up --detach`: when it heals (`heal_after`), its labels ask the
    supervisor to heal it once this process has gone (orchestrator/supervisor.py)."""
    # our own field names as keyword arguments (`args` would read Jina's names and units)
    return Deployment(engine=engine, base_dir=cfg.base_dir, reaper=True,
                      supervised=bool(cfg.spec.heal_after), **cfg.fields)


def with_heal_after(cfg: DeploymentConfig, seconds: float) -> DeploymentConfig:
    """`cfg` with `heal_after` set (`up --heal-after`); 0 turns healing off.

    Raises:
        SpecError: a negative or non-finite number.
    """
    fields = {**cfg.fields, "heal_after": seconds}
    spec = DeploymentSpec.from_fields(base_dir=cfg.base_dir, **fields)
    return replace(cfg, fields=fields, spec=spec)


def attach(name: str, engine: ContainerEngine) -> Deployment:
    """A handle on the running deployment `name` (rebuilt from the engine's labels)."""
    return Deployment.attach(name, engine=engine)


def apply_each(configs: Iterable[DeploymentConfig], engine: ContainerEngine,
               reporter: Reporter | None = None, *, opener: Opener = open_new,
               attacher: Attacher = attach) -> Iterator[Applied]:
    """Apply the configs in order, yielding each result as soon as it is done (a caller
    that collects them keeps the handles of the ones done when a later one fails).

    Raises what `apply_config` raises.
    """
    for cfg in configs:
        yield apply_config(cfg, engine, reporter, opener=opener, attacher=attacher)


def apply_config(cfg: DeploymentConfig, engine: ContainerEngine,
                 reporter: Reporter | None = None, *, opener: Opener = open_new,
                 attacher: Attacher = attach) -> Applied:
    """Start the deployment, or bring the running one to the file's spec.

    Returns the open handle: the caller closes it (and detaches it to leave it running).

    Raises:
        ConfigError: the file changes a field that shapes the head.
        SpecError, PodStartError, HealthCheckTimeout, RolloutError, RolloutInProgress,
        EngineUnavailable: as `Deployment.start`, `rolling_update` and `scale`.
    """
    report = reporter or Silent()
    name = cfg.spec.name
    if name in running_deployments(engine):
        return _update(cfg, attacher(name, engine), report)
    dep = opener(cfg, engine)
    try:
        with report.step("start", name, f"starting {name} ({pod_count(cfg.spec)} pods)"):
            dep.start()
    except BaseException:
        dep.close()  # start already removed its pods; this releases the connections
        raise
    return Applied(dep, "started", started_here=True)


def _update(cfg: DeploymentConfig, dep: Deployment, report: Reporter) -> Applied:
    try:
        notes: list[str] = []
        if dep.converge(on_progress=report.event):
            notes.append("cleaned up after an interrupted update or scale")
        decision = decide(dep.spec, cfg, dep.outdated())
        notes += decision.notes
        if decision.roll:
            with report.step("rollout", dep.name, f"rolling update of {dep.name}") as cb:
                # the file is the whole truth: its uses_with replaces the running one
                dep.rolling_update_sync(policy=cfg.spec.policy, on_progress=cb,
                                        replace_uses_with=True, **decision.roll)
        if decision.replicas is not None:
            title = f"scaling {dep.name} to {decision.replicas}"
            with report.step("scale", dep.name, title) as cb:
                dep.scale_sync(decision.replicas, policy=cfg.spec.policy, on_progress=cb)
    except BaseException:
        dep.close()
        raise
    return Applied(dep, decision.action, started_here=False, notes=tuple(notes))


def leave_running(applied: Iterable[Applied]) -> None:
    """Close the handles and leave the deployments running (labels let a later process
    find them again)."""
    for item in applied:
        item.deployment.detach()
        item.deployment.close()


def tear_down(applied: Sequence[Applied], engine: ContainerEngine,
              reporter: Reporter | None = None) -> None:
    """Remove what apply brought up, the last one first: a handle that started its
    deployment removes it on close; an attached one is removed by label."""
    report = reporter or Silent()
    for item in reversed(applied):
        dep = item.deployment
        with report.step("remove", dep.name, f"removing {dep.name}"):
            dep.close()
            if not item.started_here:
                remove_owned(engine, dep.name, grace=dep.spec.stop_grace)


# -- removing by label ------------------------------------------------------------------


LOCK_WAIT = 10.0


@contextmanager
def held_locks(names: Sequence[str], *, wait: float = LOCK_WAIT) -> Iterator[None]:
    """Hold the deployments' locks while they are removed, so that no healer (the
    supervisor, a background healer) replaces a pod being removed. A lock still busy after
    `wait` seconds (an update that hangs) is not waited for: the removal goes on."""
    locks = [DeploymentLock(name) for name in names]
    deadline = time.monotonic() + wait
    try:
        for lock in locks:
            while True:
                try:
                    lock.acquire(RolloutInProgress(lock.path), STOP)
                    break
                except RolloutInProgress:
                    if time.monotonic() >= deadline:
                        break
                    time.sleep(0.1)
        yield
    finally:
        for lock in locks:
            lock.release()



@dataclass(frozen=True)
class Removed:
    """What `remove` took away, and which of the names asked for had nothing running."""

    containers: tuple[str, ...]
    networks: tuple[str, ...]
    not_running: tuple[str, ...] = ()


def remove(engine: ContainerEngine, names: Sequence[str] | None, *, grace: float,
           reporter: Reporter | None = None, missing_ok: bool = False) -> Removed:
    """Remove every container and network of the named deployments (None: of every
    deployment on the engine), by label: works after the process that started them died.

    Raises:
        DeploymentNotFound: a name has nothing on the engine (unless `missing_ok`, which
            lists those names in `not_running` instead).
        EngineError: a removal failed (the rest was still removed).
    """
    report = reporter or Silent()
    targets: list[str | None] = [None] if names is None else list(dict.fromkeys(names))
    absent = tuple(n for n in targets if n is not None and not list_owned(engine, n))
    if absent and not missing_ok:
        raise DeploymentNotFound(absent[0], running_deployments(engine))
    gone = Owned()
    for target in (t for t in targets if t not in absent):
        with report.step("remove", target or "", f"removing {target or 'every deployment'}"):
            done = remove_owned(engine, target, grace=grace)
        gone = Owned(gone.containers + done.containers, gone.networks + done.networks)
    return Removed(tuple(c.name for c in gone.containers), tuple(n.name for n in gone.networks),
                   absent)
