"""Entry point run inside every pod: `python -m orchestrator.runtime worker|head|probe`.

Exit codes: 0 clean (also after SIGTERM), 1 runtime failure (e.g. port in use),
2 bad arguments, 3 executor failed to load. Imports stay lazy so `probe` (the Docker
HEALTHCHECK) imports no grpc at all (see probe.py).
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import ssl

TOKEN_ENV = "ORCHESTRATOR_TOKEN"
TOKEN_FILE_ENV = "ORCHESTRATOR_TOKEN_FILE"

EXIT_RUNTIME = 1
EXIT_USAGE = 2
EXIT_LOAD = 3


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m orchestrator.runtime",
                                     description="Run a pod of an orchestrator Deployment.")
    sub = parser.add_subparsers(dest="role", required=True)
    worker = sub.add_parser("worker", help="serve one executor")
    worker.add_argument("--uses", help="pkg.module:Class or path/file.py:Class "
                        "(default: env ORCHESTRATOR_USES)")
    worker.add_argument("--uses-with", help="JSON object of __init__ kwargs "
                        "(default: env ORCHESTRATOR_USES_WITH)")
    worker.add_argument("--shard-id", type=int, default=0)
    worker.add_argument("--replica-id", type=int, default=0)
    worker.add_argument("--workspace")
    _common(worker, "executor")

    head = sub.add_parser("head", help="route requests to worker replicas (control token: "
                          "env ORCHESTRATOR_TOKEN, or read from the file named by "
                          "ORCHESTRATOR_TOKEN_FILE, e.g. a Swarm secret)")
    head.add_argument("--shards", type=int, required=True)
    head.add_argument("--polling", default="ANY",
                      help='ANY, ALL or a JSON map like \'{"/index":"ALL","*":"ANY"}\'')
    head.add_argument("--uses-before", metavar="HOST:PORT")
    head.add_argument("--uses-after", metavar="HOST:PORT")
    head.add_argument("--worker", action="append", default=[], metavar="SHARD=HOST:PORT",
                      help="initial worker (repeatable)")
    head.add_argument("--state", metavar="FILE",
                      help="keep the worker list in FILE, rewritten on every change; a head "
                      "restarted in its container restores it (it replaces --worker)")
    head.add_argument("--health-interval", type=float, default=0.5, metavar="SECONDS")
    head.add_argument("--tls-cert", metavar="FILE", help="serve TLS (ALPN h2) with this PEM "
                      "certificate chain; needs --tls-key")
    head.add_argument("--tls-key", metavar="FILE", help="the certificate's PEM private key")
    head.add_argument("--tls-client-ca", metavar="FILE",
                      help="require client certificates signed by this CA (mutual TLS)")
    head.add_argument("--http", action="store_true",
                      help="also serve Jina's HTTP interface (POST /post, ...) on the port")
    head.add_argument("--timeout-send", metavar="MS",
                      help="timeout_send: milliseconds to wait for one worker before "
                      'trying another replica, or a JSON map like \'{"/slow":60000,"*":1000}\'')
    _common(head, "head")

    probe = sub.add_parser("probe", help="one gRPC health check on 127.0.0.1: exit 0 if SERVING")
    probe.add_argument("--port", type=int, default=50051)
    probe.add_argument("--timeout", type=float, default=2.0)
    probe.add_argument("--tls", action="store_true", help="the head serves TLS")
    probe.add_argument("--tls-cert", metavar="FILE", help="client certificate (mutual TLS)")
    probe.add_argument("--tls-key", metavar="FILE")
    return parser


def _common(p: argparse.ArgumentParser, name: str) -> None:
    p.add_argument("--port", type=int, default=50051)
    p.add_argument("--host", default="0.0.0.0")
    p.add_argument("--name", default=name)
    p.add_argument("--grace", type=float, default=10.0, metavar="SECONDS",
                   help="how long in-flight requests may run after SIGTERM")
    p.add_argument("--max-message-bytes", type=int, default=64 * 1024 * 1024)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse argv and run the chosen role; returns the exit code."""
    args = _parser().parse_args(argv)
    if args.role == "probe":
        return _probe(args.port, args.timeout, args)
    from orchestrator.errors import OrchestratorError, SpecError

    try:
        return _worker(args) if args.role == "worker" else _head(args)
    except SpecError as exc:
        _fail(f"{args.role}: invalid argument: {exc}")
        return EXIT_USAGE
    except OrchestratorError as exc:
        _fail(f"{args.role}: {exc}")
        return EXIT_RUNTIME


def _fail(line: str) -> None:
    print(f"orchestrator.runtime: {line}", file=sys.stderr, flush=True)


