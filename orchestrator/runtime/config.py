"""Frozen, validated configuration of the runtime servers (built by `__main__` from argv)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from types import MappingProxyType
from typing import Any

from orchestrator.errors import SpecError
from orchestrator.runtime import wire
from orchestrator.runtime.worker_config import WorkerConfig
from orchestrator.runtime.worker_config import check_common as _check_common

__all__ = ["HeadConfig", "Polling", "PollingPolicy", "SendTimeouts", "WorkerAddress",
           "WorkerConfig"]


class Polling(Enum):
    """How a head spreads one request over shards."""

    ANY = "ANY"  # one replica of one shard
    ALL = "ALL"  # one replica of every shard, results merged


def _polling(value: Any, where: str) -> Polling:
    try:
        return Polling(str(value).upper())
    except ValueError:
        raise SpecError(f"{value!r} is not ANY or ALL", field=where) from None


@dataclass(frozen=True)
class PollingPolicy:
    """Polling per endpoint; `default` covers endpoints not in `per_endpoint`."""

    default: Polling = Polling.ANY
    per_endpoint: Mapping[str, Polling] = field(default_factory=lambda: MappingProxyType({}))

    def mode_for(self, endpoint: str) -> Polling:
        """The polling mode of `endpoint`."""
        return self.per_endpoint.get(endpoint, self.default)

    @property
    def uniform(self) -> bool:
        """True when every endpoint polls the same way (the head then skips metadata)."""
        return not self.per_endpoint

    @classmethod
    def parse(cls, text: str) -> PollingPolicy:
        """Parse `ANY`, `ALL` or a JSON map such as '{"/index": "ALL", "*": "ANY"}'.

        Raises:
            SpecError: unknown mode, or a map that is not a JSON object of strings.
        """
        text = text.strip()
        if not text.startswith("{"):
            return cls(_polling(text, "polling"))
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SpecError(f"not valid JSON ({exc})", field="polling") from exc
        if not isinstance(raw, dict):
            raise SpecError("must be ANY, ALL or a JSON object", field="polling")
        modes = {str(k): _polling(v, f"polling[{k!r}]") for k, v in raw.items()}
        default = modes.pop("*", Polling.ANY)
        return cls(default, MappingProxyType(modes))


@dataclass(frozen=True)
class SendTimeouts:
    """timeout_send: how long the head waits for one worker's answer before it tries
    another replica (or answers DEADLINE_EXCEEDED), per endpoint; None: no limit."""

    default: float | None = None  # seconds
    per_endpoint: Mapping[str, float | None] = field(
        default_factory=lambda: MappingProxyType({}))

    def for_endpoint(self, endpoint: str | None) -> float | None:
        """Seconds for `endpoint` (None: wait as long as the client's deadline allows)."""
        if endpoint is None or not self.per_endpoint:
            return self.default
        return self.per_endpoint.get(endpoint, self.default)

    @classmethod
    def parse(cls, text: str | None) -> SendTimeouts:
        """Milliseconds, as Jina counts them: `1000`, or a JSON map such as
        '{"/slow": 60000, "*": 1000}'; -1 or null is no limit.

        Raises:
            SpecError: not a number of milliseconds, or not such a map.
        """
        if text is None or not text.strip():
            return cls()
        text = text.strip()
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SpecError(f"{text!r} is not milliseconds or a JSON map ({exc})",
                            field="timeout_send") from exc
        if not isinstance(raw, dict):
            return cls(_millis(raw, "timeout_send"))
        per = {str(k): _millis(v, f"timeout_send[{k!r}]") for k, v in raw.items()}
        default = per.pop("*", None)
        return cls(default, MappingProxyType(per))


def _millis(value: Any, where: str) -> float | None:
    if value is None or value == -1:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise SpecError(f"{value!r} is not a number of milliseconds > 0 (or -1: none)",
                        field=where)
    return float(value) / 1000


@dataclass(frozen=True)
class WorkerAddress:
    """One worker replica as the head sees it."""

    shard: int
    address: str
    worker_id: str = ""

    @classmethod
    def parse(cls, text: str) -> WorkerAddress:
        """Parse `SHARD=HOST:PORT`.

        Raises:
            SpecError: not of that form.
        """
        shard, sep, address = text.partition("=")
        if not sep or not shard.strip().isdigit() or ":" not in address:
            raise SpecError(f"{text!r} must look like SHARD=HOST:PORT", field="worker")
        return cls(int(shard), address.strip())


@dataclass(frozen=True)
class HeadConfig:
    """Everything `python -m orchestrator.runtime head` needs."""

    shards: int
    host: str = "0.0.0.0"
    port: int = 50051
    name: str = "head"
    polling: PollingPolicy = field(default_factory=PollingPolicy)
    uses_before: str | None = None
    uses_after: str | None = None
    workers: tuple[WorkerAddress, ...] = ()
    state: str | None = None  # the worker list's file (see membership.py)
    grace: float = 10.0
    health_interval: float = 0.5
    max_message_bytes: int = wire.DEFAULT_MAX_MESSAGE_BYTES
    token: str | None = field(default=None, repr=False)
    http: bool = False  # Jina's HTTP interface on the same port (see runtime/front.py)
    timeout_send: SendTimeouts = field(default_factory=SendTimeouts)

    def __post_init__(self) -> None:
        _check_common(self.port, self.grace, self.max_message_bytes)
        if self.shards < 1:
            raise SpecError(f"must be >= 1, got {self.shards}", field="shards")
        if self.health_interval <= 0:
            raise SpecError("must be > 0", field="health_interval")
        for w in self.workers:
            if w.shard >= self.shards:
                raise SpecError(f"shard {w.shard} of {w.address} >= shards ({self.shards})",
                                field="worker")
