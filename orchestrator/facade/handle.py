"""What the facade's pieces share: the deployment's state and its collaborators."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from orchestrator.actuator import Actuator
from orchestrator.control.healer import Healer
from orchestrator.control.lifecycle import Lifecycle
from orchestrator.control.link import HeadLink
from orchestrator.control.lock import DeploymentLock
from orchestrator.control.updates import Updates
from orchestrator.engine.base import ContainerEngine
from orchestrator.spec import DeploymentSpec
from orchestrator.state import DeploymentState

if TYPE_CHECKING:
    from orchestrator.client import Client
    from orchestrator.control.background import BackgroundHealer
    from orchestrator.reload import Reloader


@dataclass
class Parts:
    """The collaborators of one engine connection: made on first use, dropped with it."""

    act: Actuator
    head: HeadLink
    life: Lifecycle
    healer: Healer
    updates: Updates


class Handle:
    """The state every piece reads; `Deployment._setup` sets it."""

    state: DeploymentState
    pod_args: dict[str, Any]
    _lock: DeploymentLock
    _parts_: Parts | None
    _healer: BackgroundHealer | None
    _reloader: Reloader | None
    _client: Client | None

    @property
    def engine(self) -> ContainerEngine:
        raise NotImplementedError

    def _parts(self) -> Parts:
        raise NotImplementedError

    @property
    def name(self) -> str:
        return self.state.name

    @property
    def spec(self) -> DeploymentSpec:
        """The spec that runs (after an update: the new one)."""
        return self.state.spec

    def update_pod_args(self) -> None:
        raise NotImplementedError

    def rolling_update_sync(self, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError
