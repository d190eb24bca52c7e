"""pytest support: Deployments as fixtures, for CI integration tests.

Installing the package registers a pytest plugin (`orchestrator.pytest_plugin`) with the
fixtures ``deployment``, ``deployment_from_yaml``, ``session_deployment``,
``orchestrator_image`` and ``orchestrator_engine``; most suites need nothing else. This
module keeps the older fixture-maker working:

    # conftest.py
    from orchestrator.testing import deployment_fixture

    echo = deployment_fixture(uses="executors/echo.py:Echo", replicas=2, scope="session")

    # test_something.py
    def test_echo(echo):
        assert echo.post("/echo", docs=[{"a": 1}])[0]["a"] == 1

Each fixture instance gets a unique deployment name (parallel runs, e.g. pytest-xdist,
never clash), is ready before the test starts (or the fixture errors with the pod, exit
code and log tail), and is removed afterwards, whatever the test did. If the test process
is killed, the deployment's reaper removes it. A fixture made here is a `Deployment`, so
the plugin attaches its pods' logs to a failed test's report as well.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any, Literal

from orchestrator.deployment import Deployment
from orchestrator.pytest_plugin import (
    DeploymentFactory,
    YamlDeploymentFactory,
    pod_log_tails,
    resolve_image,
    unique_name,
)

Scope = Literal["session", "package", "module", "class", "function"]

__all__ = [
    "DeploymentFactory",
    "Scope",
    "YamlDeploymentFactory",
    "deployment_fixture",
    "pod_log_tails",
    "resolve_image",
    "unique_name",
]


def deployment_fixture(*, scope: Scope = "function", **fields: Any) -> Callable[..., Any]:
    """A pytest fixture yielding a started `Deployment(**fields)` with a unique name.

    `name`, when given, is used as a prefix.
    """
    import pytest

    prefix = str(fields.pop("name", "pytest"))

    @pytest.fixture(scope=scope)
    def _deployment() -> Iterator[Deployment]:
        with Deployment(name=f"{prefix}-{uuid.uuid4().hex[:8]}", **fields) as dep:
            yield dep

    return _deployment
