"""`orchestrator rollout history|undo|restart` end to end on the real engine: each under a
client load that must see zero failed requests, and the history read back right after the
head was removed and recreated, and after a CLI was killed (SIGKILL) in mid-update.

The CLI runs as subprocesses, as a user runs it; the load runs in this process.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from orchestrator.engine.cleanup import list_owned, remove_owned
from orchestrator.load import Load
from orchestrator.planning import labels as L
from tests.integration.test_cli import (
    EXIT_OK,
    ORCH,
    ROOT,
    cli_env,
    running,
    write_yaml,
)
from tests.support.waiting import wait_until

if TYPE_CHECKING:
    from orchestrator.engine.docker_engine import DockerEngine

# A hang guard, not a duration check: the machines are shared with benchmarks and other
# runs, and these tests roll out one to six times each.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(1800)]
HANG = 900.0


def orch(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(ORCH), *args], capture_output=True, text=True, cwd=ROOT,
                          env=cli_env(), timeout=HANG)


def head_address(name: str) -> tuple[str, int]:
    head = next(r for r in ps(name) if r["role"] == "head")
    host, _, port = head["ports"][0].split("->")[0].rpartition(":")
    return host, int(port)


def workers(name: str) -> list[dict[str, Any]]:
    return [r for r in ps(name) if r["role"] == "worker"]


def ps(name: str) -> list[dict[str, Any]]:
    proc = orch("ps", name, "--json")
    assert proc.returncode == EXIT_OK, proc.stderr
    return list(json.loads(proc.stdout))


@pytest.fixture(autouse=True)
def patient(monkeypatch: pytest.MonkeyPatch) -> None:
    """test_cli's foreground helper waits for a line at most DEADLINE: longer here."""
    import tests.integration.test_cli as test_cli

    monkeypatch.setattr(test_cli, "DEADLINE", HANG)


@pytest.fixture
def name(docker_engine: DockerEngine) -> Iterator[str]:
    """A fresh deployment name; its containers, network and history records are removed
    by label afterwards, whatever happened."""
    name = f"thist{uuid.uuid4().hex[:8]}"
    yield name
    remove_owned(docker_engine, name, grace=0)
    assert not list_owned(docker_engine, name)


def deployment_file(folder: Path, name: str, image: str, replicas: int) -> Path:
    """test_cli's file, with a start deadline per pod that a machine shared by many test
    runs and benchmarks still meets (the deadline of the product, not of the test)."""
    path = write_yaml(folder, name, image=image, replicas=replicas)
    path.write_text(path.read_text().replace("timeout_ready: 60", "timeout_ready: 600"))
    return path


def history(name: str) -> list[dict[str, Any]]:
    proc = orch("rollout", "history", name, "--json")
    assert proc.returncode == EXIT_OK, proc.stderr
    return list(json.loads(proc.stdout))


def brief(rows: list[dict[str, Any]]) -> list[tuple[int, str, str]]:
    return [(r["revision"], r["change"], r["outcome"]) for r in rows]


def tags_after(load: Load, moment: float) -> set[str]:
    load.wait_for(10)
    return {d["tag"] for r in load.after(moment) for d in r.docs}


def cli(*words: str) -> float:
    """Run one command that must succeed; returns when it finished."""
    proc = orch(*words)
    assert proc.returncode == EXIT_OK, proc.stderr[-2000:]
    return time.monotonic()


def cli_when_free(*words: str) -> float:
    """`cli`, retried while the deployment's lock is taken, as its message advises: `up -d`
    started a supervisor, whose heal look may be converging what a killed CLI left at
    that very moment (it holds the lock for that, and a second taker is refused)."""
    deadline = time.monotonic() + HANG
    while True:
        proc = orch(*words)
        if proc.returncode == EXIT_OK:
            return time.monotonic()
        busy = "is already being updated or scaled" in proc.stderr
        assert busy and time.monotonic() < deadline, proc.stderr[-2000:]
        time.sleep(0.5)


