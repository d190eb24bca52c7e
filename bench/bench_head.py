"""Benchmark: the head's overhead against a direct call to one worker, in one run.

    .venv/bin/python bench/bench_head.py [--requests 2000] [--seconds 3] [--concurrency 16]

Starts worker and head processes through the real entry point
(`python -m orchestrator.runtime ...`) on loopback and measures, for the same call:
  (a) direct to one worker, (b1) through a head with 1 replica, (b3) with 3 replicas.
Latency: sequential unary calls (p50/p99), interleaved in rounds so machine noise hits all
targets alike; (a3) rotates over the 3 workers directly, the physical cost of waking a
different idle process per call, which (b3) pays too. Throughput: `--concurrency` calls in
flight from one asyncio client, in `--rounds` interleaved rounds (median), with the CPU time
each server process spent per request.
Two workloads: `/echo` (one small doc; pure overhead) and `/block` (a sync handler that
blocks `--block-ms`, like a model call: replicas exist for this). Prints ratios b/a.

On 2 cores a Python load generator takes as much CPU as the servers it measures, so /echo
throughput is measured a second time with h2load (nghttp2's C load generator, installed by
bench/setup) sending the same serialized gRPC call: every response is checked by its
byte count against one decoded reference reply. There, (a3) drives the 3 workers directly
and at once: the most 3 replicas can serve on this machine, with no head at all. Two
production gRPC load balancers written in C, nginx (grpc_pass) and HAProxy (proto h2), each
one process balancing least-connections over the same 3 workers, are measured like (b3), for
latency and throughput: the physical cost of any proxy hop on this machine (bench/setup
installs both; a missing one is skipped). Each hop's CPU per request is printed beside its
rate.

`--tls` adds a TLS section, in the same run: a head with one worker, in clear and with TLS
(`--tls-cert/--tls-key`), against nginx in front of the same worker, in clear and with TLS
(`listen ssl http2`, the reference): p50 of sequential unary calls (grpcio clients trusting
a CA made here with trustme) and the CPU per request of the head or nginx under h2load
(over TLS: `https://`, ALPN h2). Ratios: TLS/clear for each, and the head against nginx.
`--only-tls` runs just that section.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import re
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import grpc  # noqa: E402

from orchestrator import AsyncClient, Client, Executor, requests  # noqa: E402
from orchestrator.runtime import wire  # noqa: E402


class Bench(Executor):
    """Workloads of this benchmark (loaded by the workers from this file)."""

    @requests(on="/echo")
    def echo(self, docs: list[dict[str, Any]], **kwargs: Any) -> None:
        for d in docs:
            d["replica"] = self.runtime_args.replica_id

    @requests(on="/block")
    def block(self, docs: list[dict[str, Any]], parameters: dict[str, Any], **kw: Any) -> None:
        time.sleep(float(parameters.get("ms", 5)) / 1000)  # a blocking model call


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    try:
        yield procs
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def spawn(procs: list[subprocess.Popen[bytes]], *args: str) -> None:
    env = {**os.environ, "ORCHESTRATOR_TOKEN": "bench", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "orchestrator.runtime", *args, "--host", "127.0.0.1"]
    procs.append(subprocess.Popen(cmd, env=env, cwd=ROOT))


def wait_ready(addresses: list[str], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    for address in addresses:
        with Client(address) as c:
            while not c.is_ready(timeout=0.5):
                if time.monotonic() > deadline:
                    raise SystemExit(f"{address} not ready after {timeout}s")
                time.sleep(0.05)


NGINX_CONF = """\
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
{user}
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_body_temp_path {dir}; proxy_temp_path {dir}; fastcgi_temp_path {dir};
  uwsgi_temp_path {dir}; scgi_temp_path {dir};
  upstream workers {{ least_conn; {servers} keepalive 32; }}
  server {{
    listen 127.0.0.1:{port} http2;
    keepalive_requests 1000000;
    location / {{ grpc_pass grpc://workers; }}
  }}
}}
"""

HAPROXY_CFG = """\
global
  nbthread 1
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
frontend grpc
  bind 127.0.0.1:{port} proto h2
  default_backend workers
