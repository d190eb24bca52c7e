"""The `orchestrator` command line (also `python -m orchestrator`).

Exit codes (documented in the README and in `orchestrator --help`):

    0  ok
    1  runtime failure (a pod failed, a rollout failed, an unknown deployment name)
    2  usage or spec error (bad flags, bad YAML, a bad field)
    3  the container engine is unavailable

A mistake of the user's never prints a traceback: it prints one line (`orchestrator:
error: ...`) and the exit code says which kind of failure it was. Set
ORCHESTRATOR_DEBUG=1 to see the traceback of an unexpected error.

Detached deployments are found again through the engine's labels only
(`Deployment.attach`), so every command works from a fresh process, also after the
process that started the deployment was killed.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import re
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import FrameType
from typing import TYPE_CHECKING, Any

import yaml

from orchestrator import __version__
from orchestrator.errors import (
    DeploymentNotFound,
    EngineUnavailable,
    OrchestratorError,
    SpecError,
)
from orchestrator.planning import labels as L

if TYPE_CHECKING:
    from rich.console import Console

    from orchestrator.config import DeploymentConfig
    from orchestrator.deployment import Deployment
    from orchestrator.engine.base import ContainerEngine, ContainerInfo, LogLine
    from orchestrator.progress import ProgressEvent
    from orchestrator.spec import DeploymentSpec

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_ENGINE = 3

# Fields a rolling update cannot change: they shape the head, not the workers.
HEAD_FIELDS = ("shards", "polling", "port", "host", "uses_before", "uses_after", "external",
               "protocol")
_ROLE_ORDER = {"head": 0, "uses_before": 1, "worker": 2, "uses_after": 3, "gateway": 4}
_IMAGE_BUILD_TIMEOUT = 900  # seconds for one engine call: a docker build can be slow

_EPILOG = """exit codes: 0 ok, 1 runtime failure, 2 usage or spec error, 3 engine unavailable.
The engine is found like `docker` finds it (DOCKER_HOST or /var/run/docker.sock)."""


class UsageError(SpecError):
    """A command line that parses but makes no sense (exit 2)."""


# -- entry point ------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit code (the console script exits with it)."""
    parser = build_parser()
    args = parser.parse_args(argv)  # exits 2 on a usage error, 0 on --help
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except SpecError as exc:
        return _fail(str(exc), EXIT_USAGE)
    except EngineUnavailable as exc:
        return _fail(f"engine unavailable: {exc}", EXIT_ENGINE)
    except OrchestratorError as exc:
        return _fail(str(exc), EXIT_FAILURE)
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
    except Exception as exc:  # the last guard: a bug must still not dump on the user
        if os.environ.get("ORCHESTRATOR_DEBUG"):
            raise
        return _fail(f"internal error: {type(exc).__name__}: {exc} "
                     "(set ORCHESTRATOR_DEBUG=1 for the traceback)", EXIT_FAILURE)


def _fail(message: str, code: int) -> int:
    print(f"orchestrator: error: {message}", file=sys.stderr, flush=True)
    return code


def build_parser() -> argparse.ArgumentParser:
    """The whole command line: one sub-parser per command, each with --help."""
    parser = argparse.ArgumentParser(
        prog="orchestrator", epilog=_EPILOG,
        description="Run Jina-style Deployments (head + shards x replicas) on Docker.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"orchestrator {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, handler: Callable[[argparse.Namespace], int], text: str
                ) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=text, description=text, epilog=_EPILOG)
        p.set_defaults(handler=handler)
        return p

    _up_args(command("up", cmd_up, "start (or update) the deployments of a YAML file"))
    _down_args(command("down", cmd_down, "tear a deployment down (label based)"))
    _ps_args(command("ps", cmd_ps, "list the pods of one or every deployment"))
    _logs_args(command("logs", cmd_logs, "show the pods' logs, prefixed by pod"))
    _scale_args(command("scale", cmd_scale, "change the replicas per shard, with no downtime"))
    _rollout_args(command("rollout", cmd_rollout, "rolling update to a new image or uses_with"))
    _heal_args(command("heal", cmd_heal, "keep replacing worker replicas that stay unhealthy "
                       "or gone, start-first (for a detached `up`)"))
    _ping_args(command("ping", cmd_ping, "gRPC health check of HOST:PORT (exit 0 serving, 1 not)"))
    _export_args(command("export", cmd_export, "write the deployments of a YAML file as a "
                         "Compose file, a Swarm stack or Kubernetes manifests"))
    _images_args(sub)
    _executor_args(command("executor", cmd_executor,
                           "serve one executor in this process, for development"))
    _json_flag(command("version", cmd_version, "print the version"))
    _demo_args(command("demo", cmd_demo, "the quickstart demo: a 3x2 deployment, requests "
                       "and a rolling update under load"))
    return parser


