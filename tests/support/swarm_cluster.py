"""A three-node Docker Swarm made of Docker-in-Docker containers on this machine's engine:
one manager, two workers, joined over a network made for it. The test suite's fixture and
`scripts/swarm-cluster up|down` both use it.

Each node is a container of an image built from our local base with Debian's docker.io
(docker/swarm-node, cached by content hash). `--privileged` fails here (the capability
bounding set lacks SYS_RESOURCE), so a node gets every other capability, seccomp and
apparmor unconfined, /dev/fuse and /sys/fs/cgroup rw, and its dockerd runs on vfs. Each
node's engine listens only on a unix socket in a host directory (never on TCP). Its
/var/lib/docker is a volume on the host's disk (the outer engine's own storage here is
fuse-overlayfs, through which vfs took minutes to create and remove a container), so the
node's dockerd runs overlay2 (ORCHESTRATOR_SWARM_STORAGE=vfs for vfs).

Images reach the nodes without a registry: each one is flattened (`docker export` of a
container of it, imported on the node with its config): one vfs layer instead of one full
copy per layer (vfs on fuse-overlayfs: 12 s instead of 86 s for the runtime image on one
node; overlay2 on a volume: the full image took 44 s).

    python -m tests.support.swarm_cluster up [--name dev] [--image orchestrator-runtime:latest]
    python -m tests.support.swarm_cluster down [--name dev]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NODE_CONTEXT = ROOT / "docker" / "swarm-node"
NODE_REPOSITORY = "orchestrator-swarm-node"
CLUSTER_LABEL = "orchestrator.swarm-cluster"
STATE_ROOT = Path(os.environ.get("ORCHESTRATOR_SWARM_DIR", "/tmp"))
ROLES = ("manager", "worker-1", "worker-2")
_CAPS_MISSING_HERE = ("SYS_RESOURCE",)
_TIMEOUT = 600


@dataclass(frozen=True)
class Node:
    role: str
    container: str
    hostname: str
    socket: Path
    address: str

    @property
    def docker_host(self) -> str:
        return f"unix://{self.socket}"


@dataclass(frozen=True)
class Cluster:
    name: str
    network: str
    nodes: tuple[Node, ...]

    @property
    def manager(self) -> Node:
        return self.nodes[0]

    @property
    def workers(self) -> tuple[Node, ...]:
        return self.nodes[1:]


def log(message: str) -> None:
    print(f"[swarm-cluster] {message}", file=sys.stderr, flush=True)


def docker(*args: str, host: str | None = None, check: bool = True,
           stdin: bytes | None = None) -> str:
    """The docker CLI on this machine's engine (or on a node, with `host`)."""
    env = dict(os.environ)
    if host is not None:
        env["DOCKER_HOST"] = host
    elif f"{STATE_ROOT}/orch-swarm-" in env.get("DOCKER_HOST", ""):
        # DOCKER_HOST names a node of ours (as `up` tells users to export): the nodes
        # themselves are containers of the engine outside, this machine's own
        env.pop("DOCKER_HOST")
    proc = subprocess.run(["docker", *args], input=stdin, capture_output=True,
                          timeout=_TIMEOUT, check=False, env=env)
    if check and proc.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args)}: {proc.stderr.decode(errors='replace')}")
    return proc.stdout.decode(errors="replace")


def state_dir(name: str) -> Path:
    return STATE_ROOT / f"orch-swarm-{name}"


# -- the node image -----------------------------------------------------------------------
def node_image() -> str:
    """The node image for the current docker/swarm-node and base, built when missing."""
    from orchestrator.engine.docker_engine import DockerEngine
    from orchestrator.images import CONTENT_HASH_LABEL, ensure_base_image

    engine = DockerEngine.from_env()
    try:
        base = ensure_base_image(engine)
        base_id = engine.image_id(base)
    finally:
        engine.close()
    digest = hashlib.sha256(base_id.encode())
    for path in sorted(NODE_CONTEXT.iterdir()):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    content = digest.hexdigest()
    tag = f"{NODE_REPOSITORY}:{content[:12]}"
    found = docker("image", "inspect", "--format",
                   f'{{{{index .Config.Labels "{CONTENT_HASH_LABEL}"}}}}', tag, check=False)
    if found.strip() == content:
        return tag
    log(f"building {tag} from {base} (apt-get install docker.io: a few minutes)")
    docker("build", "-q", "--build-arg", f"BASE={base}", "--label",
           f"{CONTENT_HASH_LABEL}={content}", "-t", tag, str(NODE_CONTEXT))
    return tag


