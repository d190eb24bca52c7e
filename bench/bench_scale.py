"""Benchmark: scale and density, N replicas on one host, each figure against a physical
reference measured in the same run.

    .venv/bin/python bench/bench_scale.py [--sizes 1 8 16 32 64] [--rounds 1]
        [--idle-at 64] [--route-at 1 8 64] [--memory-at 1 8 64] [--requests 100000]
        [--rollout 32 --surges 1 4] [--parts start rollout]

start + teardown (every N of --sizes, alternating reference and ours in each round):
  ref   a network, then N+1 raw containers on it (same image, command and security options
        as a pod; one publishes its port on 127.0.0.1, as the head does) created and
        started in parallel with the Docker SDK, each polled until gRPC SERVING; then all
        of them stopped (same grace) and removed in parallel, and their network removed;
  ours  `Deployment(replicas=N).start()` until ready, then `close()`.
  Ratios ours/ref for start (target <= 1.2, growing no faster than the reference) and
  teardown (target <= 1.1).
While the deployment of the first round runs (ours, at the sizes asked):
  idle (--idle-at)   CPU at rest without, then with, the deployment's background healer
        at its own cadence (as `orchestrator up` runs it): this process (the heal loop),
        dockerd, containerd, the head's container and the workers' containers (cgroup
        cpuacct). Target: heal loop + head < 2% of one core.
  route (--route-at)  p50 of sequential calls and req/s with 16 calls in flight, /work (about
        1 ms of Python CPU per call), through the head, against the same calls made
        directly to the same N workers in turn (client-side round robin, no head).
  memory (--memory-at)  the head's memory (engine figure, page cache excluded) after the
        routing load, against a bare grpcio aio server that answers health only, in the
        same image. At N=1 the worker first serves --requests /echo calls through the head
        (target: worker <= 1.15x of the bare server, head with 64 replicas <= 2x).
rollout (--rollout R): a deployment of R echo replicas under a paced load (a client
  process, --rate req/s): per surge in --surges, the raw replacement of R containers by
  hand in batches of `surge` (start new ones in parallel until SERVING, stop and remove the
  old ones in the background: batch 1 is the sum of single raw replacements, batch
  `surge` the parallel limit), then `rolling_update(max_surge=surge)`; failed requests
  (target 0).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import docker  # noqa: E402  (the reference is raw docker, on purpose)

from bench.loadproc import ProcessLoad  # noqa: E402
from orchestrator import AsyncClient  # noqa: E402
from orchestrator import labels as L  # noqa: E402
from orchestrator.control.background import heal_poll  # noqa: E402
from orchestrator.deployment import Deployment  # noqa: E402
from orchestrator.engine.docker_engine import DockerEngine  # noqa: E402
from orchestrator.health import GrpcHealthProbe  # noqa: E402
from orchestrator.images import ensure_runtime_image  # noqa: E402
from orchestrator.spec import UpdatePolicy  # noqa: E402

BENCH_DIR = str(ROOT / "bench")
ECHO_DIR = str(ROOT / "executors")
GRACE = 2.0
REF = "bench-scale-ref"
LABELS = {"orchestrator.managed": "true", "orchestrator.deployment": REF}
OWNED: dict[str, str | list[str] | bool] = {"label": f"orchestrator.deployment={REF}"}
WORK = {"n": 20_000}
REST = 3.0
"""Seconds after a load before a memory reading: the pods give freed memory back after
2 s without a request (orchestrator/runtime/memory.py); the bare server has no load."""

BARE_HEALTH = """
import asyncio, grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
async def main():
    server = grpc.aio.server()
    servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    await servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    server.add_insecure_port("0.0.0.0:50051")
    await server.start()
    await server.wait_for_termination()
