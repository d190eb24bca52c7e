"""A deployment as files for another engine: Compose, a Swarm stack, or Kubernetes manifests.

Pure: the pods come from `initial_pods`, so an export runs the same images, commands,
users and limits as `Deployment.start()`. What the orchestrator does at run time is
replaced by static configuration:
- the head gets its workers as `--worker SHARD=HOST:PORT` arguments instead of control RPCs;
- on Kubernetes, each shard is a StatefulSet behind a headless Service, so every replica
  has a stable DNS name for the head to dial (`NAME-s0-1.NAME-s0:50051`), and a replaced
  replica comes back under the same name;
- on Swarm, each pod is a one-task service reached by its name on an overlay network
  (endpoint_mode dnsrr: the head connects to the task itself, not to a virtual IP), and
  Swarm's own start-first updates, gated by the image's health probe, replace a task;
- an executor given as a local file travels in a ConfigMap (Kubernetes) or a Swarm config,
  or is bind-mounted from the same host path (Compose).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import replace
from pathlib import PurePosixPath
from typing import Any

from orchestrator.errors import SpecError
from orchestrator.model import ContainerSpec
from orchestrator.planning import labels as L
from orchestrator.planning.pods import (
    RUNTIME_USER,
    TOKEN_ENV,
    TOKEN_FILE_ENV,
    USES_MOUNT,
    PodContext,
    PodPlan,
    initial_pods,
)
from orchestrator.spec import CONTAINER_PORT, DeploymentSpec, UsesRef

TOKEN_VARIABLE = "ORCHESTRATOR_TOKEN"
"""Compose reads the head's control token from this variable when the stack starts."""

SWARM_TOKEN_TARGET = "/run/secrets/orchestrator-token"
"""On Swarm, the head reads its token from this file: the Swarm secret NAME-token."""
K8S_TOKEN_DIR = "/run/secrets/orchestrator"
"""On Kubernetes, the Secret NAME-token is mounted here; the head reads the file `token`."""


def _exportable(spec: DeploymentSpec) -> None:
    """Raises SpecError for a deployment that has no pods of its own to export."""
    if spec.external:
        raise SpecError("an external deployment is a service running elsewhere: it has no "
                        "pods to export", field="external")


def _with_static_workers(pods: list[PodPlan], addresses: Mapping[str, str]) -> list[PodPlan]:
    """The head's command gains one `--worker SHARD=ADDRESS` per worker pod."""
    head, rest = pods[0], pods[1:]
    flags: tuple[str, ...] = ()
    for pod in rest:
        if pod.role == "worker":
            flags += ("--worker", f"{pod.shard}={addresses[pod.name]}")
    container = replace(head.container, command=(*head.container.command, *flags))
    return [replace(head, container=container), *rest]


# -- Compose ------------------------------------------------------------------------------


def to_compose(spec: DeploymentSpec, ctx: PodContext) -> dict[str, Any]:
    """A Compose file (format 2.4: Debian's docker-compose v1 and `docker compose` read it)
    with one service per pod, on one network, with the orchestrator's labels.

    The head's control token is `${ORCHESTRATOR_TOKEN}`, required when the stack starts.

    Raises:
        SpecError: an `external` deployment.
    """
    _exportable(spec)
    pods = initial_pods(spec, ctx)
    pods = _with_static_workers(pods, {p.name: p.address for p in pods})
    network = pods[0].container.network or "default"
    services = {p.name: _compose_service(p, network) for p in pods}
    return {
        "version": "2.4",
        "services": services,
        "networks": {network: {"name": network, "labels": L.for_deployment(spec.name)}},
    }


def _service_base(pod: PodPlan, network: str) -> dict[str, Any]:
    """What a Compose service and a Swarm stack service write the same way. The control
    token is `${ORCHESTRATOR_TOKEN}`, which both tools substitute from their environment."""
    c = pod.container
    env = dict(c.env)
    if TOKEN_ENV in env:
        env[TOKEN_ENV] = f"${{{TOKEN_VARIABLE}:?set {TOKEN_VARIABLE} to the control token}}"
    service: dict[str, Any] = {
        "image": c.image,
        "command": list(c.command),
        "hostname": c.hostname or pod.name,
        "user": c.user or RUNTIME_USER,
        "cap_drop": list(c.cap_drop),
        "environment": env,
        "networks": [network],
    }
    if c.stop_timeout is not None:
        service["stop_grace_period"] = f"{c.stop_timeout}s"
    if c.extra_hosts:
        service["extra_hosts"] = [f"{h}:{ip}" for h, ip in c.extra_hosts.items()]
    if c.log_max_bytes is not None:  # no driver: the engine's default, as when we run it
        service["logging"] = {"options": {"max-size": str(c.log_max_bytes),
                                          "max-file": str(c.log_max_files)}}
    return service


