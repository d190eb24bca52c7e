"""The quickstart demo: a real Deployment, requests through its head, and a zero-downtime
rolling update under load.

Run it with ``scripts/demo`` (or ``orchestrator demo`` after ``scripts/setup``):

1. build (or find, cached) the runtime image;
2. start a Deployment of ``executors/echo.py:Echo``: 3 replicas x 2 shards behind one head;
3. send requests through the head (polling ALL: every shard answers) and show which
   containers served them;
4. roll the deployment from tag v1 to v2 while client threads post without pause, and
   count the failed requests (there should be none);
5. tear everything down and check that nothing labelled as ours is left.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter

from orchestrator.deployment import Deployment
from orchestrator.engine.cleanup import list_owned, remove_owned
from orchestrator.engine.docker_engine import DockerEngine
from orchestrator.images import find_project_dir, prepare_runtime_image
from orchestrator.load import Load
from orchestrator.progress import ProgressEvent


def say(message: str) -> None:
    print(message, flush=True)


def show_progress(event: ProgressEvent) -> None:
    if event.kind in ("added", "stopped", "rollback", "failed"):
        say(f"    [{event.done}/{event.total}] {event.kind:<8} {event.pod} {event.message}")


def run(name: str, replicas: int, shards: int) -> int:
    engine = DockerEngine.from_env()
    try:
        image = prepare_runtime_image(engine, log=lambda m: say(f"  {m}"))
        say(f"runtime image: {image.ref} ({'cache hit' if image.cached else 'built'})")
        if list_owned(engine, name):
            say(f"removing a stale '{name}' deployment left by an earlier run")
            remove_owned(engine, name, grace=1)
        echo = find_project_dir() / "executors" / "echo.py"
        started = time.monotonic()
        with Deployment(name=name, uses=f"{echo}:Echo", uses_with={"tag": "v1"},
                        replicas=replicas, shards=shards, polling="ALL", image=image.ref,
                        engine=engine) as dep:
            say(f"\ndeployment '{name}' ready in {time.monotonic() - started:.1f}s: "
                f"{dep.num_pods} containers, head at {dep.address}")
            for args in dep.all_args:
                where = "" if args.shard_id is None else \
                    f" shard {args.shard_id} replica {args.replica_id}"
                say(f"  {args.role:<7} {args.name}{where}")
            docs = dep.post("/echo", docs=[{"text": "hello"}])
            say(f"\none request, polling ALL -> {len(docs)} docs, one per shard:")
            for doc in docs:
                say(f"  {doc}")
            served = Counter(d["pod"] for _ in range(12) for d in dep.post("/echo", docs=[{}]))
            say(f"12 more requests were served by {len(served)} replicas: "
                f"{dict(sorted(served.items()))}")
            failed = rolling_update(dep)
        left = list_owned(engine, name)
        say(f"\ntorn down; resources left on the engine: {len(left.names())}")
        return 1 if failed or left else 0
    finally:
        engine.close()


def rolling_update(dep: Deployment) -> int:
    say("\nrolling update v1 -> v2 while 2 client threads post without pause:")
    with Load(dep.head_host, dep.head_port, threads=2) as load:
        before = time.monotonic()
        asyncio.run(dep.rolling_update(uses_with={"tag": "v2"}, on_progress=show_progress))
        finished = time.monotonic()
        load.wait_for(20)
    tags = Counter(d["tag"] for r in load.after(finished) for d in r.docs)
    say(f"  {len(load.results)} requests during {finished - before:.1f}s of update, "
        f"{len(load.failures)} failed")
    say(f"  answers after the update: {dict(tags)}")
    return len(load.failures)
