"""What runs inside every pod: executors, the worker and head servers (never imports docker).

Keep this module light: `python -m orchestrator.runtime probe` imports it, and so does the
head, which serves no executor: `Executor`, `RuntimeArgs` and `requests` are imported on
first use.
"""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from orchestrator.runtime.executor import Executor, RuntimeArgs, requests

__all__ = ["Executor", "RuntimeArgs", "requests"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from orchestrator.runtime import executor

        return getattr(executor, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