backend workers
  balance leastconn
  http-reuse always
{servers}
"""


@contextmanager
def reference_proxies(workers: list[str]) -> Iterator[dict[str, tuple[str, list[int]]]]:
    """nginx and HAProxy in front of `workers`, each one process (like the head): name ->
    (address, pids that serve). A proxy whose binary is missing is left out, with a line
    saying so."""
    found: dict[str, tuple[str, list[int]]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-head-") as tmp, processes() as procs:
        if shutil.which("nginx"):
            port = free_port()
            Path(tmp, "nginx.conf").write_text(NGINX_CONF.format(
                dir=tmp, port=port, user="user root;" if os.geteuid() == 0 else "",
                servers=" ".join(f"server {w};" for w in workers)))
            procs.append(subprocess.Popen(
                ["nginx", "-p", tmp, "-e", f"{tmp}/error.log", "-c", f"{tmp}/nginx.conf",
                 "-g", "daemon off;"]))
            found["nginx x3"] = (f"127.0.0.1:{port}", [procs[-1].pid])
        else:
            print("nginx not found (bench/setup installs it): its reference is skipped")
        if shutil.which("haproxy"):
            port = free_port()
            Path(tmp, "haproxy.cfg").write_text(HAPROXY_CFG.format(
                port=port, servers="\n".join(f"  server w{i} {w} proto h2"
                                             for i, w in enumerate(workers))))
            procs.append(subprocess.Popen(["haproxy", "-db", "-f", f"{tmp}/haproxy.cfg"]))
            found["haproxy x3"] = (f"127.0.0.1:{port}", [procs[-1].pid])
        else:
            print("haproxy not found (bench/setup installs it): its reference is skipped")
        wait_ready([address for address, _ in found.values()])  # Health, through the proxy
        for name, (address, pids) in found.items():  # nginx serves from its worker process
            children = Path(f"/proc/{pids[0]}/task/{pids[0]}/children").read_text().split()
            found[name] = (address, [*pids, *map(int, children)])
        yield found


NGINX_TLS_CONF = """\
worker_processes 1;
pid {dir}/nginx-tls.pid;
error_log {dir}/error-tls.log warn;
{user}
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_body_temp_path {dir}; proxy_temp_path {dir}; fastcgi_temp_path {dir};
  uwsgi_temp_path {dir}; scgi_temp_path {dir};
  upstream workers {{ {servers} keepalive 32; }}
  server {{
    listen 127.0.0.1:{clear} http2;
    listen 127.0.0.1:{tls} ssl http2;
    ssl_certificate {cert}; ssl_certificate_key {key};
    ssl_protocols TLSv1.2 TLSv1.3;
    keepalive_requests 1000000;
    location / {{ grpc_pass grpc://workers; }}
  }}
}}
"""


@contextmanager
def tls_targets(worker: str, tmp: str) -> Iterator[tuple[str, dict[str, tuple[str, bool,
                                                                                list[int]]]]]:
    """A head in clear, a head with TLS, nginx in clear and with TLS, all in front of one
    worker: (CA file, name -> (address, TLS?, pids serving))."""
    import trustme

    ca = trustme.CA()
    leaf = ca.issue_cert("localhost", "127.0.0.1")
    ca_file, cert, key = f"{tmp}/ca.pem", f"{tmp}/cert.pem", f"{tmp}/key.pem"
    ca.cert_pem.write_to_path(ca_file)
    leaf.cert_chain_pems[0].write_to_path(cert)
    leaf.private_key_pem.write_to_path(key)
    ports = {k: free_port() for k in ("head", "head tls", "nginx", "nginx tls")}
    found: dict[str, tuple[str, bool, list[int]]] = {}
    with processes() as procs:
        spawn(procs, "head", "--shards", "1", "--port", str(ports["head"]), "--worker",
              f"0={worker}")
        found["head clear"] = (f"127.0.0.1:{ports['head']}", False, [procs[-1].pid])
        spawn(procs, "head", "--shards", "1", "--port", str(ports["head tls"]), "--worker",
              f"0={worker}", "--tls-cert", cert, "--tls-key", key)
        found["head tls"] = (f"127.0.0.1:{ports['head tls']}", True, [procs[-1].pid])
        if shutil.which("nginx"):
            Path(tmp, "nginx-tls.conf").write_text(NGINX_TLS_CONF.format(
                dir=tmp, clear=ports["nginx"], tls=ports["nginx tls"], cert=cert, key=key,
                user="user root;" if os.geteuid() == 0 else "", servers=f"server {worker};"))
            procs.append(subprocess.Popen(
                ["nginx", "-p", tmp, "-e", f"{tmp}/error-tls.log", "-c",
                 f"{tmp}/nginx-tls.conf", "-g", "daemon off;"]))
            found["nginx clear"] = (f"127.0.0.1:{ports['nginx']}", False, [procs[-1].pid])
            found["nginx tls"] = (f"127.0.0.1:{ports['nginx tls']}", True, [procs[-1].pid])
        else:
            print("nginx not found (bench/setup installs it): the TLS reference is skipped")
        deadline = time.monotonic() + 30
        for address, tls, _ in found.values():
            with Client(address, ca=ca_file if tls else None) as c:
                while not c.is_ready(timeout=0.5):
                    if time.monotonic() > deadline:
                        raise SystemExit(f"{address} not ready")
                    time.sleep(0.05)
        for name, (address, tls, pids) in found.items():
            if name.startswith("nginx"):  # nginx serves from its worker process
                children = Path(f"/proc/{pids[0]}/task/{pids[0]}/children").read_text()
                found[name] = (address, tls, [*pids, *map(int, children.split())])
        yield ca_file, found


def tls_section(args: argparse.Namespace, worker: str) -> None:
    """TLS on and off, the head against nginx: p50 and CPU per request, as ratios."""
    with tempfile.TemporaryDirectory(prefix="bench-tls-") as tmp, \
            tls_targets(worker, tmp) as (ca, found):
        clients: dict[str, Client | Rotating] = {
            name: Client(address, ca=ca if tls else None)
            for name, (address, tls, _) in found.items()}
        try:
            lat = latency(clients, args.requests, payload(args.docs))
        finally:
            for c in clients.values():
                if isinstance(c, Client):
                    c.close()
        p50 = {name: pct(xs, 0.5) for name, xs in lat.items()}
        cpu: dict[str, float] = {}
        rps: dict[str, float] = {}
        if shutil.which("h2load"):
            loads = {name: (address, tls) for name, (address, tls, _) in found.items()}
            serving = {name: pids for name, (_, _, pids) in found.items()}
            rps, cpu = measured(loads, serving, args.rounds, lambda load: h2load(
                [load[0]], args.h2load_requests, args.concurrency, payload(args.docs),
                tls=load[1]))
        else:
            print("h2load not found (bench/setup installs nghttp2-client): no CPU figures")
        report_tls(p50, cpu, rps, args)


def report_tls(p50: dict[str, float], cpu: dict[str, float], rps: dict[str, float],
               args: argparse.Namespace) -> None:
    print(f"\nTLS on and off, one worker behind each ({args.requests} sequential unary "
          f"/echo calls for p50; CPU of the head or nginx per request under h2load, "
          f"{args.concurrency} in flight, median of {args.rounds} rounds)")
    for name in p50:
        extra = (f"   CPU {cpu[name]:5.0f} us/req   {rps[name]:7.0f} req/s"
                 if name in cpu else "")
        print(f"  {name:12s} p50 {p50[name]:6.3f} ms{extra}")
    pairs = [("head tls", "head clear", "head: TLS / clear"),
             ("nginx tls", "nginx clear", "nginx: TLS / clear"),
             ("head tls", "nginx tls", "head TLS / nginx TLS (the reference)"),
             ("head clear", "nginx clear", "head clear / nginx clear")]
    for a, b, what in pairs:
        if a in p50 and b in p50:
            line = f"  {what:38s} p50 x{p50[a] / p50[b]:4.2f}"
            if a in cpu and b in cpu:
                line += f"   CPU/req x{cpu[a] / cpu[b]:4.2f}   req/s x{rps[a] / rps[b]:4.2f}"
            print(line)
    if "head tls" in cpu and "nginx tls" in cpu and "head clear" in cpu \
            and "nginx clear" in cpu:
        print(f"  TLS's own CPU per request: head +{cpu['head tls'] - cpu['head clear']:.0f} "
              f"us, nginx +{cpu['nginx tls'] - cpu['nginx clear']:.0f} us")


def payload(count: int) -> list[dict[str, Any]]:
    """`count` small docs: the head forwards them as bytes, the worker decodes them."""
    return [{"text": "hello world", "i": i} for i in range(count)]


class Rotating:
    """Direct calls rotating over several workers (no head): reference for (b3)."""

    def __init__(self, clients: list[Client]) -> None:
        self.clients = clients
        self.i = 0

    def post(self, endpoint: str, docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        self.i += 1
        return self.clients[self.i % len(self.clients)].post(endpoint, docs)


def latency(clients: dict[str, Client | Rotating], n: int, docs: list[dict[str, Any]],
            rounds: int = 10) -> dict[str, list[float]]:
    samples: dict[str, list[float]] = {k: [] for k in clients}
    for c in clients.values():  # warm-up: connections, caches
        for _ in range(100):
            c.post("/echo", docs)
    for _ in range(rounds):
        for name, c in clients.items():
            for _ in range(n // rounds):
                t = time.perf_counter()
                c.post("/echo", docs)
                samples[name].append(time.perf_counter() - t)
    return samples


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def throughput(address: str, endpoint: str, params: dict[str, Any], seconds: float,
                     concurrency: int, docs: list[dict[str, Any]]) -> float:
    done = 0
    async with AsyncClient(address) as client:
        await client.post(endpoint, docs, params)
        stop = time.perf_counter() + seconds

        async def loop() -> None:
            nonlocal done
            while time.perf_counter() < stop:
                await client.post(endpoint, docs, params)
                done += 1

        start = time.perf_counter()
        await asyncio.gather(*(loop() for _ in range(concurrency)))
        return done / (time.perf_counter() - start)


def python_load(address: str, **kwargs: Any) -> float:
    """`throughput` in a fresh event loop (one per measurement)."""
    return asyncio.run(throughput(address, **kwargs))


def h2load(addresses: list[str], n: int, concurrency: int,
           docs: list[dict[str, Any]], tls: bool = False) -> float:
    """Requests per second of `n` unary /echo calls sent by h2load, `concurrency` in flight;
    with several addresses, one h2load process per address (n and concurrency split evenly)
    run at once and the rate is the total over the wall time. Raises unless every call got
    the reference reply (checked by size)."""
    body = wire.encode_request("/echo", docs, None, request_id="h2load", timeout=None)
    reply = reference_reply(addresses[0], body, tls)
    status = wire.parse_response(reply).status
    if status.code != wire.OK:
        raise SystemExit(f"{addresses[0]}: reference call failed: {status.message}")
    path = Path(f"/tmp/bench-head-{os.getpid()}.grpc")
    path.write_bytes(b"\0" + struct.pack(">I", len(body)) + body)  # a gRPC length prefix
    each, inflight = n // len(addresses), max(1, concurrency // len(addresses))
    try:
        started = time.perf_counter()
        procs = [subprocess.Popen(
            ["h2load", "-n", str(each), "-c", "1", "-m", str(inflight), "-t", "1",
             "-d", str(path), "-H", "content-type: application/grpc", "-H", "te: trailers",
             f"{'https' if tls else 'http'}://{address}{wire.METHOD_CALL}"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for address in addresses]
        outs = [p.communicate()[0] for p in procs]
        elapsed = time.perf_counter() - started
    finally:
        path.unlink()
    rates = []
    for address, proc, out in zip(addresses, procs, outs, strict=True):
        ok = re.search(r"(\d+) succeeded, (\d+) failed, (\d+) errored", out)
        data = re.search(r"\((\d+)\) data", out)
        rate = re.search(r"finished in [\d.]+m?s, ([\d.]+) req/s", out)
        if proc.returncode != 0 or not (ok and data and rate):
            raise SystemExit(f"h2load failed against {address}:\n{out}")
        # every reply (5-byte prefix + the same message) has the reference reply's size
        if int(ok[1]) != each or int(data[1]) != each * (5 + len(reply)):
            raise SystemExit(f"{address}: not every h2load call got a full reply:\n{out}")
        rates.append(float(rate[1]))
    return rates[0] if len(addresses) == 1 else each * len(addresses) / elapsed


def reference_reply(address: str, body: bytes, tls: bool) -> bytes:
    """One call's reply bytes (over TLS without checking the certificate: only its size
    matters, to check h2load's replies)."""
    if not tls:
        with grpc.insecure_channel(address) as channel:
            call: Any = channel.unary_unary(wire.METHOD_CALL)  # bytes in, bytes out
            return bytes(call(body, timeout=10))
    import ssl

    host, port = address.rsplit(":", 1)
    pem = ssl.get_server_certificate((host, int(port))).encode()
    options = (("grpc.ssl_target_name_override", "localhost"),)
    with grpc.secure_channel(address, grpc.ssl_channel_credentials(pem), options) as channel:
        call = channel.unary_unary(wire.METHOD_CALL)
        return bytes(call(body, timeout=10))


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * q))] * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--seconds", type=float, default=2.0, help="per throughput round")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved throughput rounds")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--block-ms", type=float, default=5.0)
    ap.add_argument("--docs", type=int, default=1, help="docs per request (default 1)")
    ap.add_argument("--h2load-requests", type=int, default=10000, help="per h2load round")
    ap.add_argument("--tls", action="store_true", help="add the TLS section (see above)")
    ap.add_argument("--only-tls", action="store_true", help="run the TLS section alone")
    args = ap.parse_args()
    if args.only_tls:
        return tls_only(args)
    uses = f"{Path(__file__).resolve()}:Bench"
    w = [free_port() for _ in range(3)]
    h1, h3 = free_port(), free_port()
    with processes() as procs:
        for i, port in enumerate(w):
            spawn(procs, "worker", "--uses", uses, "--port", str(port), "--replica-id", str(i))
        workers = [f"127.0.0.1:{p}" for p in w]
        spawn(procs, "head", "--shards", "1", "--port", str(h1), "--worker", f"0={workers[0]}")
        spawn(procs, "head", "--shards", "1", "--port", str(h3),
              *[a for x in workers for a in ("--worker", f"0={x}")])
        targets = {"a direct": workers[0], "b1 head x1": f"127.0.0.1:{h1}",
                   "b3 head x3": f"127.0.0.1:{h3}"}
        wait_ready(list(targets.values()))
        with reference_proxies(workers) as proxies:
            hops = {**targets, **{k: address for k, (address, _) in proxies.items()}}
            direct = [Client(a) for a in workers]
            clients: dict[str, Client | Rotating] = {k: Client(v) for k, v in hops.items()}
            clients = {"a direct": clients["a direct"], "a3 direct rr": Rotating(direct),
                       **{k: v for k, v in clients.items() if k != "a direct"}}
            try:
                lat = latency(clients, args.requests, payload(args.docs))
            finally:
                for c in [*direct, *clients.values()]:
                    if isinstance(c, Client):
                        c.close()
            report_latency(lat, args.docs)
            serving = {"b1 head x1": [procs[3].pid], "b3 head x3": [procs[4].pid],
                       **{k: pids for k, (_, pids) in proxies.items()}}
            for endpoint, params in (("/echo", {}), ("/block", {"ms": args.block_ms})):
                rps, cpu = measured(hops, serving, args.rounds, functools.partial(
                    python_load, endpoint=endpoint, params=params, seconds=args.seconds,
                    concurrency=args.concurrency, docs=payload(args.docs)))
                report_throughput(endpoint, rps, cpu, args.concurrency, args.rounds)
            if shutil.which("h2load") is None:
                print("\nh2load not found (bench/setup installs nghttp2-client): skipped")
                return
            # a3: the 3 workers driven directly and at once (no head), the most 3 replicas
            # can give on this machine; a proxy in front of them can only come close to it
            loads = {"a direct": [workers[0]], "a3 direct x3": workers,
                     **{k: [address] for k, address in hops.items() if k != "a direct"}}
            rps, cpu = measured(loads, serving, args.rounds, lambda addresses: h2load(
                addresses, args.h2load_requests, args.concurrency, payload(args.docs)))
        report_throughput("/echo", rps, cpu, args.concurrency, args.rounds, by="h2load")
        if args.tls:
            tls_section(args, workers[0])