asyncio.run(main())
"""


# -- raw Docker: the references ---------------------------------------------------------
def raw_worker(client: docker.DockerClient, image: str, network: str, probe: GrpcHealthProbe,
               uses: str = "scale", command: list[str] | None = None,
               publish: bool = False) -> Any:
    """One raw container (same image, command and options as a worker pod, its image
    HEALTHCHECK off as theirs), returned once it reports SERVING. `publish`: its port on
    a free port of 127.0.0.1, as a head's is (Docker runs a proxy process per published
    port, started and stopped with the container)."""
    volume, path = (BENCH_DIR, "/opt/uses/scale_executor.py:Work") if uses == "scale" \
        else (ECHO_DIR, "/opt/uses/echo.py:Echo")
    kwargs: dict[str, Any] = {}
    if command is not None:
        kwargs["entrypoint"] = command
    if publish:
        kwargs["ports"] = {"50051/tcp": ("127.0.0.1", None)}
    c = client.containers.run(
        image, None if command else ["worker", "--uses", path, "--port", "50051"],
        detach=True, labels=LABELS, network=network, user="10001:10001",
        cap_drop=["ALL"], security_opt=["no-new-privileges"],
        volumes={volume: {"bind": "/opt/uses", "mode": "ro"}},
        healthcheck={"test": ["NONE"]},  # as worker pods: no exec'd probe per replica
        **kwargs,
    )
    c.reload()
    ip = c.attrs["NetworkSettings"]["Networks"][network]["IPAddress"]
    deadline = time.monotonic() + 300
    while not probe.serving(f"{ip}:50051"):
        if time.monotonic() > deadline:
            raise RuntimeError(f"raw container {c.name} not SERVING after 300 s")
        time.sleep(0.02)
    return c


def parallel(fn: Callable[[Any], Any], items: list[Any]) -> list[Any]:
    if not items:
        return []
    with ThreadPoolExecutor(len(items)) as pool:
        return list(pool.map(fn, items))


def retire(c: Any) -> None:
    c.stop(timeout=int(GRACE))
    c.remove()


def raw_cycle(client: docker.DockerClient, image: str, count: int) -> tuple[float, float]:
    """(start, teardown) seconds of `count` raw containers, all in parallel."""
    probe = GrpcHealthProbe(timeout=0.5)
    started = time.monotonic()  # the network is part of the work, as it is of ours
    net = client.networks.create(f"{REF}-{uuid.uuid4().hex[:6]}", labels=LABELS)
    try:
        containers = parallel(lambda i: raw_worker(client, image, net.name, probe,
                                                   publish=i == 0),
                              list(range(count)))
        start = time.monotonic() - started
        probe.close()
        stopping = time.monotonic()
        parallel(retire, containers)
        remove_network(net)
        teardown = time.monotonic() - stopping
    finally:
        cleanup_ref(client)
    return start, teardown


def remove_network(net: Any, patience: float = 10.0) -> None:
    """Docker 20.10 can refuse ("has active endpoints") a network whose containers were
    just removed, and sometimes for good: retry for `patience` seconds, then say so."""
    deadline = time.monotonic() + patience
    while True:
        try:
            net.remove()
            return
        except docker.errors.APIError as exc:
            if "active endpoints" not in str(exc) or time.monotonic() > deadline:
                print(f"  (reference network {net.name} not removed: {exc})", flush=True)
                return
            time.sleep(0.05)


def cleanup_ref(client: docker.DockerClient) -> None:
    for c in client.containers.list(all=True, filters=OWNED):
        with contextlib.suppress(docker.errors.NotFound):
            c.remove(force=True)
    for n in client.networks.list(filters=OWNED):
        with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
            n.remove()


# -- CPU accounting ---------------------------------------------------------------------
def proc_cpu(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads) so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cgroup_cpu(cid: str) -> float:
    """CPU seconds of every process a container ran (execs included), cgroup v1 or v2."""
    for path in (f"/sys/fs/cgroup/cpuacct/docker/{cid}/cpuacct.usage",
                 f"/sys/fs/cgroup/docker/{cid}/cpu.stat",
                 f"/sys/fs/cgroup/system.slice/docker-{cid}.scope/cpu.stat"):
        with contextlib.suppress(OSError):
            text = Path(path).read_text()
            if path.endswith("cpuacct.usage"):
                return int(text) / 1e9
            usage = next(line for line in text.splitlines() if line.startswith("usage_usec"))
            return int(usage.split()[1]) / 1e6
    return 0.0


def pids_of(name: str) -> list[int]:
    out = subprocess.run(["pgrep", "-x", name], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def snapshot(head_id: str, worker_ids: list[str]) -> dict[str, float]:
    return {
        "heal loop (this process)": time.process_time(),
        "dockerd": sum(proc_cpu(p) for p in pids_of("dockerd")),
        "containerd": sum(proc_cpu(p) for p in pids_of("containerd")),
        "head container": cgroup_cpu(head_id),
        "worker containers": sum(cgroup_cpu(w) for w in worker_ids),
    }


def idle_cpu(dep: Deployment, client: docker.DockerClient, seconds: float,
             ticks: int = 20) -> None:
    """CPU at rest, over two windows of `seconds`: A with the deployment's background
    healer stopped (the head's health checks, the workers answering them, dockerd's quiet
    rate), then B with it running at its own cadence (`heal_poll(heal_after)`: a look every
    3 s at the default 30 s). The heal loop costs B - A of this process, dockerd +
    containerd and the head (the call it answers). Then `ticks` looks back to back give
    one look's cost (what `heal()` every second would cost)."""
    containers = client.containers.list(filters={"label": f"{L.DEPLOYMENT}={dep.name}"})
    head = next(c for c in containers if c.labels.get(L.ROLE) == "head")
    workers = [c.id for c in containers if c.labels.get(L.ROLE) == "worker"]
    n = len(workers)
    after = dep.spec.heal_after or 30.0

    def window() -> dict[str, float]:
        before, t0 = snapshot(head.id, workers), time.monotonic()
        time.sleep(seconds)
        end, t1 = snapshot(head.id, workers), time.monotonic()
        return {k: (end[k] - before[k]) / (t1 - t0) for k in before}

    dep.stop_healing()
    rest = window()
    dep.start_healing(after)
    healing = window()
    dep.stop_healing()
    quiet1, t1 = snapshot(head.id, workers), time.monotonic()
    for _ in range(ticks):
        dep.heal(after)
    burst, t2 = snapshot(head.id, workers), time.monotonic()
    per_tick = {k: (burst[k] - quiet1[k] - rest[k] * (t2 - t1)) / ticks for k in rest}
    print(f"  idle CPU with {n} replicas, % of one core over {seconds:.0f} s windows "
          f"(A: at rest, healer off; B: healer on, a look every "
          f"{heal_poll(after):.0f} s):")
    for key in rest:
        print(f"    {key:26} A {rest[key] * 100:6.2f}   B {healing[key] * 100:6.2f}")
    heal_keys = ("heal loop (this process)", "dockerd", "containerd", "head container")
    loop_pct = sum(healing[k] - rest[k] for k in heal_keys) * 100
    head_pct = rest["head container"] * 100
    tick_ms = {k: per_tick[k] * 1000 for k in heal_keys}
    workers_pct = rest["worker containers"] * 100
    print(f"    one look ({ticks} back to back, {(t2 - t1) / ticks * 1000:.0f} ms each): "
          + ", ".join(f"{k} {v:.1f} ms" for k, v in tick_ms.items())
          + f" (at 1 look/s: {sum(per_tick[k] for k in heal_keys) * 100:.2f}%)")
    print(f"    => heal loop {loop_pct:.2f}% (B - A) + head at rest {head_pct:.2f}% = "
          f"{loop_pct + head_pct:.2f}% of one core (target < 2%); the workers (answering "
          f"the head's checks): {workers_pct:.2f}% ({workers_pct / n:.3f}% per replica)",
          flush=True)


