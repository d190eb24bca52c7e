"""What runs inside every pod: executors, the worker and head servers (never imports docker).

Keep this module light: `python -m orchestrator.runtime probe` imports it.
"""

from orchestrator.runtime.executor import Executor, RuntimeArgs, requests

__all__ = ["Executor", "RuntimeArgs", "requests"]