def _demo_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--name", default="demo", help="deployment name (default demo)")
    p.add_argument("--replicas", type=int, default=3, help="replicas per shard (default 3)")
    p.add_argument("--shards", type=int, default=2, help="shards (default 2)")


def cmd_demo(args: argparse.Namespace) -> int:
    """`demo`: what `scripts/demo` runs (see orchestrator/demo.py)."""
    from orchestrator.demo import run

    return run(args.name, args.replicas, args.shards)


def _json_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="machine-readable output on stdout")


def _up_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-f", "--file", required=True, help="deployment YAML file")
    p.add_argument("-d", "--detach", action="store_true",
                   help="return once ready and leave the deployment running")
    p.add_argument("--heal-after", type=float, default=30.0, metavar="SECONDS",
                   help="in the foreground, replace a worker replica that has been unhealthy "
                   "or gone for this long, start-first (default 30; 0 turns it off)")
    _json_flag(p)


def _down_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", nargs="?", metavar="NAME", help="deployment name")
    p.add_argument("--all", action="store_true", help="every deployment on this engine")
    p.add_argument("--grace", type=float, default=10.0, metavar="SECONDS",
                   help="SIGTERM-to-SIGKILL grace per pod (default 10)")
    _json_flag(p)


def _ps_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", nargs="?", metavar="NAME", help="only this deployment")
    p.add_argument("--json", action="store_true", help="a JSON array, one object per pod")


def _logs_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", metavar="NAME")
    p.add_argument("--pod", metavar="POD", help="one pod: its container name or the part "
                   "after 'NAME-' (e.g. head, s0-r0-g1)")
    p.add_argument("-f", "--follow", action="store_true", help="keep streaming (Ctrl-C stops)")
    p.add_argument("--tail", type=int, metavar="N", help="only the last N lines of each pod")
    p.add_argument("--since", metavar="WHEN", help="only lines written since WHEN: a "
                   "duration back from now (10m, 1h30m, 45s) or a time (2026-11-29T07:00:00, "
                   "local unless it gives its zone)")
    p.add_argument("-t", "--timestamps", action="store_true",
                   help="show when each line was written (the engine's time, UTC)")


def _scale_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", metavar="NAME")
    p.add_argument("replicas", type=int, metavar="N", help="replicas per shard (>= 1)")
    _json_flag(p)


def _rollout_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", metavar="NAME")
    p.add_argument("--image", metavar="IMG", help="new runtime image for the workers")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="sets",
                   help="set a uses_with key (value read as a YAML scalar); repeatable")
    _json_flag(p)


def _export_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-f", "--file", required=True, help="deployment YAML file")
    p.add_argument("--to", required=True, choices=["compose", "swarm", "kubernetes"],
                   help="compose: one service per pod (docker-compose up); swarm: a stack, "
                   "one service per pod (docker stack deploy); kubernetes: a StatefulSet "
                   "per shard, the head as a Deployment (kubectl apply)")
    p.add_argument("-o", "--output", metavar="PATH", help="write to PATH instead of stdout")


def cmd_export(args: argparse.Namespace) -> int:
    """`export -f FILE --to compose|swarm|kubernetes`: the same pods, for another engine."""
    import secrets
    from pathlib import Path

    from orchestrator.config import load_file
    from orchestrator.planning.export import (
        TOKEN_VARIABLE,
        to_compose,
        to_kubernetes,
        to_swarm,
    )
    from orchestrator.planning.pods import PodContext

    def sources(spec: DeploymentSpec) -> dict[str, str]:
        return {u.path: Path(u.path).read_text(encoding="utf-8")
                for u in (spec.uses, spec.uses_before, spec.uses_after)
                if u is not None and u.kind == "file"}

    configs = []
    for cfg in load_file(args.file):
        if cfg.spec.external:  # a service running elsewhere: nothing of it to deploy
            print(f"orchestrator: {cfg.spec.name} is external: not exported",
                  file=sys.stderr)
        else:
            configs.append(cfg)
    if not configs:
        raise UsageError(f"every deployment of {args.file} is external: nothing to export",
                         field="--file")
    if args.to in ("compose", "swarm"):
        merged: dict[str, dict[str, Any]] = {"services": {}, "networks": {}, "configs": {},
                                             "secrets": {}}
        for cfg in configs:
            ctx = PodContext(owner="export", token="")
            doc = (to_compose(cfg.spec, ctx) if args.to == "compose"
                   else to_swarm(cfg.spec, ctx, sources(cfg.spec)))
            for key, part in merged.items():
                part.update(doc.get(key, {}))
        version = "2.4" if args.to == "compose" else "3.8"
        start = (f"# start: {TOKEN_VARIABLE}=<a secret> docker-compose -f FILE up -d\n"
                 if args.to == "compose" else "".join(
                     f"# printf %s <a secret> | docker secret create {name} -\n"
                     for name in merged["secrets"])
                 + "# start: docker stack deploy --resolve-image never -c FILE STACK\n")
        text = (f"# orchestrator export --to {args.to}, from {args.file}\n" + start
                + yaml.safe_dump({"version": version,
                                  **{k: v for k, v in merged.items() if v}},
                                 sort_keys=False))
    else:
        docs: list[dict[str, Any]] = []
        for cfg in configs:
            ctx = PodContext(owner="export", token=secrets.token_urlsafe(24))
            docs += to_kubernetes(cfg.spec, ctx, sources(cfg.spec))
        text = (f"# orchestrator export --to kubernetes, from {args.file}; kubectl apply -f\n"
                + yaml.safe_dump_all(docs, sort_keys=False))
    if args.output:
        try:
            Path(args.output).write_text(text, encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"cannot write {args.output}: {exc.strerror or exc}",
                             field="--output") from exc
    else:
        sys.stdout.write(text)
    return EXIT_OK


