"""The one owner of a deployment's live state: spec, generation, pods, container facts.

`Deployment` (the facade), `Rollout` and `Healer` all read and change a deployment
through one `DeploymentState`, and only through its methods: nobody else writes its
fields. It is rebuilt from the labels on the engine (`from_labels`), which are the source
of truth, so a second process can take a deployment over; `take_over` does the same for
a handle that another process's update or scale made stale.

Nothing here does I/O: the callers list the containers and pass them in.
"""

from __future__ import annotations

import json
import threading
import uuid
from dataclasses import dataclass, field, replace
from typing import Any

from orchestrator import labels as L
from orchestrator.errors import DeploymentNotFound
from orchestrator.model import ContainerInfo, ContainerSpec
from orchestrator.planning import names
from orchestrator.planning.pods import (
    TOKEN_ENV,
    PodContext,
    PodPlan,
    executor_pod,
    initial_pods,
    replaced_labels,
    with_labels,
)
from orchestrator.spec import CONTAINER_PORT, DeploymentSpec


def new_context() -> PodContext:
    """A fresh owner id and control token for a deployment this process creates."""
    import secrets

    return PodContext(owner=uuid.uuid4().hex[:12], token=secrets.token_urlsafe(24))


@dataclass
class DeploymentState:
    """What one deployment is and runs, as this process knows it. Thread-safe: a rollout
    changes it from worker threads while the facade reads it."""

    spec: DeploymentSpec
    ctx: PodContext = field(default_factory=new_context)
    pods: dict[str, PodPlan] = field(default_factory=dict)
    infos: dict[str, ContainerInfo] = field(default_factory=dict)
    started: bool = False
    healing: dict[tuple[int, int], str] = field(default_factory=dict)
    """(shard, replica slot) -> why the healer replaces the pod in it, during a heal."""
    _lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    # -- reading --------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def network(self) -> str:
        return names.network_name(self.spec.name)

    @property
    def head_name(self) -> str:
        return names.head_name(self.spec.name)

    @property
    def token(self) -> str:
        return self.ctx.token

    @property
    def owner(self) -> str:
        return self.ctx.owner

    @property
    def generation(self) -> int:
        return self.ctx.generation

    def head_info(self) -> ContainerInfo | None:
        return self.infos.get(self.head_name)

    def planned(self) -> list[PodPlan]:
        """The pods that run, or, before a start, the pods a start would create."""
        with self._lock:
            return list(self.pods.values()) if self.pods else initial_pods(self.spec, self.ctx)

    def workers(self, shard: int | None = None) -> list[PodPlan]:
        with self._lock:
            return [p for p in self.pods.values()
                    if p.role == "worker" and (shard is None or p.shard == shard)]

    def worker_names(self) -> set[str]:
        return {p.name for p in self.workers()}

    def outdated(self) -> list[str]:
        """Worker pods that do not run the spec: an update was cut short or paused."""
        wanted = self.spec.worker_hash()
        return sorted(p.name for p in self.workers() if p.spec_hash != wanted)

    def worker_plan(self, spec: DeploymentSpec, shard: int, slot: int, generation: int
                    ) -> PodPlan:
        """A new pod for a slot: it carries over the slot's replacement count (one more,
        with the reason, when the healer replaces it)."""
        plan = executor_pod(spec, self.ctx, role="worker", uses=spec.uses, shard=shard,
                            replica=slot, generation=generation)
        with self._lock:
            before = [p for p in self.pods.values()
                      if p.role == "worker" and p.shard == shard and p.replica == slot]
            reason = self.healing.get((shard, slot))
        last = max(before, key=lambda p: p.generation).container.labels if before else {}
        return with_labels(plan, replaced_labels(last, reason))

    def next_generation(self) -> int:
        """Replacements of the same slot need a new generation: it is part of the name."""
        with self._lock:
            return max([p.generation for p in self.pods.values()] + [self.ctx.generation]) + 1

    # -- changing -------------------------------------------------------------------
    def plan_start(self) -> list[PodPlan]:
        """The pods of a first start, now this deployment's pods."""
        with self._lock:
            plans = initial_pods(self.spec, self.ctx)
            self.pods = {p.name: p for p in plans}
            self.started = True
            return plans

    def started_pods(self, infos: dict[str, ContainerInfo]) -> None:
        with self._lock:
            self.infos.update(infos)

    def add_pod(self, plan: PodPlan, info: ContainerInfo | None = None) -> None:
        with self._lock:
            self.pods[plan.name] = plan
            if info is not None:
                self.infos[plan.name] = info

    def drop_pod(self, name: str) -> ContainerInfo | None:
        """Forget a pod; returns its last known container facts."""
        with self._lock:
            self.pods.pop(name, None)
            return self.infos.pop(name, None)

    def note(self, info: ContainerInfo) -> None:
        """Take a container as the engine shows it now."""
        with self._lock:
            self.infos[info.name] = info

    def commit(self, spec: DeploymentSpec, generation: int) -> None:
        """A rolling update or scale finished: this spec runs now."""
        with self._lock:
            self.spec = spec
            self.ctx = replace(self.ctx, generation=generation)

    def set_gpus(self, devices: tuple[str, ...]) -> None:
        """The engine's GPU devices: replica slots get theirs from this list."""
        with self._lock:
            self.ctx = replace(self.ctx, gpus=devices)

    def set_generation(self, generation: int) -> None:
        with self._lock:
            self.ctx = replace(self.ctx, generation=generation)

    def clear(self) -> None:
        """Everything was removed."""
        with self._lock:
            self.pods.clear()
            self.infos.clear()
            self.started = False

    def take_over(self, fresh: DeploymentState, at_head: set[str]) -> None:
        """Another process updated or scaled the deployment: take its spec and pods (from
        `fresh`, rebuilt from the labels). Workers the head still lists (`at_head`) but
        whose container is gone keep the plan this state knew them by, so they can be
        replaced."""
        with self._lock:
            kept = {n: p for n, p in self.pods.items()
                    if p.role == "worker" and n in at_head and n not in fresh.pods}
            self.spec = fresh.spec
            self.pods = {**fresh.pods, **kept}
            self.infos = dict(fresh.infos)
            self.ctx = replace(self.ctx, generation=max(self.ctx.generation,
                                                        fresh.ctx.generation))

    # -- rebuilding from labels -----------------------------------------------------
    @classmethod
    def from_labels(cls, name: str, containers: list[ContainerInfo],
                    running: list[str] | None = None) -> DeploymentState:
        """The state of a running deployment, from its containers' labels (listed by the
        caller). `running`: the deployments that do run, for the error message.

        Raises:
            DeploymentNotFound: no head among `containers`.
        """
        head = next((c for c in containers if c.labels.get(L.ROLE) == "head"), None)
        if head is None:
            raise DeploymentNotFound(name, running or [])
        spec = DeploymentSpec.from_fields(**spec_fields(containers, head))
        generation = max(int(c.labels.get(L.GENERATION, "0")) for c in containers)
        ctx = PodContext(owner=head.labels.get(L.OWNER, ""),
                         token=head.env.get(TOKEN_ENV, ""), generation=generation,
                         supervised=head.labels.get(L.SUPERVISED) == "true")
        return cls(spec=spec, ctx=ctx,
                   pods={c.name: plan_from_labels(c) for c in containers},
                   infos={c.name: c for c in containers}, started=True)