def test_history_undo_to_revision_and_restart_with_zero_failed_requests(
        name: str, runtime_image: str, tmp_path: Path, docker_engine: DockerEngine) -> None:
    path = deployment_file(tmp_path, name, runtime_image, 2)
    cli("up", "-f", str(path), "-d")
    assert brief(history(name)) == [(1, "created", "rolled out")]
    with Load(*head_address(name)) as load:
        load.wait_for(20)
        cli("rollout", name, "--set", "tag=v2")
        done = cli("rollout", name, "--set", "tag=v3")
        assert tags_after(load, done) == {"v3"}
        rows = history(name)
        assert brief(rows) == [(1, "created", "rolled out"),
                               (2, "uses_with.tag: v1 -> v2", "rolled out"),
                               (3, "uses_with.tag: v2 -> v3", "rolled out")]
        assert [r["running"] for r in rows] == [False, False, True]

        done = cli("rollout", "undo", name)  # to the revision before: 2
        assert tags_after(load, done) == {"v2"}
        done = cli("rollout", "undo", name, "--to-revision", "1")
        assert tags_after(load, done) == {"v1"}

        before = {w["pod"] for w in workers(name)}
        done = cli("rollout", "restart", name)
        assert tags_after(load, done) == {"v1"}
        after = {w["pod"] for w in workers(name)}
        assert len(after) == 2 and not before & after  # every replica replaced
        load.wait_for(20)
    assert load.failures == [], load.failures[:3]
    assert {d["tag"] for r in load.results for d in r.docs} == {"v1", "v2", "v3"}
    rows = history(name)
    assert brief(rows)[3:] == [(4, "undo to revision 2: uses_with.tag: v3 -> v2", "rolled out"),
                               (5, "undo to revision 1: uses_with.tag: v2 -> v1", "rolled out"),
                               (6, "restart", "rolled out")]
    assert rows[-1]["running"] and rows[0]["spec"]["uses_with"] == {"tag": "v1"}
    table = orch("rollout", "history", name)
    assert table.returncode == EXIT_OK and table.stdout.splitlines()[6].startswith("6*")
    # the records are volumes labelled with the deployment, one per revision
    assert len(docker_engine.list_volumes(L.for_deployment(name))) == 6
    missing = orch("rollout", "undo", name, "--to-revision", "42")
    assert missing.returncode == 2 and "revision 42 is not in the history" in missing.stderr


def test_the_history_survives_the_head_being_removed_and_recreated_by_heal(
        name: str, runtime_image: str, tmp_path: Path, docker_engine: DockerEngine) -> None:
    path = deployment_file(tmp_path, name, runtime_image, 1)
    cli("up", "-f", str(path), "-d")
    cli("rollout", name, "--set", "tag=v2")
    before = history(name)
    head = f"{name}-head"
    old_id = docker_engine.inspect_container(head).id
    with running(["heal", name, "--after", "1"], "replacing") as fg:
        docker_engine.remove_container(head, force=True)  # behind everyone's back
        wait_until(lambda: _running_id(docker_engine, head) not in (None, old_id),
                   timeout=HANG, what="heal recreates the head")
        assert history(name) == before  # read while the new head may still be starting
        wait_until(lambda: _routed(name), timeout=HANG,
                   what="the new head serves and routes to the worker again")
        assert history(name) == before
        fg.proc.send_signal(signal.SIGINT)  # heal takes the update lock every second
        assert fg.proc.wait(timeout=HANG) == EXIT_OK
    done = cli("rollout", "undo", name)  # the history still drives an undo
    assert [r["outcome"] for r in history(name)] == ["rolled out"] * 3
    with Load(*head_address(name)) as load:
        assert tags_after(load, done) == {"v1"}


def _routed(name: str) -> bool:
    pods = ps(name)
    return any(p["role"] == "head" and p["health"] == "serving" for p in pods) and \
        all(p["routing"] == "ready" for p in pods if p["role"] == "worker")


def _running_id(engine: DockerEngine, name: str) -> str | None:
    from orchestrator.errors import ResourceNotFound

    try:
        info = engine.inspect_container(name)
    except ResourceNotFound:
        return None
    return info.id if info.running else None


def test_an_update_whose_cli_was_killed_shows_cut_short_and_undo_still_works(
        name: str, runtime_image: str, tmp_path: Path) -> None:
    """SIGKILL of `orchestrator rollout` after its first replica was replaced: the revision
    it recorded reads "cut short" (its process is gone, the replicas run both specs), and
    `undo` takes the deployment back to revision 1, cleaning up what the CLI left."""
    path = deployment_file(tmp_path, name, runtime_image, 3)
    cli("up", "-f", str(path), "-d")
    with Load(*head_address(name)) as load:
        load.wait_for(20)
        with running(["rollout", name, "--set", "tag=v2"], f"starting {name}-s0-r1") as fg:
            fg.proc.send_signal(signal.SIGKILL)
            assert fg.proc.wait(timeout=HANG) == -signal.SIGKILL
        rows = history(name)
        assert brief(rows) == [(1, "created", "rolled out"),
                               (2, "uses_with.tag: v1 -> v2", "cut short")]
        assert "ended during the update" in rows[1]["note"] and rows[1]["running"]
        done = cli_when_free("rollout", "undo", name)
        assert tags_after(load, done) == {"v1"}
        load.wait_for(20)
    assert load.failures == [], load.failures[:3]
    assert brief(history(name)) == [(1, "created", "rolled out"),
                                    (2, "uses_with.tag: v1 -> v2", "cut short"),
                                    (3, "undo to revision 1: uses_with.tag: v2 -> v1",
                                     "rolled out")]
    pods = workers(name)
    assert len(pods) == 3 and {p["routing"] for p in pods} == {"ready"}
