"""Build the runtime image on a machine that has a Docker engine but no registry.

The pipeline has three steps, each cached::

    base image   the configured base (default ``python:3.11-slim``) when it is local or
                 pullable; otherwise a debootstrap minbase of the host's Debian suite, from
                 the host's own apt mirror, ``docker import``-ed as ``orchestrator-base:<suite>``
    wheelhouse   wheels of what the pods import (``[tool.orchestrator].runtime-dependencies``,
                 pinned by ``constraints.txt``) built on the host (inside a build pip
                 reaches no index), cached by the requirement list and the lock; the project
                 wheel is rebuilt when needed and installed with ``--no-deps``
    runtime      ``docker/Dockerfile`` FROM the base, installing only from the wheelhouse,
                 tagged ``orchestrator-runtime:<hash12>`` and ``orchestrator-runtime:latest``

The runtime image's content hash covers the Dockerfile, the dependency wheels, the
project's source files and the base image. Project wheels are not byte-reproducible (zip
timestamps), so the hash is taken over sources, never over the project wheel. A second run
with nothing changed only hashes and finds the image.

Use `ensure_runtime_image` from code; ``python -m orchestrator.images build`` from a shell.
This module talks to the engine only through `ContainerEngine`; debootstrap, tar and pip
run as subprocesses on the host.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from orchestrator.engine.base import ContainerEngine
from orchestrator.errors import EngineError, EngineUnavailable, ImageBuildError, ResourceConflict

DEFAULT_BASE_IMAGE = "python:3.11-slim"
BASE_IMAGE_ENV = "ORCHESTRATOR_BASE_IMAGE"
BOOTSTRAP_REPOSITORY = "orchestrator-base"
# Other repositories for the images this module makes (read when building, not at import):
# a cold build can then run beside the shared images of the same engine without moving them.
BASE_REPOSITORY_ENV = "ORCHESTRATOR_BASE_REPOSITORY"
RUNTIME_REPOSITORY_ENV = "ORCHESTRATOR_RUNTIME_REPOSITORY"
BOOTSTRAP_PACKAGES = ("python3", "python3-venv", "ca-certificates")
RUNTIME_REPOSITORY = "orchestrator-runtime"
DEFAULT_RUNTIME_IMAGE = f"{RUNTIME_REPOSITORY}:latest"
CONTENT_HASH_LABEL = "orchestrator.content-hash"
IMAGE_KIND_LABEL = "orchestrator.image"
SOURCE_LABEL = "orchestrator.image.source"
"""On runtime images: which checkout built it (a digest of its path), so that a build
prunes only its own checkout's outdated images, never those another checkout's tests run."""
RUNTIME_UID = 10001
CONSTRAINTS_FILE = "constraints.txt"

# Seconds the Docker client waits on one response: an import or a silent RUN step is slow.
_BUILD_TIMEOUT = 900
_DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_LOG_TAIL_LINES = 40
# Trimmed from the bootstrapped root filesystem: nothing at runtime reads them.
_TRIM_GLOBS = (
    "var/lib/apt/lists/*",
    "var/cache/apt/*",
    "var/cache/debconf/*-old",
    "var/log/*",
    "usr/share/man/*",
    "usr/share/info/*",
    "usr/share/locale/*",
    "usr/share/lintian/*",
)

Log = Callable[[str], None]


def _stderr_log(message: str) -> None:
    print(f"[images] {message}", file=sys.stderr, flush=True)


# -- host facts (pure parsing) ------------------------------------------------------


@dataclass(frozen=True)
class AptSource:
    """One apt repository: a mirror URI and the suites it serves."""

    uri: str
    suites: tuple[str, ...]
    components: tuple[str, ...] = ("main",)


def parse_deb822_sources(text: str) -> list[AptSource]:
    """Parse the deb822 format of ``/etc/apt/sources.list.d/*.sources``."""
    sources: list[AptSource] = []
    for stanza in text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            if line.startswith("#") or ":" not in line or line[:1].isspace():
                continue
            key, _, value = line.partition(":")
            fields[key.strip().lower()] = value.strip()
        if "deb" not in fields.get("types", "").split() or not fields.get("uris"):
            continue
        for uri in fields["uris"].split():
            sources.append(
                AptSource(
                    uri=uri,
                    suites=tuple(fields.get("suites", "").split()),
                    components=tuple(fields.get("components", "main").split()),
                )
            )
    return sources


def parse_one_line_sources(text: str) -> list[AptSource]:
    """Parse the legacy one-line format of ``/etc/apt/sources.list``."""
    sources: list[AptSource] = []
    for raw in text.splitlines():
        words = raw.split("#", 1)[0].split()
        if len(words) < 3 or words[0] != "deb":
            continue
        if words[1].startswith("["):  # options such as [signed-by=...] or [ arch=amd64 ]
            while words and not words[0].endswith("]"):
                words.pop(0)
            words = ["deb", *words[1:]]
        if len(words) >= 3:
            sources.append(AptSource(uri=words[1], suites=(words[2],), components=tuple(words[3:])))
    return sources


def parse_os_release_codename(text: str) -> str:
    """The Debian suite (``VERSION_CODENAME``) named by ``/etc/os-release``.

    Raises:
        ImageBuildError: the file names no codename (not a Debian-like host).
    """
    for line in text.splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "VERSION_CODENAME" and value.strip().strip('"'):
            return value.strip().strip('"')
    raise ImageBuildError("cannot bootstrap a base image: /etc/os-release has no VERSION_CODENAME")


def choose_mirror(sources: Iterable[AptSource], suite: str) -> str:
    """The first mirror that serves exactly `suite` (security mirrors serve `suite-security`).

    Raises:
        ImageBuildError: no apt source serves the suite.
    """
    for source in sources:
        if suite in source.suites:
            return source.uri
    raise ImageBuildError(
        f"cannot bootstrap a base image: no apt source serves suite {suite!r}; "
        f"add one to /etc/apt/sources.list.d/ or set {BASE_IMAGE_ENV} to a local image"
    )


@dataclass(frozen=True)
class BootstrapPlan:
    """What a debootstrap base image is made of; its hash names the image's content."""

    suite: str
    mirror: str
    packages: tuple[str, ...] = BOOTSTRAP_PACKAGES
    repository: str = BOOTSTRAP_REPOSITORY

    @property
    def tag(self) -> str:
        return f"{self.repository}:{self.suite}"

    @property
    def content_hash(self) -> str:
        # Either tool makes the same minbase from the same packages: the text stays as it
        # was, so base images made before mmdebstrap was preferred are reused.
        text = "\n".join(["debootstrap-minbase", self.suite, self.mirror, *sorted(self.packages)])
        return hashlib.sha256(text.encode()).hexdigest()


def host_bootstrap_plan(etc: Path = Path("/etc")) -> BootstrapPlan:
    """Read the host's Debian suite and apt mirror into a `BootstrapPlan`.

    Raises:
        ImageBuildError: the host is not Debian-like or has no usable apt source.
    """
    try:
        suite = parse_os_release_codename((etc / "os-release").read_text())
    except OSError as exc:
        raise ImageBuildError(f"cannot bootstrap a base image: {exc}") from exc
    sources: list[AptSource] = []
    for path in sorted((etc / "apt" / "sources.list.d").glob("*.sources")):
        sources += parse_deb822_sources(path.read_text())
    legacy = [etc / "apt" / "sources.list", *sorted((etc / "apt").glob("sources.list.d/*.list"))]
    for path in legacy:
        if path.is_file():
            sources += parse_one_line_sources(path.read_text())
    return BootstrapPlan(suite=suite, mirror=choose_mirror(sources, suite),
                         repository=os.environ.get(BASE_REPOSITORY_ENV) or BOOTSTRAP_REPOSITORY)


# -- subprocesses -------------------------------------------------------------------


def _tail(text: str, lines: int = _LOG_TAIL_LINES) -> str:
    return "\n".join(text.splitlines()[-lines:])


def _run(cmd: Sequence[str], *, what: str, cwd: Path | None = None) -> str:
    """Run a command, returning its combined output.

    Raises:
        ImageBuildError: the command is missing or exits non-zero (with its output tail).
    """
    try:
        done = subprocess.run(
            list(cmd), cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
    except OSError as exc:
        raise ImageBuildError(f"{what} failed: cannot run {cmd[0]!r}: {exc}") from exc
    if done.returncode != 0:
        raise ImageBuildError(
            f"{what} failed (exit {done.returncode}): {' '.join(cmd)}", log_tail=_tail(done.stdout)
        )
    return done.stdout


def _as_root(cmd: Sequence[str]) -> list[str]:
    """Prefix `sudo` when not root: debootstrap and apt-get need it."""
    if os.geteuid() == 0:
        return list(cmd)
    if shutil.which("sudo"):
        return ["sudo", "-n", *cmd]
    raise ImageBuildError(f"{cmd[0]} needs root: run as root or install sudo")


_BOOTSTRAP_TOOLS = ("mmdebstrap", "debootstrap")
_MMDEBSTRAP_HOOKS = Path("/usr/share/mmdebstrap/hooks")


def _find_tool(name: str) -> str | None:
    return shutil.which(name, path=f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin")


def ensure_debootstrap(log: Log = _stderr_log) -> str:
    """Path of the bootstrap tool: mmdebstrap (about 8x faster: apt downloads in parallel,
    one dpkg run) or else debootstrap; apt-installs mmdebstrap when neither is there.
    Both take the same arguments for what this module asks of them.

    Raises:
        ImageBuildError: both are missing and apt-get cannot install mmdebstrap.
    """
    for name in _BOOTSTRAP_TOOLS:
        found = _find_tool(name)
        if found:
            return found
    log("mmdebstrap is missing: installing it with apt-get")
    _run(_as_root(["apt-get", "update", "-qq"]), what="apt-get update")
    _run(_as_root(["apt-get", "install", "-y", "-qq", "--no-install-recommends", "mmdebstrap"]),
         what="apt-get install")
    found = _find_tool("mmdebstrap")
    if not found:
        raise ImageBuildError("apt-get installed mmdebstrap but it is not on PATH")
    return found


# -- base image ---------------------------------------------------------------------


def _has_hash(engine: ContainerEngine, ref: str, content_hash: str) -> bool:
    return engine.image_exists(ref) and (
        engine.image_labels(ref).get(CONTENT_HASH_LABEL) == content_hash
    )


def ensure_base_image(
    engine: ContainerEngine,
    *,
    base: str | None = None,
    workdir: Path | None = None,
    log: Log = _stderr_log,
) -> str:
    """The reference of a local base image with python3 and venv, making one if needed.

    Order: `base` (or env ``ORCHESTRATOR_BASE_IMAGE``, default ``python:3.11-slim``) if it
    is local, else pull it (fails in ~0.1 s without a registry), else a cached bootstrap
    image, else debootstrap a new one (a few minutes; needs root).

    Raises:
        ImageBuildError: the pull failed and bootstrapping failed too (log tail attached).
        EngineUnavailable: the engine does not answer.
    """
    wanted = base or os.environ.get(BASE_IMAGE_ENV) or DEFAULT_BASE_IMAGE
    if engine.image_exists(wanted):
        return wanted
    try:
        engine.pull_image(wanted)
        log(f"pulled base image {wanted}")
        return wanted
    except EngineUnavailable:
        raise
    except EngineError as exc:  # ImageNotFound, or a registry error the engine relays
        log(f"{wanted} is not local and cannot be pulled ({type(exc).__name__}): "
            "using the debootstrap base")
    plan = host_bootstrap_plan()
    if _has_hash(engine, plan.tag, plan.content_hash):
        return plan.tag
    return bootstrap_base_image(engine, plan, workdir=workdir or _cache_dir(), log=log)


def bootstrap_base_image(
    engine: ContainerEngine, plan: BootstrapPlan, *, workdir: Path, log: Log = _stderr_log
) -> str:
    """debootstrap `plan` into a temporary root, trim it, and import it as `plan.tag`.

    Raises:
        ImageBuildError: debootstrap, tar or the import failed.
    """
    debootstrap = ensure_debootstrap(log)
    workdir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bootstrap-", dir=workdir) as tmp:
        rootfs, tarball = Path(tmp) / "rootfs", Path(tmp) / "rootfs.tar"
        tool = Path(debootstrap).name
        log(f"{tool} {plan.suite} from {plan.mirror} (under a minute with mmdebstrap, "
            "a few with debootstrap)")
        cmd = [debootstrap, "--variant=minbase", f"--include={','.join(plan.packages)}",
               *_tool_options(tool)]
        try:
            _run(_as_root([*cmd, plan.suite, str(rootfs), plan.mirror]), what=tool)
        except ImageBuildError as exc:
            first_line = str(exc).split("\n", 1)[0]
            raise ImageBuildError(first_line, log_tail=_debootstrap_log(rootfs, exc)) from exc
        _trim_rootfs(rootfs)
        _run(["tar", "--numeric-owner", "-C", str(rootfs), "-cf", str(tarball), "."], what="tar")
        changes = (
            f"ENV PATH={_DEFAULT_PATH}",
            "ENV LANG=C.UTF-8",
            'CMD ["/bin/bash"]',
            f"LABEL {IMAGE_KIND_LABEL}=base",
            f"LABEL {CONTENT_HASH_LABEL}={plan.content_hash}",
        )
        engine.import_image(tarball, tag=plan.tag, changes=changes)
    log(f"imported {plan.tag} in {time.monotonic() - started:.1f}s")
    return plan.tag


def _tool_options(tool: str, hooks: Path = _MMDEBSTRAP_HOOKS) -> list[str]:
    """mmdebstrap alone would satisfy init-system-helpers with `usrmerge`, which pulls in
    perl (+47 MB); its merged-usr hook makes the same package set as debootstrap."""
    if tool == "mmdebstrap" and (hooks / "maybe-merged-usr").is_dir():
        return [f"--hook-dir={hooks / 'maybe-merged-usr'}"]
    return []


def _debootstrap_log(rootfs: Path, exc: ImageBuildError) -> str:
    """debootstrap's own log says more than its stdout when a package fails."""
    log_file = rootfs / "debootstrap" / "debootstrap.log"
    with contextlib.suppress(OSError):
        return _tail(log_file.read_text(errors="replace"))
    return exc.log_tail


def _trim_rootfs(rootfs: Path) -> None:
    """Drop apt lists, caches, logs, man pages and docs (keeping copyright files)."""
    for pattern in _TRIM_GLOBS:
        for path in rootfs.glob(pattern):
            _remove(path)
    for path in (rootfs / "usr" / "share" / "doc").glob("*/*"):
        if path.name != "copyright":
            _remove(path)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


