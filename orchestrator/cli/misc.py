"""`orchestrator ping HOST:PORT` and `orchestrator version`."""

from __future__ import annotations

import argparse
import sys

from orchestrator import __version__
from orchestrator.cli.base import EXIT_FAILURE, EXIT_OK, UsageError, json_flag
from orchestrator.cli.plumbing import emit_json
from orchestrator.client import client_tls
from orchestrator.health import GrpcHealthProbe


def add_ping_arguments(p: argparse.ArgumentParser) -> None:
    p.set_defaults(handler=run_ping)
    p.add_argument("address", metavar="HOST:PORT")
    p.add_argument("--timeout", type=float, default=2.0, metavar="SECONDS")
    p.add_argument("--tls", action="store_true",
                   help="the head serves TLS; trust the system's roots (or --ca)")
    p.add_argument("--ca", metavar="FILE", help="TLS: the CA (PEM) that signed the head's "
                   "certificate (implies --tls)")
    p.add_argument("--cert", metavar="FILE", help="mutual TLS: client certificate (PEM)")
    p.add_argument("--key", metavar="FILE", help="mutual TLS: the client certificate's key")
    p.add_argument("--server-name", metavar="NAME",
                   help="TLS: the name to check in the head's certificate (default: HOST)")


def run_ping(args: argparse.Namespace) -> int:
    """`ping HOST:PORT`: exit 0 when gRPC health says SERVING, else 1."""
    address = parse_address(args.address)
    tls = client_tls(args.tls, ca=args.ca, cert=args.cert, key=args.key,
                     server_name=args.server_name)
    serving = GrpcHealthProbe(timeout=args.timeout, tls=tls).serving(address)
    print(f"{address} {'SERVING' if serving else 'NOT SERVING'}", flush=True)
    return EXIT_OK if serving else EXIT_FAILURE


def parse_address(text: str) -> str:
    """Validate 'host:port'. Raises UsageError."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"{text!r} is not HOST:PORT (port 1..65535)")
    return f"{host}:{int(port)}"


def add_version_arguments(p: argparse.ArgumentParser) -> None:
    p.set_defaults(handler=run_version)
    json_flag(p)


def run_version(args: argparse.Namespace) -> int:
    """`version`: the package version (and Python's, with --json)."""
    if args.json:
        emit_json({"orchestrator": __version__, "python": sys.version.split()[0]})
    else:
        print(f"orchestrator {__version__}")
    return EXIT_OK