def _compose_service(pod: PodPlan, network: str) -> dict[str, Any]:
    c = pod.container
    service = _service_base(pod, network)
    service.update({
        "security_opt": [_compose_security_opt(o) for o in c.security_opt],
        "labels": {k: v for k, v in c.labels.items() if k != L.OWNER},
        "restart": c.restart_policy if c.restart_policy != "on-failure"
        else f"on-failure:{c.restart_max_retries}" if c.restart_max_retries else "on-failure",
    })
    if c.mounts:
        service["volumes"] = [f"{m.source}:{m.target}:{'ro' if m.read_only else 'rw'}"
                              for m in c.mounts]
    if c.ports:
        service["ports"] = [f"{p.host_ip}:{p.host_port or ''}:{p.container_port}"
                            for p in c.ports]
    if c.cpu_shares:
        service["cpu_shares"] = c.cpu_shares
    if c.cpus:
        service["cpus"] = c.cpus
    if c.memory_bytes:
        service["mem_limit"] = c.memory_bytes
    if c.gpus:
        count = "all" if c.gpus < 0 else c.gpus
        service["device_requests"] = [{"capabilities": [["gpu"]], "count": count}]
    return service


def _compose_security_opt(option: str) -> str:
    return "no-new-privileges:true" if option == "no-new-privileges" else option


# -- Swarm --------------------------------------------------------------------------------

SWARM_HEALTHCHECK: dict[str, Any] = {
    "test": ["CMD", "/opt/venv/bin/python", "-m", "orchestrator.runtime", "probe"],
    "interval": "5s", "timeout": "3s", "retries": 3, "start_period": "60s",
}
"""Swarm publishes a task (in DNS) and moves a start-first update on only once the task is
healthy, and the first check runs one interval after the start: the image's 30 s would
stall both. The stdlib probe costs ~0.17 s of CPU per exec."""

_SWARM_RESTART = {"no": "none", "on-failure": "on-failure", "always": "any",
                  "unless-stopped": "any"}


def to_swarm(spec: DeploymentSpec, ctx: PodContext,
             sources: Mapping[str, str]) -> dict[str, Any]:
    """A stack file (format 3.8) for `docker stack deploy --resolve-image never`: one
    single-task service per pod on an attachable overlay network, so the head dials every
    worker by its service name.

    The head's control token is the external Swarm secret `NAME-token` (created first with
    `docker secret create`), mounted as a file: it is in no service's environment.
    Swarm services cannot set no-new-privileges (the runtime image has no setuid files
    instead) nor a CPU weight, and cannot bind a published port to one address: the head's
    port is published (mode host, every interface) only when the spec gives `port` with
    `host: 0.0.0.0`; without `port`, clients reach `NAME-head:50051` on the network.
    The policy becomes each service's update_config (order, parallelism = max_surge,
    monitor, failure_action) and stop_grace its stop_grace_period.

    Raises:
        SpecError: `port` with another host than 0.0.0.0, `gpus` (Swarm has only generic
            resources set up per node), a file executor missing from `sources`, an
            `external` deployment.
    """
    _exportable(spec)
    if spec.port is not None and spec.host != "0.0.0.0":
        raise SpecError(f"Swarm cannot publish a port on {spec.host} only; set host: "
                        "0.0.0.0 to publish on every interface, or drop port and reach the "
                        "head on the stack's network", field="host")
    if spec.gpus is not None:
        raise SpecError("Swarm has no GPU request, only generic resources set up per node",
                        field="gpus")
    pods = initial_pods(spec, ctx)
    pods = _with_static_workers(pods, {p.name: p.address for p in pods})
    network = pods[0].container.network or "default"
    configs: dict[str, Any] = {}
    services: dict[str, Any] = {}
    for pod in pods:
        uses = _uses_of(spec, pod.role)
        code = None
        if uses is not None and uses.kind == "file":
            code = _swarm_config(spec, pod.role, uses, sources)
            configs.update(code)
        services[pod.name] = _swarm_service(spec, pod, network, code)
    doc: dict[str, Any] = {
        "version": "3.8",
        "services": services,
        "networks": {network: {"name": network, "driver": "overlay", "attachable": True,
                               "labels": L.for_deployment(spec.name)}},
    }
    if configs:
        doc["configs"] = configs
    secret = swarm_secret_name(spec)
    doc["secrets"] = {secret: {"external": True, "name": secret}}
    return doc


