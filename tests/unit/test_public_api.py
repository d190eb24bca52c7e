"""The package's public surface: sorted, complete, importable."""

from __future__ import annotations

import orchestrator
from orchestrator import errors


def test_all_is_sorted_and_every_name_resolves() -> None:
    names = [n for n in orchestrator.__all__ if n != "__version__"]
    assert names == sorted(names)
    for name in orchestrator.__all__:
        assert getattr(orchestrator, name) is not None


def test_every_error_is_exported_and_rooted() -> None:
    exported = set(orchestrator.__all__)
    for name in dir(errors):
        obj = getattr(errors, name)
        ours = isinstance(obj, type) and obj.__module__ == errors.__name__
        if ours and issubclass(obj, Exception):
            assert name in exported, name
            assert issubclass(obj, errors.OrchestratorError), name


def test_the_readme_example_names_exist() -> None:
    from orchestrator import Deployment, UpdatePolicy

    assert callable(Deployment.rolling_update_sync) and callable(Deployment.scale_sync)
    assert UpdatePolicy().order == "start-first"
