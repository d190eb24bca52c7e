"""The pytest plugin: real Deployments as fixtures, for integration tests in CI.

Installing the package registers it (entry point ``pytest11``); importing it costs nothing:
Docker, gRPC and the engine load only when a test uses one of its fixtures.

    def test_echo(deployment):
        echo = deployment(uses="executors/echo.py:Echo", replicas=2)
        assert echo.post("/echo", docs=[{"a": 1}])[0]["a"] == 1

Fixtures
    ``orchestrator_engine`` (session)   the Docker engine (``DOCKER_HOST`` or the socket);
                                        errors loudly when none answers
    ``orchestrator_image`` (session)    the runtime image: ``--orchestrator-image`` when it
                                        exists, else built (or found, cached by content
                                        hash) from the source checkout, once per run; under
                                        pytest-xdist one worker builds behind a file lock
    ``deployment`` (function)           factory: ``deployment(uses=..., replicas=...,
                                        **fields)`` -> a started `Deployment`, removed
                                        after the test whatever happened
    ``deployment_from_yaml`` (function) factory: ``deployment_from_yaml("app.yml",
                                        select=None, **overrides)`` -> a started
                                        `Deployment` from a deployment file
    ``session_deployment``,             the same two factories, session-scoped: wrap them
    ``session_deployment_from_yaml``    in your own session fixture to share one deployment
                                        across tests (see below)

Sharing one deployment across tests::

    # conftest.py
    @pytest.fixture(scope="session")
    def echo(session_deployment):
        return session_deployment(uses="executors/echo.py:Echo", replicas=2)

Relative ``uses`` paths (and volume paths) are resolved against pytest's rootdir, so a test
run from any directory finds them; a YAML file's own paths stay relative to the file. Every
deployment gets a unique name (``<prefix>-<8 hex>``, the prefix is ``name=`` or the test's
name), so parallel runs never clash.

Options
    ``--orchestrator-image=IMAGE``   runtime image of file/module executors (built from the
                                     checkout when missing)
    ``--orchestrator-keep``          leave the deployments of failed tests running, and say
                                     how to look at them and remove them
                                     (``orchestrator ps NAME``, ``orchestrator down NAME``)

When a test fails, the last lines of every pod's log are attached to its report, one
section per pod (``--orchestrator-log-lines``, default 50).

Healing stays on (each deployment's ``heal_after``, 30 s unless given), as in production:
a replica that crashes for good is replaced. So that a test never hides a crash this way,
every replacement the healer makes is reported: a section of the test's report, and a
summary at the end of the run ("orchestrator: pods replaced by the healer"), with the
pod, the reason and how long it had been sick.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Generator, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from orchestrator.control.background import HealReport
    from orchestrator.deployment import Deployment
    from orchestrator.engine.base import ContainerEngine

__all__ = [
    "DeploymentFactory",
    "YamlDeploymentFactory",
    "deployment",
    "deployment_from_yaml",
    "orchestrator_engine",
    "orchestrator_image",
    "session_deployment",
    "session_deployment_from_yaml",
]

_MAX_NAME = 40
_KEPT = pytest.StashKey[list[str]]()
_REPORTS = pytest.StashKey[dict[str, pytest.TestReport]]()
_HEALED = pytest.StashKey[list[tuple[str, str]]]()  # (test node id, what was replaced)
_CURRENT = pytest.StashKey[str]()  # the node id of the test that runs now


# -- options and hooks ----------------------------------------------------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("orchestrator", "orchestrator deployments as fixtures")
    group.addoption("--orchestrator-image", metavar="IMAGE", default=None,
                    help="runtime image of file/module executors (default: built from the "
                    "source checkout, cached by content hash)")
    group.addoption("--orchestrator-keep", action="store_true", default=False,
                    help="leave the deployments of failed tests running (and print how to "
                    "attach to and remove them)")
    group.addoption("--orchestrator-log-lines", type=int, default=50, metavar="N",
                    help="lines of each pod's log attached to a failed test's report")


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_KEPT] = []
    config.stash[_HEALED] = []


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Generator[
        None, Any, None]:
    item.config.stash[_CURRENT] = item.nodeid
    yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[
        None, Any, None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    item.stash.setdefault(_REPORTS, {})[report.when] = report
    if report.failed and report.when in ("setup", "call"):
        _attach_logs(item, report)
    if report.when == "teardown":
        healed = [line for node, line in item.config.stash.get(_HEALED, [])
                  if node == item.nodeid]
        if healed:
            report.sections.append(("orchestrator: pods replaced by the healer",
                                    "\n".join(healed)))


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    healed = config.stash.get(_HEALED, [])
    if healed:
        terminalreporter.section("orchestrator: pods replaced by the healer")
        for node, line in healed:
            terminalreporter.write_line(f"{node}: {line}")
    kept = config.stash.get(_KEPT, [])
    if kept:
        terminalreporter.section("orchestrator: deployments kept (--orchestrator-keep)")
        for name in kept:
            terminalreporter.write_line(_keep_note(name))


def _keep_note(name: str) -> str:
    return (f"{name}: still running; look at it with `orchestrator ps {name}` "
            f"(logs: `orchestrator logs {name}`), remove it with `orchestrator down {name}`")


def _failed(item: pytest.Item) -> bool:
    return any(report.failed for report in item.stash.get(_REPORTS, {}).values())


# -- fixtures -----------------------------------------------------------------------


@pytest.fixture(scope="session")
def orchestrator_engine() -> Iterator[ContainerEngine]:
    """The Docker engine (``DOCKER_HOST``, else the default socket)."""
    from orchestrator.engine.docker_engine import DockerEngine
    from orchestrator.errors import EngineUnavailable

    try:
        engine = DockerEngine.from_env()
        engine.ping()
    except EngineUnavailable as exc:
        pytest.fail(f"orchestrator fixtures need a Docker engine: {exc}", pytrace=False)
    try:
        yield engine
    finally:
        engine.close()


@pytest.fixture(scope="session")
def orchestrator_image(
    request: pytest.FixtureRequest, orchestrator_engine: ContainerEngine
) -> str:
    """The runtime image (built once per run at most, one build across xdist workers)."""
    return resolve_image(orchestrator_engine, request.config.getoption("orchestrator_image"))


def resolve_image(engine: ContainerEngine, wanted: str | None, *,
                  search_from: Path | None = None) -> str:
    """`wanted` if the engine has it; else build it (or only the content-hash image, when
    `wanted` is None) from the source checkout above `search_from` (default: this
    package); with no checkout, the default image if the engine has it.

    Raises:
        ImageBuildError: nothing to use and no checkout to build from (says what to do),
            or the build failed (log tail attached).
    """
    from orchestrator.errors import ImageBuildError
    from orchestrator.images import DEFAULT_RUNTIME_IMAGE, find_project_dir, prepare_runtime_image

    if wanted is not None and engine.image_exists(wanted):
        return wanted
    try:
        project = find_project_dir(search_from)
    except ImageBuildError:
        fallback = wanted or DEFAULT_RUNTIME_IMAGE
        if engine.image_exists(fallback):
            return fallback
        raise ImageBuildError(
            f"runtime image {fallback} is missing and this installation has no source "
            "checkout to build it from: build it with `orchestrator images build` in a "
            "checkout, or pass --orchestrator-image=IMAGE") from None
    # prune=False: a test run never untags images another run on this engine may use.
    return prepare_runtime_image(engine, tag=wanted, project_dir=project, prune=False).ref


class DeploymentFactory:
    """``factory(uses=..., replicas=..., **fields)``: a started `Deployment`, torn down by
    the fixture that made the factory (fields as for `Deployment`)."""

    def __init__(self, request: pytest.FixtureRequest, engine: ContainerEngine, image: str,
                 stack: ExitStack) -> None:
        self._request = request
        self._engine = engine
        self._image = image
        self._stack = stack
        self.started: list[Deployment] = []

    def __call__(self, uses: str | None = None, **fields: Any) -> Deployment:
        from orchestrator.deployment import Deployment

        if uses is not None:
            fields["uses"] = uses
        fields["name"] = unique_name(str(fields.get("name") or _prefix(self._request)))
        fields.setdefault("image", self._image)
        fields.setdefault("base_dir", self._request.config.rootpath)
        base_dir = fields.pop("base_dir")
        dep = Deployment(engine=self._engine, reaper=True, base_dir=Path(base_dir), **fields)
        self._start(dep)
        return dep

    def _start(self, dep: Deployment) -> None:
        dep.start()  # on failure it removed what it made; the error names pod and logs
        self.started.append(dep)
        self._stack.callback(self._finish, dep)
        if dep.healer is not None:
            dep.healer.listen(self._note_healed)

    def _note_healed(self, report: HealReport) -> None:
        """A replacement is never silent: it goes to the test's report and the summary."""
        config = self._request.config
        node = config.stash.get(_CURRENT, self._request.node.nodeid)
        for event in report.replacements:
            config.stash[_HEALED].append((node, event.line()))

    def _finish(self, dep: Deployment) -> None:
        node = self._request.node
        keep = self._request.config.getoption("orchestrator_keep")
        if keep and isinstance(node, pytest.Item) and _failed(node):
            dep.detach()
            self._request.config.stash[_KEPT].append(dep.name)
        dep.close()