def swarm_secret_name(spec: DeploymentSpec) -> str:
    """The Swarm secret holding a deployment's control token."""
    return f"{spec.name}-token"


def _swarm_config(spec: DeploymentSpec, role: str, uses: UsesRef,
                  sources: Mapping[str, str]) -> dict[str, Any]:
    """A Swarm config holding the executor's file. Configs cannot change, so the name
    carries a hash of the text: an edited executor deploys as a new config."""
    if uses.path not in sources:
        raise SpecError(f"the source of {uses.path} was not given to the export",
                        field="uses" if role == "worker" else role)
    digest = hashlib.sha256(sources[uses.path].encode()).hexdigest()[:12]
    name = f"{_config_map_name(spec, role)}-{digest}"
    return {name: {"name": name, "file": uses.path}}


def _swarm_service(spec: DeploymentSpec, pod: PodPlan, network: str,
                   code: Mapping[str, Any] | None) -> dict[str, Any]:
    c = pod.container
    service = _service_base(pod, network)
    service["healthcheck"] = {**SWARM_HEALTHCHECK, "test": list(SWARM_HEALTHCHECK["test"])}
    volumes = [{"type": "bind", "source": m.source, "target": m.target,
                "read_only": m.read_only} for m in c.mounts if m.target != USES_MOUNT]
    if volumes:
        service["volumes"] = volumes
    user, group = (c.user or RUNTIME_USER).split(":")
    if code:
        service["configs"] = [{
            "source": name,
            "target": f"{USES_MOUNT}/{PurePosixPath(body['file']).name}",
            "uid": user, "gid": group, "mode": 0o444,
        } for name, body in code.items()]
    if pod.role == "head":
        service["environment"].pop(TOKEN_ENV, None)
        service["environment"][TOKEN_FILE_ENV] = SWARM_TOKEN_TARGET
        service["secrets"] = [{"source": swarm_secret_name(spec),
                               "target": PurePosixPath(SWARM_TOKEN_TARGET).name,
                               "uid": user, "gid": group, "mode": 0o400}]
        if spec.port is not None:
            service["ports"] = [{"target": CONTAINER_PORT, "published": spec.port,
                                 "protocol": "tcp", "mode": "host"}]
    policy = spec.policy
    update: dict[str, Any] = {
        "parallelism": max(policy.max_surge, 1), "order": policy.order,
        "failure_action": policy.failure_action,
    }
    if policy.monitor:
        update["monitor"] = f"{policy.monitor}s"
    restart: dict[str, Any] = {"condition": _SWARM_RESTART[c.restart_policy or "no"]}
    if c.restart_policy == "on-failure" and c.restart_max_retries:
        restart["max_attempts"] = c.restart_max_retries
    deploy: dict[str, Any] = {
        "replicas": 1,
        "endpoint_mode": "dnsrr",
        "labels": {k: v for k, v in c.labels.items() if k != L.OWNER},
        "restart_policy": restart,
        "update_config": update,
        "rollback_config": {"parallelism": update["parallelism"], "order": policy.order},
    }
    limits: dict[str, Any] = {}
    if c.cpus:
        limits["cpus"] = str(c.cpus)
    if c.memory_bytes:
        limits["memory"] = f"{c.memory_bytes}b"
    if limits:
        deploy["resources"] = {"limits": limits}
    service["deploy"] = deploy
    return service


# -- Kubernetes ---------------------------------------------------------------------------