def tls_only(args: argparse.Namespace) -> None:
    """`--only-tls`: one worker, and the TLS section in front of it."""
    port = free_port()
    with processes() as procs:
        spawn(procs, "worker", "--uses", f"{Path(__file__).resolve()}:Bench", "--port",
              str(port))
        wait_ready([f"127.0.0.1:{port}"])
        tls_section(args, f"127.0.0.1:{port}")


def measured(loads: dict[str, Any], serving: dict[str, list[int]], rounds: int,
             run: Callable[[Any], float]) -> tuple[dict[str, float], dict[str, float]]:
    """`run(load)` (requests per second) for every load in turn, in `rounds` interleaved
    rounds: the median rate per load, and the median CPU per request of the processes that
    `serving` names for it (the head or proxy in the way)."""
    rates: dict[str, list[float]] = {k: [] for k in loads}
    costs: dict[str, list[float]] = {k: [] for k in loads if k in serving}
    for _ in range(rounds):
        for k, load in loads.items():
            spent = sum(cpu_seconds(pid) for pid in serving.get(k, []))
            started = time.perf_counter()
            rate = run(load)
            calls = rate * (time.perf_counter() - started)
            rates[k].append(rate)
            if k in costs:
                spent = sum(cpu_seconds(pid) for pid in serving[k]) - spent
                costs[k].append(spent / calls * 1e6)
    return ({k: statistics.median(v) for k, v in rates.items()},
            {k: statistics.median(v) for k, v in costs.items()})