# -- routing ----------------------------------------------------------------------------
async def _route(addresses: list[str], sequential: int, seconds: float,
                 concurrency: int) -> tuple[float, float]:
    clients = [AsyncClient(a) for a in addresses]
    try:
        for c in clients:
            await c.post("/work", [{}], WORK)
        lat = []
        for i in range(sequential):
            t = time.perf_counter()
            await clients[i % len(clients)].post("/work", [{}], WORK)
            lat.append(time.perf_counter() - t)
        done = 0
        stop = time.perf_counter() + seconds

        async def loop(k: int) -> None:
            nonlocal done
            i = k
            while time.perf_counter() < stop:
                await clients[i % len(clients)].post("/work", [{}], WORK)
                i += concurrency
                done += 1

        start = time.perf_counter()
        await asyncio.gather(*(loop(k) for k in range(concurrency)))
        return statistics.median(lat), done / (time.perf_counter() - start)
    finally:
        for c in clients:
            await c.close()


def worker_addresses(dep: Deployment) -> list[str]:
    infos = dep.engine.list_containers({**L.for_deployment(dep.name), L.ROLE: "worker"},
                                       brief=True)
    return [f"{i.ip_addresses[dep.network]}:50051" for i in infos]


def routing(dep: Deployment, n: int, rounds: int = 2) -> None:
    direct = worker_addresses(dep)
    mine, refs = [], []
    for _ in range(rounds):
        refs.append(asyncio.run(_route(direct, 300, 3.0, 16)))
        mine.append(asyncio.run(_route([dep.address], 300, 3.0, 16)))
    p50 = statistics.median(m[0] for m in mine)
    ref_p50 = statistics.median(r[0] for r in refs)
    rps = statistics.median(m[1] for m in mine)
    ref_rps = statistics.median(r[1] for r in refs)
    print(f"  routing /work with {n} replicas: p50 {p50 * 1000:.2f} ms vs direct round robin "
          f"{ref_p50 * 1000:.2f} ms (x{p50 / ref_p50:.2f}); {rps:.0f} req/s vs direct "
          f"{ref_rps:.0f} (x{rps / ref_rps:.2f})", flush=True)