def to_kubernetes(spec: DeploymentSpec, ctx: PodContext,
                  sources: Mapping[str, str]) -> list[dict[str, Any]]:
    """Kubernetes manifests: a Secret with the control token, one StatefulSet and headless
    Service per shard, a Deployment and Service for the head (and for uses_before /
    uses_after), and a ConfigMap per executor given as a local file.

    `sources` maps a local executor file's path to its text (read by the caller).

    Raises:
        SpecError: a field Kubernetes cannot take from a single host (`volumes`, `gpus`
            given as "all", a file executor missing from `sources`), an `external`
            deployment.
    """
    _exportable(spec)
    if spec.volumes:
        raise SpecError("host bind mounts do not carry over to a cluster; bake the files "
                        "into an image (uses: docker://...) or mount a volume of the "
                        "cluster's own", field="volumes")
    if spec.gpus is not None and spec.gpus < 0:
        raise SpecError("'all' has no Kubernetes equivalent; give a number of GPUs",
                        field="gpus")
    pods = initial_pods(spec, ctx)
    pods = _with_static_workers(pods, {p.name: _k8s_worker_address(spec, p) for p in pods
                                       if p.role == "worker"})
    by_role = {p.role: p for p in pods if p.role != "worker"}
    secret = f"{spec.name}-token"
    docs: list[dict[str, Any]] = [{
        "apiVersion": "v1", "kind": "Secret",
        "metadata": _meta(spec, secret, "head"),
        "type": "Opaque",
        "stringData": {"token": ctx.token},
    }]
    for role, uses in (("worker", spec.uses), ("uses_before", spec.uses_before),
                       ("uses_after", spec.uses_after)):
        if uses is not None and uses.kind == "file":
            docs.append(_config_map(spec, role, uses, sources))
    for role in ("head", "uses_before", "uses_after"):
        if role in by_role:
            pod = by_role[role]
            docs.append(_deployment(spec, pod, _uses_of(spec, role), secret))
            docs.append(_service(spec, pod.name, role, headless=False))
    for shard in range(spec.shards):
        first = next(p for p in pods if p.role == "worker" and p.shard == shard)
        docs.append(_service(spec, _shard_name(spec, shard), "worker", headless=True,
                             shard=shard))
        docs.append(_stateful_set(spec, first, shard))
    return docs


def _shard_name(spec: DeploymentSpec, shard: int) -> str:
    return f"{spec.name}-s{shard}"


def _k8s_worker_address(spec: DeploymentSpec, pod: PodPlan) -> str:
    assert pod.shard is not None and pod.replica is not None
    sts = _shard_name(spec, pod.shard)
    return f"{sts}-{pod.replica}.{sts}:{CONTAINER_PORT}"


def _uses_of(spec: DeploymentSpec, role: str) -> UsesRef | None:
    return {"worker": spec.uses, "uses_before": spec.uses_before,
            "uses_after": spec.uses_after}.get(role)


def _selector(spec: DeploymentSpec, component: str, shard: int | None = None
              ) -> dict[str, str]:
    labels = {"app.kubernetes.io/name": spec.name, "app.kubernetes.io/component": component}
    if shard is not None:
        labels["orchestrator.shard"] = str(shard)
    return labels


def _meta(spec: DeploymentSpec, name: str, component: str, shard: int | None = None
          ) -> dict[str, Any]:
    return {"name": name, "labels": {**_selector(spec, component, shard),
                                     "app.kubernetes.io/managed-by": "orchestrator"}}


def _config_map_name(spec: DeploymentSpec, role: str) -> str:
    return f"{spec.name}-{role.replace('_', '-')}-code"


def _config_map(spec: DeploymentSpec, role: str, uses: UsesRef,
                sources: Mapping[str, str]) -> dict[str, Any]:
    if uses.path not in sources:
        raise SpecError(f"the source of {uses.path} was not given to the export",
                        field="uses" if role == "worker" else role)
    return {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": _meta(spec, _config_map_name(spec, role), role.replace("_", "-")),
        "data": {PurePosixPath(uses.path).name: sources[uses.path]},
    }


def _service(spec: DeploymentSpec, name: str, component: str, *, headless: bool,
             shard: int | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "selector": _selector(spec, component.replace("_", "-"), shard),
        "ports": [{"name": "grpc", "port": CONTAINER_PORT, "targetPort": CONTAINER_PORT,
                   "appProtocol": "grpc"}],
    }
    if headless:
        # the head dials each replica by name and health-checks it itself, so replicas
        # that are not ready yet must still resolve
        body.update(clusterIP="None", publishNotReadyAddresses=True)
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": _meta(spec, name, component.replace("_", "-"), shard), "spec": body}