def report_latency(lat: dict[str, list[float]], docs: int) -> None:
    base50, base99 = pct(lat["a direct"], 0.5), pct(lat["a direct"], 0.99)
    print(f"\nlatency, sequential unary /echo, {docs} doc(s) per request "
          f"({len(lat['a direct'])} calls each)")
    for name, xs in lat.items():
        p50, p99 = pct(xs, 0.5), pct(xs, 0.99)
        print(f"  {name:12s} p50 {p50:6.3f} ms  p99 {p99:6.3f} ms  mean "
              f"{statistics.mean(xs) * 1000:6.3f} ms   ratio b/a p50 {p50 / base50:4.2f}  "
              f"p99 {p99 / base99:4.2f}")
    if "a3 direct rr" in lat and "b3 head x3" in lat:
        rr, b3 = pct(lat["a3 direct rr"], 0.5), pct(lat["b3 head x3"], 0.5)
        print(f"  b3 against a3 (the same 3 workers called directly in turn): p50 ratio "
              f"{b3 / rr:4.2f}")
    for name in (n for n in lat if n.startswith(("nginx", "haproxy"))):
        print(f"  b3 against {name} (a C proxy over the same 3 workers): p50 ratio "
              f"{pct(lat['b3 head x3'], 0.5) / pct(lat[name], 0.5):4.2f}")


def report_throughput(endpoint: str, rps: dict[str, float], cpu: dict[str, float],
                      concurrency: int, rounds: int, by: str = "the Python AsyncClient") -> None:
    base = rps["a direct"]
    print(f"\nthroughput {endpoint} ({concurrency} in flight, median of {rounds} rounds, "
          f"load from {by})")
    for name, value in rps.items():
        spent = f"   proxy CPU {cpu[name]:5.0f} us/req" if name in cpu else ""
        print(f"  {name:12s} {value:8.0f} req/s   ratio b/a {value / base:4.2f}{spent}")
    b3 = rps["b3 head x3"]
    if "a3 direct x3" in rps:
        print(f"  b3 against a3 (the same 3 workers driven directly at once): ratio "
              f"{b3 / rps['a3 direct x3']:4.2f}")
    for name in (n for n in rps if n.startswith(("nginx", "haproxy"))):
        print(f"  b3 against {name} (a C proxy over the same 3 workers): ratio "
              f"{b3 / rps[name]:4.2f}")


if __name__ == "__main__":
    main()
