"""Fixtures of the in-process runtime tests (helpers live in harness.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.unit.runtime.harness import Cluster, running_cluster


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    """Workers and heads on loopback, all stopped at teardown."""
    with running_cluster() as c:
        yield c