def _ping_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("address", metavar="HOST:PORT")
    p.add_argument("--timeout", type=float, default=2.0, metavar="SECONDS")


def _images_args(sub: Any) -> None:
    images = sub.add_parser("images", help="runtime image pipeline", epilog=_EPILOG,
                            description="Build the runtime image (no registry needed).")
    isub = images.add_subparsers(dest="images_command", required=True, metavar="COMMAND")
    build = isub.add_parser("build", help="build the runtime image if its inputs changed",
                            description="Build the runtime image if its inputs changed "
                            "(a cached build takes well under a second).", epilog=_EPILOG)
    build.set_defaults(handler=cmd_images_build)
    build.add_argument("--force", action="store_true", help="rebuild even when cached")
    build.add_argument("--tag", help="tag to point at the image "
                       "(default orchestrator-runtime:latest)")
    build.add_argument("--base", help="base image (default: python:3.11-slim, else "
                       "debootstrap of the host's distribution)")


def _executor_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--uses", required=True, metavar="FILE.py:Class",
                   help="file.py:Class or pkg.module:Class")
    p.add_argument("--uses-with", metavar="JSON", help="JSON object of __init__ kwargs")
    p.add_argument("--port", type=int, default=50051, help="0 lets the OS pick (default 50051)")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")


# -- plumbing ---------------------------------------------------------------------------


@contextmanager
def _engine(timeout: int = 60) -> Iterator[ContainerEngine]:
    """The Docker engine, closed on the way out. Raises EngineUnavailable."""
    from orchestrator.engine.docker_engine import DockerEngine

    engine = DockerEngine.from_env(timeout=timeout)
    try:
        engine.ping()
        yield engine
    finally:
        engine.close()


def _console(args: argparse.Namespace) -> Console:
    from orchestrator.ui import make_console

    return make_console(quiet=bool(getattr(args, "json", False)))


def _emit_json(value: object) -> None:
    print(json.dumps(value, indent=2, sort_keys=True), flush=True)


def _attach(name: str, engine: ContainerEngine) -> Deployment:
    from orchestrator.deployment import Deployment

    return Deployment.attach(name, engine=engine)


def _not_found(engine: ContainerEngine, name: str) -> DeploymentNotFound:
    from orchestrator.deployment import running_deployments

    return DeploymentNotFound(name, running_deployments(engine))


# -- up ---------------------------------------------------------------------------------


@dataclass
class _Up:
    """What `up` did to one deployment, for the summary and for teardown."""

    dep: Deployment
    started_here: bool
    action: str
    notes: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        dep = self.dep
        return {"name": dep.name, "action": self.action, "address": dep.address,
                "replicas": dep.spec.replicas, "shards": dep.spec.shards,
                "image": dep.spec.image, "notes": self.notes}


class _Stop(BaseException):
    """SIGINT/SIGTERM arrived in a foreground `up` (a BaseException: nothing swallows it)."""


def cmd_up(args: argparse.Namespace) -> int:
    """`up -f FILE [--detach]`: start what is not running, roll out what changed."""
    from orchestrator.config import load_file

    configs = load_file(args.file)
    console = _console(args)
    if args.detach:
        return _up_detached(configs, args, console)
    return _up_foreground(configs, args, console)


def _up_detached(configs: list[DeploymentConfig], args: argparse.Namespace,
                 console: Console) -> int:
    done: list[_Up] = []
    with _engine() as engine:
        try:
            for cfg in configs:
                done.append(_bring_up(cfg, engine, console))
            _report_up(done, args, console)
        finally:
            for item in done:
                item.dep.detach()  # leave it running: labels let a later process find it
                item.dep.close()
    return EXIT_OK