class YamlDeploymentFactory:
    """``factory(path, select=None, **overrides)``: a started `Deployment` from a
    deployment file (relative to the rootdir); `select` names one deployment of a file
    holding several."""

    def __init__(self, factory: DeploymentFactory, rootdir: Path) -> None:
        self._factory = factory
        self._rootdir = rootdir

    def __call__(self, path: str | Path, select: str | None = None,
                 **overrides: Any) -> Deployment:
        from orchestrator.config import load_file
        from orchestrator.errors import ConfigError

        source = Path(path) if Path(path).is_absolute() else self._rootdir / path
        configs = load_file(source)
        chosen = [c for c in configs if select is None or c.spec.name == select]
        if len(chosen) != 1:
            names = ", ".join(c.spec.name for c in configs)
            problem = (f"no deployment named {select!r} (it holds {names})" if select
                       else f"holds several deployments ({names}): pick one with select=")
            raise ConfigError(source, "", problem)
        fields = {**chosen[0].fields, **overrides, "base_dir": chosen[0].base_dir}
        fields.pop("needs", None)  # the other deployments of the file are not started
        return self._factory(**fields)


def _factory(request: pytest.FixtureRequest) -> Iterator[DeploymentFactory]:
    engine: ContainerEngine = request.getfixturevalue("orchestrator_engine")
    image: str = request.getfixturevalue("orchestrator_image")
    with ExitStack() as stack:
        yield DeploymentFactory(request, engine, image, stack)


