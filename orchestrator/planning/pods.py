"""The pods of a deployment, as container specs: a pure function of the spec.

Nothing here picks a host port or touches an engine: the head's port is either
the user's or left to Docker (`host_port=None`), which avoids the
find-a-free-port race of parallel test runs.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import PurePosixPath
from typing import Any

from orchestrator.model import ContainerSpec, Mount, PortBinding, RestartPolicy
from orchestrator.planning import labels as L
from orchestrator.planning import names
from orchestrator.planning.gpus import container_env, slot_devices
from orchestrator.planning.hosts import DOCKER_HOST
from orchestrator.planning.tls import head_tls_args, head_tls_env, head_tls_mounts
from orchestrator.spec import CONTAINER_PORT, DeploymentSpec, UsesRef

USES_MOUNT = "/opt/uses"
WORKSPACE = "/workspace"
HEAD_STATE = f"{WORKSPACE}/head-workers.json"
RUNTIME_USER = "10001:10001"
TOKEN_ENV = "ORCHESTRATOR_TOKEN"
TOKEN_FILE_ENV = "ORCHESTRATOR_TOKEN_FILE"  # or the head reads its token from this file
HEAD_CPU_SHARES = 4096  # 4x a worker's default weight of 1024


@dataclass(frozen=True)
class PodContext:
    """Per-deployment facts that are not part of the spec."""

    owner: str
    token: str
    generation: int = 1
    supervised: bool = False
    """Started by `up --detach`: the supervisor heals it (label `orchestrator.supervised`)."""
    gpus: tuple[str, ...] = ()  # the engine's GPU devices, when the spec asks for GPUs

    def extra_labels(self) -> dict[str, str]:
        return {L.SUPERVISED: "true"} if self.supervised else {}


@dataclass(frozen=True)
class PodPlan:
    """One pod: its role, identity, and the container that runs it."""

    name: str
    role: str
    shard: int | None
    replica: int | None
    generation: int
    spec_hash: str
    uses: str
    container: ContainerSpec

    @property
    def address(self) -> str:
        """host:port at which other pods on the deployment network reach it."""
        return f"{self.name}:{CONTAINER_PORT}"

    def args(self, spec: DeploymentSpec) -> dict[str, Any]:
        """The pod's arguments as plain values (the Namespace views are built from these)."""
        return {
            "name": self.name,
            "deployment": spec.name,
            "role": self.role,
            "shard_id": self.shard,
            "replica_id": self.replica,
            "generation": self.generation,
            "uses": self.uses,
            "uses_with": dict(spec.uses_with) if self.role == "worker" else {},
            "image": self.container.image,
            "host": self.name,
            "port": CONTAINER_PORT,
            "polling": spec.polling,
            "shards": spec.shards,
            "replicas": spec.replicas,
            "env": dict(self.container.env),
            "network": self.container.network,
            "spec_hash": self.spec_hash,
            "protocol": spec.protocol,
            "timeout_send": spec.timeout_send,
        }


def spec_label(spec: DeploymentSpec) -> str:
    """The spec as a label: every pod carries the spec it was created from, so the
    engine alone can tell what a running deployment is (see Deployment.attach)."""
    return json.dumps(spec.to_fields(), sort_keys=True, separators=(",", ":"))


def _uses_args(uses: UsesRef) -> tuple[tuple[str, ...], tuple[Mount, ...]]:
    """Runtime `--uses` arguments and mounts for one uses reference."""
    if uses.kind == "docker":
        return (), ()  # the image bakes its executor in (ORCHESTRATOR_USES)
    if uses.kind == "module":
        return ("--uses", f"{uses.module}:{uses.cls}"), ()
    path = PurePosixPath(uses.path)
    mount = Mount(source=str(path.parent), target=USES_MOUNT, read_only=True)
    return ("--uses", f"{USES_MOUNT}/{path.name}:{uses.cls}"), (mount,)


def _image_for(spec: DeploymentSpec, uses: UsesRef) -> str:
    return uses.image if uses.kind == "docker" else spec.image


