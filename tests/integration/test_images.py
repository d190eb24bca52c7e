"""The image pipeline on the real engine: base, runtime image, cache, config, demo."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from orchestrator.engine.base import ContainerSpec
from orchestrator.errors import ImageBuildError
from orchestrator.images import (
    BOOTSTRAP_REPOSITORY,
    CONTENT_HASH_LABEL,
    DEFAULT_BASE_IMAGE,
    DEFAULT_RUNTIME_IMAGE,
    IMAGE_KIND_LABEL,
    RUNTIME_UID,
    SOURCE_LABEL,
    ImageResult,
    ensure_base_image,
    host_bootstrap_plan,
    prepare_runtime_image,
    project_source_files,
    source_id,
)
from orchestrator.planning import labels
from tests.support.images import ensure_test_image

if TYPE_CHECKING:
    from orchestrator.engine.docker_engine import DockerEngine

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.integration


def _quiet(_: str) -> None:
    """Build progress is not test output."""


@pytest.fixture(scope="module")
def frozen_project(tmp_path_factory: pytest.TempPathFactory, runtime_image: str) -> Path:
    """A copy of the sources, so parallel edits of the tree cannot change the hash mid-test.

    It shares the dependency wheels of the real checkout (hard links, same stamp), so no
    wheel is downloaded again.
    """
    root = tmp_path_factory.mktemp("frozen") / "project"
    lock = ROOT / "constraints.txt"
    for path in [*project_source_files(ROOT), ROOT / "docker" / "Dockerfile", lock]:
        target = root / path.relative_to(ROOT)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
    shutil.copytree(ROOT / ".cache" / "wheelhouse" / "deps", root / ".cache" / "wheelhouse" /
                    "deps", copy_function=os.link)
    return root


@pytest.fixture(scope="module")
def built(docker_engine: DockerEngine, frozen_project: Path) -> ImageResult:
    return prepare_runtime_image(docker_engine, project_dir=frozen_project, log=_quiet)


@pytest.fixture
def container_name(docker_engine: DockerEngine) -> Iterator[str]:
    """A unique container name, removed after the test whatever happened."""
    name = f"test-image-{uuid.uuid4().hex[:8]}"
    yield name
    docker_engine.remove_container(name, force=True)


def _image_config(ref: str) -> dict[str, Any]:
    out = subprocess.run(
        ["docker", "image", "inspect", ref], check=True, capture_output=True, text=True
    ).stdout
    return dict(json.loads(out)[0]["Config"])


def test_base_image_is_local_and_labelled(docker_engine: DockerEngine) -> None:
    ref = ensure_base_image(docker_engine, log=_quiet)
    assert docker_engine.image_exists(ref)
    if ref != DEFAULT_BASE_IMAGE:  # no registry here: it was bootstrapped
        plan = host_bootstrap_plan()
        assert ref == plan.tag and ref.startswith(BOOTSTRAP_REPOSITORY)
        assert docker_engine.image_labels(ref)[CONTENT_HASH_LABEL] == plan.content_hash


def test_runtime_image_carries_its_content_hash_and_source(
    docker_engine: DockerEngine, built: ImageResult, frozen_project: Path
) -> None:
    for ref in (built.ref, built.hash_ref):
        image_labels = docker_engine.image_labels(ref)
        assert image_labels[CONTENT_HASH_LABEL] == built.content_hash
        assert image_labels[IMAGE_KIND_LABEL] == "runtime"
        # which checkout built it: any checkout with the same sources may have (a clone
        # beside this one), so only a build made here names this one
        assert re.fullmatch(r"[0-9a-f]{12}", image_labels[SOURCE_LABEL])
        if not built.cached:
            assert image_labels[SOURCE_LABEL] == source_id(frozen_project)
    assert built.hash_ref.endswith(built.content_hash[:12])


def test_second_build_with_nothing_changed_is_a_cache_hit(
    docker_engine: DockerEngine, frozen_project: Path, built: ImageResult
) -> None:
    logs: list[str] = []
    again = prepare_runtime_image(docker_engine, project_dir=frozen_project, log=logs.append)
    assert again.cached
    assert again.hash_ref == built.hash_ref
    assert not any("docker build" in line or "wheel" in line for line in logs)


def test_image_config_entrypoint_user_port_and_light_healthcheck(built: ImageResult) -> None:
    config = _image_config(built.ref)
    assert config["Entrypoint"] == ["/opt/venv/bin/python", "-m", "orchestrator.runtime"]
    assert config["Cmd"] == ["worker"]
    assert config["User"] == f"{RUNTIME_UID}:{RUNTIME_UID}"
    assert "50051/tcp" in config["ExposedPorts"]
    health = config["Healthcheck"]
    assert health["Test"] == ["CMD", "/usr/local/bin/orchestrator-probe"]
    assert health["Interval"] >= 30 * 10**9  # a rare check: it is for `docker ps`


def test_runtime_image_has_no_setuid_or_setgid_files(
    docker_engine: DockerEngine, built: ImageResult, container_name: str
) -> None:
    """Swarm drops no-new-privileges: the image itself must offer nothing to escalate with."""
    docker_engine.run_container(ContainerSpec(
        name=container_name,
        image=built.ref,
        entrypoint=("find", "/", "-xdev", "-type", "f", "-perm", "/6000"),
        user="0:0",  # so that find may read every directory
        labels=labels.managed(),
    ))
    assert docker_engine.wait_container(container_name, timeout=60) == 0
    assert docker_engine.logs(container_name).split() == []


def test_runtime_image_runs_as_non_root_with_the_package(
    docker_engine: DockerEngine, built: ImageResult, container_name: str
) -> None:
    script = "import os, orchestrator; print(os.getuid(), os.getgid(), os.getcwd())"
    docker_engine.run_container(ContainerSpec(
        name=container_name,
        image=built.ref,
        entrypoint=("/opt/venv/bin/python", "-c", script),
        labels=labels.managed(),
    ))
    assert docker_engine.wait_container(container_name, timeout=60) == 0
    assert docker_engine.logs(container_name).split() == [
        str(RUNTIME_UID), str(RUNTIME_UID), "/workspace"
    ]


def test_runtime_image_is_lean_and_still_serves(
    docker_engine: DockerEngine, built: ImageResult, container_name: str
) -> None:
    """Pods get what orchestrator.runtime imports, and neither the host-side packages nor
    pip and setuptools (installed from a throwaway pip)."""
    script = (
        "import importlib.util as u, orchestrator.runtime.serve, orchestrator.runtime.metrics; "
        "import prometheus_client, grpc_health.v1.health; "
        "print(*[m for m in ('docker', 'rich', 'yaml', 'tenacity', 'pygments', 'pip', "
        "'setuptools', 'requests') if u.find_spec(m)] or ['none'])"
    )
    docker_engine.run_container(ContainerSpec(
        name=container_name,
        image=built.ref,
        entrypoint=("/opt/venv/bin/python", "-c", script),
        labels=labels.managed(),
    ))
    assert docker_engine.wait_container(container_name, timeout=60) == 0
    assert docker_engine.logs(container_name).split() == ["none"]


@pytest.fixture
def prune_failed_build_layers() -> Iterator[None]:
    """A failed classic build leaves its committed steps as dangling images: remove ours."""
    yield
    subprocess.run(
        ["docker", "image", "prune", "-f", "--filter", f"label={IMAGE_KIND_LABEL}=runtime"],
        check=True, capture_output=True,
    )


@pytest.mark.usefixtures("prune_failed_build_layers")
def test_failed_build_raises_with_the_build_log_tail(
    docker_engine: DockerEngine, frozen_project: Path
) -> None:
    # busybox has no groupadd, so the Dockerfile's first RUN fails.
    base = ensure_test_image(docker_engine)
    with pytest.raises(ImageBuildError) as caught:
        prepare_runtime_image(
            docker_engine, base=base, project_dir=frozen_project, tag="orch-test-broken:1",
            log=_quiet,
        )
    assert "groupadd" in caught.value.log_tail
    assert not docker_engine.image_exists("orch-test-broken:1")


def test_default_runtime_tag_points_at_a_runtime_image(
    docker_engine: DockerEngine, runtime_image: str
) -> None:
    assert runtime_image == DEFAULT_RUNTIME_IMAGE
    assert docker_engine.image_labels(runtime_image)[IMAGE_KIND_LABEL] == "runtime"