# -- wheelhouse ---------------------------------------------------------------------


@dataclass(frozen=True)
class Wheelhouse:
    """Dependency wheels (cached) and, once built, the project wheel."""

    root: Path
    dependencies: tuple[Path, ...]
    project: Path | None = None


def find_project_dir(start: Path | None = None) -> Path:
    """The source checkout (the directory holding pyproject.toml and docker/Dockerfile).

    Raises:
        ImageBuildError: no checkout above `start` (an installed package cannot build images).
    """
    here = (start or Path(__file__)).resolve()
    for candidate in [here, *here.parents]:
        if (candidate / "pyproject.toml").is_file() and (candidate / "docker").is_dir():
            return candidate
    raise ImageBuildError(f"no source checkout with pyproject.toml and docker/ above {here}")


def _cache_dir(project_dir: Path | None = None) -> Path:
    return (project_dir or find_project_dir()) / ".cache"


def project_dependencies(project_dir: Path) -> list[str]:
    """What the pods need: ``[tool.orchestrator].runtime-dependencies`` of pyproject.toml
    (the host-only packages, such as docker, rich or pyyaml, stay out of the image), or all
    of ``[project].dependencies`` when the table is absent."""
    data = tomllib.loads((project_dir / "pyproject.toml").read_text())
    runtime = data.get("tool", {}).get("orchestrator", {}).get("runtime-dependencies")
    if runtime is not None:
        return [str(req) for req in runtime]
    return [str(req) for req in data.get("project", {}).get("dependencies", [])]


