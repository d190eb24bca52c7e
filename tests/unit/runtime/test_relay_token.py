"""The control token through the relay: checked in constant time, never echoed."""

from __future__ import annotations

import hmac
from typing import Any

import pytest

from orchestrator.control import HeadControl
from orchestrator.errors import ControlAuthError
from orchestrator.runtime import head as head_module
from orchestrator.runtime.config import HeadConfig
from orchestrator.runtime.head import token_matches
from tests.unit.runtime.harness import TOKEN, Cluster, addr

SECRET = "tok-" + "Z9" * 20  # distinctive: easy to find in any output


def test_the_token_is_compared_by_digest_in_constant_time(
        cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> None:
    compared: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(head_module.hmac, "compare_digest", spy)
    head = cluster.head(1, token=SECRET)
    with HeadControl(addr(head), SECRET[:-1], timeout=5) as bad, \
            pytest.raises(ControlAuthError):
        bad.list_workers()
    with HeadControl(addr(head), SECRET, timeout=5) as good:
        assert good.list_workers() == []
    assert len(compared) == 2
    # equal-length digests, never the raw tokens: neither bytes nor length leak by timing
    assert all(len(a) == len(b) == 32 for a, b in compared)
    assert all(SECRET.encode() not in a + b for a, b in compared)


@pytest.mark.parametrize(("got", "ok"), [
    (SECRET.encode(), True), (SECRET.encode()[:-1], False), (b"", False),
    (SECRET.encode() + b"x", False), ("tök".encode(), False),
])
def test_token_matches(got: bytes, ok: bool) -> None:
    assert token_matches(got, SECRET.encode()) is ok


def test_the_token_appears_in_no_error_no_log_and_no_repr(
        cluster: Cluster, capfd: pytest.CaptureFixture[str]) -> None:
    head = cluster.head(1, token=SECRET)
    wrong = SECRET[::-1]
    with HeadControl(addr(head), wrong, timeout=5) as bad, \
            pytest.raises(ControlAuthError) as raised:
        bad.add_worker(0, "127.0.0.1:1")
    assert SECRET not in str(raised.value) and wrong not in str(raised.value)
    assert SECRET not in repr(head.config) and SECRET not in str(head.config)
    assert SECRET not in repr(HeadConfig(shards=1, token=SECRET))
    cluster.stop(head)
    out, err = capfd.readouterr()
    assert SECRET not in out + err and wrong not in out + err


def test_the_default_test_token_still_works(cluster: Cluster) -> None:
    head = cluster.head(1)
    with HeadControl(addr(head), TOKEN, timeout=5) as ctl:
        assert ctl.list_workers() == []
