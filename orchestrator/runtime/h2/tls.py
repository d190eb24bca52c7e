"""TLS for the head's port: one server context, ALPN `h2` (and `http/1.1` for GET /metrics),
optionally mutual TLS.

RFC 9113 section 9.2 asks HTTP/2 over TLS 1.2 for no compression, no renegotiation and
ephemeral AEAD cipher suites only: this context allows TLS 1.2 with those, and TLS 1.3.
"""

from __future__ import annotations

import ssl

from orchestrator.errors import SpecError

ALPN = ["h2", "http/1.1"]  # gRPC clients ask for h2; Prometheus scrapes over http/1.1
TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"


def server_context(cert: str, key: str, client_ca: str | None = None) -> ssl.SSLContext:
    """The head's TLS context: `cert` (PEM chain) and `key` (PEM); with `client_ca`, every
    client must present a certificate that CA signed (mutual TLS).

    Raises:
        SpecError: a file cannot be read, or is not what it should be (the field is named).
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    ctx.set_ciphers(TLS12_CIPHERS)
    ctx.set_alpn_protocols(ALPN)
    try:
        ctx.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise SpecError(f"cannot load the certificate {cert} with the key {key}: {_why(exc)}",
                        field="tls_cert") from exc
    if client_ca:
        try:
            ctx.load_verify_locations(cafile=client_ca)
        except (OSError, ssl.SSLError) as exc:
            raise SpecError(f"cannot load the client CA {client_ca}: {_why(exc)}",
                            field="tls_client_ca") from exc
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def probe_context(cert: str | None = None, key: str | None = None) -> ssl.SSLContext:
    """A client context for the head's own liveness probe on loopback: it does not verify
    the server (it only asks whether the process serves), and presents `cert`/`key` when the
    head requires client certificates.

    Raises:
        SpecError: the client certificate cannot be loaded.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["h2"])
    if cert:
        try:
            ctx.load_cert_chain(cert, key)
        except (OSError, ssl.SSLError) as exc:
            raise SpecError(f"cannot load the certificate {cert}: {_why(exc)}",
                            field="tls_cert") from exc
    return ctx


def _why(exc: OSError | ssl.SSLError) -> str:
    return exc.strerror or str(exc) if isinstance(exc, OSError) else str(exc)