def _pod_template(spec: DeploymentSpec, pod: PodPlan, uses: UsesRef | None,
                  secret: str | None, shard: int | None) -> dict[str, Any]:
    c: ContainerSpec = pod.container
    component = pod.role.replace("_", "-")
    env: list[dict[str, Any]] = [{"name": k, "value": v} for k, v in c.env.items()
                                 if k != TOKEN_ENV]
    token = secret is not None and TOKEN_ENV in c.env
    if token:  # a file from the Secret's volume: no value in the pod's environment
        env.append({"name": TOKEN_FILE_ENV, "value": f"{K8S_TOKEN_DIR}/token"})
    user, group = (int(x) for x in (c.user or RUNTIME_USER).split(":"))
    probe = {"grpc": {"port": CONTAINER_PORT}, "periodSeconds": 2, "failureThreshold": 3}
    container: dict[str, Any] = {
        "name": component,
        "image": c.image,
        "imagePullPolicy": "IfNotPresent",
        "args": list(_kubernetes_args(c.command, pod)),
        "env": env,
        "ports": [{"name": "grpc", "containerPort": CONTAINER_PORT}],
        "readinessProbe": probe,
        "securityContext": {
            "runAsNonRoot": True, "runAsUser": user, "runAsGroup": group,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": list(c.cap_drop)},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    limits: dict[str, Any] = {}
    if c.cpus:
        limits["cpu"] = str(c.cpus)
    if c.memory_bytes:
        limits["memory"] = str(c.memory_bytes)
    if c.gpus:
        limits["nvidia.com/gpu"] = c.gpus
    if limits:
        container["resources"] = {"limits": limits}
    body: dict[str, Any] = {
        "containers": [container],
        "terminationGracePeriodSeconds": math.ceil(spec.stop_grace) + 2,
        "enableServiceLinks": False,
        "automountServiceAccountToken": False,  # no pod talks to the API server
    }
    mounts: list[dict[str, Any]] = []
    volumes: list[dict[str, Any]] = []
    if uses is not None and uses.kind == "file":
        mounts.append({"name": "code", "mountPath": USES_MOUNT, "readOnly": True})
        volumes.append({"name": "code", "configMap": {
            "name": _config_map_name(spec, pod.role)}})
    if token:
        mounts.append({"name": "token", "mountPath": K8S_TOKEN_DIR, "readOnly": True})
        # owner root, group fsGroup: readable by the pod's group, no one else
        volumes.append({"name": "token", "secret": {"secretName": secret,
                                                    "defaultMode": 0o440}})
        body["securityContext"] = {"fsGroup": group}
    if mounts:
        container["volumeMounts"] = mounts
        body["volumes"] = volumes
    annotations = {L.SPEC: c.labels.get(L.SPEC, "")}
    if pod.role == "head":  # the usual scrape annotations: GET /metrics on the gRPC port
        annotations.update({"prometheus.io/scrape": "true",
                            "prometheus.io/port": str(CONTAINER_PORT),
                            "prometheus.io/path": "/metrics"})
    return {"metadata": {"labels": _selector(spec, component, shard),
                         "annotations": annotations},
            "spec": body}


def _kubernetes_args(command: tuple[str, ...], pod: PodPlan) -> tuple[str, ...]:
    """A StatefulSet's replicas share one template: each takes its name and replica id from
    its own pod, through `$(VAR)` references that Kubernetes expands from the container's
    environment (POD_NAME, and POD_ORDINAL from the pod-index label of Kubernetes 1.28+)."""
    if pod.role != "worker":
        return command
    out = list(command)
    for flag, value in (("--name", "$(POD_NAME)"), ("--replica-id", "$(POD_ORDINAL)")):
        if flag in out:
            out[out.index(flag) + 1] = value
    return tuple(out)


def _deployment(spec: DeploymentSpec, pod: PodPlan, uses: UsesRef | None,
                secret: str) -> dict[str, Any]:
    component = pod.role.replace("_", "-")
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": _meta(spec, pod.name, component),
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": _selector(spec, component)},
            "strategy": {"type": "RollingUpdate",
                         "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": _pod_template(spec, pod, uses, secret if pod.role == "head" else None,
                                      None),
        },
    }


def _stateful_set(spec: DeploymentSpec, pod: PodPlan, shard: int) -> dict[str, Any]:
    name = _shard_name(spec, shard)
    template = _pod_template(spec, pod, spec.uses, None, shard)
    container = template["spec"]["containers"][0]
    container["env"] = [
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "POD_ORDINAL", "valueFrom": {"fieldRef": {
            "fieldPath": "metadata.labels['apps.kubernetes.io/pod-index']"}}},
        *container["env"],
    ]
    return {
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": _meta(spec, name, "worker", shard),
        "spec": {
            "serviceName": name,
            "replicas": spec.replicas,
            "podManagementPolicy": "Parallel",
            "updateStrategy": {"type": "RollingUpdate"},
            "selector": {"matchLabels": _selector(spec, "worker", shard)},
            "template": template,
        },
    }
