"""Where this process reaches the head, and requests through it."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

from orchestrator.errors import OrchestratorError, ServiceUnavailable
from orchestrator.facade.handle import Handle
from orchestrator.spec import CONTAINER_PORT

if TYPE_CHECKING:
    from orchestrator.client import Client


class RequestsApi(Handle):
    """The head's address (`port`, `head_host`, `head_port`, `address`) and `post`."""

    @property
    def port(self) -> int | None:
        """The head port published on the host: given, or reserved at construction (see
        orchestrator/ports.py), or, for a handle rebuilt from labels, the published one."""
        if self.spec.external:
            return self.spec.port
        head = self.state.head_info()
        if head and CONTAINER_PORT in head.ports:
            return head.ports[CONTAINER_PORT][1]
        return self.spec.port

    def _head_inside(self) -> str | None:
        return None if self._parts_ is None else self._parts_.life.head_inside()

    @property
    def head_host(self) -> str:
        """Where this process reaches the head: the published host address, or, from inside
        a container of the engine, the head's address on the deployment network."""
        inside = self._head_inside()
        if inside is not None:
            return inside
        head = self.state.head_info()
        if head is not None and head.node and CONTAINER_PORT in head.ports:
            return head.ports[CONTAINER_PORT][0]  # Swarm: the node the head publishes on
        host = self.spec.host
        return "127.0.0.1" if host in ("0.0.0.0", "") else host

    @property
    def head_port(self) -> int:
        if self._head_inside() is not None:
            return CONTAINER_PORT
        port = self.port
        if port is None:
            raise OrchestratorError(f"deployment {self.name} is not started: no head port yet")
        return port

    @property
    def address(self) -> str:
        return f"{self.head_host}:{self.head_port}"



    def client(self) -> Client:
        if self._client is None:
            from orchestrator.client import Client

            self._client = Client(self.head_host, self.head_port,
                                  tls=self.spec.own_tls() or False)
        return self._client

    def post(self, endpoint: str, docs: list[dict[str, Any]] | None = None,
             parameters: dict[str, Any] | None = None, **kwargs: Any) -> list[dict[str, Any]]:
        """Send a request through the head and return the resulting docs."""
        try:
            result: list[dict[str, Any]] = self.client().post(
                endpoint, docs=docs, parameters=parameters, **kwargs
            )
        except ServiceUnavailable:
            self._follow_head()
            raise
        return result

    def _follow_head(self) -> None:
        """Look at the head container again (after a request it did not answer). If it
        restarted in its container (a crash under the restart policy), Docker published
        it on a new free host port unless `port` was given: the next request goes there.
        A failed request is not retried here: it may have reached a worker first."""
        if self.spec.external or not self.state.started:
            return
        with contextlib.suppress(OrchestratorError):
            before = self.port
            self._parts().head.follow(self.engine.inspect_container(self.state.head_name))
            if self.port != before and self._client is not None:
                self._client.close()
                self._client = None
