"""Session-wide fixtures: the real Docker engine, and the leak check.

The Docker engine is required: when it is unreachable the run FAILS, it never
turns into skips.

Leak check (for the integration and contract suites only, through the autouse
`leak_check` of their conftests; unit tests need no engine): after the session, no
container, network or volume labelled `orchestrator.managed=true` that appeared during the
session may remain. Leftovers that this test process created (recorded at `DockerEngine`) are
removed, then reported as a failure. Other new managed resources may belong to
another run sharing the engine (developers share one here), so they are only
reported, unless `CI` or `ORCH_TEST_STRICT` is set: then they are removed
and fail the run too (catches leaks from subprocesses such as the CLI).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

from orchestrator.engine.cleanup import Owned, list_owned

if TYPE_CHECKING:
    from orchestrator.engine.docker_engine import DockerEngine


@pytest.fixture(scope="session")
def docker_engine() -> Iterator[DockerEngine]:
    """The real engine at DOCKER_HOST (or the default socket). Fails loudly if absent."""
    from orchestrator.engine.docker_engine import DockerEngine
    from orchestrator.errors import EngineUnavailable

    try:
        engine = DockerEngine.from_env()
        engine.ping()
    except EngineUnavailable as exc:
        pytest.fail(f"these tests need a Docker engine: {exc}", pytrace=False)
    yield engine
    engine.close()


@pytest.fixture(scope="session")
def test_image(docker_engine: DockerEngine) -> str:
    """A busybox image on the real engine (imported once without a registry, then cached)."""
    from tests.support.images import ensure_test_image

    return ensure_test_image(docker_engine)


def _recording(method: Callable[..., Any], created: set[str]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        result = method(*args, **kwargs)
        created.add(getattr(result, "id", None) or result.name)  # a volume has no id
        return result

    return wrapper


@pytest.fixture(scope="session")
def nothing_of_ours_left_behind(
    docker_engine: DockerEngine, request: pytest.FixtureRequest
) -> Iterator[None]:
    """Fail the session when managed resources created during it remain."""
    from orchestrator.engine.docker_engine import DockerEngine

    created: set[str] = set()
    with pytest.MonkeyPatch.context() as patch:
        for name in ("run_container", "create_network", "create_volume"):
            patch.setattr(DockerEngine, name, _recording(getattr(DockerEngine, name), created))
        before = _ids(list_owned(docker_engine))
        yield
    strict = bool(os.environ.get("CI") or os.environ.get("ORCH_TEST_STRICT"))
    new = _only(list_owned(docker_engine), lambda i: i not in before)
    mine = _only(new, lambda i: i in created or strict)
    foreign = _only(new, lambda i: i not in _ids(mine))
    if foreign:
        reporter = request.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(
                "note: managed resources from another run on this engine (not touched): "
                + ", ".join(foreign.names())
            )
    if mine:
        _remove(docker_engine, mine)
        pytest.fail(
            "resources labelled orchestrator.managed=true were left behind (now removed): "
            + ", ".join(mine.names()),
            pytrace=False,
        )


def _ids(owned: Owned) -> set[str]:
    return {c.id for c in owned.containers} | {n.id for n in owned.networks} | \
        {v.name for v in owned.volumes}


def _only(owned: Owned, keep: Callable[[str], bool]) -> Owned:
    return Owned(
        containers=tuple(c for c in owned.containers if keep(c.id)),
        networks=tuple(n for n in owned.networks if keep(n.id)),
        volumes=tuple(v for v in owned.volumes if keep(v.name)),
    )


def _remove(engine: DockerEngine, owned: Owned) -> None:
    for container in owned.containers:
        engine.remove_container(container.id, force=True)
    for network in owned.networks:
        engine.remove_network(network.id)
    for volume in owned.volumes:
        engine.remove_volume(volume.name)
