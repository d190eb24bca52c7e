"""TLS on a deployment's head, host side: the spec's certificate fields, checked once, and
the client side of this process's own calls to the head.

Pure: file checks with `ssl` and `pathlib`, no gRPC (planning imports this module). The
gRPC credentials are built in `orchestrator.client` from a `ClientTLS`.

The six spec fields:

- `tls_cert`, `tls_key`: the head serves TLS (ALPN h2; GET /metrics over the same TLS);
- `tls_client_ca`: the head requires client certificates this CA signed (mutual TLS);
- `tls_ca`: what this process trusts for its own calls to the head (readiness probes,
  control RPCs, `Deployment.post`); default: the system's roots (a public CA);
- `tls_client_cert`, `tls_client_key`: with `tls_client_ca`, the certificate this process
  presents to its own head (required then: without it no readiness check could pass).
"""

from __future__ import annotations

import ipaddress
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.errors import SpecError

TLS_FIELDS = ("tls_cert", "tls_key", "tls_client_ca", "tls_ca", "tls_client_cert",
              "tls_client_key")


@dataclass(frozen=True)
class ClientTLS:
    """How a client reaches a head over TLS: `ca` (PEM file; None: the system's roots),
    `cert`/`key` (a client certificate, for mutual TLS), `server_name` (the name checked in
    the head's certificate; None: the host dialled)."""

    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    server_name: str | None = None

    def __post_init__(self) -> None:
        if bool(self.cert) != bool(self.key):
            raise SpecError("a client certificate needs its key and the key its certificate",
                            field="key" if self.cert else "cert")
        for name, path in (("ca", self.ca), ("cert", self.cert), ("key", self.key)):
            if path is not None:
                _read(path, name)

    def pems(self) -> tuple[bytes | None, bytes | None, bytes | None]:
        """(root CAs, client key, client certificate chain) as PEM bytes, or None each.

        Raises:
            SpecError: a file cannot be read (the argument is named).
        """
        return (_read(self.ca, "ca") if self.ca else None,
                _read(self.key, "key") if self.key else None,
                _read(self.cert, "cert") if self.cert else None)


def tls_fields(raw: Mapping[str, Any], base_dir: Path | None) -> dict[str, str | None]:
    """The spec's TLS fields from raw user input: paths made absolute (a relative one is
    relative to the YAML file), every file readable, the key matching its certificate.

    Raises:
        SpecError: naming the field at fault.
    """
    out: dict[str, str | None] = {}
    for name in TLS_FIELDS:
        value = raw.get(name)
        if value is None or value == "":
            out[name] = None
            continue
        if not isinstance(value, str | Path):
            raise SpecError(f"must be the path of a PEM file, got {value!r}", field=name)
        path = Path(value).expanduser()
        if not path.is_absolute():
            path = (base_dir or Path.cwd()) / path
        resolved = str(path.resolve())
        _read(resolved, name)
        out[name] = resolved
    _check_pairs(out)
    return out


def _check_pairs(f: Mapping[str, str | None]) -> None:
    if bool(f["tls_cert"]) != bool(f["tls_key"]):
        missing = "tls_key" if f["tls_cert"] else "tls_cert"
        raise SpecError("tls_cert and tls_key go together", field=missing)
    if not f["tls_cert"]:
        for name in ("tls_client_ca", "tls_ca", "tls_client_cert", "tls_client_key"):
            if f[name]:
                raise SpecError("needs tls_cert and tls_key (the head serves TLS only with "
                                "a certificate)", field=name)
        return
    _load_pair(f["tls_cert"], f["tls_key"], "tls_key")  # type: ignore[arg-type]
    for name in ("tls_client_ca", "tls_ca"):
        if f[name]:
            _load_ca(f[name], name)  # type: ignore[arg-type]
    if bool(f["tls_client_cert"]) != bool(f["tls_client_key"]):
        missing = "tls_client_key" if f["tls_client_cert"] else "tls_client_cert"
        raise SpecError("tls_client_cert and tls_client_key go together", field=missing)
    if f["tls_client_ca"] and not f["tls_client_cert"]:
        raise SpecError("with tls_client_ca the head requires a client certificate, also "
                        "from this process (readiness checks, control calls): give "
                        "tls_client_cert and tls_client_key", field="tls_client_cert")
    if f["tls_client_cert"]:
        if not f["tls_client_ca"]:
            raise SpecError("a client certificate is only used with tls_client_ca",
                            field="tls_client_cert")
        _load_pair(f["tls_client_cert"], f["tls_client_key"],  # type: ignore[arg-type]
                   "tls_client_key")


def _read(path: str, name: str) -> bytes:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise SpecError(f"cannot read {path}: {exc.strerror or exc}", field=name) from exc
    if b"-----BEGIN " not in data:
        raise SpecError(f"{path} is not a PEM file", field=name)
    return data


def _load_pair(cert: str, key: str, key_field: str) -> None:
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_cert_chain(cert, key)
    except ssl.SSLError as exc:
        raise SpecError(f"{key} is not the key of {cert}: {exc.reason or exc}",
                        field=key_field) from exc


def _load_ca(path: str, name: str) -> None:
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=path)
    except ssl.SSLError as exc:
        raise SpecError(f"{path} holds no CA certificate: {exc.reason or exc}",
                        field=name) from exc


def certificate_names(cert: str) -> list[str]:
    """The DNS names and IP addresses a PEM certificate is for (its subjectAltName, else its
    common name), in the certificate's order."""
    try:
        decoded: dict[str, Any] = ssl._ssl._test_decode_cert(cert)  # type: ignore[attr-defined]
    except (AttributeError, OSError, ssl.SSLError):
        return []
    names = [value for kind, value in decoded.get("subjectAltName", ())
             if kind in ("DNS", "IP Address")]
    if names:
        return [n.strip() for n in names]
    return [value for rdn in decoded.get("subject", ()) for key, value in rdn
            if key == "commonName"]


def own_server_name(cert: str) -> str | None:
    """The name this process checks in its own head's certificate when it dials the head's
    container address (which no certificate names): the certificate's first DNS name,
    else its first IP address. Chain and signature are still verified against `tls_ca`."""
    names = certificate_names(cert)
    dns = [n for n in names if not _is_ip(n) and "*" not in n]
    found = dns or names
    return found[0] if found else None


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def is_loopback(host: str) -> bool:
    """True for an address only this machine reaches (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def exposure_warning(spec_name: str, host: str, tls: bool) -> str | None:
    """The warning a head published on a non-loopback address without TLS deserves."""
    if tls or is_loopback(host):
        return None
    return (f"deployment {spec_name}: the head is published on {host} (field host) without "
            "TLS: anyone who reaches this address can call it, and calls cross the network "
            "in clear; set tls_cert and tls_key (see docs/security.md)")


def own_tls_of(fields: Mapping[str, Any]) -> ClientTLS | None:
    """`DeploymentSpec.own_tls()` from a spec's fields as a pod's label holds them (None: no
    TLS, or a file is gone since the deployment started)."""
    cert = fields.get("tls_cert")
    if not isinstance(cert, str):
        return None
    try:
        return ClientTLS(ca=fields.get("tls_ca"), cert=fields.get("tls_client_cert"),
                         key=fields.get("tls_client_key"), server_name=own_server_name(cert))
    except SpecError:
        return None
