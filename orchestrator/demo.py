"""The quickstart demo: build the images, serve one Echo worker, send it a request, clean up.

Run it with ``scripts/demo`` (or ``python -m orchestrator.demo`` after ``scripts/setup``).
Until the Deployment exists this runs ONE runtime container; the container carries
``orchestrator.managed=true`` and is removed in ``finally``, whatever happened.
"""

from __future__ import annotations

import sys
import time
import uuid
from pathlib import Path

from orchestrator.client import Client
from orchestrator.engine.base import (
    ContainerEngine,
    ContainerInfo,
    ContainerSpec,
    Mount,
    PortBinding,
)
from orchestrator.errors import OrchestratorError
from orchestrator.health import GrpcHealthProbe, wait_ready
from orchestrator.images import find_project_dir, prepare_runtime_image
from orchestrator.planning import labels

PORT = 50051
READY_TIMEOUT = 60.0
_EXECUTORS_MOUNT = "/executors"


def worker_spec(image: str, executors_dir: Path, name: str) -> ContainerSpec:
    """One Echo worker: executors mounted read-only, gRPC port published on 127.0.0.1."""
    return ContainerSpec(
        name=name,
        image=image,
        command=("worker", "--uses", f"{_EXECUTORS_MOUNT}/echo.py:Echo",
                 "--uses-with", '{"tag": "demo"}', "--name", name),
        labels={labels.MANAGED: "true", labels.DEPLOYMENT: "demo", labels.ROLE: "worker"},
        ports=(PortBinding(PORT),),  # the engine picks a free host port
        mounts=(Mount(str(executors_dir), _EXECUTORS_MOUNT, read_only=True),),
    )


def published_address(info: ContainerInfo) -> str:
    """host:port where the container's gRPC port is published.

    Raises:
        OrchestratorError: the engine reports no published port.
    """
    if PORT not in info.ports:
        raise OrchestratorError(f"container {info.name} publishes no port for {PORT}")
    host, port = info.ports[PORT]
    return f"{host}:{port}"


def run_demo(engine: ContainerEngine) -> list[dict[str, object]]:
    """Build images, start a worker, wait for SERVING, post one request; always clean up.

    Raises:
        ImageBuildError: the images could not be built.
        PodStartError: the worker exited while starting (exit code and log tail kept).
        HealthCheckTimeout: it never reported SERVING within READY_TIMEOUT seconds.
        RequestError: the request failed.
    """
    started = time.monotonic()
    image = prepare_runtime_image(engine)
    print(f"image   {image.ref} ({'cache hit' if image.cached else 'built'}, "
          f"{image.seconds:.1f}s)")
    name = f"demo-echo-{uuid.uuid4().hex[:8]}"
    executors = find_project_dir() / "executors"
    try:
        info = engine.run_container(worker_spec(image.ref, executors, name))
        address = published_address(info)
        probe = GrpcHealthProbe()
        wait_ready(engine, name, lambda _: probe.serving(address), timeout=READY_TIMEOUT)
        print(f"worker  {name} SERVING at {address} ({time.monotonic() - started:.1f}s)")
        with Client(address) as client:
            docs = client.post("/echo", [{"text": "hello", "n": 1}], timeout=10)
        print(f"reply   {docs}")
        return docs
    finally:
        engine.remove_container(name, force=True)
        print(f"removed {name}")


def main() -> int:
    """Entry point of ``python -m orchestrator.demo``: one line on error, exit 1."""
    from orchestrator.engine.docker_engine import DockerEngine  # the only docker importer

    try:
        engine = DockerEngine.from_env(timeout=900)  # an image build may be silent a while
        try:
            run_demo(engine)
        finally:
            engine.close()
    except OrchestratorError as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
