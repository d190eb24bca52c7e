"""`protocol` (one value or a list) and `timeout_send` (ms, or per endpoint): validation,
round trip, the head's command line, Jina's option names, and the Deployment's report."""

from __future__ import annotations

from typing import Any

import pytest

from orchestrator.errors import SpecError
from orchestrator.jina import fields_from_jina
from orchestrator.planning.pods import PodContext, head_pod
from orchestrator.runtime.__main__ import _parser
from orchestrator.runtime.config import SendTimeouts
from orchestrator.spec import DeploymentSpec


def spec(**fields: Any) -> DeploymentSpec:
    return DeploymentSpec.from_fields(**{"name": "dep", "uses": "pkg.mod:Exec", **fields})


def head_command(s: DeploymentSpec) -> tuple[str, ...]:
    return head_pod(s, PodContext(owner="o", token="t")).container.command


@pytest.mark.parametrize(("given", "stored", "protocols"), [
    ("grpc", "grpc", ("grpc",)),
    ("HTTP", "http", ("http",)),
    (["grpc", "http"], ("grpc", "http"), ("grpc", "http")),
    (("http", "grpc", "http"), ("http", "grpc"), ("http", "grpc")),
    (["grpc"], "grpc", ("grpc",)),
])
def test_protocol_is_one_value_or_a_list(given: Any, stored: Any,
                                         protocols: tuple[str, ...]) -> None:
    s = spec(protocol=given)
    assert s.protocol == stored and s.protocols == protocols
    assert DeploymentSpec.from_fields(**s.to_fields()) == s  # round trip


@pytest.mark.parametrize(("value", "words"), [
    ("websocket", "use 'grpc', 'http'"),
    (["grpc", "websocket"], "'websocket' is not supported"),
    ("https", "TLS is set on its own"),
    ([], "at least one"),
    (5, "not supported"),
])
def test_bad_protocols_are_named(value: Any, words: str) -> None:
    with pytest.raises(SpecError, match=words) as info:
        spec(protocol=value)
    assert info.value.field == "protocol"


@pytest.mark.parametrize(("value", "stored", "flag"), [
    (None, None, None),
    (-1, None, None),
    (1500, 1500, "1500"),
    ({"/slow": 60000, "*": 1000}, {"/slow": 60000, "*": 1000}, '{"*": 1000, "/slow": 60000}'),
    ({"/a": -1, "*": 500}, {"/a": None, "*": 500}, '{"*": 500, "/a": null}'),
])
def test_timeout_send_is_milliseconds_and_goes_to_the_head(value: Any, stored: Any,
                                                           flag: str | None) -> None:
    s = spec(timeout_send=value)
    assert s.timeout_send == stored
    assert DeploymentSpec.from_fields(**s.to_fields()) == s
    command = head_command(s)
    if flag is None:
        assert "--timeout-send" not in command
        return
    assert command[command.index("--timeout-send") + 1] == flag
    parsed = SendTimeouts.parse(flag)  # what the head makes of it, in seconds
    assert parsed.for_endpoint("/slow") == (60.0 if isinstance(value, dict) and "/slow" in value
                                            else parsed.default)
    if isinstance(value, int):
        assert parsed.default == value / 1000


@pytest.mark.parametrize(("value", "field"), [
    (0, "timeout_send"), (1.5, "timeout_send"), (True, "timeout_send"), ("1s", "timeout_send"),
    ({"/a": 0}, "timeout_send./a"), ({"": 10}, "timeout_send"),
])
def test_bad_timeout_send_is_named(value: Any, field: str) -> None:
    with pytest.raises(SpecError) as info:
        spec(timeout_send=value)
    assert info.value.field == field


def test_the_head_gets_http_only_when_asked() -> None:
    assert "--http" not in head_command(spec())
    assert "--http" in head_command(spec(protocol="http"))
    assert "--http" in head_command(spec(protocol=["grpc", "http"]))
    args = _parser().parse_args(["head", "--shards", "1", "--http", "--timeout-send", "250"])
    assert args.http and SendTimeouts.parse(args.timeout_send).default == 0.25


@pytest.mark.parametrize(("text", "endpoint", "seconds"), [
    ("1000", "/x", 1.0), ("-1", "/x", None), ("null", "/x", None),
    ('{"/a": 200, "*": 1000}', "/a", 0.2), ('{"/a": 200, "*": 1000}', "/b", 1.0),
    ('{"/a": 200}', "/b", None), ('{"/a": 200}', None, None),
])
def test_send_timeouts_per_endpoint(text: str, endpoint: str | None,
                                    seconds: float | None) -> None:
    assert SendTimeouts.parse(text).for_endpoint(endpoint) == seconds


@pytest.mark.parametrize("text", ["0", "abc", '{"/a": "x"}', "[1]", "true"])
def test_bad_send_timeouts_are_refused(text: str) -> None:
    with pytest.raises(SpecError, match="timeout_send"):
        SendTimeouts.parse(text)


def test_jina_names_map_protocol_lists_and_timeout_send() -> None:
    class Protocol:  # Jina's ProtocolType enum members have a name
        def __init__(self, name: str) -> None:
            self.name = name

    fields = fields_from_jina({"name": "dep", "uses": "pkg.mod:Exec", "timeout_send": 3000,
                               "protocol": [Protocol("GRPC"), Protocol("HTTP")]})
    s = DeploymentSpec.from_fields(**fields)
    assert (s.timeout_send, s.protocols) == (3000, ("grpc", "http"))
    assert fields_from_jina({"name": "dep", "uses": "pkg.mod:Exec",
                             "timeout_send": None}).get("timeout_send") is None


@pytest.mark.parametrize(("protocol", "tls", "reported"), [
    (None, False, "grpc"),
    ("http", False, "http"),
    (["grpc", "http"], False, ["grpc", "http"]),
    (["grpc", "http"], True, ["grpcs", "https"]),
    ("grpc", True, "grpcs"),
])
def test_deployment_protocol_reports_as_jina_does(protocol: Any, tls: bool,
                                                  reported: Any) -> None:
    from orchestrator import Deployment

    class WithTls(Deployment):
        tls_enabled = tls  # Jina's name; the head's TLS on the host side sets it

    fields = {} if protocol is None else {"protocol": protocol}
    assert WithTls(name="dep", uses="pkg.mod:Exec", **fields).protocol == reported