# -- memory -----------------------------------------------------------------------------
def bare_memory(engine: DockerEngine, client: docker.DockerClient, image: str
                ) -> tuple[int, float]:
    probe = GrpcHealthProbe(timeout=0.5)
    net = client.networks.create(f"{REF}-{uuid.uuid4().hex[:6]}", labels=LABELS)
    try:
        c = raw_worker(client, image, net.name, probe,
                       command=["/opt/venv/bin/python", "-c", BARE_HEALTH])
        time.sleep(1.0)
        return engine.container_stats(c.id).memory_bytes, rss_mib(client, c.id)
    finally:
        probe.close()
        cleanup_ref(client)


async def _load(address: str, total: int, concurrency: int = 32) -> None:
    async with AsyncClient(address) as client:
        left = total

        async def loop() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                await client.post("/echo", [{"i": 1}])

        await asyncio.gather(*(loop() for _ in range(concurrency)))


def rss_mib(client: docker.DockerClient, name: str) -> float:
    """Resident memory of a container's main process (same PID namespace as the host)."""
    pid = client.api.inspect_container(name)["State"]["Pid"]
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def memory(dep: Deployment, client: docker.DockerClient, n: int, bare: int,
           bare_rss: float, requests: int, probes: int = 0) -> None:
    engine = dep.engine
    mib = 1024 * 1024
    head_name = dep.state.head_name
    time.sleep(REST)  # at rest: after the routing load, past the pods' idle trim
    head = engine.container_stats(head_name).memory_bytes
    line = f"  memory with {n} replicas: head {head / mib:.1f} MiB, RSS " \
           f"{rss_mib(client, head_name):.1f} (x{head / bare:.2f} of the bare grpcio health " \
           f"server, {bare / mib:.1f} MiB, RSS {bare_rss:.1f})"
    if n == 1 and requests:
        worker = dep.state.workers()[0].name
        before = engine.container_stats(worker).memory_bytes
        before_rss = rss_mib(client, worker)
        started = time.monotonic()
        asyncio.run(_load(dep.address, requests))
        took = time.monotonic() - started
        time.sleep(REST)
        after = engine.container_stats(worker).memory_bytes
        head_after = engine.container_stats(head_name).memory_bytes
        line += (f"; worker {before / mib:.1f} MiB at rest, RSS {before_rss:.1f} "
                 f"(x{before / bare:.2f}), {after / mib:.1f} MiB, RSS "
                 f"{rss_mib(client, worker):.1f} after {requests} requests in {took:.0f}s "
                 f"(x{after / bare:.2f}, target <= 1.15); head after them "
                 f"{head_after / mib:.1f} MiB, RSS {rss_mib(client, head_name):.1f} "
                 f"(x{head_after / bare:.2f})")
    print(line, flush=True)
    if probes:
        # the image's HEALTHCHECK execs its probe in the head's container every 30 s, and
        # an exec can move page cache to the active list, which the engine figure counts
        runs = health_runs(client, head_name) + probes
        deadline = time.monotonic() + 40 * probes + 30
        while health_runs(client, head_name) < runs and time.monotonic() < deadline:
            time.sleep(1.0)
        later = engine.container_stats(head_name).memory_bytes
        print(f"  memory with {n} replicas after {probes} more HEALTHCHECK runs "
              f"({health_runs(client, head_name)} in all): head {later / mib:.1f} MiB, RSS "
              f"{rss_mib(client, head_name):.1f} (x{later / bare:.2f}, target <= 2)",
              flush=True)