# -- up and down ----------------------------------------------------------------------------
def up(name: str, images: Sequence[str] = ()) -> Cluster:
    """Start the three nodes, form the swarm, load `images` on every node."""
    down(name)
    image = node_image()
    network = f"orch-swarm-{name}"
    docker("network", "create", "--label", f"{CLUSTER_LABEL}={name}", network)
    root = state_dir(name)
    root.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with ThreadPoolExecutor(len(ROLES)) as pool:
        nodes = list(pool.map(lambda role: _start_node(name, network, image, root, role),
                              ROLES))
    cluster = Cluster(name, network, tuple(nodes))
    _form_swarm(cluster)
    log(f"swarm of {len(nodes)} nodes up in {time.monotonic() - started:.1f}s")
    load_images(cluster, images)
    (root / "cluster.json").write_text(json.dumps(
        {"name": name, "network": network, "manager": cluster.manager.docker_host}))
    return cluster


def _start_node(name: str, network: str, image: str, root: Path, role: str) -> Node:
    container = f"orch-swarm-{name}-{role}"
    hostname = f"{name}-{role}"
    sock_dir = root / role
    sock_dir.mkdir(parents=True, exist_ok=True)
    caps = [arg for cap in _CAPS_MISSING_HERE for arg in ("--cap-drop", cap)]
    docker("run", "-d", "--name", container, "--hostname", hostname, "--network", network,
           "--label", f"{CLUSTER_LABEL}={name}", "--cap-add", "ALL", *caps,
           "--security-opt", "seccomp=unconfined", "--security-opt", "apparmor=unconfined",
           "--device", "/dev/fuse", "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw",
           "-v", f"{sock_dir}:/run/node", "-v", "/var/lib/docker",
           "-e", f"STORAGE_DRIVER={os.environ.get('ORCHESTRATOR_SWARM_STORAGE', 'overlay2')}",
           image)
    socket = sock_dir / "docker.sock"
    node_host = f"unix://{socket}"
    deadline = time.monotonic() + 120
    while docker("version", "--format", "{{.Server.Version}}", host=node_host,
                 check=False).strip() == "":
        if time.monotonic() > deadline:
            raise RuntimeError(f"node {container} did not start its engine: "
                               + docker("logs", "--tail", "20", container, check=False))
        time.sleep(0.3)
    address = docker("inspect", "--format",
                     f'{{{{(index .NetworkSettings.Networks "{network}").IPAddress}}}}',
                     container).strip()
    return Node(role, container, hostname, socket, address)


def _form_swarm(cluster: Cluster) -> None:
    manager = cluster.manager
    docker("swarm", "init", "--advertise-addr", manager.address, host=manager.docker_host)
    token = docker("swarm", "join-token", "-q", "worker", host=manager.docker_host).strip()
    with ThreadPoolExecutor(len(cluster.workers)) as pool:
        list(pool.map(lambda n: docker("swarm", "join", "--advertise-addr", n.address,
                                       "--token", token, f"{manager.address}:2377",
                                       host=n.docker_host), cluster.workers))
    deadline = time.monotonic() + 120
    while True:
        ready = docker("node", "ls", "--format", "{{.Status}}", host=manager.docker_host)
        if ready.split().count("Ready") == len(cluster.nodes):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"the nodes did not all become Ready: {ready}")
        time.sleep(0.3)


def load_images(cluster: Cluster, images: Sequence[str]) -> None:
    """Put every image on every node, flattened to one layer, under the same tags."""
    for ref in images:
        started = time.monotonic()
        _load_image(cluster, ref)
        log(f"{ref} loaded on {len(cluster.nodes)} nodes in {time.monotonic() - started:.1f}s")


