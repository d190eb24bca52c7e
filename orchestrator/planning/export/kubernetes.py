"""Export to Kubernetes: each shard a StatefulSet behind a headless Service (a stable DNS
name per replica for the head to dial), the head and uses_before / uses_after as
Deployments with Services, executors given as local files in ConfigMaps, the control token
in a Secret."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import PurePosixPath
from typing import Any

from orchestrator.errors import SpecError
from orchestrator.model import ContainerSpec
from orchestrator.planning import labels as L
from orchestrator.planning.export.common import (
    code_name,
    exportable,
    uses_of,
    with_static_workers,
)
from orchestrator.planning.pods import (
    RUNTIME_USER,
    TOKEN_ENV,
    TOKEN_FILE_ENV,
    USES_MOUNT,
    PodContext,
    PodPlan,
    initial_pods,
)
from orchestrator.planning.tls_secrets import kubernetes_volume
from orchestrator.spec import CONTAINER_PORT, DeploymentSpec, UsesRef

K8S_TOKEN_DIR = "/run/secrets/orchestrator"
"""On Kubernetes, the Secret NAME-token is mounted here; the head reads the file `token`."""


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
    exportable(spec)
    if spec.volumes:
        raise SpecError("host bind mounts do not carry over to a cluster; bake the files "
                        "into an image (uses: docker://...) or mount a volume of the "
                        "cluster's own", field="volumes")
    if spec.gpus is not None and (spec.gpus.everything or spec.gpus.groups):
        raise SpecError("'all' and device ids have no Kubernetes equivalent; give a number "
                        "of GPUs", field="gpus")
    pods = initial_pods(spec, ctx)
    pods = with_static_workers(pods, {p.name: _k8s_worker_address(spec, p) for p in pods
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
            docs.append(_deployment(spec, pod, uses_of(spec, role), secret))
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


def _config_map(spec: DeploymentSpec, role: str, uses: UsesRef,
                sources: Mapping[str, str]) -> dict[str, Any]:
    if uses.path not in sources:
        raise SpecError(f"the source of {uses.path} was not given to the export",
                        field="uses" if role == "worker" else role)
    return {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": _meta(spec, code_name(spec, role), role.replace("_", "-")),
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
            "name": code_name(spec, pod.role)}})
    if (tls := kubernetes_volume(spec) if pod.role == "head" else None) is not None:
        mounts.append(tls[0])  # the Secret NAME-tls: certificate and key as files
        volumes.append(tls[1])
        # kubelet's gRPC probe has no TLS: the image's own probe speaks it (~0.15 s CPU)
        container["readinessProbe"] = {
            "exec": {"command": ["/opt/venv/bin/python", "-m", "orchestrator.runtime",
                                 "probe"]},
            "periodSeconds": 5, "timeoutSeconds": 3, "failureThreshold": 3}
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
        if spec.tls:
            annotations["prometheus.io/scheme"] = "https"
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