_HEALTH_RUNS: dict[str, set[str]] = {}


def health_runs(client: docker.DockerClient, name: str) -> int:
    """How many HEALTHCHECK runs of the container this process has seen (Docker's log keeps
    the last 5; polled at least every interval, none is missed)."""
    health = client.api.inspect_container(name)["State"].get("Health") or {}
    seen = _HEALTH_RUNS.setdefault(name, set())
    seen.update(entry.get("Start", "") for entry in health.get("Log") or [])
    return len(seen)


# -- start and teardown -----------------------------------------------------------------
def our_cycle(image: str, n: int, extras: Callable[[Deployment], None] | None
              ) -> tuple[float, float]:
    dep = Deployment(name=f"scale-{uuid.uuid4().hex[:6]}",
                     uses=f"{BENCH_DIR}/scale_executor.py:Work", replicas=n, image=image,
                     stop_grace=GRACE, timeout_ready=300)
    try:
        started = time.monotonic()
        dep.start()
        start = time.monotonic() - started
        assert dep.post("/echo", docs=[{}])
        if extras is not None:
            extras(dep)
    finally:
        stopping = time.monotonic()
        dep.close()
        teardown = time.monotonic() - stopping
    return start, teardown


def start_teardown(args: argparse.Namespace, image: str, engine: DockerEngine,
                   client: docker.DockerClient) -> None:
    bare, bare_rss = bare_memory(engine, client, image) if args.memory_at else (0, 0.0)
    rows = []
    for n in args.sizes:
        refs, mine = [], []
        for r in range(args.rounds):
            refs.append((float("nan"), float("nan")) if args.ours_only
                        else raw_cycle(client, image, n + 1))

            def extras(dep: Deployment, n: int = n) -> None:
                if n in args.idle_at:
                    idle_cpu(dep, client, args.idle_seconds)
                if n in args.route_at:
                    routing(dep, n)
                if n in args.memory_at:
                    memory(dep, client, n, bare, bare_rss, args.requests,
                           args.probes if n == max(args.memory_at) else 0)

            mine.append(our_cycle(image, n, extras if r == 0 else None))
            print(f"N={n} round {r + 1}: start ours {mine[-1][0]:.2f}s ref {refs[-1][0]:.2f}s "
                  f"(x{mine[-1][0] / refs[-1][0]:.2f}); teardown ours {mine[-1][1]:.2f}s ref "
                  f"{refs[-1][1]:.2f}s (x{mine[-1][1] / refs[-1][1]:.2f})", flush=True)
        rs = statistics.median(x[0] for x in refs)
        rt = statistics.median(x[1] for x in refs)
        ms = statistics.median(x[0] for x in mine)
        mt = statistics.median(x[1] for x in mine)
        rows.append((n, rs, ms, rt, mt))
    print("\nN   start ref  ours   x      teardown ref  ours   x     (targets 1.2 / 1.1)")
    for n, rs, ms, rt, mt in rows:
        print(f"{n:<3} {rs:9.2f} {ms:5.2f} {ms / rs:5.2f}  {rt:12.2f} {mt:5.2f} {mt / rt:5.2f}")
    if len(rows) > 1:
        a, b = rows[0], rows[-1]
        print(f"growth N={a[0]}->{b[0]}: start ours x{b[2] / a[2]:.2f}, reference "
              f"x{b[1] / a[1]:.2f}; teardown ours x{b[4] / a[4]:.2f}, reference "
              f"x{b[3] / a[3]:.2f}")


