"""The deployment lock: a real flock, across threads and processes, that names its holder
and lets an update wait (bounded) behind a heal, never behind another update."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest

from orchestrator.control.healer import busy
from orchestrator.control.lock import HEAL, START, UPDATE, DeploymentLock, Holder
from orchestrator.errors import RolloutInProgress


@pytest.fixture
def locks(tmp_path: Path) -> Iterator[tuple[DeploymentLock, DeploymentLock]]:
    """Two takers of one deployment's lock (as two processes would be)."""
    pair = DeploymentLock("dep", str(tmp_path)), DeploymentLock("dep", str(tmp_path))
    yield pair
    for lock in pair:
        lock.release()


def test_the_file_names_the_holder_while_it_holds(
        locks: tuple[DeploymentLock, DeploymentLock]) -> None:
    first, second = locks
    assert second.holder() is None
    assert first.try_acquire(HEAL)
    assert second.holder() == Holder(os.getpid(), HEAL)
    assert first.holder() == Holder(os.getpid(), HEAL)
    assert not second.try_acquire(UPDATE)
    first.release()
    assert second.holder() is None  # the file is emptied on release
    assert second.try_acquire(UPDATE)
    assert first.holder() == Holder(os.getpid(), UPDATE)


def test_a_second_update_is_refused_at_once_and_told_who_holds_it(
        locks: tuple[DeploymentLock, DeploymentLock]) -> None:
    first, second = locks
    first.acquire(busy("dep"), UPDATE)
    # refused without waiting: had it waited, nothing here would ever let it in
    with pytest.raises(RolloutInProgress, match=rf"update by process {os.getpid()}"):
        second.acquire(partial(busy, "dep"), UPDATE, behind=(HEAL,), wait=3600)
    assert not second.held


def test_an_update_waits_behind_a_heal_and_goes_on_when_it_ends(
        locks: tuple[DeploymentLock, DeploymentLock]) -> None:
    healer, updater = locks
    assert healer.try_acquire(HEAL)
    outcome: list[BaseException | None] = []

    def update() -> None:
        try:
            updater.acquire(partial(busy, "dep"), UPDATE, behind=(HEAL,), wait=3600)
            outcome.append(None)
        except BaseException as exc:  # handed to the test
            outcome.append(exc)

    waiting = threading.Thread(target=update)
    waiting.start()
    waiting.join(0.3)
    assert waiting.is_alive() and outcome == []  # still waiting: not refused
    healer.release()
    waiting.join()
    assert outcome == [None]
    assert updater.held and healer.holder() == Holder(os.getpid(), UPDATE)


def test_an_update_behind_a_heal_that_outlasts_the_wait_is_refused_naming_it(
        locks: tuple[DeploymentLock, DeploymentLock]) -> None:
    healer, updater = locks
    assert healer.try_acquire(HEAL)
    with pytest.raises(RolloutInProgress, match=rf"\(heal by process {os.getpid()}\)"):
        updater.acquire(partial(busy, "dep"), UPDATE, behind=(HEAL,), wait=0.2)
    assert healer.holder() == Holder(os.getpid(), HEAL)


def test_a_holder_that_does_not_say_what_it_does_is_not_waited_for(tmp_path: Path) -> None:
    """An older version's holder writes nothing: refused at once, as before."""
    lock = DeploymentLock("dep", str(tmp_path))
    with open(lock.path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert lock.holder() is None
        with pytest.raises(RolloutInProgress, match=r"being updated or scaled;"):
            lock.acquire(partial(busy, "dep"), UPDATE, behind=(HEAL,), wait=3600)


def test_this_object_holding_a_heal_refuses_itself_at_once(
        locks: tuple[DeploymentLock, DeploymentLock]) -> None:
    lock, _ = locks
    assert lock.try_acquire(HEAL)
    with pytest.raises(RolloutInProgress):
        lock.acquire(partial(busy, "dep"), UPDATE, behind=(HEAL,), wait=3600)
    assert lock.holder() == Holder(os.getpid(), HEAL)


def test_another_process_is_named_by_its_pid(tmp_path: Path) -> None:
    holding = (
        "import sys; from orchestrator.control.lock import DeploymentLock; "
        f"lock = DeploymentLock('dep', {str(tmp_path)!r}); "
        f"assert lock.try_acquire({START!r}); print('held', flush=True); sys.stdin.read()"
    )
    with subprocess.Popen([sys.executable, "-c", holding], stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, text=True) as other:
        assert other.stdin is not None and other.stdout is not None
        try:
            assert other.stdout.readline() == "held\n"
            lock = DeploymentLock("dep", str(tmp_path))
            assert lock.holder() == Holder(other.pid, START)
            with pytest.raises(RolloutInProgress, match=rf"start by process {other.pid}"):
                lock.acquire(partial(busy, "dep"), UPDATE, behind=(HEAL,), wait=3600)
        finally:
            other.stdin.close()
            other.wait(timeout=30)
    # a process that exits lets go without a word (the kernel drops its flock)
    assert lock.try_acquire(UPDATE)
    assert DeploymentLock("dep", str(tmp_path)).holder() == Holder(os.getpid(), UPDATE)
    lock.release()