def _base_container(
    spec: DeploymentSpec, name: str, image: str, command: tuple[str, ...],
    labels: dict[str, str], env: dict[str, str], mounts: tuple[Mount, ...] = (),
) -> ContainerSpec:
    restart: RestartPolicy = spec.restart_policy  # type: ignore[assignment]
    return ContainerSpec(
        name=name,
        image=image,
        command=command,
        env=env,
        labels=labels,
        network=names.network_name(spec.name),
        aliases=(name,),
        hostname=name,
        mounts=mounts,
        user=RUNTIME_USER,
        restart_policy=restart,
        restart_max_retries=3 if restart == "on-failure" else 0,
        stop_timeout=int(spec.stop_grace),
        log_max_bytes=spec.log_max_size,
        log_max_files=spec.log_max_files,
    )


def executor_pod(
    spec: DeploymentSpec, ctx: PodContext, *, role: str, uses: UsesRef,
    shard: int | None = None, replica: int | None = None, generation: int | None = None,
) -> PodPlan:
    """A worker (or uses_before / uses_after) pod running one executor."""
    gen = ctx.generation if generation is None else generation
    if role == "worker":
        assert shard is not None and replica is not None
        name = names.worker_name(spec.name, shard, replica, gen)
    else:
        name = names.uses_name(spec.name, role)
    spec_hash = spec.worker_hash()
    uses_args, mounts = _uses_args(uses)
    uses_with = dict(spec.uses_with) if role == "worker" else {}
    # A docker:// image may bake its own ORCHESTRATOR_USES_WITH: only override it when
    # the spec says something.
    with_args = ("--uses-with", json.dumps(uses_with)) if uses_with or uses.kind != "docker" \
        else ()
    command = (
        "worker", *uses_args, *with_args,
        "--name", name,
        "--shard-id", str(shard or 0),
        "--replica-id", str(replica or 0),
        "--port", str(CONTAINER_PORT),
        "--workspace", WORKSPACE,
        "--grace", str(spec.stop_grace),
    )
    volume_mounts = tuple(Mount(v.source, v.target, v.read_only) for v in spec.volumes)
    gpus, gpu_ids = _gpus(spec, ctx, replica or 0)
    extra = {L.SPEC: spec_label(spec), **ctx.extra_labels()}
    if gpus is not None:
        extra[L.GPUS] = "all" if gpus < 0 else ",".join(gpu_ids) or str(gpus)
    labels = L.pod_labels(
        deployment=spec.name, role=role, owner=ctx.owner, spec_hash=spec_hash,
        generation=gen, shard=shard, replica=replica, extra=extra,
    )
    container = _base_container(
        spec, name, _image_for(spec, uses), command, labels,
        container_env(spec.env, spec.gpus), mounts + volume_mounts,
    )
    container = replace(_with_limits(container, spec), gpus=gpus, gpu_ids=gpu_ids)
    if role == "worker":  # the head checks its workers: no exec'd probe per replica
        container = replace(container, image_healthcheck=False)
    if spec.constraints:  # where executor pods may run on a Swarm (the head is pinned)
        container = replace(container, constraints=spec.constraints)
    return PodPlan(name, role, shard, replica, gen, spec_hash, str(uses), container)


def _with_limits(container: ContainerSpec, spec: DeploymentSpec) -> ContainerSpec:
    return replace(container, cpus=spec.cpus, memory_bytes=spec.memory)


def _gpus(spec: DeploymentSpec, ctx: PodContext, slot: int
          ) -> tuple[int | None, tuple[str, ...]]:
    """(device count or -1 for all, device ids) of one replica slot: see planning.gpus.
    Without the engine's device list (an export), a count stays a count."""
    request = spec.gpus
    if request is None:
        return None, ()
    ids = slot_devices(request, slot, ctx.gpus)
    if ids is None:
        return -1, ()
    return (len(ids), ids) if ids else (request.count, ())