# -- rolling update ---------------------------------------------------------------------
def raw_replace(client: docker.DockerClient, image: str, replicas: int, batch: int) -> float:
    """Seconds to replace `replicas` raw containers by hand, `batch` at a time (started
    in parallel until SERVING; the old ones stopped and removed in the background)."""
    probe = GrpcHealthProbe(timeout=0.5)
    net = client.networks.create(f"{REF}-{uuid.uuid4().hex[:6]}", labels=LABELS)
    try:
        old = parallel(lambda _i: raw_worker(client, image, net.name, probe, "echo"),
                       list(range(replicas)))
        started = time.monotonic()
        with ThreadPoolExecutor(replicas) as pool:
            stops = []
            for i in range(0, replicas, batch):
                parallel(lambda _i: raw_worker(client, image, net.name, probe, "echo"),
                         list(range(min(batch, replicas - i))))
                stops += [pool.submit(retire, c) for c in old[i:i + batch]]
            for s in stops:
                s.result()
        return time.monotonic() - started
    finally:
        probe.close()
        cleanup_ref(client)


def rollout(args: argparse.Namespace, image: str, client: docker.DockerClient) -> None:
    replicas = args.rollout
    dep = Deployment(name=f"scale-{uuid.uuid4().hex[:6]}", uses=f"{ECHO_DIR}/echo.py:Echo",
                     uses_with={"tag": "v0"}, replicas=replicas, image=image,
                     stop_grace=GRACE, timeout_ready=300)
    windows = []
    with dep, ProcessLoad(dep.address, threads=2, rate=args.rate) as load:
        load.wait_for(100)
        for i, surge in enumerate(args.surges, 1):
            seq = raw_replace(client, image, replicas, 1) if i == 1 else windows[0][2]
            par = raw_replace(client, image, replicas, surge) if surge > 1 else seq
            policy = UpdatePolicy(max_surge=surge, max_unavailable=0, stop_grace=GRACE)
            started = time.monotonic()
            dep.rolling_update_sync(uses_with={"tag": f"v{i}"}, policy=policy)
            ended = time.monotonic()
            windows.append((surge, ended - started, seq, par, started, ended))
            print(f"  surge {surge}: {ended - started:.1f}s", flush=True)
        load.wait_for(50)
        samples = load.stop()
    print(f"rolling update of {replicas} replicas under {args.rate:g} req/s "
          f"({len(samples)} requests, {sum(1 for *_, ok in samples if not ok)} failed; "
          f"target 0):")
    for surge, took, seq, par, started, ended in windows:
        during = [s for s in samples if started <= s[0] < ended]
        failed = sum(1 for *_, ok in during if not ok)
        print(f"  surge {surge}: {took:.1f}s; raw replacements one at a time (the sum) "
              f"{seq:.1f}s (x{took / seq:.2f}); {surge} at a time (parallel limit) "
              f"{par:.1f}s (x{took / par:.2f}); requests during it {len(during)}, "
              f"failed {failed}")


def pinned(client: docker.DockerClient, image: str) -> str:
    """The content-hash tag of `image`: `orchestrator-runtime:latest` is one name for every
    checkout that builds on this engine, and another may move it during the run."""
    tags = client.images.get(image).tags
    repo = image.rsplit(":", 1)[0]
    return next((t for t in tags if t.startswith(f"{repo}:") and t != f"{repo}:latest"),
                image)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", nargs="+", default=["start", "rollout"],
                        choices=["start", "rollout"])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 8, 16, 32, 64])
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--idle-at", type=int, nargs="*", default=[64])
    parser.add_argument("--idle-seconds", type=float, default=20.0)
    parser.add_argument("--route-at", type=int, nargs="*", default=[1, 8, 64])
    parser.add_argument("--memory-at", type=int, nargs="*", default=[1, 8, 64])
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--probes", type=int, default=3, help="at the largest --memory-at, "
                        "the head's memory again after this many more HEALTHCHECK runs")
    parser.add_argument("--rollout", type=int, default=32)
    parser.add_argument("--surges", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--ours-only", action="store_true",
                        help="skip the raw references of start and teardown (no ratios)")
    args = parser.parse_args()
    engine = DockerEngine.from_env()
    client = docker.from_env(max_pool_size=128)
    image = pinned(client, ensure_runtime_image(engine, log=lambda _m: None))
    try:
        if "start" in args.parts:
            start_teardown(args, image, engine, client)
        if "rollout" in args.parts and args.rollout:
            rollout(args, image, client)
    finally:
        cleanup_ref(client)
        client.close()
        engine.close()


if __name__ == "__main__":
    main()
