"""`orchestrator heal NAME [--after S]`: what a foreground `up` does after start-up, for a
deployment started with `up -d`."""

from __future__ import annotations

import argparse
import threading

from orchestrator.cli.base import EXIT_OK, UsageError
from orchestrator.cli.plumbing import (
    Stop,
    attach,
    console_for,
    heal_printer,
    ignore_signals_while,
    install_stop_handlers,
    open_engine,
    restore_signals,
    target_flag,
)
from orchestrator.healing import keep_healthy
from orchestrator.spec import DEFAULT_HEAL_AFTER


def add_arguments(p: argparse.ArgumentParser) -> None:
    target_flag(p)
    p.set_defaults(handler=run)
    p.add_argument("name", metavar="NAME", help="deployment name")
    p.add_argument("--after", type=float, default=None, metavar="SECONDS",
                   help="replace a worker replica once it has been unhealthy or gone this "
                   "long (default: the deployment's heal_after, else 30)")


def run(args: argparse.Namespace) -> int:
    """Every `--after / 10` seconds (1 to 5), replace (start-first) the worker replicas
    that have been unhealthy or gone for S seconds, until Ctrl-C / SIGTERM or until the
    deployment is removed. Run it under a service manager next to a detached `up`."""
    if args.after is not None and args.after <= 0:
        raise UsageError("must be a number of seconds > 0", field="--after")
    console = console_for(args)
    stop = threading.Event()
    previous = install_stop_handlers(stop)
    try:
        with open_engine(target=getattr(args, "target", None)) as engine:
            dep = attach(args.name, engine)
            after = args.after or dep.spec.heal_after or DEFAULT_HEAL_AFTER
            try:
                console.print(f"{dep.name}: replacing worker replicas unhealthy or gone for "
                              f"{after:g}s; Ctrl-C to stop", markup=False)
                keep_healthy([dep], after, stop, heal_printer(console))
            except Stop:
                pass
            finally:
                ignore_signals_while(dep.close, previous)  # leaves the deployment running
    except Stop:  # arrived before the deployment was attached
        pass
    finally:
        restore_signals(previous)
    return EXIT_OK
