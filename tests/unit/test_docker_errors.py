"""The Docker adapter's pure parts: the exception choke point and inspect parsing."""

from __future__ import annotations

from datetime import UTC, datetime

import docker.errors
import pytest
import requests

from orchestrator.engine.docker_engine import _container_info, _event, _translate
from orchestrator.errors import (
    EngineError,
    EngineUnavailable,
    ImageNotFound,
    PortAllocated,
    ResourceConflict,
    ResourceNotFound,
)

WHERE = "unix:///var/run/docker.sock"


def api_error(status: int, explanation: str) -> docker.errors.APIError:
    response = requests.Response()
    response.status_code = status
    cls = docker.errors.NotFound if status == 404 else docker.errors.APIError
    return cls(f"{status} error", response=response, explanation=explanation)


@pytest.mark.parametrize(
    ("subject", "error", "expected"),
    [
        ("container", api_error(404, "No such image: app:1"), ImageNotFound),
        ("image", api_error(404, "reference does not exist"), ImageNotFound),
        ("container", api_error(404, "No such container: x"), ResourceNotFound),
        ("network", api_error(404, "network x not found"), ResourceNotFound),
        ("container", api_error(409, 'Conflict. The container name "/x" is already in use'),
         ResourceConflict),
        ("network", api_error(403, "error while removing network: x has active endpoints"),
         ResourceConflict),
        ("container", api_error(500, "cannot start: OCI runtime create failed"), EngineError),
    ],
)
def test_api_errors_map_to_our_hierarchy(
    subject: str, error: docker.errors.APIError, expected: type[EngineError]
) -> None:
    with pytest.raises(expected) as caught, _translate(subject, "x", where=WHERE):  # type: ignore[arg-type]
        raise error
    assert type(caught.value) is expected
    assert caught.value.__cause__ is error


@pytest.mark.parametrize(
    "text",
    [
        "driver failed programming external connectivity on endpoint x (ab): "
        "Bind for 127.0.0.1:41234 failed: port is already allocated",
        "Error starting userland proxy: listen tcp4 127.0.0.1:41234: bind: address already in use",
    ],
)
def test_port_allocated_carries_the_port(text: str) -> None:
    with pytest.raises(PortAllocated) as caught, _translate("container", "x", where=WHERE):
        raise api_error(500, text)
    assert caught.value.port == 41234
    assert "host_port=None" in str(caught.value)


def test_missing_image_names_the_image() -> None:
    with pytest.raises(ImageNotFound) as caught, _translate("container", "pod", where=WHERE):
        raise api_error(404, "No such image: app:2")
    assert caught.value.image == "app:2"


@pytest.mark.parametrize(
    "error",
    [
        requests.exceptions.ConnectionError("Connection refused"),
        docker.errors.DockerException("Error while fetching server API version: refused"),
    ],
)
def test_unreachable_engine_says_what_to_do(error: Exception) -> None:
    with pytest.raises(EngineUnavailable) as caught, _translate("engine", "x", where=WHERE):
        raise error
    message = str(caught.value)
    assert WHERE in message and "DOCKER_HOST" in message and "start" in message


def test_read_timeouts_pass_through_for_callers_with_deadlines() -> None:
    with pytest.raises(requests.exceptions.ReadTimeout), _translate("engine", "x", where=WHERE):
        raise requests.exceptions.ReadTimeout("read timed out")


def test_container_info_from_inspect() -> None:
    raw = {
        "Id": "abc", "Name": "/pod-1", "RestartCount": 2,
        "Config": {"Image": "app:1", "Labels": {"k": "v"}, "Hostname": "pod-1"},
        "State": {
            "Status": "exited", "ExitCode": 3, "OOMKilled": True,
            "StartedAt": "2024-05-01T10:20:30.123456789Z", "Health": {"Status": "unhealthy"},
        },
        "NetworkSettings": {
            "Networks": {"net": {"IPAddress": "172.18.0.2"}, "none": {"IPAddress": ""}},
            "Ports": {"8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": "49153"},
                                   {"HostIp": "::1", "HostPort": "49153"}],
                      "9090/tcp": None, "53/udp": [{"HostIp": "", "HostPort": "53"}]},
        },
    }
    info = _container_info(raw)
    assert (info.name, info.image, info.labels) == ("pod-1", "app:1", {"k": "v"})
    assert (info.status, info.exit_code, info.health) == ("exited", 3, "unhealthy")
    assert info.ip_addresses == {"net": "172.18.0.2"}
    assert info.ports == {8080: ("127.0.0.1", 49153)}
    assert info.started_at == datetime(2024, 5, 1, 10, 20, 30, 123456, tzinfo=UTC)
    assert (info.restart_count, info.oom_killed, info.hostname) == (2, True, "pod-1")


def test_running_container_has_no_exit_code_and_zero_time_is_none() -> None:
    raw = {"Id": "a", "Name": "/p", "State": {"Status": "created", "ExitCode": 0,
                                              "StartedAt": "0001-01-01T00:00:00Z"}}
    info = _container_info(raw)
    assert info.exit_code is None and info.started_at is None and info.health is None


def test_event_keeps_labels_and_exit_code() -> None:
    raw = {
        "Type": "container", "Action": "die", "timeNano": 1_700_000_000_500_000_000,
        "Actor": {"ID": "abc", "Attributes": {
            "name": "pod", "image": "app:1", "exitCode": "137", "orchestrator.managed": "true"}},
    }
    event = _event(raw)
    assert (event.type, event.action, event.id, event.name) == ("container", "die", "abc", "pod")
    assert event.labels == {"orchestrator.managed": "true"}
    assert event.exit_code == 137 and event.time == pytest.approx(1_700_000_000.5)


class _InfoOnly:
    """A docker client stub whose engine reports one default log driver."""

    def __init__(self, driver: str) -> None:
        self.api = self
        self.driver = driver
        self.asked = 0

    def info(self) -> dict[str, str]:
        self.asked += 1
        return {"LoggingDriver": self.driver}


@pytest.mark.parametrize(("driver", "rotated"), [("json-file", True), ("local", True),
                                                 ("journald", False), ("none", False)])
def test_log_rotation_applies_only_to_drivers_that_write_files(driver: str,
                                                                rotated: bool) -> None:
    from orchestrator.engine.base import ContainerSpec
    from orchestrator.engine.docker_engine import DockerEngine

    stub = _InfoOnly(driver)
    engine = DockerEngine(stub, where="tcp://stub:2375")  # type: ignore[arg-type]
    spec = ContainerSpec(name="p", image="i", log_max_bytes=65536, log_max_files=2)
    config = engine._log_config(spec)
    if rotated:
        assert config is not None
        assert (config.type, dict(config.config)) == (driver, {"max-size": "65536",
                                                               "max-file": "2"})
    else:
        assert config is None
    assert engine._log_config(ContainerSpec(name="q", image="i")) is None  # engine's own
    engine._log_config(spec)
    assert stub.asked == 1  # the engine's driver is asked once
