"""The worker's configuration, built by `__main__` from argv.

A NamedTuple checked by `check()`, not a frozen dataclass as the head's are (config.py):
every worker pod would pay 0.4 MB for the dataclasses machinery and the head's classes.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, NamedTuple

from orchestrator.errors import SpecError
from orchestrator.runtime import wire


class WorkerConfig(NamedTuple):
    """Everything `python -m orchestrator.runtime worker` needs."""

    uses: str
    uses_with: Mapping[str, Any] = MappingProxyType({})
    host: str = "0.0.0.0"
    port: int = 50051
    name: str = "executor"
    shard_id: int = 0
    replica_id: int = 0
    workspace: str | None = None
    grace: float = 10.0
    max_message_bytes: int = wire.DEFAULT_MAX_MESSAGE_BYTES

    def check(self) -> WorkerConfig:
        """This configuration, once valid.

        Raises:
            SpecError: naming the field at fault.
        """
        check_common(self.port, self.grace, self.max_message_bytes)
        if self.shard_id < 0 or self.replica_id < 0:
            raise SpecError("shard and replica ids must be >= 0", field="shard_id")
        return self


def check_common(port: int, grace: float, max_message_bytes: int) -> None:
    """What the worker and the head check alike.

    Raises:
        SpecError: naming the field at fault.
    """
    if not 0 <= port <= 65535:
        raise SpecError(f"{port} is not a TCP port", field="port")
    if grace < 0:
        raise SpecError("must be >= 0", field="grace")
    if max_message_bytes < 1024:
        raise SpecError("must be >= 1024", field="max_message_bytes")