def _load_image(cluster: Cluster, ref: str) -> None:
    config = json.loads(docker("image", "inspect", "--format", "{{json .Config}}", ref))
    tags = [ref, *(t for t in json.loads(docker("image", "inspect", "--format",
                                                "{{json .RepoTags}}", ref)) if t != ref)]
    tarball = state_dir(cluster.name) / "image.tar"
    cid = docker("create", ref).strip()
    try:
        docker("export", "-o", str(tarball), cid)
    finally:
        docker("rm", cid, check=False)
    changes = _changes(config)

    def load(node: Node) -> None:
        docker("import", *changes, str(tarball), tags[0], host=node.docker_host)
        for tag in tags[1:]:
            docker("tag", tags[0], tag, host=node.docker_host)

    try:
        with ThreadPoolExecutor(len(cluster.nodes)) as pool:
            list(pool.map(load, cluster.nodes))
    finally:
        tarball.unlink(missing_ok=True)


def _changes(config: dict[str, object]) -> list[str]:
    """`docker import --change` lines that give the flat image its original config."""
    out: list[str] = []
    for item in config.get("Env") or []:  # type: ignore[attr-defined]
        key, _, value = str(item).partition("=")
        out += ["--change", f"ENV {key}={json.dumps(value)}"]
    for key, value in (config.get("Labels") or {}).items():  # type: ignore[attr-defined]
        out += ["--change", f"LABEL {key}={json.dumps(value)}"]
    for port in config.get("ExposedPorts") or {}:  # type: ignore[attr-defined]
        out += ["--change", f"EXPOSE {port}"]
    for key, change in (("Entrypoint", "ENTRYPOINT"), ("Cmd", "CMD")):
        if config.get(key):
            out += ["--change", f"{change} {json.dumps(config[key])}"]
    if config.get("WorkingDir"):
        out += ["--change", f"WORKDIR {config['WorkingDir']}"]
    if config.get("User"):
        out += ["--change", f"USER {config['User']}"]
    return out


def down(name: str) -> None:
    """Remove the nodes (and with them everything that ran on them) and the network."""
    _report_dead_nodes(name)
    deadline = time.monotonic() + 120
    while ids := docker("ps", "-aq", "--filter", f"label={CLUSTER_LABEL}={name}").split():
        # A node's dockerd killed as PID 1 stays a zombie until the kernel has killed
        # everything under it: the engine says so and refuses, so try again.
        try:
            docker("rm", "-f", "-v", *ids)
        except RuntimeError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)
    nets = docker("network", "ls", "-q", "--filter", f"label={CLUSTER_LABEL}={name}").split()
    if nets:
        docker("network", "rm", *nets)
    shutil.rmtree(state_dir(name), ignore_errors=True)


def _report_dead_nodes(name: str) -> None:
    """A node that stopped by itself says why (its state and log tail), before it goes."""
    for cid in docker("ps", "-aq", "--filter", f"label={CLUSTER_LABEL}={name}",
                      "--filter", "status=exited").split():
        state = docker("inspect", "--format", "{{.Name}} {{json .State}}", cid, check=False)
        out = subprocess.run(["docker", "logs", cid], capture_output=True, text=True,
                             timeout=60, check=False)
        lines = (out.stdout + out.stderr).splitlines()
        first = next((i for i, line in enumerate(lines)
                      if line.startswith(("panic:", "fatal error:"))), max(0, len(lines) - 15))
        tail_text = "\n".join(lines[first:first + 40])
        log(f"node stopped: {state.strip()}\n{tail_text}")


def stop_node(cluster: Cluster, role: str) -> None:
    """Stop one node's container (a lost machine)."""
    node = next(n for n in cluster.nodes if n.role == role)
    docker("stop", "-t", "0", node.container)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="swarm-cluster", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=("up", "down"))
    parser.add_argument("--name", default="dev")
    parser.add_argument("--image", action="append", default=None,
                        help="image to load on every node (default: the runtime image)")
    args = parser.parse_args(argv)
    if args.command == "down":
        down(args.name)
        return 0
    images = args.image
    if images is None:
        from orchestrator.engine.docker_engine import DockerEngine
        from orchestrator.images import ensure_runtime_image

        engine = DockerEngine.from_env()
        try:
            images = [ensure_runtime_image(engine)]
        finally:
            engine.close()
    cluster = up(args.name, images)
    for node in cluster.nodes:
        print(f"# {node.role}: {node.hostname} at {node.address}")
    print(f"export DOCKER_HOST={cluster.manager.docker_host}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
