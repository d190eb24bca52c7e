"""Benchmark: the Swarm target beside the local engine, with references, in one run.

    .venv/bin/python bench/bench_swarm.py [--shards 2] [--replicas 3] [--docker-host unix://...]

Without --docker-host it makes its own three-node Docker-in-Docker swarm
(tests/support/swarm_cluster.py) and removes it at the end.

1. Start of `shards x replicas` (plus the head) on the swarm, until the head serves with every
   worker registered, against the same services (same image, commands, network, configs and
   published ports) created in parallel by hand with the Docker SDK, timed until every task
   runs and until every pod answers gRPC health at its published port.
2. A rolling update (uses_with) of every worker under a 2-thread load: its duration, failed
   requests, p99 latency during it against p99 at steady state just before.
3. The same deployment on the local engine (this machine's Docker), same figures.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import docker  # noqa: E402  (the reference is the raw SDK, on purpose)
import docker.types  # noqa: E402

from orchestrator.deployment import Deployment  # noqa: E402
from orchestrator.engine.base import ContainerEngine  # noqa: E402
from orchestrator.engine.docker_engine import DockerEngine  # noqa: E402
from orchestrator.engine.docker_engine_swarm import SwarmEngine  # noqa: E402
from orchestrator.health import GrpcHealthProbe  # noqa: E402
from orchestrator.images import ensure_runtime_image  # noqa: E402
from orchestrator.load import Load  # noqa: E402
from orchestrator.planning.pods import USES_MOUNT, PodContext, initial_pods  # noqa: E402
from orchestrator.spec import CONTAINER_PORT, DeploymentSpec  # noqa: E402
from tests.support import swarm_cluster  # noqa: E402

ECHO = str(ROOT / "executors" / "echo.py")
LABELS = {"orchestrator.bench": "swarm"}
READY_TIMEOUT = 600.0


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] if ordered else 0.0


def fields(name: str, shards: int, replicas: int, image: str) -> dict[str, Any]:
    return {"name": name, "uses": f"{ECHO}:Echo", "uses_with": {"tag": "v1"},
            "shards": shards, "replicas": replicas, "image": image,
            "timeout_ready": READY_TIMEOUT}


def by_hand(docker_host: str, shards: int, replicas: int, image: str) -> tuple[float, float]:
    """The same services, created in parallel with the SDK, no orchestrator: (seconds until
    every task runs, seconds until every pod answers gRPC health)."""
    spec = DeploymentSpec.from_fields(**fields(f"ref{uuid.uuid4().hex[:6]}", shards,
                                               replicas, image))
    plans = initial_pods(spec, PodContext(owner="bench", token="bench-token"))
    client = docker.DockerClient(base_url=docker_host)
    net = client.networks.create(plans[0].container.network, driver="overlay", labels=LABELS)
    code = Path(ECHO).read_bytes()
    config = client.configs.create(
        name=f"{spec.name}-{hashlib.sha256(code).hexdigest()[:12]}", data=code, labels=LABELS)
    probe = GrpcHealthProbe(timeout=0.5)

    def create(plan: Any) -> Any:
        c = plan.container
        return client.services.create(
            c.image, args=list(c.command), name=c.name, env=[f"{k}={v}" for k, v in c.env.items()],
            hostname=c.hostname, user=c.user, labels=LABELS, container_labels=LABELS,
            networks=[docker.types.NetworkAttachmentConfig(net.name, aliases=[c.name])],
            endpoint_spec=docker.types.EndpointSpec(mode="dnsrr", ports=[{
                "Protocol": "tcp", "TargetPort": CONTAINER_PORT, "PublishMode": "host"}]),
            configs=[docker.types.ConfigReference(config.id, config.name,
                                                  filename=f"{USES_MOUNT}/echo.py",
                                                  uid="10001", gid="10001", mode=0o444)],
            healthcheck=docker.types.Healthcheck(test=["NONE"]), cap_drop=["ALL"])

    def address(service: Any) -> str | None:
        for task in service.tasks():
            status = task.get("Status") or {}
            ports = (status.get("PortStatus") or {}).get("Ports") or []
            if status.get("State") == "running" and ports:
                node = client.nodes.get(task["NodeID"]).attrs
                addr = node["Status"]["Addr"]
                if addr == "0.0.0.0":
                    addr = node["ManagerStatus"]["Addr"].rpartition(":")[0]
                return f"{addr}:{ports[0]['PublishedPort']}"
        return None

    started = time.monotonic()
    try:
        with ThreadPoolExecutor(len(plans)) as pool:
            services = list(pool.map(create, plans))
        addresses: dict[str, str] = {}
        while len(addresses) < len(services):
            for s in services:
                if s.name not in addresses and (a := address(s)) is not None:
                    addresses[s.name] = a
            time.sleep(0.1)
        running = time.monotonic() - started
        pending = dict(addresses)
        while pending:
            for name, addr in list(pending.items()):
                if probe.answers(addr):
                    del pending[name]
            time.sleep(0.03)
        answering = time.monotonic() - started
        return running, answering
    finally:
        probe.close()
        for s in client.services.list(filters={"label": "orchestrator.bench=swarm"}):
            s.remove()
        deadline = time.monotonic() + 120
        while True:
            try:
                net.remove()
                break
            except docker.errors.APIError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        config.remove()
        client.close()


def run_target(engine: ContainerEngine, label: str, shards: int, replicas: int,
               image: str) -> dict[str, float]:
    """Start, steady load, rolling update under load, down: the figures of one target."""
    name = f"b{uuid.uuid4().hex[:8]}"
    started = time.monotonic()
    dep = Deployment(**fields(name, shards, replicas, image), engine=engine, reaper=False)
    out: dict[str, float] = {}
    try:
        dep.start()
        out["start"] = time.monotonic() - started
        with Load(dep.head_host, dep.head_port, threads=2) as load:
            load.wait_for(200)
            steady_end = time.monotonic()
            asyncio.run(dep.rolling_update(uses_with={"tag": "v2"}))
            rolled = time.monotonic()
            load.wait_for(20)
        steady = [r.ended - r.started for r in load.results if r.ended <= steady_end]
        during = [r.ended - r.started for r in load.results
                  if steady_end <= r.started <= rolled]
        out.update(rollout=rolled - steady_end, requests=len(load.results),
                   failed=len(load.failures), p99_steady=p99(steady), p99_rollout=p99(during))
    finally:
        t = time.monotonic()
        dep.close()
        out["down"] = time.monotonic() - t
    print(f"{label}: start {out.get('start', 0):.1f}s, rollout {out.get('rollout', 0):.1f}s, "
          f"p99 steady {out.get('p99_steady', 0) * 1e3:.1f} ms, during rollout "
          f"{out.get('p99_rollout', 0) * 1e3:.1f} ms, {out.get('failed', 0):.0f} of "
          f"{out.get('requests', 0):.0f} requests failed, down {out['down']:.1f}s", flush=True)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--docker-host", help="a swarm manager (default: make a DinD swarm)")
    args = parser.parse_args()
    local = DockerEngine.from_env()
    image = ensure_runtime_image(local)
    cluster = None
    host = args.docker_host
    if host is None:
        cluster = swarm_cluster.up(f"bench{uuid.uuid4().hex[:6]}", [image])
        host = cluster.manager.docker_host
    swarm = SwarmEngine.from_env({"DOCKER_HOST": host})
    try:
        pods = args.shards * args.replicas + 1
        print(f"{args.shards} shards x {args.replicas} replicas + head = {pods} pods; "
              f"swarm at {host}", flush=True)
        running, answering = by_hand(host, args.shards, args.replicas, image)
        print(f"swarm by hand (SDK, parallel): every task running {running:.1f}s, every pod "
              f"answering gRPC health {answering:.1f}s", flush=True)
        on_swarm = run_target(swarm, "swarm", args.shards, args.replicas, image)
        on_local = run_target(local, "local", args.shards, args.replicas, image)
        print("ratios:")
        print(f"  swarm start / by hand (answering): {on_swarm['start'] / answering:.2f}")
        print(f"  swarm start / local start: {on_swarm['start'] / on_local['start']:.2f}")
        print(f"  swarm rollout / local rollout: "
              f"{on_swarm['rollout'] / on_local['rollout']:.2f}")
        for label, out in (("swarm", on_swarm), ("local", on_local)):
            print(f"  {label} p99 during rollout / steady: "
                  f"{out['p99_rollout'] / max(out['p99_steady'], 1e-9):.2f}")
    finally:
        swarm.close()
        local.close()
        if cluster is not None:
            swarm_cluster.down(cluster.name)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
