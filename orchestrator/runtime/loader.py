"""Load an executor from a `uses` string: `pkg.module:Class` or `path/to/file.py:Class`."""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import sys
import zlib
from types import ModuleType
from typing import Any

from orchestrator.errors import SpecError
from orchestrator.runtime.executor import Executor, RuntimeArgs


class ExecutorInitError(SpecError):
    """The executor class was found but its `__init__` raised (the cause is chained)."""


def parse_uses_with(text: str | None) -> dict[str, Any]:
    """Parse the `--uses-with` JSON object.

    Raises:
        SpecError: the text is not a JSON object.
    """
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SpecError(f"not valid JSON ({exc})", field="uses_with") from exc
    if not isinstance(value, dict):
        raise SpecError(f"must be a JSON object, got {type(value).__name__}", field="uses_with")
    return value


def load_executor(
    uses: str, uses_with: dict[str, Any] | None = None, runtime_args: RuntimeArgs | None = None
) -> Executor:
    """Import the class named by `uses` and instantiate it with `uses_with`.

    Raises:
        SpecError: malformed `uses`, missing module or file, missing class, not an Executor.
        ExecutorInitError: the class's `__init__` raised.
    """
    module_ref, _, class_name = uses.rpartition(":")
    if not module_ref or not class_name:
        raise SpecError(f"{uses!r} must look like 'pkg.module:Class' or 'file.py:Class'",
                        field="uses")
    module = _import(module_ref, uses)
    cls = getattr(module, class_name, None)
    if cls is None:
        raise SpecError(f"{uses!r}: module has no class {class_name!r}", field="uses")
    if not (isinstance(cls, type) and issubclass(cls, Executor)):
        raise SpecError(f"{uses!r}: {class_name} is not an orchestrator.Executor subclass",
                        field="uses")
    args = runtime_args or RuntimeArgs(name=class_name)
    return _instantiate(cls, uses, uses_with or {}, args)


def _import(module_ref: str, uses: str) -> ModuleType:
    if module_ref.endswith(".py"):
        return _import_file(module_ref, uses)
    try:
        return importlib.import_module(module_ref)
    except ImportError as exc:
        raise SpecError(f"{uses!r}: cannot import {module_ref!r} ({exc})", field="uses") from exc


def _import_file(path: str, uses: str) -> ModuleType:
    # os.path, not pathlib: pathlib's imports would cost every worker 0.5 MB
    if not os.path.isfile(path):
        raise SpecError(f"{uses!r}: no such file {path!r}", field="uses")
    # A stable, unique module name: two files named executor.py must not collide. (CRC-32:
    # zlib is loaded in every pod already, hashlib would cost each worker 0.1 MB.)
    digest = f"{zlib.crc32(os.path.realpath(path).encode()):08x}"
    stem = os.path.splitext(os.path.basename(path))[0]
    name = f"_orchestrator_uses_{stem}_{digest}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise SpecError(f"{uses!r}: cannot load {path!r} as Python", field="uses")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look modules up here
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[name]
        raise SpecError(f"{uses!r}: importing {path!r} failed: {exc!r}",
                        field="uses") from exc
    return module


def _instantiate(
    cls: type[Executor], uses: str, uses_with: dict[str, Any], runtime_args: RuntimeArgs
) -> Executor:
    # runtime_args is set before __init__ so user code can read it there, and so a user
    # __init__ without **kwargs still works.
    instance = cls.__new__(cls)
    instance.runtime_args = runtime_args
    try:
        instance.__init__(**uses_with)  # type: ignore[misc]
    except Exception as exc:
        raise ExecutorInitError(f"{uses!r}: __init__ raised {type(exc).__name__}: {exc}",
                                field="uses") from exc
    return instance