def _constraints(project_dir: Path) -> tuple[list[str], str]:
    """pip flags pinning the wheelhouse to the lock (``constraints.txt``), and its text."""
    lock = project_dir / CONSTRAINTS_FILE
    if not lock.is_file():
        return [], ""
    return ["-c", str(lock)], lock.read_text()


def _pip() -> list[str]:
    return [sys.executable, "-m", "pip", "--disable-pip-version-check"]


def ensure_dependency_wheels(
    project_dir: Path, wheelhouse: Path, *, log: Log = _stderr_log
) -> tuple[Path, ...]:
    """Wheels of every runtime dependency (pinned by the lock when the checkout has one),
    rebuilt only when the requirement list or the lock changes.

    Raises:
        ImageBuildError: pip cannot build or download a wheel.
    """
    deps_dir = wheelhouse / "deps"
    requirements = project_dependencies(project_dir)
    pin_flags, pins = _constraints(project_dir)
    key = hashlib.sha256(
        "\n".join([sys.version.split()[0], sys.platform, *sorted(requirements), pins]).encode()
    ).hexdigest()
    stamp = deps_dir / ".requirements.sha256"
    if _stamp_holds(stamp, key):
        return tuple(sorted(deps_dir.glob("*.whl")))
    log(f"building dependency wheels into {deps_dir}")
    shutil.rmtree(deps_dir, ignore_errors=True)
    deps_dir.mkdir(parents=True)
    if requirements:
        _run([*_pip(), "wheel", "-q", "--prefer-binary", *pin_flags, "--wheel-dir",
              str(deps_dir), *requirements], what="pip wheel (dependencies)")
    wheels = tuple(sorted(deps_dir.glob("*.whl")))
    stamp.write_text("\n".join([key, *(wheel.name for wheel in wheels)]) + "\n")
    return wheels


