"""The pods of a deployment, as container specs: a pure function of the spec.

Nothing here picks a host port or touches an engine: the head's port is either
the user's or left to Docker (`host_port=None`), which avoids the
find-a-free-port race of parallel test runs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import PurePosixPath
from typing import Any

from orchestrator.model import ContainerSpec, Mount, PortBinding, RestartPolicy
from orchestrator.planning import labels as L
from orchestrator.planning import names
from orchestrator.planning.hosts import DOCKER_HOST
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
    labels = L.pod_labels(
        deployment=spec.name, role=role, owner=ctx.owner, spec_hash=spec_hash,
        generation=gen, shard=shard, replica=replica, extra={L.SPEC: spec_label(spec)},
    )
    container = _base_container(
        spec, name, _image_for(spec, uses), command, labels, dict(spec.env),
        mounts + volume_mounts,
    )
    container = _with_limits(container, spec)
    if spec.constraints:  # where executor pods may run on a Swarm (the head is pinned)
        container = replace(container, constraints=spec.constraints)
    return PodPlan(name, role, shard, replica, gen, spec_hash, str(uses), container)


def _with_limits(container: ContainerSpec, spec: DeploymentSpec) -> ContainerSpec:
    return replace(container, cpus=spec.cpus, memory_bytes=spec.memory, gpus=spec.gpus)


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
    )
    if spec.uses_before:
        command += ("--uses-before", f"{names.uses_name(spec.name, 'uses_before')}:"
                    f"{CONTAINER_PORT}")
    if spec.uses_after:
        command += ("--uses-after", f"{names.uses_name(spec.name, 'uses_after')}:"
                    f"{CONTAINER_PORT}")
    labels = L.pod_labels(
        deployment=spec.name, role="head", owner=ctx.owner, spec_hash=spec.worker_hash(),
        generation=ctx.generation,
        extra={L.SPEC: spec_label(spec), L.CONTROL: f"{name}:{CONTAINER_PORT}"},
    )
    container = _base_container(
        spec, name, spec.image, command, labels, {TOKEN_ENV: ctx.token},
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
