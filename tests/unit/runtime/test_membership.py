"""The head's saved worker list: the file format, and a head restarted on the same file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestrator import Client
from orchestrator.control import HeadControl
from orchestrator.runtime import membership
from orchestrator.runtime.membership import Member, StateError
from tests.unit.runtime.harness import TOKEN, Cluster, addr, wait_until


def control(head: object) -> HeadControl:
    return HeadControl(addr(head), TOKEN, timeout=5)  # type: ignore[arg-type]


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "workers.json"
    assert membership.load(path) is None  # no file: a first start
    members = [Member(0, "a:1", "w0"), Member(1, "b:2", "", draining=True)]
    membership.save(path, members)
    assert membership.load(path) == members
    membership.save(path, members[:1])
    assert membership.load(path) == members[:1]
    assert [p.name for p in tmp_path.iterdir()] == ["workers.json"]  # no temporary left


@pytest.mark.parametrize(("text", "why"), [
    ("", "not a worker list"),
    ("{", "not a worker list"),
    ("[]", "not a version-1 worker list"),
    ('{"version": 2, "workers": []}', "not a version-1 worker list"),
    ('{"version": 1}', "not a worker list"),
    ('{"version": 1, "workers": [{"shard": 0}]}', "not a worker list"),
    ('{"version": 1, "workers": [{"shard": -1, "address": "a:1"}]}', "wrong field"),
    ('{"version": 1, "workers": [{"shard": true, "address": "a:1"}]}', "wrong field"),
    ('{"version": 1, "workers": [{"shard": 0, "address": ""}]}', "wrong field"),
    ('{"version": 1, "workers": [{"shard": 0, "address": "a:1", "draining": 1}]}',
     "wrong field"),
    ('{"version": 1, "workers": ["a:1"]}', "not an object"),
])
def test_a_broken_file_is_a_state_error(tmp_path: Path, text: str, why: str) -> None:
    path = tmp_path / "workers.json"
    path.write_text(text)
    with pytest.raises(StateError, match=why):
        membership.load(path)


def test_an_unreadable_path_is_a_state_error(tmp_path: Path) -> None:
    with pytest.raises(StateError, match="cannot read"):
        membership.load(tmp_path)  # a directory


def test_a_restarted_head_restores_its_workers(cluster: Cluster, tmp_path: Path) -> None:
    state = str(tmp_path / "workers.json")
    w0, w1, w2 = (cluster.worker(replica=i) for i in range(3))
    first = cluster.head(1, state=state)
    with control(first) as ctl:
        for i, w in enumerate((w0, w1, w2)):
            ctl.add_worker(0, addr(w), f"w{i}")
        ctl.remove_worker(0, addr(w2))
        assert ctl.drain_worker(0, addr(w1), 1.0)
    cluster.stop(first)
    saved = json.loads(Path(state).read_text())["workers"]
    assert [(m["id"], m["draining"]) for m in saved] == [("w0", False), ("w1", True)]

    second = cluster.head(1, state=state)  # no --worker: everything comes from the file
    with control(second) as ctl:
        listed = [(w.worker_id, w.address, w.state) for w in ctl.list_workers()]
    assert sorted(listed) == [("w0", addr(w0), "ready"), ("w1", addr(w1), "draining")]
    with Client(addr(second)) as client:
        assert client.is_ready()
        served = {client.post("/echo", [{}])[0]["replica"] for _ in range(6)}
    assert served == {0}  # the drained replica stays out of routing


def test_the_saved_list_replaces_the_worker_arguments(cluster: Cluster, tmp_path: Path) -> None:
    state = tmp_path / "workers.json"
    w0, w1 = cluster.worker(replica=0), cluster.worker(replica=1)
    membership.save(state, [Member(0, addr(w1), "w1")])
    head = cluster.head(1, [(0, w0)], state=str(state))
    with control(head) as ctl:
        assert [w.worker_id for w in ctl.list_workers()] == ["w1"]


def test_without_a_file_the_worker_arguments_are_saved(cluster: Cluster, tmp_path: Path) -> None:
    state = tmp_path / "workers.json"
    w0 = cluster.worker()
    cluster.head(1, [(0, w0)], state=str(state))
    assert membership.load(state) == [Member(0, addr(w0))]


def test_a_broken_file_is_reported_and_the_head_starts_from_its_arguments(
    cluster: Cluster, tmp_path: Path, capfd: pytest.CaptureFixture[str],
) -> None:
    state = tmp_path / "workers.json"
    state.write_text("{ half a file")
    w0 = cluster.worker()
    head = cluster.head(1, [(0, w0)], state=str(state))
    with Client(addr(head)) as client:
        assert client.post("/echo", [{}])[0]["replica"] == 0
    assert "ignoring its saved worker list" in capfd.readouterr().err
    assert membership.load(state) == [Member(0, addr(w0))]  # rewritten whole


def test_a_saved_shard_the_head_does_not_have_is_skipped(
    cluster: Cluster, tmp_path: Path, capfd: pytest.CaptureFixture[str],
) -> None:
    state = tmp_path / "workers.json"
    w0 = cluster.worker()
    membership.save(state, [Member(0, addr(w0), "w0"), Member(3, "127.0.0.1:1", "ghost")])
    head = cluster.head(1, state=str(state))
    with control(head) as ctl:
        assert [w.worker_id for w in ctl.list_workers()] == ["w0"]
    assert "shard 3 >= shards (1)" in capfd.readouterr().err


def test_a_state_file_that_cannot_be_written_does_not_stop_routing(
    cluster: Cluster, tmp_path: Path, capfd: pytest.CaptureFixture[str],
) -> None:
    state = str(tmp_path / "missing-dir" / "workers.json")
    w0 = cluster.worker()
    head = cluster.head(1, state=state)
    with control(head) as ctl:
        ctl.add_worker(0, addr(w0), "w0")
    with Client(addr(head)) as client:
        wait_until(client.is_ready, what="head SERVING")
        assert client.post("/echo", [{}])[0]["replica"] == 0
    assert "cannot save its worker list" in capfd.readouterr().err