def _worker(args: argparse.Namespace) -> int:
    import asyncio

    from orchestrator.errors import SpecError
    from orchestrator.runtime.config import WorkerConfig
    from orchestrator.runtime.executor import RuntimeArgs
    from orchestrator.runtime.loader import ExecutorInitError, load_executor, parse_uses_with
    from orchestrator.runtime.serve import serve_until_signalled
    from orchestrator.runtime.worker import WorkerServer

    uses = args.uses or os.environ.get("ORCHESTRATOR_USES")
    if not uses:
        _fail("worker: no executor given: pass --uses or set ORCHESTRATOR_USES")
        return EXIT_USAGE
    uses_with = parse_uses_with(args.uses_with or os.environ.get("ORCHESTRATOR_USES_WITH"))
    cfg = WorkerConfig(uses=uses, uses_with=uses_with, host=args.host, port=args.port,
                       name=args.name, shard_id=args.shard_id, replica_id=args.replica_id,
                       workspace=args.workspace, grace=args.grace,
                       max_message_bytes=args.max_message_bytes)
    runtime_args = RuntimeArgs(cfg.name, cfg.shard_id, cfg.replica_id, cfg.workspace)
    try:
        executor = load_executor(cfg.uses, dict(cfg.uses_with), runtime_args)
    except ExecutorInitError as exc:
        traceback.print_exception(exc.__cause__ or exc, file=sys.stderr)
        _fail(f"worker: cannot load executor: {exc}")
        return EXIT_LOAD
    except SpecError as exc:
        if exc.__cause__ is not None:  # the import raised: its file and line matter
            traceback.print_exception(exc.__cause__, file=sys.stderr)
        _fail(f"worker: cannot load executor: {exc}")
        return EXIT_LOAD
    server = WorkerServer(executor, host=cfg.host, port=cfg.port,
                          max_message_bytes=cfg.max_message_bytes)
    asyncio.run(serve_until_signalled(server, cfg.grace, f"worker {cfg.name}"))
    return 0


def _head(args: argparse.Namespace) -> int:
    import asyncio

    from orchestrator.runtime.config import (
        HeadConfig,
        PollingPolicy,
        SendTimeouts,
        WorkerAddress,
    )
    from orchestrator.runtime.head import HeadServer
    from orchestrator.runtime.serve import serve_until_signalled

    cfg = HeadConfig(
        shards=args.shards, host=args.host, port=args.port, name=args.name,
        polling=PollingPolicy.parse(args.polling), uses_before=args.uses_before,
        uses_after=args.uses_after, workers=tuple(WorkerAddress.parse(w) for w in args.worker),
        state=args.state, grace=args.grace, health_interval=args.health_interval,
        max_message_bytes=args.max_message_bytes,
        token=_token(os.environ), http=args.http,
        timeout_send=SendTimeouts.parse(args.timeout_send),
    )
    if cfg.token is None:
        _fail("head: ORCHESTRATOR_TOKEN is unset: control RPCs will be refused")
    head = HeadServer(cfg, tls=_tls(args))
    asyncio.run(serve_until_signalled(head, cfg.grace, f"head {cfg.name}"))
    return 0


def _token(env: Mapping[str, str]) -> str | None:
    """The control token: ORCHESTRATOR_TOKEN, or the text of the file that
    ORCHESTRATOR_TOKEN_FILE names (a mounted secret keeps it out of the container's
    environment, which `docker inspect` shows).

    Raises:
        SpecError: both are set, or the file cannot be read or is empty.
    """
    from orchestrator.errors import SpecError

    path = env.get(TOKEN_FILE_ENV)
    if not path:
        return env.get(TOKEN_ENV) or None
    if env.get(TOKEN_ENV):
        raise SpecError(f"set {TOKEN_ENV} or {TOKEN_FILE_ENV}, not both", field=TOKEN_FILE_ENV)
    try:
        token = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}",
                        field=TOKEN_FILE_ENV) from exc
    if not token:
        raise SpecError(f"{path} is empty", field=TOKEN_FILE_ENV)
    return token


def _tls(args: argparse.Namespace) -> ssl.SSLContext | None:
    """The head's TLS context from --tls-cert/--tls-key/--tls-client-ca (None: no TLS)."""
    from orchestrator.errors import SpecError

    if not args.tls_cert and not args.tls_key:
        if args.tls_client_ca:
            raise SpecError("needs --tls-cert and --tls-key", field="tls_client_ca")
        return None
    if not args.tls_cert or not args.tls_key:
        raise SpecError("--tls-cert and --tls-key go together", field="tls_cert")
    from orchestrator.runtime.h2.tls import server_context

    return server_context(args.tls_cert, args.tls_key, args.tls_client_ca)


def _probe(port: int, timeout: float, args: argparse.Namespace) -> int:
    from orchestrator.runtime.probe import check

    tls = None
    # a head started with TLS by the orchestrator sets these for the image's HEALTHCHECK,
    # which runs this probe with no flags
    args.tls = args.tls or os.environ.get("ORCHESTRATOR_PROBE_TLS") == "1"
    args.tls_cert = args.tls_cert or os.environ.get("ORCHESTRATOR_PROBE_TLS_CERT")
    args.tls_key = args.tls_key or os.environ.get("ORCHESTRATOR_PROBE_TLS_KEY")
    if args.tls or args.tls_cert:
        from orchestrator.errors import SpecError
        from orchestrator.runtime.h2.tls import probe_context

        try:
            tls = probe_context(args.tls_cert, args.tls_key)
        except SpecError as exc:
            _fail(f"probe: invalid argument: {exc}")
            return EXIT_USAGE
    return 0 if check(port, timeout, tls=tls) else 1


if __name__ == "__main__":
    sys.exit(main())
