"""Benchmark: what healing costs while nothing is sick, with 8 replicas.

    .venv/bin/python bench/bench_healer.py [--replicas 8] [--window 20] [--rounds 2]

One detached deployment (head + N workers) runs throughout. Phases alternate, each
`--window` seconds long, CPU read from /proc (user + system) of:

  (off)  no healer at all: what the deployment costs dockerd (and containerd) by itself;
  (ref)  the physical floor of "looking once a second": one raw Docker SDK listing
         (sparse: one API call) of the deployment's containers every second from this
         process (no gRPC, no decisions);
  (on)   the supervisor (`python -m orchestrator.supervisor`) healing it, heal_after 30,
         poll 1 s: one engine listing and one ListWorkers call to the head per second.

Prints CPU seconds per second (i.e. cores) of the supervisor, dockerd+containerd and the
head, for each phase, and the healer's extra dockerd cost as a ratio to the reference's.
Linux only (reads /proc); dockerd must be visible in this PID namespace.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import docker  # noqa: E402  (the reference is raw docker, on purpose)

from orchestrator import supervisor as sv  # noqa: E402
from orchestrator.deployment import Deployment  # noqa: E402
from orchestrator.engine.cleanup import remove_owned  # noqa: E402
from orchestrator.engine.docker_engine import DockerEngine  # noqa: E402
from orchestrator.images import prepare_runtime_image  # noqa: E402
from orchestrator.planning import labels as L  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def cpu(pid: int) -> float:
    """User + system CPU seconds of a process so far (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK


def pids_of(name: str) -> list[int]:
    out = subprocess.run(["pgrep", "-x", name], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def engine_cpu() -> float:
    return sum(cpu(p) for p in pids_of("dockerd") + pids_of("containerd"))


def measure(window: float, pids: dict[str, int]) -> dict[str, float]:
    """Cores used over `window` seconds: the engine, and each named pid."""
    before = {"engine": engine_cpu(), **{k: cpu(p) for k, p in pids.items()}}
    started = time.monotonic()
    time.sleep(window)
    took = time.monotonic() - started
    after = {"engine": engine_cpu(), **{k: cpu(p) for k, p in pids.items()}}
    return {k: (after[k] - before[k]) / took for k in before}


def raw_lister(name: str, stop: threading.Event) -> None:
    client = docker.from_env()
    try:
        while not stop.wait(1.0):
            client.containers.list(all=True, sparse=True, filters={  # one API call
                "label": [f"{L.MANAGED}=true", f"{L.DEPLOYMENT}={name}"]})
    finally:
        client.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--replicas", type=int, default=8)
    parser.add_argument("--window", type=float, default=20.0)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    if not pids_of("dockerd"):
        print("dockerd is not visible in this PID namespace: cannot measure", file=sys.stderr)
        return 2
    engine = DockerEngine.from_env()
    # a tag of our own (a build elsewhere prunes outdated hash tags, never given tags);
    # never retag `latest` or prune images others may use
    image = prepare_runtime_image(engine, tag="orchestrator-runtime:bench-healer",
                                  prune=False).ref
    name = f"bench-heal-{uuid.uuid4().hex[:6]}"
    state = Path(tempfile.mkdtemp(prefix="bench-healer-"))
    os.environ[sv.STATE_DIR_ENV] = str(state)
    paths = sv.Paths.for_engine()
    dep = Deployment(name=name, uses=f"{ROOT}/executors/echo.py:Echo",
                     replicas=args.replicas, image=image, engine=engine, reaper=False,
                     heal_after=30, supervised=True)
    results: dict[str, list[dict[str, float]]] = {"off": [], "ref": [], "on": []}
    try:
        dep.start()
        dep.stop_healing()  # this process does not heal: the phases say who does
        head_pid = _container_pid(f"{name}-head")
        print(f"{name}: head + {args.replicas} workers up; window {args.window:g}s, "
              f"{args.rounds} round(s)", flush=True)
        for _ in range(args.rounds):
            results["off"].append(measure(args.window, {"head": head_pid}))
            stop = threading.Event()
            lister = threading.Thread(target=raw_lister, args=(name, stop), daemon=True)
            lister.start()
            results["ref"].append(measure(args.window, {"head": head_pid,
                                                        "bench": os.getpid()}))
            stop.set()
            lister.join()
            now = sv.start(paths)
            assert now.pid is not None
            time.sleep(3)  # let it attach (its start-up is not the idle cost)
            results["on"].append(measure(args.window, {"head": head_pid,
                                                       "supervisor": now.pid}))
            sv.stop(paths)
    finally:
        sv.stop(paths)
        dep.close()
        remove_owned(engine, name, grace=0)
        engine.close()
    report(results, args.replicas)
    return 0


def _container_pid(name: str) -> int:
    client = docker.from_env()
    try:
        return int(client.containers.get(name).attrs["State"]["Pid"])
    finally:
        client.close()


def report(results: dict[str, list[dict[str, float]]], replicas: int) -> None:
    def mean(phase: str, key: str) -> float:
        return statistics.mean(r.get(key, 0.0) for r in results[phase])

    print(f"\nidle cost of healing, {replicas} replicas (cores = CPU seconds per second)")
    print(f"{'phase':<8}{'engine':>10}{'head':>10}{'healer':>10}")
    for phase, who in (("off", ""), ("ref", "bench"), ("on", "supervisor")):
        print(f"{phase:<8}{mean(phase, 'engine'):>10.4f}{mean(phase, 'head'):>10.4f}"
              f"{mean(phase, who) if who else 0.0:>10.4f}")
    extra_on = mean("on", "engine") - mean("off", "engine")
    extra_ref = mean("ref", "engine") - mean("off", "engine")
    print(f"\nsupervisor: {mean('on', 'supervisor'):.4f} cores; dockerd+containerd extra: "
          f"{extra_on:+.4f} cores (reference raw listing once a second: {extra_ref:+.4f}; "
          f"ratio {extra_on / extra_ref if extra_ref > 0 else float('nan'):.2f}); "
          f"head extra: {mean('on', 'head') - mean('off', 'head'):+.4f} cores")


if __name__ == "__main__":
    raise SystemExit(main())