def _up_foreground(configs: list[DeploymentConfig], args: argparse.Namespace,
                   console: Console) -> int:
    from orchestrator.ui import ok

    done: list[_Up] = []
    stop = threading.Event()
    previous = _install_stop_handlers(stop)
    try:
        with _engine() as engine:
            try:
                for cfg in configs:
                    done.append(_bring_up(cfg, engine, console))
                _report_up(done, args, console)
                console.print("press Ctrl-C to stop and remove everything", markup=False)
                _keep_healthy([item.dep for item in done], args.heal_after, stop, console,
                              engine)
            except _Stop:
                pass
            finally:
                _ignore_signals_while(lambda: _tear_down(done, engine, console), previous)
    except _Stop:  # arrived before the engine was open: nothing to remove
        pass
    finally:
        _restore(previous)
    ok(console, "stopped and removed")
    return EXIT_OK


HEAL_POLL = 1.0  # seconds between two looks at the replicas (foreground `up`, `heal`)


def _keep_healthy(deps: list[Deployment], heal_after: float, stop: threading.Event,
                  console: Console, engine: ContainerEngine) -> None:
    """Until Ctrl-C, or until another process removed them all (`orchestrator down`):
    replace replicas that stay unhealthy or gone (Deployment.heal)."""
    from orchestrator.deployment import running_deployments

    watched = list(deps)
    while watched and not stop.wait(HEAL_POLL):
        if heal_after <= 0:
            continue
        running = running_deployments(engine)
        for dep in list(watched):
            if dep.name not in running:
                console.print(f"{dep.name}: removed by another process", markup=False)
                watched.remove(dep)
                continue
            try:
                replaced = dep.heal(heal_after, on_progress=_converged(dep.name, console))
            except OrchestratorError as exc:  # reported; the next look tries again
                console.print(f"{dep.name}: could not heal: {exc}", markup=False)
                continue
            if replaced:
                console.print(f"{dep.name}: replaced unhealthy {', '.join(replaced)}",
                              markup=False)


def _converged(name: str, console: Console) -> Callable[[ProgressEvent], None]:
    """Prints what `Deployment.converge` did (pods removed or registered again)."""
    def show(event: ProgressEvent) -> None:
        if event.kind in ("added", "stopped") and event.message:
            console.print(f"{name}: {event.pod} {event.message}", markup=False)
    return show


def _heal_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", metavar="NAME", help="deployment name")
    p.add_argument("--after", type=float, default=30.0, metavar="SECONDS",
                   help="replace a worker replica once it has been unhealthy or gone this "
                   "long (default 30)")


def cmd_heal(args: argparse.Namespace) -> int:
    """`heal NAME [--after S]`: what a foreground `up` does after start-up, for a deployment
    started with `up -d`: every second, replace (start-first) the worker replicas that have
    been unhealthy or gone for S seconds, until Ctrl-C / SIGTERM or until the deployment is
    removed. Run it under a service manager next to a detached `up`."""
    if args.after <= 0:
        raise UsageError("must be a number of seconds > 0", field="--after")
    console = _console(args)
    stop = threading.Event()
    previous = _install_stop_handlers(stop)
    try:
        with _engine() as engine:
            dep = _attach(args.name, engine)
            try:
                console.print(f"{dep.name}: replacing worker replicas unhealthy or gone for "
                              f"{args.after:g}s; Ctrl-C to stop", markup=False)
                _keep_healthy([dep], args.after, stop, console, engine)
            except _Stop:
                pass
            finally:
                _ignore_signals_while(dep.close, previous)  # leaves the deployment running
    except _Stop:  # arrived before the deployment was attached
        pass
    finally:
        _restore(previous)
    return EXIT_OK


def _install_stop_handlers(stop: threading.Event) -> dict[int, Any]:
    """First SIGINT/SIGTERM interrupts whatever blocks (start included) with `_Stop`."""
    def handler(signum: int, frame: FrameType | None) -> None:
        if not stop.is_set():
            stop.set()
            raise _Stop

    previous: dict[int, Any] = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        previous[sig] = signal.signal(sig, handler)
    return previous


def _ignore_signals_while(action: Callable[[], None], previous: dict[int, Any]) -> None:
    """Run the teardown to its end: a second Ctrl-C must not leave half the pods behind."""
    for sig in previous:
        signal.signal(sig, signal.SIG_IGN)
    action()


def _restore(previous: dict[int, Any]) -> None:
    for sig, old in previous.items():
        signal.signal(sig, old)


def _tear_down(done: list[_Up], engine: ContainerEngine, console: Console) -> None:
    from orchestrator.engine.cleanup import remove_owned
    from orchestrator.ui import status

    for item in reversed(done):
        with status(console, f"removing {item.dep.name}"):
            item.dep.close()
            if not item.started_here:  # an attached handle is detached: remove by label
                remove_owned(engine, item.dep.name, grace=item.dep.spec.stop_grace)


