"""The `engine` fixture: every contract test runs on MemoryEngine and on Docker."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import pytest

from orchestrator.engine.base import ContainerEngine, ContainerSpec
from orchestrator.engine.cleanup import remove_owned
from orchestrator.engine.memory import MemoryEngine
from orchestrator.planning import labels as L
from tests.support.images import TEST_IMAGE

ENGINES = ["memory", pytest.param("docker", marks=pytest.mark.integration)]



@pytest.fixture(scope="session", autouse=True)
def leak_check(nothing_of_ours_left_behind: None) -> None:
    """These tests use the real engine: the session's leak check applies (tests/conftest)."""


@pytest.fixture(params=ENGINES)
def engine_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def engine(engine_kind: str, request: pytest.FixtureRequest) -> ContainerEngine:
    if engine_kind == "memory":
        memory = MemoryEngine()
        memory.add_image(TEST_IMAGE)
        return memory
    request.getfixturevalue("test_image")
    docker_engine: ContainerEngine = request.getfixturevalue("docker_engine")
    return docker_engine


@dataclass
class Ours:
    """One test's namespace on the engine: a unique deployment label and name prefix."""

    engine: ContainerEngine
    deployment: str

    def name(self, suffix: str) -> str:
        return f"{self.deployment}-{suffix}"

    def labels(self, **extra: str) -> dict[str, str]:
        return {**L.for_deployment(self.deployment), **extra}

    def spec(
        self, suffix: str, command: tuple[str, ...] = ("sleep", "300"), **fields: Any
    ) -> ContainerSpec:
        extra: Mapping[str, str] = fields.pop("extra_labels", {})
        return ContainerSpec(
            name=self.name(suffix), image=TEST_IMAGE, command=command,
            labels=self.labels(**extra), **fields,
        )


@pytest.fixture
def ours(engine: ContainerEngine) -> Iterator[Ours]:
    """Everything a test creates under its deployment label is removed afterwards."""
    scope = Ours(engine, f"ct-{uuid.uuid4().hex[:10]}")
    yield scope
    remove_owned(engine, scope.deployment, grace=0)
