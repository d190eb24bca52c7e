"""Benchmark: grpcio versions side by side, bare and with our own worker and client.

    .venv/bin/python bench/bench_grpcio.py [--versions 1.85.3 1.78.2 1.70.0 1.62.3]
                                           [--rounds 3] [--ours]

Every version gets its own venv under `.cache/grpcio-bench/<version>` (pip from the index,
once). In each round, and alternating versions so machine noise hits all of them alike:

  bare   a grpc.aio server with one generic unary handler that returns its request
         (raw bytes, no protobuf), in its own process, and a grpc.aio client in another:
         p50 of 2,000 sequential calls, then req/s with 16 calls in flight for 3 s;
  ours   (--ours) the same two figures with this project's worker runtime
         (`python -m orchestrator.runtime worker`, executors/echo.py) and its AsyncClient,
         the versions' venvs getting this checkout on PYTHONPATH: a version our generated
         code refuses (grpcio older than `GRPC_GENERATED_VERSION`) is reported as such.

Ratios are against the first version of `--versions` (the pinned one).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache" / "grpcio-bench"

SERVER = r"""
import asyncio, sys, grpc
async def main(port):
    server = grpc.aio.server()
    ident = lambda b: b
    async def call(req, ctx):
        return req
    handler = grpc.method_handlers_generic_handler(
        "bench.Echo", {"Call": grpc.unary_unary_rpc_method_handler(
            call, request_deserializer=ident, response_serializer=ident)})
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print("ready", flush=True)
    await server.wait_for_termination()
asyncio.run(main(int(sys.argv[1])))
"""

CLIENT = r"""
import asyncio, json, statistics, sys, time, grpc
PAYLOAD = b"x" * 64
async def main(address, sequential, seconds, concurrency):
    async with grpc.aio.insecure_channel(address) as channel:
        call = channel.unary_unary("/bench.Echo/Call")
        for _ in range(200):
            await call(PAYLOAD)
        lat = []
        for _ in range(sequential):
            t = time.perf_counter()
            await call(PAYLOAD)
            lat.append(time.perf_counter() - t)
        done = 0
        stop = time.perf_counter() + seconds
        async def loop():
            nonlocal done
            while time.perf_counter() < stop:
                await call(PAYLOAD)
                done += 1
        start = time.perf_counter()
        await asyncio.gather(*(loop() for _ in range(concurrency)))
        rps = done / (time.perf_counter() - start)
    print(json.dumps({"p50": statistics.median(lat), "rps": rps}))
asyncio.run(main(sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])))
"""

OURS_CLIENT = r"""
import asyncio, json, statistics, sys, time
from orchestrator import AsyncClient
async def main(address, sequential, seconds, concurrency):
    async with AsyncClient(address) as client:
        for _ in range(200):
            await client.post("/echo", [{"i": 1}])
        lat = []
        for _ in range(sequential):
            t = time.perf_counter()
            await client.post("/echo", [{"i": 1}])
            lat.append(time.perf_counter() - t)
        done = 0
        stop = time.perf_counter() + seconds
        async def loop():
            nonlocal done
            while time.perf_counter() < stop:
                await client.post("/echo", [{"i": 1}])
                done += 1
        start = time.perf_counter()
        await asyncio.gather(*(loop() for _ in range(concurrency)))
        rps = done / (time.perf_counter() - start)
    print(json.dumps({"p50": statistics.median(lat), "rps": rps}))
asyncio.run(main(sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])))
"""


def venv_for(version: str) -> Path:
    """A venv with grpcio==version and grpcio-health-checking==version (+ the runtime's
    other dependencies at our pins' range), made once."""
    env = CACHE / version
    py = env / "bin" / "python"
    if not (env / ".complete").exists():
        subprocess.run([sys.executable, "-m", "venv", str(env)], check=True)
        pip = [str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
        subprocess.run([*pip, f"grpcio=={version}", "protobuf>=7.35.1,<8",
                        "prometheus-client"], check=True)
        # its own pins may ask for an older protobuf than our generated code needs: the
        # import then fails and the version is reported as not supported
        minor = ".".join(version.split(".")[:2])
        subprocess.run([*pip, "--no-deps", f"grpcio-health-checking=={minor}.*"], check=True)
        (env / ".complete").touch()
    return py


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def measure(py: Path, ours: bool, sequential: int, seconds: float,
            concurrency: int) -> dict[str, float] | str:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "ORCHESTRATOR_TOKEN": "bench"}
    if ours:
        cmd = [str(py), "-m", "orchestrator.runtime", "worker", "--uses",
               f"{ROOT}/executors/echo.py:Echo", "--port", str(port), "--host", "127.0.0.1"]
    else:
        cmd = [str(py), "-c", SERVER, str(port)]
    server = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            if server.poll() is not None:
                return "server failed: " + (server.stderr.read() if server.stderr else "")[-300:]
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if time.monotonic() > deadline:
                return "server not listening"
            time.sleep(0.05)
        client = subprocess.run(
            [str(py), "-c", OURS_CLIENT if ours else CLIENT, f"127.0.0.1:{port}",
             str(sequential), str(seconds), str(concurrency)],
            env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
        if client.returncode != 0:
            return "client failed: " + client.stderr.strip().splitlines()[-1][-300:]
        result: dict[str, float] = json.loads(client.stdout.strip().splitlines()[-1])
        return result
    finally:
        server.terminate()
        server.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--versions", nargs="+",
                        default=["1.85.3", "1.80.1", "1.75.1", "1.70.0", "1.66.2", "1.62.3"])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sequential", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--ours", action="store_true",
                        help="also measure this project's worker and client")
    args = parser.parse_args()
    pys = {v: venv_for(v) for v in args.versions}
    kinds = ["bare", "ours"] if args.ours else ["bare"]
    results: dict[tuple[str, str], list[dict[str, float]]] = {}
    errors: dict[tuple[str, str], str] = {}
    for r in range(args.rounds):
        for kind in kinds:
            order = args.versions if r % 2 == 0 else list(reversed(args.versions))
            for v in order:
                if (kind, v) in errors:
                    continue
                got = measure(pys[v], kind == "ours", args.sequential, args.seconds,
                              args.concurrency)
                if isinstance(got, str):
                    errors[(kind, v)] = got
                    continue
                results.setdefault((kind, v), []).append(got)
                print(f"round {r + 1} {kind:4} grpcio {v}: p50 {got['p50'] * 1000:.3f} ms, "
                      f"{got['rps']:.0f} req/s", flush=True)
    ref_v = args.versions[0]
    for kind in kinds:
        print(f"\n{kind}: medians over {args.rounds} rounds; ratios against grpcio {ref_v}")
        print("version   p50(ms)  x p50   req/s   x req/s")
        ref = results.get((kind, ref_v))
        for v in args.versions:
            if (kind, v) in errors:
                print(f"{v:8}  {errors[(kind, v)]}")
                continue
            rows = results[(kind, v)]
            p50 = statistics.median(x["p50"] for x in rows)
            rps = statistics.median(x["rps"] for x in rows)
            if ref:
                rp50 = statistics.median(x["p50"] for x in ref)
                rrps = statistics.median(x["rps"] for x in ref)
                print(f"{v:8}  {p50 * 1000:7.3f}  {p50 / rp50:5.2f}  {rps:6.0f}  "
                      f"{rps / rrps:7.2f}")
            else:
                print(f"{v:8}  {p50 * 1000:7.3f}  {rps:6.0f}")


if __name__ == "__main__":
    main()
