"""orchestrator: Jina-style Deployments (head + shards x replicas) on one Docker engine."""

from typing import TYPE_CHECKING, Any

from orchestrator.errors import (
    ConfigError,
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
    from orchestrator.deployment import BaseDeployment, Deployment, DeploymentRoleType
    from orchestrator.progress import ProgressEvent
    from orchestrator.runtime.executor import Executor, requests
    from orchestrator.spec import UpdatePolicy

# Imported on first use: `import orchestrator` (e.g. by planning code) should not pay for grpc.
_LAZY = {
    "AsyncClient": "orchestrator.client",
    "BaseDeployment": "orchestrator.deployment",
    "Client": "orchestrator.client",
    "Deployment": "orchestrator.deployment",
    "DeploymentRoleType": "orchestrator.deployment",
    "ProgressEvent": "orchestrator.progress",
    "UpdatePolicy": "orchestrator.spec",
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
    "BaseDeployment",
    "Client",
    "ConfigError",
    "ControlAuthError",
    "Deployment",
    "DeploymentNotFound",
    "DeploymentRoleType",
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
    "ProgressEvent",
    "RequestError",
    "ResourceConflict",
    "ResourceNotFound",
    "RolloutError",
    "RolloutInProgress",
    "ServiceUnavailable",
    "SpecError",
    "UpdatePolicy",
    "__version__",
    "requests",
]
