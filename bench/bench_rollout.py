"""Benchmark: rolling update and scale under load, against references measured in the same run.

    .venv/bin/python bench/bench_rollout.py [--replicas 3] [--scale-to 8]

1. Rolling update of `--replicas` replicas while 2 client threads post without pause:
   - failed requests (target 0);
   - p99 latency during the update / p99 in steady state just before it (target <= 2);
   - update duration / sum of single-replica ready times (one raw container started with the
     Docker SDK and polled until gRPC SERVING, once per replica, sequentially; target <= 1.2);
   - a second reference, the same engine work done by hand with raw Docker: per replica,
     start a new container, wait until SERVING, stop and remove the old one in the
     background (p99 during it, and its duration).
2. Scale 1 -> `--scale-to`: duration / the parallel `docker run` limit (scale_to - 1 raw
   containers started in parallel until each reports SERVING; target <= 1.25).
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

from bench.bench_start import LABELS, OWNED, raw_worker, reference  # noqa: E402
from bench.loadproc import ProcessLoad  # noqa: E402
from orchestrator.deployment import Deployment  # noqa: E402
from orchestrator.engine.docker_engine import DockerEngine  # noqa: E402
from orchestrator.health import GrpcHealthProbe  # noqa: E402
from orchestrator.images import ensure_runtime_image  # noqa: E402

ECHO = str(ROOT / "executors" / "echo.py")
STOP_GRACE = 2.0


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def raw_swap(client: docker.DockerClient, image: str, replicas: int,
             grace: float) -> tuple[float, float]:
    """A rolling update's engine work done by hand with raw Docker, no orchestrator at all:
    `replicas` old raw workers are started first (not measured); then, one after another, a
    new raw worker is started and polled until SERVING while the old one it replaces is
    stopped (SIGTERM, `grace`) and removed in the background, as the rollout does.
    Returns the measured window (monotonic start, end)."""
    probe = GrpcHealthProbe(timeout=0.5)
    net = client.networks.create(f"bench-ref-{uuid.uuid4().hex[:6]}", labels=LABELS)
    try:
        old = [raw_worker(client, image, net.name, probe) for _ in range(replicas)]
        started = time.monotonic()
        def retire(c: Any) -> None:
            c.stop(timeout=int(grace))
            c.remove()

        with ThreadPoolExecutor(replicas) as pool:
            stops = []
            for container in old:
                raw_worker(client, image, net.name, probe)
                stops.append(pool.submit(retire, container))
            for stop in stops:
                stop.result()
        ended = time.monotonic()
    finally:
        for c in client.containers.list(all=True, filters=OWNED):
            c.remove(force=True)
        net.remove()
    return started, ended


def rolling(image: str, replicas: int, trials: int, rate: float,
            client: docker.DockerClient) -> None:
    """`trials` successive updates (v1 -> v2 -> ...), each measured against a steady window
    and a single-replica reference taken under the same load just before it."""
    idle = [reference(client, image, 1) for _ in range(replicas)]
    dep = Deployment(name=f"bench-{uuid.uuid4().hex[:6]}", uses=f"{ECHO}:Echo",
                     uses_with={"tag": "v0"}, replicas=replicas, image=image,
                     stop_grace=STOP_GRACE)
    windows = []
    window = 2000 if rate <= 0 else int(rate * 4)
    with dep, ProcessLoad(dep.address, threads=2, rate=rate) as load:
        load.wait_for(200)
        for trial in range(1, trials + 1):
            steady_from = time.monotonic()
            load.wait_for(window)  # the steady-state window
            loaded_from = time.monotonic()
            single = [reference(client, image, 1) for _ in range(replicas)]
            swap = raw_swap(client, image, replicas, STOP_GRACE)
            started = time.monotonic()
            dep.rolling_update_sync(uses_with={"tag": f"v{trial}"})
            ended = time.monotonic()
            load.wait_for(50)
            windows.append((steady_from, loaded_from, swap, started, ended, sum(single)))
        samples = load.stop()
    rows, swaps = [], []
    for steady_from, loaded_from, (swap_from, swap_to), started, ended, ref in windows:
        steady = [e - s for s, e, _ in samples if steady_from <= s < loaded_from]
        referencing = [e - s for s, e, _ in samples if loaded_from <= s < swap_from]
        swapping = [e - s for s, e, _ in samples if swap_from <= s < swap_to]
        during = [e - s for s, e, _ in samples if started <= s < ended]
        rows.append((p99(steady), p99(during), ended - started, ref, p99(referencing)))
        swaps.append((p99(swapping) / p99(steady), (ended - started) / (swap_to - swap_from),
                      swap_to - swap_from))
    failed = sum(1 for _, _, ok in samples if not ok)
    kind = f"paced at {rate:g} req/s" if rate > 0 else "saturating (2 clients back to back)"
    print(f"rolling update of {replicas} replicas under load {kind}, client in its own "
          f"process, {trials} trials:")
    print(f"  requests {len(samples)}, failed {failed} (target 0)")
    for i, (steady_p99, during_p99, duration, ref, ref_p99) in enumerate(rows, 1):
        print(f"  trial {i}: p99 steady {steady_p99 * 1000:.2f} ms, during "
              f"{during_p99 * 1000:.2f} ms (x{during_p99 / steady_p99:.2f}), while raw "
              f"containers start {ref_p99 * 1000:.2f} ms (x{ref_p99 / steady_p99:.2f}); "
              f"duration "
              f"{duration:.2f}s vs single-replica ready times {ref:.2f}s "
              f"(x{duration / ref:.2f})")
    p99_ratio = statistics.median(d / s for s, d, _, _, _ in rows)
    raw_ratio = statistics.median(r / s for s, _, _, _, r in rows)
    time_ratio = statistics.median(t / r for _, _, t, r, _ in rows)
    print(f"  median p99 during/steady: {p99_ratio:.2f} (target <= 2); the same ratio while "
          f"raw `docker run`s of the same containers start: {raw_ratio:.2f}")
    print(f"  median duration / sum of single-replica ready times under the same load: "
          f"{time_ratio:.2f} (target <= 1.2)")
    print(f"  (reference without load: {sum(idle):.2f}s for {replicas} replicas; median "
          f"duration {statistics.median(t for _, _, t, _, _ in rows):.2f}s)")
    print(f"  the same engine work by hand with raw Docker (start new, wait SERVING, stop and "
          f"remove old, per replica), medians: p99 during it / steady "
          f"{statistics.median(p for p, _, _ in swaps):.2f}; rollout duration / its duration "
          f"{statistics.median(d for _, d, _ in swaps):.2f} "
          f"({statistics.median(t for _, _, t in swaps):.2f}s by hand)")


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
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--rates", type=float, nargs="+", default=[0, 200],
                        help="load per rolling-update run: 0 = saturating, else req/s")
    args = parser.parse_args()
    engine = DockerEngine.from_env()
    image = ensure_runtime_image(engine, log=lambda _m: None)
    engine.close()
    client = docker.from_env()
    try:
        for rate in args.rates:
            rolling(image, args.replicas, args.trials, rate, client)
        scaling(image, args.scale_to, client)
    finally:
        client.close()


if __name__ == "__main__":
    main()
