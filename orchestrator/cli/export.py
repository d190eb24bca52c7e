"""`orchestrator export -f FILE --to compose|swarm|kubernetes`: the same pods, for another
engine."""

from __future__ import annotations

import argparse
import secrets
import sys
from pathlib import Path
from typing import Any

import yaml

from orchestrator.cli.base import EXIT_OK, UsageError
from orchestrator.config import DeploymentConfig, load_file
from orchestrator.planning.export import TOKEN_VARIABLE, to_compose, to_kubernetes, to_swarm
from orchestrator.planning.pods import PodContext
from orchestrator.planning.tls_secrets import kubernetes_secret_command
from orchestrator.spec import DeploymentSpec


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.set_defaults(handler=run)
    p.add_argument("-f", "--file", required=True, help="deployment YAML file")
    p.add_argument("--to", required=True, choices=["compose", "swarm", "kubernetes"],
                   help="compose: one service per pod (docker-compose up); swarm: a stack, "
                   "one service per pod (docker stack deploy); kubernetes: a StatefulSet "
                   "per shard, the head as a Deployment (kubectl apply)")
    p.add_argument("-o", "--output", metavar="PATH", help="write to PATH instead of stdout")


def run(args: argparse.Namespace) -> int:
    """`export -f FILE --to compose|swarm|kubernetes`: the same pods, for another engine."""
    configs = _deployable(args.file, quiet=args.quiet)
    if args.to in ("compose", "swarm"):
        text = _compose_or_swarm(configs, args.to, args.file)
    else:
        text = _kubernetes(configs, args.file)
    if args.output:
        try:
            Path(args.output).write_text(text, encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"cannot write {args.output}: {exc.strerror or exc}",
                             field="--output") from exc
    else:
        sys.stdout.write(text)
    return EXIT_OK


def _deployable(file: str, *, quiet: bool) -> list[DeploymentConfig]:
    """The file's deployments but the external ones (services running elsewhere)."""
    configs = []
    for cfg in load_file(file):
        if not cfg.spec.external:
            configs.append(cfg)
        elif not quiet:
            print(f"orchestrator: {cfg.spec.name} is external: not exported", file=sys.stderr)
    if not configs:
        raise UsageError(f"every deployment of {file} is external: nothing to export",
                         field="--file")
    return configs


def _sources(spec: DeploymentSpec) -> dict[str, str]:
    """The executor files a deployment uses, by path (shipped as configs or ConfigMaps)."""
    return {u.path: Path(u.path).read_text(encoding="utf-8")
            for u in (spec.uses, spec.uses_before, spec.uses_after)
            if u is not None and u.kind == "file"}


def _compose_or_swarm(configs: list[DeploymentConfig], to: str, file: str) -> str:
    merged: dict[str, dict[str, Any]] = {"services": {}, "networks": {}, "configs": {},
                                         "secrets": {}}
    for cfg in configs:
        ctx = PodContext(owner="export", token="")
        doc = (to_compose(cfg.spec, ctx) if to == "compose"
               else to_swarm(cfg.spec, ctx, _sources(cfg.spec)))
        for key, part in merged.items():
            part.update(doc.get(key, {}))
    version = "2.4" if to == "compose" else "3.8"
    start = (f"# start: {TOKEN_VARIABLE}=<a secret> docker-compose -f FILE up -d\n"
             if to == "compose" else "".join(
                 f"# printf %s <a secret> | docker secret create {name} -\n"
                 for name, body in merged["secrets"].items() if body.get("external"))
             + "# start: docker stack deploy --resolve-image never -c FILE STACK\n")
    return (f"# orchestrator export --to {to}, from {file}\n" + start
            + yaml.safe_dump({"version": version, **{k: v for k, v in merged.items() if v}},
                             sort_keys=False))


def _kubernetes(configs: list[DeploymentConfig], file: str) -> str:
    docs: list[dict[str, Any]] = []
    first = ""
    for cfg in configs:
        ctx = PodContext(owner="export", token=secrets.token_urlsafe(24))
        docs += to_kubernetes(cfg.spec, ctx, _sources(cfg.spec))
        if (command := kubernetes_secret_command(cfg.spec)) is not None:
            first += f"# first, the head's TLS files: {command}\n"
    return (f"# orchestrator export --to kubernetes, from {file}; kubectl apply -f\n"
            + first + yaml.safe_dump_all(docs, sort_keys=False))
