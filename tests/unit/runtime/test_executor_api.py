"""Executor API, loader and config parsing: pure, no servers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import orchestrator
from orchestrator import Executor, SpecError, requests
from orchestrator.runtime.config import HeadConfig, Polling, PollingPolicy, WorkerAddress
from orchestrator.runtime.executor import DEFAULT_ENDPOINT, RuntimeArgs, collect_handlers
from orchestrator.runtime.loader import ExecutorInitError, load_executor, parse_uses_with
from tests.unit.runtime.harness import ECHO


class Base(Executor):
    @requests(on="/a")
    def a(self, docs: list[dict[str, Any]]) -> None: ...

    @requests
    def fallback(self, docs: list[dict[str, Any]], **kwargs: Any) -> None: ...


class Child(Base):
    @requests(on=["/a", "/b"])
    def ab(self, docs: list[dict[str, Any]], **kwargs: Any) -> None: ...


def test_handlers_by_endpoint_subclass_wins() -> None:
    table = collect_handlers(Child())
    assert set(table) == {"/a", "/b", DEFAULT_ENDPOINT}
    assert table["/a"].func.__name__ == "ab" and table[DEFAULT_ENDPOINT].func.__name__ == "fallback"
    # a handler without **kwargs only gets the names it declares
    assert collect_handlers(Base())["/a"].kwargs_for([], {}, "/a") == {"docs": []}


def test_requests_rejects_bad_endpoints_and_duplicate_claims() -> None:
    with pytest.raises(TypeError, match="non-empty endpoint strings"):
        requests(on=[])
    with pytest.raises(TypeError, match="non-empty endpoint strings"):
        requests(on="")

    class Twice(Executor):
        @requests(on="/x")
        def one(self, docs: Any) -> None: ...

        @requests(on="/x")
        def two(self, docs: Any) -> None: ...

    with pytest.raises(TypeError, match="claimed by both one and two"):
        collect_handlers(Twice())


def test_unknown_uses_with_key_is_an_error() -> None:
    with pytest.raises(ExecutorInitError, match="unexpected uses_with arguments: \\['tga'\\]"):
        load_executor(f"{ECHO}:Echo", {"tga": "typo"})


def test_loader_sets_runtime_args_before_init(tmp_path: Path) -> None:
    (tmp_path / "mine.py").write_text(
        "from orchestrator import Executor\n"
        "class Mine(Executor):\n"
        "    def __init__(self, x):\n"  # no **kwargs, no super().__init__: still works
        "        self.seen = (x, self.runtime_args.shard_id, self.runtime_args.workspace)\n"
    )
    ex: Any = load_executor(f"{tmp_path}/mine.py:Mine", {"x": 5}, RuntimeArgs("m", 3, 1, "/ws"))
    assert ex.seen == (5, 3, "/ws") and ex.name == "m"


@pytest.mark.parametrize(
    ("uses", "error", "needle"),
    [
        ("json:JSONDecoder", SpecError, "not an orchestrator.Executor subclass"),
        ("nope_mod:X", SpecError, "cannot import"),
        (f"{ECHO}:Missing", SpecError, "no class 'Missing'"),
        (f"{ECHO}:Broken", ExecutorInitError, "broken on purpose"),
        ("Echo", SpecError, "must look like"),
    ],
)
def test_loader_errors(uses: str, error: type[Exception], needle: str) -> None:
    with pytest.raises(error, match=needle):
        load_executor(uses)


def test_parse_uses_with() -> None:
    assert parse_uses_with('{"tag": "v2", "n": 1}') == {"tag": "v2", "n": 1}
    assert parse_uses_with(None) == {}
    for bad in ("{", "[1]"):
        with pytest.raises(SpecError, match="uses_with"):
            parse_uses_with(bad)


@pytest.mark.parametrize(
    ("text", "endpoint", "mode"),
    [
        ("ANY", "/x", Polling.ANY),
        ("all", "/x", Polling.ALL),
        ('{"/index": "ALL", "*": "ANY"}', "/index", Polling.ALL),
        ('{"/index": "ALL", "*": "ANY"}', "/search", Polling.ANY),
        ('{"/index": "ALL"}', "/other", Polling.ANY),
        ('{"*": "ALL"}', "/other", Polling.ALL),
    ],
)
def test_polling_policy(text: str, endpoint: str, mode: Polling) -> None:
    assert PollingPolicy.parse(text).mode_for(endpoint) is mode


@pytest.mark.parametrize("bad", ["SOME", '{"/x": "MANY"}', "{", "[]"])
def test_polling_policy_rejects(bad: str) -> None:
    with pytest.raises(SpecError, match="polling"):
        PollingPolicy.parse(bad)


def test_head_config_validation() -> None:
    assert WorkerAddress.parse("1=h:5") == WorkerAddress(1, "h:5")
    with pytest.raises(SpecError, match="SHARD=HOST:PORT"):
        WorkerAddress.parse("h:5")
    with pytest.raises(SpecError, match="shards"):
        HeadConfig(shards=0)
    with pytest.raises(SpecError, match="shard 2"):
        HeadConfig(shards=2, workers=(WorkerAddress(2, "h:1"),))
    assert "tok" not in repr(HeadConfig(shards=1, token="tok"))


def test_public_api_exports_sorted_and_resolvable() -> None:
    assert orchestrator.__all__ == sorted(orchestrator.__all__)
    for name in ("Client", "AsyncClient", "Executor", "requests"):
        assert name in orchestrator.__all__ and getattr(orchestrator, name) is not None
