"""The head's TLS files and flags, as container facts: a pure function of the spec.

The certificate, key and CAs are bind-mounted read-only, one file each, under `TLS_DIR`:
never copied into an environment variable (which `docker inspect` shows). The head gets
`--tls-cert/--tls-key[/--tls-client-ca]`; the image's HEALTHCHECK probe in the head's
container speaks TLS too (`PROBE_TLS_ENV`), with the deployment's own client certificate
when the head requires one.
"""

from __future__ import annotations

from orchestrator.model import Mount
from orchestrator.spec import DeploymentSpec

TLS_DIR = "/run/orchestrator-tls"
PROBE_TLS_ENV = "ORCHESTRATOR_PROBE_TLS"  # "1": the container's probe speaks TLS
PROBE_CERT_ENV = "ORCHESTRATOR_PROBE_TLS_CERT"  # its client certificate (mutual TLS)
PROBE_KEY_ENV = "ORCHESTRATOR_PROBE_TLS_KEY"

# spec field -> (file name under TLS_DIR, head flag or None for the probe's own files)
TLS_FILES: dict[str, tuple[str, str | None]] = {
    "tls_cert": ("tls.crt", "--tls-cert"),
    "tls_key": ("tls.key", "--tls-key"),
    "tls_client_ca": ("client-ca.crt", "--tls-client-ca"),
    "tls_client_cert": ("probe.crt", None),
    "tls_client_key": ("probe.key", None),
}


def head_tls_files(spec: DeploymentSpec) -> dict[str, tuple[str, str]]:
    """spec field -> (host path, path in the head's container), for the files the head's
    container needs (none without TLS)."""
    out: dict[str, tuple[str, str]] = {}
    for name, (file, _flag) in TLS_FILES.items():
        host = getattr(spec, name)
        if spec.tls and host is not None:
            out[name] = (host, f"{TLS_DIR}/{file}")
    return out


def head_tls_args(spec: DeploymentSpec) -> tuple[str, ...]:
    """The head's TLS flags (empty without TLS)."""
    args: tuple[str, ...] = ()
    for name, (_host, target) in head_tls_files(spec).items():
        flag = TLS_FILES[name][1]
        if flag is not None:
            args += (flag, target)
    return args


def head_tls_env(spec: DeploymentSpec) -> dict[str, str]:
    """What the container's probe needs to know: paths and a switch, never key material."""
    if not spec.tls:
        return {}
    env = {PROBE_TLS_ENV: "1"}
    files = head_tls_files(spec)
    if "tls_client_cert" in files:
        env[PROBE_CERT_ENV] = files["tls_client_cert"][1]
        env[PROBE_KEY_ENV] = files["tls_client_key"][1]
    return env


def head_tls_mounts(spec: DeploymentSpec) -> tuple[Mount, ...]:
    """One read-only bind mount per file."""
    return tuple(Mount(source=host, target=target, read_only=True)
                 for host, target in head_tls_files(spec).values())