def _bring_up(cfg: DeploymentConfig, engine: ContainerEngine, console: Console) -> _Up:
    from orchestrator.deployment import Deployment, running_deployments
    from orchestrator.ui import status

    name = cfg.spec.name
    if name in running_deployments(engine):
        return _update(cfg, _attach(name, engine), console)
    # A reaper removes what this process started if it dies without a word (kill -9); a
    # detached `up` tells it so and it leaves the deployment running.
    dep = Deployment(dict(cfg.fields), engine=engine, base_dir=cfg.base_dir, reaper=True)
    pods = 1 + cfg.spec.shards * cfg.spec.replicas + (cfg.spec.uses_before is not None) \
        + (cfg.spec.uses_after is not None)
    try:
        with status(console, f"starting {name} ({pods} pods)"):
            dep.start()
    except BaseException:
        dep.close()  # start already removed its pods; this releases the connections
        raise
    return _Up(dep, started_here=True, action="started")


def _update(cfg: DeploymentConfig, dep: Deployment, console: Console) -> _Up:
    """Bring a running deployment to the file's spec: rolling update, then scale."""
    from orchestrator.ui import ProgressUI

    item = _Up(dep, started_here=False, action="unchanged")
    try:
        if dep.converge(on_progress=_converged(dep.name, console)):
            item.notes.append("cleaned up after an interrupted update or scale")
        changes = spec_changes(dep.spec, cfg.spec)
        frozen = sorted(set(changes) & set(HEAD_FIELDS))
        if frozen:
            from orchestrator.errors import ConfigError

            raise ConfigError(cfg.source, _field_path(cfg.path, frozen[0]),
                              f"cannot change on the running deployment {dep.name!r} (it "
                              f"shapes the head); run `orchestrator down {dep.name}` first")
        replicas = changes.pop("replicas", None)
        outdated = dep.outdated()
        if not changes and replicas is None and outdated:
            # an update to this very spec was cut short: replace what still runs the old one
            item.notes.append(f"finishing an interrupted update: {len(outdated)} "
                              "replica(s) ran an older spec")
            replicas = dep.spec.replicas
        if changes.pop("policy", None) is not None:
            item.notes.append("the new policy applies to this file's rollouts")
        if changes:
            with ProgressUI(console, f"rolling update of {dep.name}") as ui:
                dep.rolling_update_sync(policy=cfg.spec.policy, on_progress=ui, **changes)
            item.action = "updated"
        if replicas is not None:
            with ProgressUI(console, f"scaling {dep.name} to {replicas}") as ui:
                dep.scale_sync(int(replicas), policy=cfg.spec.policy, on_progress=ui)
            item.action = "updated" if item.action == "updated" else "scaled"
    except BaseException:
        dep.close()
        raise
    return item


def spec_changes(current: DeploymentSpec, wanted: DeploymentSpec) -> dict[str, Any]:
    """Fields of `wanted` that differ from the running `current` (as `from_fields` values).

    A port the file leaves to the engine is not a change: the running head keeps its own.
    """
    have, want = current.to_fields(), wanted.to_fields()
    if wanted.port is None:
        have.pop("port", None)
    return {key: want.get(key) for key in sorted(set(have) | set(want))
            if have.get(key) != want.get(key)}