def _stamp_holds(stamp: Path, key: str) -> bool:
    """The stamp names `key` and every wheel it lists is still there."""
    try:
        first, *names = stamp.read_text().split()
    except (OSError, ValueError):
        return False
    return first == key and all((stamp.parent / name).is_file() for name in names)


def build_project_wheel(project_dir: Path, wheelhouse: Path, *, log: Log = _stderr_log) -> Path:
    """Build the project's own wheel (no dependencies) into ``wheelhouse/project``.

    Raises:
        ImageBuildError: the build backend failed.
    """
    out = wheelhouse / "project"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    log("building the project wheel")
    # Without isolation the build needs no index; isolation fetches setuptools from one.
    flags = ["--no-build-isolation"] if _has_build_backend() else []
    _run([*_pip(), "wheel", "-q", "--no-deps", *flags, "--wheel-dir", str(out), str(project_dir)],
         what="pip wheel (project)")
    wheels = sorted(out.glob("*.whl"))
    if len(wheels) != 1:
        raise ImageBuildError(f"expected one project wheel in {out}, found {len(wheels)}")
    return wheels[0]


def _has_build_backend() -> bool:
    try:
        major = int(importlib.metadata.version("setuptools").split(".")[0])
        importlib.metadata.version("wheel")
    except (importlib.metadata.PackageNotFoundError, ValueError):
        return False
    return major >= 68


