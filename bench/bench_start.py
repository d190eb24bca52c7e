"""Benchmark: time-to-ready of a Deployment (head + N replicas) against raw `docker run`.

    .venv/bin/python bench/bench_start.py [--sizes 1 4 8] [--rounds 2]

For each N, in the same run and alternating:
  (ref)  the physical limit: N+1 containers of the same image and worker command, created
         and started in parallel with the Docker SDK, each polled until gRPC SERVING;
  (ours) `Deployment(replicas=N).start()`: network, head + N workers in parallel, readiness,
         registration at the head, head SERVING.
Prints seconds and the ratio ours/ref (target <= 1.2), and how time grows with N.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import docker  # noqa: E402  (the reference is raw docker, on purpose)

from orchestrator.deployment import Deployment  # noqa: E402
from orchestrator.engine.docker_engine import DockerEngine  # noqa: E402
from orchestrator.health import GrpcHealthProbe  # noqa: E402
from orchestrator.images import ensure_runtime_image  # noqa: E402

ECHO_DIR = str(ROOT / "executors")
LABELS = {"orchestrator.managed": "true", "orchestrator.deployment": "bench-ref"}
OWNED: dict[str, str | list[str] | bool] = {"label": "orchestrator.deployment=bench-ref"}


def raw_worker(client: docker.DockerClient, image: str, network: str | None,
               probe: GrpcHealthProbe) -> Any:
    """One raw worker container (Docker SDK, same image, command and security options as
    a pod), returned once it reports SERVING."""
    c = client.containers.run(
        image, ["worker", "--uses", "/opt/uses/echo.py:Echo", "--port", "50051"],
        detach=True, labels=LABELS, network=network, user="10001:10001",
        cap_drop=["ALL"], security_opt=["no-new-privileges"],
        volumes={ECHO_DIR: {"bind": "/opt/uses", "mode": "ro"}},
    )
    c.reload()
    ip = c.attrs["NetworkSettings"]["Networks"][network]["IPAddress"]
    while not probe.serving(f"{ip}:50051"):
        time.sleep(0.02)
    return c


def reference(client: docker.DockerClient, image: str, count: int) -> float:
    """Seconds until `count` raw containers all report SERVING."""
    probe = GrpcHealthProbe(timeout=0.5)
    net = client.networks.create(f"bench-ref-{uuid.uuid4().hex[:6]}", labels=LABELS)
    started = time.monotonic()

    def one(i: int) -> str:
        return str(raw_worker(client, image, net.name, probe).id)

    try:
        with ThreadPoolExecutor(count) as pool:
            ids = list(pool.map(one, range(count)))
        elapsed = time.monotonic() - started
    finally:
        for c in client.containers.list(all=True, filters=OWNED):
            c.remove(force=True)
        net.remove()
    assert len(ids) == count
    return elapsed


def ours(image: str, replicas: int) -> float:
    dep = Deployment(name=f"bench-{uuid.uuid4().hex[:6]}", uses=f"{ECHO_DIR}/echo.py:Echo",
                     replicas=replicas, image=image, stop_grace=1)
    started = time.monotonic()
    try:
        dep.start()
        elapsed = time.monotonic() - started
        assert dep.post("/echo", docs=[{}])
    finally:
        dep.close()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    engine = DockerEngine.from_env()
    image = ensure_runtime_image(engine, log=lambda _m: None)
    engine.close()
    client = docker.from_env()
    rows = []
    try:
        for n in args.sizes:
            refs, mine = [], []
            for _ in range(args.rounds):
                refs.append(reference(client, image, n + 1))
                mine.append(ours(image, n))
            ref, our = statistics.median(refs), statistics.median(mine)
            rows.append((n, ref, our, our / ref))
            print(f"N={n}: ref {ref:.2f}s  ours {our:.2f}s  ratio {our / ref:.2f}  "
                  f"(rounds ref {[round(x, 2) for x in refs]}, ours "
                  f"{[round(x, 2) for x in mine]})", flush=True)
    finally:
        client.close()
    print("\nN  ref(s)  ours(s)  ours/ref   (target <= 1.2)")
    for n, ref, our, ratio in rows:
        print(f"{n:<2} {ref:6.2f}  {our:7.2f}  {ratio:8.2f}")
    if len(rows) > 1:
        first, last = rows[0], rows[-1]
        growth = last[2] / first[2]
        print(f"growth ours N={first[0]}->{last[0]}: x{growth:.2f} for x{last[0] / first[0]:.0f} "
              f"replicas ({'sublinear' if growth < last[0] / first[0] else 'NOT sublinear'})")


if __name__ == "__main__":
    main()