def _field_path(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def _report_up(done: list[_Up], args: argparse.Namespace, console: Console) -> None:
    from orchestrator.ui import ok

    if args.json:
        _emit_json([item.summary() for item in done])
        return
    for item in done:
        s = item.summary()
        text = {"started": "ready", "updated": "updated, ready", "scaled": "scaled, ready",
                "unchanged": "up to date"}[item.action]
        ok(console, f"{s['name']}: {text} at {s['address']} "
                    f"({s['shards']} shard(s) x {s['replicas']} replica(s))")
        for note in item.notes:
            console.print(f"  note: {note}", markup=False)


# -- down -------------------------------------------------------------------------------


def cmd_down(args: argparse.Namespace) -> int:
    """`down NAME | --all`: remove by label; works after the starter was killed."""
    from orchestrator.engine.cleanup import list_owned, remove_owned
    from orchestrator.ui import ok, status

    if bool(args.name) == bool(args.all):
        raise UsageError("give exactly one of NAME or --all")
    console = _console(args)
    with _engine() as engine:
        target = None if args.all else args.name
        if target is not None and not list_owned(engine, target):
            raise _not_found(engine, target)
        with status(console, f"removing {target or 'every deployment'}"):
            gone = remove_owned(engine, target, grace=args.grace)
    if args.json:
        _emit_json({"removed": {"containers": [c.name for c in gone.containers],
                                "networks": [n.name for n in gone.networks]}})
    else:
        ok(console, f"removed {len(gone.containers)} container(s) and {len(gone.networks)} "
                    f"network(s){' of ' + target if target else ''}")
    return EXIT_OK


# -- ps ---------------------------------------------------------------------------------


def cmd_ps(args: argparse.Namespace) -> int:
    """`ps [NAME] [--json]`: one row per pod; health asked over gRPC right now."""
    with _engine() as engine:
        wanted = L.for_deployment(args.name) if args.name else L.managed()
        pods = [c for c in engine.list_containers(wanted) if L.DEPLOYMENT in c.labels]
        if args.name and not pods:
            raise _not_found(engine, args.name)
    rows = pod_rows(pods)
    if args.json:
        _emit_json(rows)
    else:
        print(format_table(rows, with_deployment=not args.name), flush=True)
    return EXIT_OK


def pod_rows(pods: Sequence[ContainerInfo], now: datetime | None = None) -> list[dict[str, Any]]:
    """One JSON-able object per pod, sorted by deployment, role, shard, replica."""
    now = now or datetime.now(UTC)
    heads = [p for p in pods if p.labels.get(L.ROLE) == "head" and p.running]
    with ThreadPoolExecutor(max_workers=8) as pool:
        health = list(pool.map(_health, pods))
        routing: dict[str, Any] = {}
        for seen in pool.map(_routing, heads):
            routing.update(seen)
    rows = [_row(info, state, now, routing.get(info.name))
            for info, state in zip(pods, health, strict=True)]
    return sorted(rows, key=lambda r: (r["deployment"], _ROLE_ORDER.get(r["role"], 9),
                                       r["shard"] if r["shard"] is not None else -1,
                                       r["replica"] if r["replica"] is not None else -1,
                                       r["pod"]))


def _pod_address(info: ContainerInfo) -> str | None:
    """host:port of a pod on its deployment's network, as this host reaches it."""
    from orchestrator.health import container_address
    from orchestrator.planning import names
    from orchestrator.spec import CONTAINER_PORT

    network = names.network_name(info.labels[L.DEPLOYMENT])
    return container_address(info, network, CONTAINER_PORT)


def _health(info: ContainerInfo) -> str:
    """'serving' / 'not-serving' from gRPC health, '-' when the pod is not running."""
    from orchestrator.health import GrpcHealthProbe

    if not info.running:
        return "-"
    address = _pod_address(info)
    if address is None:
        return "unknown"
    return "serving" if GrpcHealthProbe(timeout=1.0).serving(address) else "not-serving"


def _routing(head: ContainerInfo) -> dict[str, Any]:
    """The head's view of its workers, by pod name (empty when it does not answer)."""
    from orchestrator.control import HeadControl
    from orchestrator.planning.pods import TOKEN_ENV

    address = _pod_address(head)
    if address is None:
        return {}
    try:
        with HeadControl(address, head.env.get(TOKEN_ENV, ""), timeout=2.0) as control:
            return {w.worker_id: w for w in control.list_workers()}
    except OrchestratorError:
        return {}


def _row(info: ContainerInfo, health: str, now: datetime, seen: Any = None
         ) -> dict[str, Any]:
    """`seen`: the head's WorkerStatus for this pod, if it lists it."""
    labels = info.labels

    def number(key: str) -> int | None:
        value = labels.get(key, "")
        return int(value) if value.isdigit() else None

    uptime = (now - info.started_at).total_seconds() if info.running and info.started_at \
        else None
    return {
        "deployment": labels[L.DEPLOYMENT], "pod": info.name, "role": labels.get(L.ROLE, "?"),
        "shard": number(L.SHARD), "replica": number(L.REPLICA),
        "generation": number(L.GENERATION), "state": info.status,
        "restarts": info.restart_count, "health": health,
        "uptime_seconds": round(uptime, 1) if uptime is not None else None,
        "ports": [f"{ip}:{host_port}->{port}/tcp"
                  for port, (ip, host_port) in sorted(info.ports.items())],
        "image": info.image, "exit_code": info.exit_code,
        # the head's view (workers only): ready / unhealthy / draining, or None when the
        # head does not list the pod (or does not answer)
        "routing": seen.state if seen is not None else None,
        "served": seen.served if seen is not None else None,
        "failed": seen.failed if seen is not None else None,
        "in_flight": seen.outstanding if seen is not None else None,
    }


def format_table(rows: Sequence[dict[str, Any]], *, with_deployment: bool) -> str:
    """Aligned plain-text columns (greppable; no colour needed)."""
    headers = ["POD", "ROLE", "SHARD", "REPLICA", "STATE", "RESTARTS", "HEALTH", "ROUTING",
               "UPTIME", "PORTS", "IMAGE"]
    if with_deployment:
        headers.insert(0, "DEPLOYMENT")
    table = [headers]
    for r in rows:
        cells = [r["pod"], r["role"], _dash(r["shard"]), _dash(r["replica"]), r["state"],
                 str(r["restarts"]), r["health"], _dash(r["routing"]),
                 format_uptime(r["uptime_seconds"]), ",".join(r["ports"]) or "-", r["image"]]
        table.append([r["deployment"], *cells] if with_deployment else cells)
    widths = [max(len(row[i]) for row in table) for i in range(len(headers))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True))
                     .rstrip() for row in table)


