"""orchestrator: Jina-style Deployments (head + shards x replicas) on one Docker engine."""

from typing import TYPE_CHECKING, Any

from orchestrator.errors import (
    ControlAuthError,
    DeploymentNotFound,
    EndpointNotFound,
    EngineError,
    EngineUnavailable,
    ExecutorError,
    HealthCheckTimeout,
    ImageBuildError,
    ImageNotFound,
    NotManaged,
    OrchestratorError,
    PodStartError,
    PortAllocated,
    RequestError,
    ResourceConflict,
    ResourceNotFound,
    RolloutError,
    RolloutInProgress,
    ServiceUnavailable,
    SpecError,
)

if TYPE_CHECKING:
    from orchestrator.client import AsyncClient, Client
    from orchestrator.runtime.executor import Executor, requests

# Imported on first use: `import orchestrator` (e.g. by planning code) should not pay for grpc.
_LAZY = {
    "AsyncClient": "orchestrator.client",
    "Client": "orchestrator.client",
    "Executor": "orchestrator.runtime.executor",
    "requests": "orchestrator.runtime.executor",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'orchestrator' has no attribute {name!r}")

__version__ = "0.1.0"

__all__ = [
    "AsyncClient",
    "Client",
    "ControlAuthError",
    "DeploymentNotFound",
    "EndpointNotFound",
    "EngineError",
    "EngineUnavailable",
    "Executor",
    "ExecutorError",
    "HealthCheckTimeout",
    "ImageBuildError",
    "ImageNotFound",
    "NotManaged",
    "OrchestratorError",
    "PodStartError",
    "PortAllocated",
    "RequestError",
    "ResourceConflict",
    "ResourceNotFound",
    "RolloutError",
    "RolloutInProgress",
    "ServiceUnavailable",
    "SpecError",
    "__version__",
    "requests",
]
