"""Benchmark: the head's HTTP interface against its gRPC path, p50 through the head, one run.

    .venv/bin/python bench/bench_http.py [--requests 2000] [--docs 1 --docs 100]

Starts one worker and one head with `--http` through the real entry point
(`python -m orchestrator.runtime ...`) on loopback, and measures sequential requests to the
same endpoint, interleaved in rounds so machine noise hits every target alike:

  (a) gRPC direct to the worker: the physical reference, no head;
  (g) gRPC through the head (`Client.post`: the head's relay fast path);
  (h) HTTP through the head: `POST /echo` with a JSON body on one kept-alive connection
      (`http.client`, the client's `json.dumps` / `json.loads` included, as the gRPC
      client's encoding is in (g));
  (p) HTTP `POST /post` with `exec_endpoint`, the same otherwise;
  (n) HTTP with a new connection per request (what one `curl` per request pays).

Prints p50/p99 per target and the ratios h/g (the HTTP path's overhead) and g/a, h/a.
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_head import free_port, payload, pct, processes, spawn, wait_ready  # noqa: E402

from orchestrator import Client  # noqa: E402

Call = Callable[[list[dict[str, Any]]], list[dict[str, Any]]]


def http_call(port: int, path: str, exec_endpoint: str | None = None,
              fresh: bool = False) -> Call:
    """POST `path` with Jina's JSON request model; returns the result docs."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def call(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        nonlocal conn
        body: dict[str, Any] = {"data": docs}
        if exec_endpoint:
            body["exec_endpoint"] = exec_endpoint
        if fresh:
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("POST", path, body=json.dumps(body).encode(),
                     headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        out = json.loads(resp.read())
        if resp.status != 200:
            raise SystemExit(f"HTTP {resp.status}: {out}")
        data: list[dict[str, Any]] = out["data"]
        return data

    return call


def measure(calls: dict[str, Call], n: int, docs: list[dict[str, Any]],
            rounds: int = 10) -> dict[str, list[float]]:
    samples: dict[str, list[float]] = {k: [] for k in calls}
    for call in calls.values():  # warm-up: connections, caches
        for _ in range(100):
            assert len(call(docs)) == len(docs)
    for _ in range(rounds):
        for name, call in calls.items():
            for _ in range(n // rounds):
                t = time.perf_counter()
                call(docs)
                samples[name].append(time.perf_counter() - t)
    return samples


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--requests", type=int, default=2000, help="per target and size")
    ap.add_argument("--docs", type=int, action="append", help="docs per request (repeat; "
                    "default 1 and 100)")
    args = ap.parse_args()
    sizes = args.docs or [1, 100]
    uses = f"{ROOT / 'bench' / 'bench_head.py'}:Bench"
    wport, hport = free_port(), free_port()
    with processes() as procs:
        spawn(procs, "worker", "--uses", uses, "--port", str(wport))
        spawn(procs, "head", "--shards", "1", "--port", str(hport), "--http",
              "--worker", f"0=127.0.0.1:{wport}")
        wait_ready([f"127.0.0.1:{wport}", f"127.0.0.1:{hport}"])
        with Client(f"127.0.0.1:{wport}") as direct, Client(f"127.0.0.1:{hport}") as head:
            calls: dict[str, Call] = {
                "a grpc direct": lambda docs: direct.post("/echo", docs),
                "g grpc head": lambda docs: head.post("/echo", docs),
                "h http head /echo": http_call(hport, "/echo"),
                "p http head /post": http_call(hport, "/post", "/echo"),
                "n http new conn": http_call(hport, "/echo", fresh=True),
            }
            for size in sizes:
                report(measure(calls, args.requests, payload(size)), size)


def report(lat: dict[str, list[float]], docs: int) -> None:
    print(f"\n/echo, {docs} doc(s) per request, sequential (p50 / p99 ms)")
    p50 = {k: pct(v, 0.5) for k, v in lat.items()}
    for name, xs in lat.items():
        print(f"  {name:20} p50 {p50[name]:7.3f}  p99 {pct(xs, 0.99):7.3f}")
    g, a = p50["g grpc head"], p50["a grpc direct"]
    for name in ("h http head /echo", "p http head /post", "n http new conn"):
        print(f"  {name[0]}/g p50 x{p50[name] / g:.2f}   {name[0]}/a p50 x{p50[name] / a:.2f}")
    print(f"  g/a p50 x{g / a:.2f}")


if __name__ == "__main__":
    main()