@pytest.fixture
def deployment(request: pytest.FixtureRequest) -> Iterator[DeploymentFactory]:
    """Factory of started deployments, each removed after the test (even when it fails)."""
    yield from _factory(request)


@pytest.fixture
def deployment_from_yaml(deployment: DeploymentFactory,
                         request: pytest.FixtureRequest) -> YamlDeploymentFactory:
    """Factory of started deployments from a YAML file, removed after the test."""
    return YamlDeploymentFactory(deployment, request.config.rootpath)


@pytest.fixture(scope="session")
def session_deployment(request: pytest.FixtureRequest) -> Iterator[DeploymentFactory]:
    """Like `deployment`, but what it starts lives until the end of the run."""
    yield from _factory(request)


@pytest.fixture(scope="session")
def session_deployment_from_yaml(session_deployment: DeploymentFactory,
                                 request: pytest.FixtureRequest) -> YamlDeploymentFactory:
    """Like `deployment_from_yaml`, but what it starts lives until the end of the run."""
    return YamlDeploymentFactory(session_deployment, request.config.rootpath)


# -- names and logs -----------------------------------------------------------------


def unique_name(prefix: str) -> str:
    """``<prefix>-<8 hex>``, DNS-safe and at most 40 characters."""
    clean = re.sub(r"[^a-z0-9-]+", "-", prefix.lower()).strip("-") or "pytest"
    return f"{clean[:_MAX_NAME - 9].rstrip('-')}-{uuid.uuid4().hex[:8]}"


def _prefix(request: pytest.FixtureRequest) -> str:
    node = request.node
    if isinstance(node, pytest.Item):
        return str(getattr(node, "originalname", node.name)).removeprefix("test_")
    return "pytest"


def _deployments_of(item: pytest.Item) -> list[Deployment]:
    """Every deployment a test can see: what its factories started, and the fixtures'
    values that are deployments themselves (e.g. a shared session deployment)."""
    from orchestrator.deployment import Deployment

    found: list[Deployment] = []
    for value in getattr(item, "funcargs", {}).values():
        candidates = value.started if isinstance(value, DeploymentFactory) else [value]
        found += [dep for dep in candidates if isinstance(dep, Deployment)]
    unique = {id(dep): dep for dep in found}
    return list(unique.values())


def _attach_logs(item: pytest.Item, report: pytest.TestReport) -> None:
    deployments = _deployments_of(item)
    if not deployments:
        return
    lines = int(item.config.getoption("orchestrator_log_lines"))
    keep = item.config.getoption("orchestrator_keep")
    for dep in deployments:
        for pod, text in pod_log_tails(dep, lines):
            report.sections.append((f"orchestrator pod {pod} (last {lines} log lines)", text))
        if keep:
            report.sections.append((f"orchestrator kept {dep.name}", _keep_note(dep.name)))


def pod_log_tails(dep: Deployment, lines: int) -> list[tuple[str, str]]:
    """(pod name, its last `lines` log lines) for every container of `dep`; an error
    reading them is reported in place of the lines, never raised."""
    from orchestrator.errors import OrchestratorError
    from orchestrator.planning.labels import for_deployment

    try:
        pods = dep.engine.list_containers(for_deployment(dep.name), brief=True)
    except OrchestratorError as exc:
        return [(dep.name, f"cannot list the pods: {exc}")]
    tails = []
    for pod in sorted(pods, key=lambda c: c.name):
        try:
            text = "\n".join(line.text for line in dep.engine.log_lines(pod.name, tail=lines))
        except OrchestratorError as exc:
            text = f"cannot read the log: {exc}"
        tails.append((pod.name, text or "(empty log)"))
    return tails