def _dash(value: object) -> str:
    return "-" if value is None else str(value)


def format_uptime(seconds: float | None) -> str:
    """'45s', '3m12s', '2h05m', '3d04h'."""
    if seconds is None:
        return "-"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


# -- logs -------------------------------------------------------------------------------


def cmd_logs(args: argparse.Namespace) -> int:
    """`logs NAME [--pod P] [-f] [--tail N] [--since WHEN] [-t]`: lines prefixed by pod,
    like compose."""
    if args.tail is not None and args.tail < 0:
        raise UsageError("--tail must be >= 0")
    since = None if args.since is None else parse_since(args.since, datetime.now(UTC))
    with _engine() as engine:
        pods = engine.list_containers(L.for_deployment(args.name))
        if not pods:
            raise _not_found(engine, args.name)
        pods = _select_pod(pods, args.name, args.pod)
        width = max(len(p.name) for p in pods)
        colour = sys.stdout.isatty() and "NO_COLOR" not in os.environ
        prefixes = {p.name: _prefix(p.name, width, i, colour) for i, p in enumerate(pods)}
        if args.follow:
            _follow(engine, pods, prefixes, args.tail, since, args.timestamps)
        else:
            # Interleaved by the time each line was written, like compose.
            timed = [(line, order, pod.name)
                     for order, pod in enumerate(pods)
                     for line in engine.log_lines(pod.id, tail=args.tail, since=since)]
            for line, _, pod_name in sorted(timed, key=lambda t: (t[0].time, t[1])):
                print(f"{prefixes[pod_name]}{_shown(line, args.timestamps)}")
    sys.stdout.flush()
    return EXIT_OK


def _select_pod(pods: list[ContainerInfo], name: str, pod: str | None) -> list[ContainerInfo]:
    if pod is None:
        return pods
    chosen = [p for p in pods if p.name in (pod, f"{name}-{pod}")]
    if not chosen:
        known = ", ".join(p.name for p in pods)
        raise OrchestratorError(f"deployment {name!r} has no pod {pod!r} (pods: {known})")
    return chosen


_COLOURS = (36, 33, 32, 35, 34, 91, 92, 93, 94, 95, 96)


def _prefix(name: str, width: int, index: int, colour: bool) -> str:
    text = f"{name.ljust(width)} | "
    return f"\x1b[{_COLOURS[index % len(_COLOURS)]}m{text}\x1b[0m" if colour else text


def parse_since(text: str, now: datetime) -> datetime:
    """`--since`: a duration back from `now` ('10m', '1h30m', '45s', '2d') or a time
    (ISO 8601; local time unless it gives its zone).

    Raises:
        UsageError: neither.
    """
    parts = _DURATION.fullmatch(text.strip())
    if parts and any(parts.groups()):
        days, hours, minutes, seconds = (float(g or 0) for g in parts.groups())
        return now - timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise UsageError(f"--since {text!r}: give a duration such as 10m, 1h30m or 45s, or a "
                         "time such as 2026-11-29T07:00:00") from None
    return when if when.tzinfo is not None else when.astimezone()


_DURATION = re.compile(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+(?:\.\d+)?)s)?")


def _shown(line: LogLine, timestamps: bool) -> str:
    if not timestamps:
        return line.text
    return f"{line.time.astimezone(UTC).isoformat(timespec='microseconds')} {line.text}"


def _follow(engine: ContainerEngine, pods: list[ContainerInfo], prefixes: dict[str, str],
            tail: int | None, since: datetime | None, timestamps: bool) -> None:
    """Interleave every pod's stream in arrival order until all end or Ctrl-C."""
    lines: queue.Queue[tuple[str, str | None]] = queue.Queue()

    def pump(pod: ContainerInfo) -> None:
        try:
            for line in engine.follow_logs(pod.id, tail=tail, since=since):
                lines.put((pod.name, _shown(line, timestamps)))
        except OrchestratorError as exc:
            lines.put((pod.name, f"[log stream ended: {exc}]"))
        finally:
            lines.put((pod.name, None))

    for pod in pods:
        threading.Thread(target=pump, args=(pod,), daemon=True).start()
    open_streams = len(pods)
    try:
        while open_streams:
            pod_name, line = lines.get()
            if line is None:
                open_streams -= 1
            else:
                print(f"{prefixes[pod_name]}{line}", flush=True)
    except KeyboardInterrupt:
        pass  # Ctrl-C is how one stops following: not an error


