"""Entry point run inside every pod: `python -m orchestrator.runtime worker|head|probe`.

Exit codes: 0 clean (also after SIGTERM), 1 runtime failure (e.g. port in use),
2 bad arguments, 3 executor failed to load. Imports stay lazy so `probe` (the Docker
HEALTHCHECK) imports no grpc at all (see probe.py).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    import argparse
    import ssl

TOKEN_ENV = "ORCHESTRATOR_TOKEN"
TOKEN_FILE_ENV = "ORCHESTRATOR_TOKEN_FILE"

EXIT_RUNTIME = 1
EXIT_USAGE = 2
EXIT_LOAD = 3


REQUIRED = object()
"""Default of an option that must be given."""


class Option(NamedTuple):
    """One command-line option: `kind` is int, float or str (a value), bool (a switch) or
    list (repeatable, values collected)."""

    flag: str
    kind: type
    default: Any = None
    help: str | None = None
    metavar: str | None = None

    @property
    def dest(self) -> str:
        return self.flag[2:].replace("-", "_")


def _common(name: str) -> list[Option]:
    return [
        Option("--port", int, 50051),
        Option("--host", str, "0.0.0.0"),
        Option("--name", str, name),
        Option("--grace", float, 10.0, "how long in-flight requests may run after SIGTERM",
               "SECONDS"),
        Option("--max-message-bytes", int, 64 * 1024 * 1024),
    ]


ROLES: dict[str, tuple[str, list[Option]]] = {
    "worker": ("serve one executor", [
        Option("--uses", str, None, "pkg.module:Class or path/file.py:Class "
               "(default: env ORCHESTRATOR_USES)"),
        Option("--uses-with", str, None, "JSON object of __init__ kwargs "
               "(default: env ORCHESTRATOR_USES_WITH)"),
        Option("--shard-id", int, 0),
        Option("--replica-id", int, 0),
        Option("--workspace", str),
        *_common("executor"),
    ]),
    "head": ("route requests to worker replicas (control token: env ORCHESTRATOR_TOKEN, or "
             "read from the file named by ORCHESTRATOR_TOKEN_FILE, e.g. a Swarm secret)", [
        Option("--shards", int, REQUIRED),
        Option("--polling", str, "ANY",
               'ANY, ALL or a JSON map like \'{"/index":"ALL","*":"ANY"}\''),
        Option("--uses-before", str, None, None, "HOST:PORT"),
        Option("--uses-after", str, None, None, "HOST:PORT"),
        Option("--worker", list, None, "initial worker (repeatable)", "SHARD=HOST:PORT"),
        Option("--state", str, None, "keep the worker list in FILE, rewritten on every "
               "change; a head restarted in its container restores it (it replaces "
               "--worker)", "FILE"),
        Option("--health-interval", float, 0.5, None, "SECONDS"),
        Option("--tls-cert", str, None, "serve TLS (ALPN h2) with this PEM certificate "
               "chain; needs --tls-key", "FILE"),
        Option("--tls-key", str, None, "the certificate's PEM private key", "FILE"),
        Option("--tls-client-ca", str, None,
               "require client certificates signed by this CA (mutual TLS)", "FILE"),
        Option("--http", bool, False,
               "also serve Jina's HTTP interface (POST /post, ...) on the port"),
        Option("--timeout-send", str, None, "timeout_send: milliseconds to wait for one "
               "worker before trying another replica, or a JSON map like "
               '\'{"/slow":60000,"*":1000}\'', "MS"),
        *_common("head"),
    ]),
    "probe": ("one gRPC health check on 127.0.0.1: exit 0 if SERVING", [
        Option("--port", int, 50051),
        Option("--timeout", float, 2.0),
        Option("--tls", bool, False, "the head serves TLS"),
        Option("--tls-cert", str, None, "client certificate (mutual TLS)", "FILE"),
        Option("--tls-key", str, None, None, "FILE"),
    ]),
}
"""Every role's options: what `parse` reads, and what the argparse parser is built from."""


def parse(argv: Sequence[str]) -> SimpleNamespace | None:
    """argv parsed without argparse, or None for anything but plain valid options (help,
    an error, an abbreviation, an unusual form), which `_parser()` then handles as argparse
    does. Every pod starts through here: argparse would cost each of them 0.4 MB."""
    if not argv or argv[0] not in ROLES:
        return None
    options = {o.flag: o for o in ROLES[argv[0]][1]}
    values: dict[str, Any] = {o.dest: [] if o.kind is list else o.default
                              for o in options.values()}
    rest = iter(argv[1:])
    for arg in rest:
        flag, eq, value = arg.partition("=")
        option = options.get(flag)
        if option is None or (option.kind is bool and eq):
            return None
        if option.kind is bool:
            values[option.dest] = True
            continue
        if not eq:
            value = next(rest, "-")
            if value.startswith("-"):  # missing, or an option or a negative number
                return None
        try:
            if option.kind is list:
                values[option.dest].append(value)
            else:
                values[option.dest] = option.kind(value)
        except ValueError:
            return None
    if any(v is REQUIRED for v in values.values()):
        return None
    return SimpleNamespace(role=argv[0], **values)


def _parser() -> argparse.ArgumentParser:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m orchestrator.runtime",
                                     description="Run a pod of an orchestrator Deployment.")
    sub = parser.add_subparsers(dest="role", required=True)
    for role, (text, options) in ROLES.items():
        p = sub.add_parser(role, help=text)
        for o in options:
            kwargs: dict[str, Any] = {"help": o.help}
            if o.metavar:
                kwargs["metavar"] = o.metavar
            if o.kind is bool:
                kwargs["action"] = "store_true"
            elif o.kind is list:
                kwargs.update(action="append", default=[])
            elif o.default is REQUIRED:
                kwargs.update(type=o.kind, required=True)
            else:
                kwargs.update(type=o.kind, default=o.default)
            p.add_argument(o.flag, **kwargs)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse argv and run the chosen role; returns the exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse(argv) or _parser().parse_args(argv)
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


def _worker(args: argparse.Namespace | SimpleNamespace) -> int:
    import asyncio
    import traceback

    from orchestrator.errors import SpecError
    from orchestrator.runtime.executor import RuntimeArgs
    from orchestrator.runtime.loader import ExecutorInitError, load_executor, parse_uses_with
    from orchestrator.runtime.serve import serve_until_signalled
    from orchestrator.runtime.worker import WorkerServer
    from orchestrator.runtime.worker_config import WorkerConfig

    uses = args.uses or os.environ.get("ORCHESTRATOR_USES")
    if not uses:
        _fail("worker: no executor given: pass --uses or set ORCHESTRATOR_USES")
        return EXIT_USAGE
    uses_with = parse_uses_with(args.uses_with or os.environ.get("ORCHESTRATOR_USES_WITH"))
    cfg = WorkerConfig(uses=uses, uses_with=uses_with, host=args.host, port=args.port,
                       name=args.name, shard_id=args.shard_id, replica_id=args.replica_id,
                       workspace=args.workspace, grace=args.grace,
                       max_message_bytes=args.max_message_bytes).check()
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


def _head(args: argparse.Namespace | SimpleNamespace) -> int:
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
        with open(path, encoding="utf-8") as handle:
            token = handle.read().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}",
                        field=TOKEN_FILE_ENV) from exc
    if not token:
        raise SpecError(f"{path} is empty", field=TOKEN_FILE_ENV)
    return token


def _tls(args: argparse.Namespace | SimpleNamespace) -> ssl.SSLContext | None:
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


def _probe(port: int, timeout: float, args: argparse.Namespace | SimpleNamespace) -> int:
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
