"""Fixtures for tests against the real Docker engine: images, names, leak checks."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from orchestrator.engine.cleanup import list_owned, remove_owned

if TYPE_CHECKING:
    from orchestrator.engine.docker_engine import DockerEngine


@pytest.fixture(scope="session", autouse=True)
def leak_check(nothing_of_ours_left_behind: None) -> None:
    """These tests use the real engine: the session's leak check applies (tests/conftest)."""


@pytest.fixture(scope="session")
def runtime_image(docker_engine: DockerEngine) -> str:
    """The runtime image for the current sources (a cache hit after scripts/setup)."""
    from orchestrator.images import ensure_runtime_image

    return ensure_runtime_image(docker_engine)


@pytest.fixture(scope="session")
def own_image(docker_engine: DockerEngine) -> Iterator[str]:
    """This checkout's runtime image under a tag of the test session's own (test_parity,
    test_reload): `latest` is shared with other checkouts building on the same engine (it
    may move while these tests run), and no build ever untags this one. Untagged again at
    the end."""
    from orchestrator.images import prepare_runtime_image

    built = prepare_runtime_image(docker_engine, tag=None, prune=False)
    tag = f"orchestrator-test-parity:{built.content_hash[:12]}"
    docker_engine.tag_image(built.hash_ref, tag)
    yield tag
    docker_engine.remove_image(tag)


@pytest.fixture
def dep_name(docker_engine: DockerEngine) -> Iterator[str]:
    """A unique deployment name; after the test nothing labelled with it may remain."""
    name = f"t{uuid.uuid4().hex[:10]}"
    yield name
    left = list_owned(docker_engine, name)
    if left:
        remove_owned(docker_engine, name, grace=0)
        pytest.fail(f"deployment {name} left resources behind: {', '.join(left.names())}",
                    pytrace=False)


@pytest.fixture(scope="session", autouse=True)
def supervisor_state_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """`up --detach` starts a supervisor (orchestrator/supervisor.py): the CLI runs of this
    session keep its files in a directory of their own, never the user's, and whatever
    supervisor they started is stopped at the end (tests that look at the supervisor
    give each test its own directory: see tests/integration/test_supervisor.py)."""
    import os

    from orchestrator import supervisor as sv

    if os.environ.get(sv.STATE_DIR_ENV):
        yield
        return
    path = tmp_path_factory.mktemp("supervisor")
    os.environ[sv.STATE_DIR_ENV] = str(path)
    try:
        yield
    finally:
        sv.stop(sv.Paths.for_engine())
        del os.environ[sv.STATE_DIR_ENV]