# -- scale / rollout ----------------------------------------------------------------------


def cmd_scale(args: argparse.Namespace) -> int:
    """`scale NAME N`: start new replicas healthy first; drain removed ones first."""
    from orchestrator.ui import ProgressUI, ok

    console = _console(args)
    with _engine() as engine:
        dep = _attach(args.name, engine)
        try:
            dep.spec.with_replicas(args.replicas)  # validate before any progress output
            with ProgressUI(console, f"scaling {dep.name} to {args.replicas}") as ui:
                dep.scale_sync(args.replicas, on_progress=ui)
            result = {"name": dep.name, "replicas": dep.spec.replicas, "address": dep.address}
        finally:
            dep.close()
    if args.json:
        _emit_json(result)
    else:
        ok(console, f"{args.name}: {args.replicas} replica(s) per shard")
    return EXIT_OK


def cmd_rollout(args: argparse.Namespace) -> int:
    """`rollout NAME [--image IMG] [--set k=v ...]`: rolling update with zero failed requests."""
    from orchestrator.ui import ProgressUI, ok

    sets = parse_sets(args.sets)
    if not sets and args.image is None:
        raise UsageError("nothing to roll out: give --image IMG and/or --set KEY=VALUE")
    console = _console(args)
    with _engine() as engine:
        dep = _attach(args.name, engine)
        try:
            changes: dict[str, Any] = {}
            if args.image is not None:
                changes["image"] = args.image
            if sets:
                changes["uses_with"] = {**dep.spec.uses_with, **sets}
            dep.spec.evolve(**changes)  # validate before any progress output
            with ProgressUI(console, f"rolling update of {dep.name}") as ui:
                dep.rolling_update_sync(on_progress=ui, **changes)
            result = {"name": dep.name, "image": dep.spec.image,
                      "uses_with": dict(dep.spec.uses_with), "address": dep.address}
        finally:
            dep.close()
    if args.json:
        _emit_json(result)
    else:
        ok(console, f"{args.name}: rolled out (image {result['image']})")
    return EXIT_OK


def parse_sets(items: Sequence[str]) -> dict[str, Any]:
    """`["tag=v2", "n=3"]` -> `{"tag": "v2", "n": 3}` (values read as YAML scalars).

    Raises:
        UsageError: an item has no '=' or an empty key.
    """
    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--set {item!r}: expected KEY=VALUE")
        try:
            value = yaml.safe_load(text) if text else ""
        except yaml.YAMLError:
            value = text
        out[key.strip()] = value if isinstance(value, str | int | float | bool) \
            or value is None else text
    return out


# -- ping / images / executor / version ---------------------------------------------------


def cmd_ping(args: argparse.Namespace) -> int:
    """`ping HOST:PORT`: exit 0 when gRPC health says SERVING, else 1."""
    from orchestrator.health import GrpcHealthProbe

    address = parse_address(args.address)
    serving = GrpcHealthProbe(timeout=args.timeout).serving(address)
    print(f"{address} {'SERVING' if serving else 'NOT SERVING'}", flush=True)
    return EXIT_OK if serving else EXIT_FAILURE


def parse_address(text: str) -> str:
    """Validate 'host:port'. Raises UsageError."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"{text!r} is not HOST:PORT (port 1..65535)")
    return f"{host}:{int(port)}"


def cmd_images_build(args: argparse.Namespace) -> int:
    """`images build [--force]`: the cached runtime image pipeline."""
    from orchestrator.images import prepare_runtime_image
    from orchestrator.ui import make_console

    console = make_console()
    options: dict[str, Any] = {"force": args.force, "base": args.base}
    if args.tag:
        options["tag"] = args.tag
    with _engine(timeout=_IMAGE_BUILD_TIMEOUT) as engine:
        result = prepare_runtime_image(
            engine, log=lambda line: console.print(line, markup=False), **options)
    state = "cached" if result.cached else "built"
    print(f"{result.ref} = {result.hash_ref} ({state}, base {result.base})", flush=True)
    return EXIT_OK


def cmd_executor(args: argparse.Namespace) -> int:
    """`executor --uses file.py:Class`: the worker runtime in this process (Ctrl-C stops it)."""
    from orchestrator.runtime.__main__ import main as runtime_main

    argv = ["worker", "--uses", args.uses, "--port", str(args.port), "--host", args.host,
            "--name", args.uses.rpartition(":")[2] or "executor"]
    if args.uses_with:
        argv += ["--uses-with", args.uses_with]
    return runtime_main(argv)


def cmd_version(args: argparse.Namespace) -> int:
    """`version`: the package version (and Python's, with --json)."""
    if args.json:
        _emit_json({"orchestrator": __version__, "python": sys.version.split()[0]})
    else:
        print(f"orchestrator {__version__}")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
