"""Benchmark: rolling update and scale under load, against references measured in the same run.

    .venv/bin/python bench/bench_rollout.py [--replicas 3] [--scale-to 8]

1. Rolling update of `--replicas` replicas while 2 client threads post without pause:
   - failed requests (target 0);
   - p99 latency during the update / p99 in steady state just before it (target <= 2);
   - update duration / sum of single-replica ready times (one raw container started with the
     Docker SDK and polled until gRPC SERVING, once per replica, sequentially; target <= 1.2).
2. Scale 1 -> `--scale-to`: duration / the parallel `docker run` limit (scale_to - 1 raw
   containers started in parallel until each reports SERVING; target <= 1.25).
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import docker  # noqa: E402  (the reference is raw docker, on purpose)

from bench.bench_start import reference  # noqa: E402
from orchestrator.deployment import Deployment  # noqa: E402
from orchestrator.engine.docker_engine import DockerEngine  # noqa: E402
from orchestrator.images import ensure_runtime_image  # noqa: E402
from orchestrator.load import Load  # noqa: E402

ECHO = str(ROOT / "executors" / "echo.py")


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def rolling(image: str, replicas: int, client: docker.DockerClient) -> None:
    idle = [reference(client, image, 1) for _ in range(replicas)]
    dep = Deployment(name=f"bench-{uuid.uuid4().hex[:6]}", uses=f"{ECHO}:Echo",
                     uses_with={"tag": "v1"}, replicas=replicas, image=image, stop_grace=2)
    with dep:
        with Load(dep.head_host, dep.head_port, threads=2) as load:
            load.wait_for(200)
            steady_from = time.monotonic()
            load.wait_for(1000, timeout=120)  # the steady-state window: 1000 requests
            # The physical reference under the same load as the update.
            loaded_from = time.monotonic()
            single = [reference(client, image, 1) for _ in range(replicas)]
            started = time.monotonic()
            dep.rolling_update_sync(uses_with={"tag": "v2"})
            ended = time.monotonic()
            load.wait_for(50)
        steady = [r.ended - r.started for r in load.results
                  if steady_from <= r.started < loaded_from]
        during = [r.ended - r.started for r in load.results if started <= r.started < ended]
        failed = len(load.failures)
        total = len(load.results)
    duration = ended - started
    print(f"rolling update of {replicas} replicas under load:")
    print(f"  requests {total}, failed {failed} (target 0)")
    print(f"  p99 steady {p99(steady) * 1000:.2f} ms, during {p99(during) * 1000:.2f} ms, "
          f"ratio {p99(during) / p99(steady):.2f} (target <= 2)")
    print(f"  duration {duration:.2f}s vs sum of single-replica ready times under load "
          f"{sum(single):.2f}s ({', '.join(f'{s:.2f}' for s in single)}): "
          f"ratio {duration / sum(single):.2f} (target <= 1.2)")
    print(f"  (same reference without load: {sum(idle):.2f}s; ratio "
          f"{duration / sum(idle):.2f})")


def scaling(image: str, target: int, client: docker.DockerClient) -> None:
    limit = reference(client, image, target - 1)
    dep = Deployment(name=f"bench-{uuid.uuid4().hex[:6]}", uses=f"{ECHO}:Echo", replicas=1,
                     image=image, stop_grace=2)
    with dep:
        started = time.monotonic()
        dep.scale_sync(target)
        duration = time.monotonic() - started
        assert len(dep.pod_args["pods"][0]) == target
    print(f"scale 1 -> {target}: {duration:.2f}s vs parallel docker run of {target - 1} "
          f"{limit:.2f}s: ratio {duration / limit:.2f} (target <= 1.25)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--scale-to", type=int, default=8)
    args = parser.parse_args()
    engine = DockerEngine.from_env()
    image = ensure_runtime_image(engine, log=lambda _m: None)
    engine.close()
    client = docker.from_env()
    try:
        rolling(image, args.replicas, client)
        scaling(image, args.scale_to, client)
    finally:
        client.close()


if __name__ == "__main__":
    main()