def build_wheelhouse(project_dir: Path | None = None, *, log: Log = _stderr_log) -> Path:
    """Dependency wheels plus a fresh project wheel under ``.cache/wheelhouse``; returns it.

    Raises:
        ImageBuildError: pip failed.
    """
    project_dir = project_dir or find_project_dir()
    root = _cache_dir(project_dir) / "wheelhouse"
    ensure_dependency_wheels(project_dir, root, log=log)
    build_project_wheel(project_dir, root, log=log)
    return root


# -- content hash -------------------------------------------------------------------


def _file_digest(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def project_source_files(project_dir: Path) -> list[Path]:
    """Files that end up in the project wheel: the package tree and pyproject.toml.

    README.md is left out on purpose: it only feeds the wheel's long description.
    """
    package = project_dir / "orchestrator"
    files = [
        path
        for path in package.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    ]
    return sorted([project_dir / "pyproject.toml", *files])


def runtime_content_hash(
    *,
    dockerfile: Path,
    dependency_wheels: Iterable[Path],
    project_dir: Path,
    base_ref: str,
    base_labels: Mapping[str, str],
) -> str:
    """sha256 over everything that determines the runtime image's content."""
    digest = hashlib.sha256()

    def add(name: str, value: str) -> None:
        digest.update(f"{name}\0{value}\n".encode())

    add("dockerfile", _file_digest(dockerfile))
    add("base", base_ref)
    add("base-hash", base_labels.get(CONTENT_HASH_LABEL, ""))
    for wheel in sorted(dependency_wheels, key=lambda p: p.name):
        add(f"wheel:{wheel.name}", _file_digest(wheel))
    for path in project_source_files(project_dir):
        add(f"src:{path.relative_to(project_dir).as_posix()}", _file_digest(path))
    return digest.hexdigest()


# -- runtime image ------------------------------------------------------------------


@dataclass(frozen=True)
class ImageResult:
    """Outcome of `prepare_runtime_image`: `cached` says no build ran."""

    ref: str
    hash_ref: str
    content_hash: str
    base: str
    cached: bool
    seconds: float


@contextlib.contextmanager
def _build_lock(cache: Path) -> Iterator[None]:
    """Serialise builds across processes (setup script and test fixtures may overlap)."""
    cache.mkdir(parents=True, exist_ok=True)
    with (cache / "images.lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def prepare_runtime_image(
    engine: ContainerEngine,
    *,
    tag: str | None = DEFAULT_RUNTIME_IMAGE,
    force: bool = False,
    base: str | None = None,
    project_dir: Path | None = None,
    prune: bool = True,
    log: Log = _stderr_log,
) -> ImageResult:
    """Make sure the runtime image for the current sources exists and `tag` points at it.

    The default tag follows ``ORCHESTRATOR_RUNTIME_REPOSITORY`` when set
    (``<repository>:latest``), like the content-hash tag.
    `tag=None` adds no tag beyond the content-hash one (the pytest plugin uses that, so a
    test run never moves a shared ``latest``); `prune=False` keeps outdated hash tags.

    Raises:
        ImageBuildError: the base, the wheelhouse or the docker build failed (log tail kept).
        EngineUnavailable: the engine does not answer.
    """
    started = time.monotonic()
    if tag == DEFAULT_RUNTIME_IMAGE:
        tag = f"{runtime_repository()}:latest"
    project_dir = project_dir or find_project_dir()
    cache = _cache_dir(project_dir)
    with _build_lock(cache), tempfile.TemporaryDirectory(prefix="sources-", dir=cache) as tmp:
        base_ref = ensure_base_image(engine, base=base, workdir=cache, log=log)
        wheelhouse = cache / "wheelhouse"
        deps = ensure_dependency_wheels(project_dir, wheelhouse, log=log)
        # Hash and build one frozen copy, so the label matches what is inside even while
        # someone edits the tree; building there also keeps build/ out of the checkout.
        sources = snapshot_sources(project_dir, Path(tmp))
        content_hash = runtime_content_hash(
            dockerfile=sources / "docker" / "Dockerfile",
            dependency_wheels=deps,
            project_dir=sources,
            base_ref=base_ref,
            base_labels=engine.image_labels(base_ref),
        )
        hash_ref = f"{runtime_repository()}:{content_hash[:12]}"
        cached = not force and _has_hash(engine, hash_ref, content_hash)
        if not cached:
            project_wheel = build_project_wheel(sources, wheelhouse, log=log)
            context = _build_context(Path(tmp) / "context", sources, deps, project_wheel,
                                     log)
            log(f"docker build {hash_ref} FROM {base_ref}")
            engine.build_image(
                context,
                tag=hash_ref,
                labels={IMAGE_KIND_LABEL: "runtime", CONTENT_HASH_LABEL: content_hash,
                        SOURCE_LABEL: source_id(project_dir)},
                buildargs={"BASE": base_ref},
            )
        if tag is not None and tag != hash_ref:
            engine.tag_image(hash_ref, tag)
        if prune and not cached:
            for old in prune_runtime_images(engine, keep=hash_ref,
                                            source=source_id(project_dir)):
                log(f"removed the outdated {old}")
    seconds = time.monotonic() - started
    ref = hash_ref if tag is None else tag
    log(f"{ref} -> {hash_ref} ({'cached' if cached else 'built'}, {seconds:.1f}s)")
    return ImageResult(ref, hash_ref, content_hash, base_ref, cached, seconds)


def snapshot_sources(project_dir: Path, dest: Path) -> Path:
    """Copy what the image is made of (package, pyproject, README, Dockerfile) to `dest`."""
    dest = dest / "src"
    files = [*project_source_files(project_dir), project_dir / "docker" / "Dockerfile"]
    readme = project_dir / "README.md"
    for path in [*files, readme] if readme.is_file() else files:
        target = dest / path.relative_to(project_dir)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
    return dest


PROBE_SOURCE = Path("orchestrator", "runtime", "probe.c")
PROBE_FALLBACK = '#!/bin/sh\nexec /opt/venv/bin/python -m orchestrator.runtime probe "$@"\n'
"""The HEALTHCHECK program when no C compiler is at hand: the same check, in Python."""


def build_probe(source: Path, out: Path, *, log: Log = _stderr_log) -> bool:
    """Compile the image's HEALTHCHECK program (`orchestrator/runtime/probe.c`, libc only)
    statically to `out`, so it runs on any Linux base; True when it did. Without a working
    C compiler (``CC``, else cc or gcc), `out` becomes a shell script that runs the Python
    probe instead (the same check, at ~0.15 s of CPU and ~8 MB of activated page cache
    per run) and this returns False."""
    out.parent.mkdir(parents=True, exist_ok=True)
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if compiler:
        cmd = [compiler, "-static", "-Os", "-s", "-o", str(out), str(source)]
        try:
            done = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  text=True, check=False)
        except OSError as exc:
            log(f"cannot compile the probe: {exc}")
        else:
            if done.returncode == 0:
                return True
            log(f"cannot compile the probe ({' '.join(cmd)}): {_tail(done.stdout, 3)}")
    else:
        log("no C compiler (cc, gcc or $CC)")
    log("the image's HEALTHCHECK runs the Python probe (apt-get install gcc libc6-dev "
        "for the compiled one)")
    out.write_text(PROBE_FALLBACK)
    out.chmod(0o755)
    return False


