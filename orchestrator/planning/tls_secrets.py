"""The head's TLS files in the exports: always secrets, never an environment variable, and
never the key's bytes in the exported file.

- Compose: one file-based secret per file (`secrets: NAME-tls-key: file: /path`), mounted
  where the head's flags point (docker-compose 1.29 and Compose v2 both take it in format
  2.4; like any file secret outside Swarm, it is a read-only bind mount of the file).
- Swarm: the same file-based secrets, which `docker stack deploy` creates from the files,
  mounted under /run/secrets with mode 0400 for the head's user; the head's flags follow.
- Kubernetes: the Secret NAME-tls (created with `kubectl create secret generic`, see
  `kubernetes_secret_command`) as a read-only volume at the head's TLS folder.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import PurePosixPath
from typing import Any

from orchestrator.planning.pods import PodPlan
from orchestrator.planning.tls import TLS_DIR, TLS_FILES, head_tls_files
from orchestrator.spec import DeploymentSpec

SWARM_SECRETS_DIR = "/run/secrets"


def secret_name(spec: DeploymentSpec, field: str) -> str:
    """The secret holding one TLS file: NAME-tls-cert, NAME-tls-key, NAME-tls-client-ca..."""
    return f"{spec.name}-{field.replace('_', '-')}"


def without_tls_mounts(pod: PodPlan, spec: DeploymentSpec) -> PodPlan:
    """The pod without the bind mounts of its TLS files (the exports use secrets)."""
    targets = {target for _host, target in head_tls_files(spec).values()}
    if pod.role != "head" or not targets:
        return pod
    mounts = tuple(m for m in pod.container.mounts if m.target not in targets)
    return replace(pod, container=replace(pod.container, mounts=mounts))


def compose_secrets(spec: DeploymentSpec) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(the head service's `secrets:`, the file's top-level `secrets:`)."""
    uses: list[dict[str, Any]] = []
    top: dict[str, Any] = {}
    for field, (host, target) in head_tls_files(spec).items():
        name = secret_name(spec, field)
        uses.append({"source": name, "target": target})
        top[name] = {"file": host}
    return uses, top


def swarm_target(field: str) -> str:
    """Where a TLS file is mounted in a Swarm task: /run/secrets/orchestrator-tls.key..."""
    return f"{SWARM_SECRETS_DIR}/orchestrator-{TLS_FILES[field][0]}"


def swarm_secrets(spec: DeploymentSpec, user: str, group: str
                  ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(the head service's `secrets:`, the stack's top-level `secrets:`): file-based, so
    `docker stack deploy` creates them; a secret cannot change, so a new certificate needs
    the stack's secrets removed (or renamed) first."""
    uses: list[dict[str, Any]] = []
    top: dict[str, Any] = {}
    for field, (host, _target) in head_tls_files(spec).items():
        name = secret_name(spec, field)
        uses.append({"source": name, "target": PurePosixPath(swarm_target(field)).name,
                     "uid": user, "gid": group, "mode": 0o400})
        top[name] = {"name": name, "file": host}
    return uses, top


def swarm_paths(spec: DeploymentSpec) -> dict[str, str]:
    """The head's TLS paths (flags, probe variables) -> where Swarm mounts the secrets."""
    return {target: swarm_target(field)
            for field, (_host, target) in head_tls_files(spec).items()}


def repointed(service: dict[str, Any], paths: Mapping[str, str]) -> dict[str, Any]:
    """A service whose command arguments and environment values name `paths`' new places."""
    if not paths:
        return service
    service["command"] = [paths.get(arg, arg) for arg in service["command"]]
    service["environment"] = {k: paths.get(v, v) for k, v in service["environment"].items()}
    return service


def kubernetes_secret(spec: DeploymentSpec) -> str:
    """The Secret the head's TLS volume mounts (created by the user, not exported: the key
    never lands in a manifest)."""
    return f"{spec.name}-tls"


def kubernetes_secret_command(spec: DeploymentSpec) -> str | None:
    """The `kubectl create secret` that makes `kubernetes_secret` from the spec's files."""
    files = head_tls_files(spec)
    if not files:
        return None
    parts = [f"--from-file={PurePosixPath(target).name}={host}"
             for host, target in files.values()]
    return f"kubectl create secret generic {kubernetes_secret(spec)} {' '.join(parts)}"


def kubernetes_volume(spec: DeploymentSpec) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """(the volume mount, the volume) of the head's TLS files, or None without TLS."""
    if not spec.tls:
        return None
    mount = {"name": "tls", "mountPath": TLS_DIR, "readOnly": True}
    # owner root, group fsGroup: readable by the pod's group, no one else
    volume = {"name": "tls", "secret": {"secretName": kubernetes_secret(spec),
                                        "defaultMode": 0o440}}
    return mount, volume
