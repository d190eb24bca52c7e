"""The pytest plugin as a CI user meets it: their own suite, run by pytester in a subprocess
against the real engine (the plugin comes from the installed package's entry point)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from orchestrator.engine.cleanup import list_owned, remove_owned

if TYPE_CHECKING:
    from orchestrator.engine.docker_engine import DockerEngine

pytestmark = pytest.mark.integration

SHOUT = '''
from orchestrator import Executor, requests


class Shout(Executor):
    def __init__(self, marker: str = "none", **kwargs):
        super().__init__(**kwargs)
        print(f"shout ready {marker}", flush=True)

    @requests(on="/echo")
    def echo(self, docs, **kwargs):
        for doc in docs:
            doc["shout"] = True
'''


@pytest.fixture
def suite(pytester: pytest.Pytester, docker_engine: DockerEngine) -> Iterator[pytest.Pytester]:
    """A user's project: rootdir with an ini file, executors/shout.py, a conftest with a
    shared session deployment and a `record` helper writing a deployment's name to
    names.txt; afterwards no recorded deployment may remain."""
    pytester.makeini("[pytest]\naddopts = -p no:cacheprovider\n")
    (pytester.path / "executors").mkdir()
    (pytester.path / "executors" / "shout.py").write_text(SHOUT)
    names = pytester.path / "names.txt"
    pytester.makeconftest(f'''
import pytest

def record(dep):
    with open({str(names)!r}, "a") as out:
        out.write(dep.name + "\\n")
    return dep

@pytest.fixture(scope="session")
def shared(session_deployment):
    return session_deployment(uses="executors/shout.py:Shout", name="shared")
''')
    yield pytester
    left = [name for name in _names(pytester) if list_owned(docker_engine, name)]
    for name in left:
        remove_owned(docker_engine, name, grace=0)
    assert not left, f"deployments left behind: {left}"


def _names(pytester: pytest.Pytester) -> list[str]:
    path = pytester.path / "names.txt"
    return path.read_text().split() if path.exists() else []


def _in_subdir(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run from a sub-directory: `uses` paths must still resolve against the rootdir."""
    sub = pytester.path / "tests"
    sub.mkdir(exist_ok=True)
    monkeypatch.chdir(sub)
    return sub


def test_a_passing_suite_gets_ready_deployments_and_leaves_nothing(
        suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch,
        docker_engine: DockerEngine) -> None:
    sub = _in_subdir(suite, monkeypatch)
    (suite.path / "app.yml").write_text(
        "name: app\nuses: executors/shout.py:Shout\nreplicas: 2\n")
    (sub / "test_user.py").write_text('''
from conftest import record


def test_factory(deployment):
    dep = record(deployment(uses="executors/shout.py:Shout", replicas=2))
    assert dep.is_ready and dep.name.startswith("factory-")
    assert {d["shout"] for d in dep.post("/echo", docs=[{}, {}])} == {True}


def test_from_yaml(deployment_from_yaml):
    dep = record(deployment_from_yaml("app.yml"))
    assert dep.name.startswith("app-") and dep.spec.replicas == 2
    assert dep.post("/echo", docs=[{}])[0]["shout"]


def test_shared_first(shared):
    assert record(shared).post("/echo", docs=[{}])[0]["shout"]


def test_shared_second(shared, orchestrator_engine, orchestrator_image):
    assert record(shared).spec.image == orchestrator_image
    assert orchestrator_engine.image_exists(orchestrator_image)
''')
    (suite.path / "conftest.py").rename(sub / "conftest.py")
    result = suite.runpytest_subprocess("-v", str(sub))
    result.assert_outcomes(passed=4)
    names = _names(suite)
    assert len(names) == 4 and len(set(names)) == 3  # the shared one is recorded twice
    assert names[2] == names[3] and names[2].startswith("shared-")
    assert not any(list_owned(docker_engine, name) for name in names)


FAILING = '''
from conftest import record


def test_breaks(deployment):
    dep = record(deployment(uses="executors/shout.py:Shout", uses_with={"marker": "MARK"}))
    assert dep.post("/echo", docs=[{}])[0]["shout"]
    raise AssertionError("the user's test failed")
'''


def test_a_failing_test_reports_every_pods_log_tail_and_is_torn_down(
        suite: pytest.Pytester, docker_engine: DockerEngine) -> None:
    marker = uuid.uuid4().hex
    suite.makepyfile(test_user=FAILING.replace("MARK", marker))
    result = suite.runpytest_subprocess()
    result.assert_outcomes(failed=1)
    [name] = _names(suite)
    result.stdout.fnmatch_lines([
        f"*orchestrator pod {name}-head* (last 50 log lines)*",
        f"*orchestrator pod {name}-s0-r0-g* (last 50 log lines)*",
        f"*shout ready {marker}*",
    ])
    assert "orchestrator down" not in result.stdout.str()
    assert not list_owned(docker_engine, name)


