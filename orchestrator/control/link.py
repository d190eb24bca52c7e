"""The head's control channel of one deployment: opened once, kept, re-aimed when the
head moves (a head restarted in its container can get a new address), and replaceable
by a fake in tests (`connect`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from orchestrator.actuator import Actuator
from orchestrator.model import ContainerInfo, WorkerStatus
from orchestrator.state import DeploymentState
from orchestrator.tls import ClientTLS


class HeadControlLike(Protocol):
    """What the doers need of a head's control service (see control.head.HeadControl)."""

    address: str

    def add_worker(self, shard: int, address: str, worker_id: str = "") -> None: ...

    def remove_worker(self, shard: int, address: str) -> None: ...

    def drain_worker(self, shard: int, address: str, timeout: float) -> bool: ...

    def list_workers(self) -> list[WorkerStatus]: ...

    def note_replaced(self, pod: str, role: str, reason: str) -> None: ...

    def close(self) -> None: ...


Connect = Callable[[str, str], HeadControlLike]
"""(address, token) -> a control client: control.head.HeadControl, or a fake."""


def grpc_connect(address: str, token: str, tls: ClientTLS | None = None) -> HeadControlLike:
    """A gRPC control client; `tls`: the head serves TLS (bind it with functools.partial:
    the Deployment does, from its spec's `own_tls()`)."""
    from orchestrator.control.head import HeadControl

    return HeadControl(address, token, tls=tls)


class HeadLink:
    """The one control client of a deployment's head."""

    def __init__(self, state: DeploymentState, actuator: Actuator,
                 connect: Connect = grpc_connect) -> None:
        self._state = state
        self._actuator = actuator
        self._connect = connect
        self._control: HeadControlLike | None = None

    def get(self, head: ContainerInfo | None = None) -> HeadControlLike:
        """The control client; `head`: the head container as just seen (None: inspect it
        if no channel is open). A channel open to another address than `head`'s is
        re-aimed (see `follow`).

        Raises:
            ResourceNotFound: no head container. PodStartError: it has no address.
        """
        if head is not None:
            self.follow(head)
        if self._control is None:
            info = head or self._actuator.engine.inspect_container(self._state.head_name)
            self._control = self._connect(self._actuator.address(info), self._state.token)
        return self._control

    def follow(self, head: ContainerInfo) -> None:
        """The head container as the engine shows it now: a channel aimed at an old
        address is closed, and the next `get` opens one to the new address."""
        self._state.note(head)
        if self._control is not None and \
                self._control.address != self._actuator.address_of(head):
            self.close()

    def close(self) -> None:
        control, self._control = self._control, None
        if control is not None:
            control.close()