def spec_fields(containers: list[ContainerInfo], head: ContainerInfo) -> dict[str, Any]:
    """The spec fields of the newest worker generation (or the head's), with the replica
    count and port as they really are."""
    workers = [c for c in containers if c.labels.get(L.ROLE) == "worker"]
    newest = max(workers or [head], key=lambda c: int(c.labels.get(L.GENERATION, "0")))
    fields: dict[str, Any] = json.loads(newest.labels[L.SPEC])
    # Replicas per shard = the slots in use: a replica replaced start-first shares its
    # slot with its replacement for a while, and an update stopped between the two
    # (Ctrl-C) must not read as a scale-up.
    per_shard = len({w.labels.get(L.REPLICA) for w in workers if w.labels.get(L.SHARD) == "0"})
    fields["replicas"] = per_shard or fields.get("replicas", 1)
    if CONTAINER_PORT in head.ports:
        fields["port"] = head.ports[CONTAINER_PORT][1]
    return fields


def plan_from_labels(info: ContainerInfo) -> PodPlan:
    """A pod as the engine describes it: identity from labels, the rest from inspect."""
    labels = info.labels

    def number(key: str) -> int | None:
        value = labels.get(key)
        return int(value) if value is not None and value.isdigit() else None

    return PodPlan(
        name=info.name,
        role=labels.get(L.ROLE, "worker"),
        shard=number(L.SHARD),
        replica=number(L.REPLICA),
        generation=number(L.GENERATION) or 0,
        spec_hash=labels.get(L.SPEC_HASH, ""),
        uses="",
        container=ContainerSpec(name=info.name, image=info.image, labels=dict(labels)),
    )
