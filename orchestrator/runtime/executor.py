"""The user's Executor API: subclass `Executor`, mark methods with `@requests`.

A handler is called with keyword arguments only: `docs` (list of JSON-like dicts),
`parameters` (dict) and `endpoint` (str). Handlers that do not accept `**kwargs` get only
the names they declare. A handler returns a list of dicts, or None to send back `docs`
as changed in place. Handlers may be `async def`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, TypeVar, overload

Doc = dict[str, Any]
Handler = Callable[..., Any]
F = TypeVar("F", bound=Handler)

_MARK = "__orchestrator_endpoints__"
DEFAULT_ENDPOINT = "*"  # internal key of the default handler; never a real path


class RuntimeArgs(NamedTuple):
    """What an executor may know about the pod it runs in (`self.runtime_args`), read-only.
    (NamedTuples, not dataclasses, here: a worker pod would pay 0.2 MB for those.)"""

    name: str = "executor"
    shard_id: int = 0
    replica_id: int = 0
    workspace: str | None = None


@overload
def requests(func: F, /) -> F: ...


@overload
def requests(*, on: str | Sequence[str] | None = None) -> Callable[[F], F]: ...


def requests(
    func: F | None = None, /, *, on: str | Sequence[str] | None = None
) -> F | Callable[[F], F]:
    """Mark an Executor method as the handler of endpoint(s) `on`.

    Bare `@requests` (or `on=None`) marks the default handler, used for unknown endpoints.

    Raises:
        TypeError: `on` is empty or holds something other than strings.
    """
    endpoints = _normalise_on(on)

    def mark(f: F) -> F:
        setattr(f, _MARK, endpoints)
        return f

    return mark(func) if func is not None else mark


def _normalise_on(on: str | Sequence[str] | None) -> tuple[str, ...]:
    if on is None:
        return (DEFAULT_ENDPOINT,)
    items = (on,) if isinstance(on, str) else tuple(on)
    if not items or not all(isinstance(e, str) and e for e in items):
        raise TypeError(f"@requests(on=...) needs non-empty endpoint strings, got {on!r}")
    return items


class Executor:
    """Base class of user executors.

    `uses_with` values arrive as keyword arguments of `__init__`. `self.runtime_args`
    (a `RuntimeArgs`) is set by the loader *before* `__init__` runs, so it is usable there.
    """

    runtime_args: RuntimeArgs

    def __init__(self, **kwargs: Any) -> None:
        # Unknown uses_with keys reach here through subclasses' **kwargs: a typo in a
        # spec must fail loudly at load time, not be ignored.
        if kwargs:
            raise TypeError(f"unexpected uses_with arguments: {sorted(kwargs)}")
        if not hasattr(self, "runtime_args"):
            self.runtime_args = RuntimeArgs(name=type(self).__name__)

    @property
    def name(self) -> str:
        """The executor's name (the pod name when run by a worker)."""
        return self.runtime_args.name


class BoundHandler(NamedTuple):
    """One endpoint handler bound to an executor instance."""

    func: Callable[..., Any]
    is_async: bool
    accepted: frozenset[str] | None  # None: the handler takes **kwargs

    def kwargs_for(
        self, docs: list[Doc], parameters: dict[str, Any], endpoint: str
    ) -> dict[str, Any]:
        """Keyword arguments to call the handler with."""
        full = {"docs": docs, "parameters": parameters, "endpoint": endpoint}
        if self.accepted is None:
            return full
        return {k: v for k, v in full.items() if k in self.accepted}


def collect_handlers(executor: Executor) -> dict[str, BoundHandler]:
    """Map endpoint (or DEFAULT_ENDPOINT) to handler for `executor`, subclasses winning.

    Raises:
        TypeError: two methods of the same class claim the same endpoint.
    """
    table: dict[str, BoundHandler] = {}
    # Walk base classes first so that a subclass's handler overrides its parent's.
    for klass in reversed(type(executor).__mro__):
        claimed: dict[str, str] = {}
        for attr, value in vars(klass).items():
            endpoints: tuple[str, ...] | None = getattr(value, _MARK, None)
            if endpoints is None:
                continue
            for ep in endpoints:
                if ep in claimed:
                    raise TypeError(
                        f"{klass.__name__}: endpoint {ep!r} claimed by both "
                        f"{claimed[ep]} and {attr}"
                    )
                claimed[ep] = attr
                table[ep] = _bind(getattr(executor, attr))
    return table


def _bind(method: Callable[..., Any]) -> BoundHandler:
    params = inspect.signature(method).parameters.values()
    takes_var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)
    accepted = None if takes_var_kw else frozenset(p.name for p in params)
    return BoundHandler(method, inspect.iscoroutinefunction(method), accepted)
