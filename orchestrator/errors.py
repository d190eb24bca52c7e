"""The orchestrator's error hierarchy.

Every error the package raises on purpose derives from one root::

    OrchestratorError
    ├── SpecError (also ValueError)          bad user input: a field, a name, a YAML key
    │   └── ConfigError                      a deployment file is invalid (file, field path)
    ├── EngineError                          the container engine refused or failed
    │   ├── EngineUnavailable                no engine answers at DOCKER_HOST / the socket
    │   ├── ImageNotFound                    an image is neither local nor pullable
    │   ├── ImageBuildError                  `docker build` / import failed (carries log tail)
    │   ├── ResourceNotFound                 a container or network is gone
    │   ├── NotManaged                       refused to touch a resource without our label
    │   └── ResourceConflict                 a name is already taken
    │       └── PortAllocated                a host port is already bound
    ├── HealthCheckTimeout                   a pod never reported SERVING in time
    ├── PodStartError                        a pod exited or failed while starting
    ├── RolloutError                         a rolling update or scale failed (what was done)
    │   └── RolloutInProgress                another rollout holds the deployment
    ├── DeploymentNotFound                   no running deployment has that name
    └── RequestError                         a request through the client failed
        ├── ExecutorError                    the executor raised (remote traceback kept)
        ├── EndpointNotFound                 no such endpoint and no default endpoint
        ├── ControlAuthError                 a control RPC carried a wrong token
        └── ServiceUnavailable               no replica of a needed shard could serve
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pathlib costs every pod 0.5 MB (urllib.parse, ipaddress)
    from pathlib import Path


class OrchestratorError(Exception):
    """Root of every error this package raises on purpose."""


class SpecError(OrchestratorError, ValueError):
    """A spec, argument or config field is invalid; `field` names it."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        self.field = field
        super().__init__(f"{field}: {message}" if field else message)


class ConfigError(SpecError):
    """A deployment file is invalid; the message is one line: file[:line], field path,
    problem."""

    def __init__(self, file: Path | str, path: str, problem: str, *,
                 line: int | None = None) -> None:
        self.file = str(file)
        self.path = path
        self.line = line
        self.problem = " ".join(problem.split())  # one line, whatever the cause said
        at = f"{self.file}:{line}" if line else self.file
        where = f"{at}: {path}" if path else at
        super().__init__(f"{where}: {self.problem}")
        self.field = path or None


class EngineError(OrchestratorError):
    """The container engine failed or refused an operation."""


class EngineUnavailable(EngineError):
    """No container engine answers where we were told to look."""


class ImageNotFound(EngineError):
    """The image is not present locally and cannot be pulled."""

    def __init__(self, message: str, *, image: str) -> None:
        self.image = image
        super().__init__(message)


class ImageBuildError(EngineError):
    """Building or importing an image failed; `log_tail` holds the last build lines."""

    def __init__(self, message: str, *, log_tail: str = "") -> None:
        self.log_tail = log_tail
        text = f"{message}\n--- build log (tail) ---\n{log_tail}" if log_tail else message
        super().__init__(text)


class ResourceNotFound(EngineError):
    """A container or network does not exist (any more)."""


class NotManaged(EngineError):
    """The resource lacks the `orchestrator.managed=true` label, so we will not touch it."""


class ResourceConflict(EngineError):
    """A container or network name is already in use."""


class PortAllocated(ResourceConflict):
    """The requested host port is already bound by something else."""

    def __init__(self, message: str, *, port: int | None = None) -> None:
        self.port = port
        super().__init__(message)


class HealthCheckTimeout(OrchestratorError):
    """A pod did not report SERVING before its readiness deadline."""

    def __init__(self, message: str, *, pod: str, timeout: float, log_tail: str = "") -> None:
        self.pod = pod
        self.timeout = timeout
        self.log_tail = log_tail
        super().__init__(message)


class PodStartError(OrchestratorError):
    """A pod failed to start: it exited, or its container could not be created."""

    def __init__(
        self, message: str, *, pod: str, exit_code: int | None = None, log_tail: str = ""
    ) -> None:
        self.pod = pod
        self.exit_code = exit_code
        self.log_tail = log_tail
        super().__init__(message)


class RolloutError(OrchestratorError):
    """A rolling update or scale failed; `done` lists completed steps, `failed` the cause."""

    def __init__(
        self, message: str, *, done: Sequence[str] = (), failed: str = "", rolled_back: bool = False
    ) -> None:
        self.done = tuple(done)
        self.failed = failed
        self.rolled_back = rolled_back
        super().__init__(message)


class RolloutInProgress(RolloutError):
    """Another rolling update or scale is already running on this deployment."""


class DeploymentNotFound(OrchestratorError):
    """No running deployment carries that name; `known` lists the ones that do."""

    def __init__(self, name: str, known: Sequence[str] = ()) -> None:
        self.name = name
        self.known = tuple(known)
        names = ", ".join(self.known) if self.known else "none"
        super().__init__(f"no deployment named {name!r} is running (running: {names})")


class RequestError(OrchestratorError):
    """A request sent through the client failed."""


class ExecutorError(RequestError):
    """The executor raised while serving the request; the remote traceback is kept."""

    def __init__(
        self, message: str, *, executor: str = "", exc_type: str = "", traceback: str = ""
    ) -> None:
        self.executor = executor
        self.exc_type = exc_type
        self.remote_message = message
        self.traceback = traceback
        super().__init__(f"{executor or 'executor'} raised {exc_type or 'an error'}: {message}")


class EndpointNotFound(RequestError):
    """The endpoint has no handler and the executor has no default endpoint."""


class ControlAuthError(RequestError):
    """A control RPC was refused because its token is wrong."""


class ServiceUnavailable(RequestError):
    """No replica of a needed shard could serve the request."""