def _build_context(
    context: Path, sources: Path, deps: Sequence[Path], project_wheel: Path,
    log: Log = _stderr_log,
) -> Path:
    """A build context holding only the Dockerfile, the probe and the wheelhouse (small
    upload)."""
    context.mkdir(parents=True)
    shutil.copy2(sources / "docker" / "Dockerfile", context / "Dockerfile")
    build_probe(sources / PROBE_SOURCE, context / "probe" / "orchestrator-probe", log=log)
    for folder, wheels in (("deps", deps), ("project", [project_wheel])):
        target = context / "wheelhouse" / folder
        target.mkdir(parents=True)
        for wheel in wheels:
            _link_or_copy(wheel, target / wheel.name)
    return context


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def runtime_repository() -> str:
    """``ORCHESTRATOR_RUNTIME_REPOSITORY``, else ``orchestrator-runtime``."""
    return os.environ.get(RUNTIME_REPOSITORY_ENV) or RUNTIME_REPOSITORY




def source_id(project_dir: Path) -> str:
    """The `SOURCE_LABEL` of images built from the checkout at `project_dir`."""
    return hashlib.sha256(str(project_dir.resolve()).encode()).hexdigest()[:12]


def prune_runtime_images(engine: ContainerEngine, *, keep: str,
                         source: str | None = None) -> list[str]:
    """Untag outdated `orchestrator-runtime:<hash12>` images; returns the removed tags.

    Only our own content-hash tags are touched (never `latest` or a tag a user gave),
    and an image a container still uses is kept: the engine refuses, and we let it.
    With `source` (a `source_id`), images that another checkout built are kept too:
    another checkout's test session may be about to start containers from them. Images
    with no source label (built before it existed) count as this checkout's.
    """
    removed = []
    for tag in engine.image_tags({IMAGE_KIND_LABEL: "runtime"}):
        if tag == keep or not re.fullmatch(rf"{re.escape(runtime_repository())}:[0-9a-f]{{12}}",
                                           tag):
            continue
        if source is not None and engine.image_labels(tag).get(SOURCE_LABEL, source) != source:
            continue
        try:
            engine.remove_image(tag)
        except ResourceConflict:
            continue  # in use by a container: it goes with a later build
        removed.append(tag)
    return removed


def ensure_runtime_image(
    engine: ContainerEngine,
    *,
    tag: str = DEFAULT_RUNTIME_IMAGE,
    force: bool = False,
    base: str | None = None,
    log: Log = _stderr_log,
) -> str:
    """Reference of an up-to-date runtime image, building it only when its inputs changed.

    Raises:
        ImageBuildError: the base, the wheelhouse or the docker build failed (log tail kept).
        EngineUnavailable: the engine does not answer.
    """
    return prepare_runtime_image(engine, tag=tag, force=force, base=base, log=log).ref