def test_keep_leaves_a_failed_tests_deployment_running_and_says_how_to_remove_it(
        suite: pytest.Pytester, docker_engine: DockerEngine) -> None:
    suite.makepyfile(test_user=FAILING + '''

def test_passes(deployment):
    record(deployment(uses="executors/shout.py:Shout"))
''')
    result = suite.runpytest_subprocess("--orchestrator-keep")
    result.assert_outcomes(failed=1, passed=1)
    failed, passed = _names(suite)
    try:
        result.stdout.fnmatch_lines([
            "*orchestrator: deployments kept (--orchestrator-keep)*",
            f"{failed}: still running*`orchestrator ps {failed}`*`orchestrator down {failed}`",
        ])
        kept = list_owned(docker_engine, failed)
        assert {c.status for c in kept.containers} == {"running"}
        assert len(kept.containers) == 2
        assert not list_owned(docker_engine, passed)  # kept only when the test failed
    finally:
        remove_owned(docker_engine, failed, grace=0)


def test_three_xdist_workers_share_one_image_and_never_clash(
        suite: pytest.Pytester, docker_engine: DockerEngine) -> None:
    suite.makepyfile(test_user='''
import os
import pytest
from conftest import record


@pytest.mark.parametrize("i", range(3))
def test_parallel(deployment, orchestrator_image, i):
    dep = record(deployment(uses="executors/shout.py:Shout"))
    assert dep.post("/echo", docs=[{}])[0]["shout"]
    with open(f"worker-{os.environ['PYTEST_XDIST_WORKER']}-{i}.txt", "w") as out:
        out.write(f"{orchestrator_image} {dep.port}")
''')
    result = suite.runpytest_subprocess("-n", "3")
    result.assert_outcomes(passed=3)
    rows = [p.read_text().split() for p in suite.path.glob("worker-gw*-*.txt")]
    workers = {p.name.split("-")[1] for p in suite.path.glob("worker-gw*-*.txt")}
    assert len(workers) == 3, "each of the 3 workers ran one test"
    assert len({image for image, _ in rows}) == 1
    assert len({port for _, port in rows}) == 3
    assert len(set(_names(suite))) == 3


def test_the_image_option_names_the_pods_image_and_a_missing_one_is_built(
        suite: pytest.Pytester, docker_engine: DockerEngine) -> None:
    tag = f"orchestrator-runtime:plugin-test-{uuid.uuid4().hex[:8]}"
    suite.makepyfile(test_user='''
from conftest import record


def test_image(deployment, orchestrator_image):
    dep = record(deployment(uses="executors/shout.py:Shout"))
    assert orchestrator_image == dep.spec.image == "TAG"
    assert {c.image for c in dep.engine.list_containers({"orchestrator.deployment": dep.name})} \\
        == {"TAG"}
'''.replace("TAG", tag))
    assert not docker_engine.image_exists(tag)
    try:
        result = suite.runpytest_subprocess(f"--orchestrator-image={tag}")
        result.assert_outcomes(passed=1)
        assert docker_engine.image_labels(tag)["orchestrator.image"] == "runtime"
    finally:
        if docker_engine.image_exists(tag):
            docker_engine.remove_image(tag)


HEALED = '''
import time

from conftest import record


def test_crash_is_healed(deployment, orchestrator_engine):
    dep = record(deployment(uses="executors/shout.py:Shout", replicas=2, heal_after=1))
    first = sorted(p.name for p in dep.state.workers())[0]
    orchestrator_engine.kill_container(first)  # `docker kill`: no restart policy helps
    deadline = time.monotonic() + 120
    while not dep.healer.replaced:  # readiness polling, not a sleep standing in for it
        assert time.monotonic() < deadline, "not replaced"
        time.sleep(0.1)
    assert dep.post("/echo", docs=[{}])[0]["shout"]
'''


def test_a_replacement_by_the_healer_is_reported_not_hidden(
        suite: pytest.Pytester, docker_engine: DockerEngine) -> None:
    suite.makepyfile(test_user=HEALED)
    result = suite.runpytest_subprocess()
    result.assert_outcomes(passed=1)
    [name] = _names(suite)
    result.stdout.fnmatch_lines([
        "*orchestrator: pods replaced by the healer*",
        f"*test_crash_is_healed: {name}: replaced worker {name}-s0-r0-g1 by *"
        "(container exited, exit code 137; sick for *s)*",
    ])
    assert not list_owned(docker_engine, name)