def head_pod(spec: DeploymentSpec, ctx: PodContext) -> PodPlan:
    """The head: the one published port, routing to every worker."""
    name = names.head_name(spec.name)
    polling = spec.polling if isinstance(spec.polling, str) else json.dumps(dict(spec.polling))
    command: tuple[str, ...] = (
        "head", "--name", name, "--port", str(CONTAINER_PORT), "--shards", str(spec.shards),
        "--polling", polling, "--health-interval", str(spec.health_interval),
        "--grace", str(spec.stop_grace),
        # its worker list survives a restart of the head in its container (a crash under
        # the restart policy): see runtime/membership.py
        "--state", HEAD_STATE,
        *head_tls_args(spec),
    )
    if spec.uses_before:
        command += ("--uses-before", f"{names.uses_name(spec.name, 'uses_before')}:"
                    f"{CONTAINER_PORT}")
    if spec.uses_after:
        command += ("--uses-after", f"{names.uses_name(spec.name, 'uses_after')}:"
                    f"{CONTAINER_PORT}")
    command += _head_protocol_args(spec)
    labels = L.pod_labels(
        deployment=spec.name, role="head", owner=ctx.owner, spec_hash=spec.worker_hash(),
        generation=ctx.generation,
        extra={L.SPEC: spec_label(spec), L.CONTROL: f"{name}:{CONTAINER_PORT}",
               **ctx.extra_labels()},
    )
    container = _base_container(
        spec, name, spec.image, command, labels, {TOKEN_ENV: ctx.token, **head_tls_env(spec)},
        head_tls_mounts(spec),
    )
    container = replace(
        container,
        ports=(PortBinding(CONTAINER_PORT, spec.host, spec.port),),
        extra_hosts={DOCKER_HOST: "host-gateway"},
        # Every request crosses the head: under CPU contention (a new replica's
        # interpreter starting during a rollout) it keeps its share first.
        cpu_shares=HEAD_CPU_SHARES,
    )
    return PodPlan(name, "head", None, None, ctx.generation, spec.worker_hash(), "head",
                   container)


def _head_protocol_args(spec: DeploymentSpec) -> tuple[str, ...]:
    """--http (Jina's HTTP interface on the head's port) and --timeout-send (ms)."""
    args: tuple[str, ...] = ("--http",) if "http" in spec.protocols else ()
    if spec.timeout_send is not None:
        value = spec.timeout_send
        args += ("--timeout-send", str(value) if isinstance(value, int)
                 else json.dumps(dict(value), sort_keys=True))
    return args


def initial_pods(spec: DeploymentSpec, ctx: PodContext) -> list[PodPlan]:
    """Head, uses_before, uses_after, then shards x replicas workers."""
    pods = [head_pod(spec, ctx)]
    for role, uses in (("uses_before", spec.uses_before), ("uses_after", spec.uses_after)):
        if uses is not None:
            pods.append(executor_pod(spec, ctx, role=role, uses=uses))
    for shard in range(spec.shards):
        for replica in range(spec.replicas):
            pods.append(
                executor_pod(spec, ctx, role="worker", uses=spec.uses, shard=shard,
                             replica=replica)
            )
    return pods


def replaced_labels(before: Mapping[str, str], reason: str | None) -> dict[str, str]:
    """The heal labels a pod takes over from the pod it follows in its slot (`before`:
    that pod's labels): the replacement count, plus one with the reason when the healer
    replaces it (`reason` not None)."""
    seen = before.get(L.REPLACED, "0")
    count = int(seen) if seen.isdigit() else 0
    out = {L.REPLACED: str(count), L.REPLACED_REASON: before.get(L.REPLACED_REASON, "")}
    if reason is not None:
        out = {L.REPLACED: str(count + 1), L.REPLACED_REASON: reason}
    return out if out[L.REPLACED] != "0" else {}


def with_labels(plan: PodPlan, extra: Mapping[str, str]) -> PodPlan:
    """`plan` with more labels on its container."""
    if not extra:
        return plan
    labels = {**plan.container.labels, **extra}
    return replace(plan, container=replace(plan.container, labels=labels))
