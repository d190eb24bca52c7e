"""Spec validation: every bad field gets a SpecError naming it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.errors import SpecError
from orchestrator.planning import names
from orchestrator.planning.pods import PodContext, head_pod, initial_pods
from orchestrator.spec import DeploymentSpec, UpdatePolicy, parse_memory

ECHO = str(Path(__file__).resolve().parents[2] / "executors" / "echo.py") + ":Echo"


def spec(**fields: Any) -> DeploymentSpec:
    return DeploymentSpec.from_fields(**{"name": "dep", "uses": "pkg.mod:Exec", **fields})


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"replicas": 0}, "replicas"),
        ({"shards": 0}, "shards"),
        ({"replicas": "3"}, "replicas"),
        ({"replicas": True}, "replicas"),
        ({"name": "Bad_Name"}, "name"),
        ({"name": "-x"}, "name"),
        ({"name": "a" * 41}, "name"),
        ({"polling": "SOME"}, "polling"),
        ({"polling": {"/a": "NONE"}}, "polling./a"),
        ({"uses": "no-colon"}, "uses"),
        ({"uses": "missing/file.py:Echo"}, "uses"),
        ({"uses": "pkg.mod:not-a-class"}, "uses"),
        ({"uses": "docker://"}, "uses"),
        ({"uses_before": 5}, "uses_before"),
        ({"log_max_size": "lots"}, "log_max_size"),
        ({"log_max_size": 0}, "log_max_size"),
        ({"log_max_size": True}, "log_max_size"),
        ({"log_max_files": 0}, "log_max_files"),
        ({"port": 70000}, "port"),
        ({"timeout_ready": 0}, "timeout_ready"),
        ({"protocol": "websocket"}, "protocol"),
        ({"memory": "lots"}, "memory"),
        ({"memory": "1k"}, "memory"),
        ({"cpus": -1}, "cpus"),
        ({"gpus": "some"}, "gpus"),
        ({"restart_policy": "sometimes"}, "restart_policy"),
        ({"volumes": ["relative"]}, "volumes[0]"),
        ({"uses_with": {"x": object()}}, "uses_with"),
        ({"sandbox": True}, "sandbox"),
        ({"replica": 2}, "replica"),
        ({"policy": {"max_surge": 0, "max_unavailable": 0}}, "policy"),
        ({"policy": {"speed": 3}}, "policy.speed"),
        ({"external": True}, "port"),
        ({"max_starting": 0}, "max_starting"),
    ],
)
def test_bad_fields_are_named(fields: dict[str, Any], field: str) -> None:
    with pytest.raises(SpecError) as info:
        spec(**fields)
    assert info.value.field == field
    assert field in str(info.value)


def test_spec_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="replicas"):
        spec(replicas=-1)


def test_file_uses_resolves_to_an_absolute_path() -> None:
    s = spec(uses=ECHO)
    assert s.uses.kind == "file"
    assert Path(s.uses.path).is_absolute()


def test_memory_units() -> None:
    assert parse_memory("512m") == 512 * 1024**2
    assert parse_memory("1GiB") == 1024**3
    assert parse_memory(None) is None


def test_worker_hash_changes_with_what_makes_a_worker() -> None:
    base = spec(uses_with={"tag": "v1"})
    assert base.worker_hash() == spec(uses_with={"tag": "v1"}).worker_hash()
    assert base.worker_hash() != spec(uses_with={"tag": "v2"}).worker_hash()
    assert base.worker_hash() == spec(uses_with={"tag": "v1"}, replicas=4).worker_hash()


def test_to_fields_round_trips() -> None:
    s = spec(uses=ECHO, replicas=2, shards=3, polling={"/a": "all"}, memory="64m", port=5000,
             policy={"max_surge": 2})
    assert DeploymentSpec.from_fields(**s.to_fields()) == s


def test_policy_defaults_are_start_first_with_rollback() -> None:
    p = UpdatePolicy()
    assert (p.max_surge, p.max_unavailable, p.order, p.failure_action) == (
        1, 0, "start-first", "rollback")


@given(name=st.from_regex(r"[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?", fullmatch=True),
       shards=st.integers(1, 4), replicas=st.integers(1, 4))
def test_pod_names_are_unique_dns_safe_and_deterministic(name: str, shards: int,
                                                         replicas: int) -> None:
    s = spec(name=name, shards=shards, replicas=replicas, uses_before="docker://img:1")
    ctx = PodContext(owner="o", token="t")
    pods = initial_pods(s, ctx)
    pod_names = [p.name for p in pods]
    assert len(set(pod_names)) == len(pods) == 2 + shards * replicas
    assert pod_names == [p.name for p in initial_pods(s, ctx)]
    for n in pod_names:
        assert len(n) <= 63 and n.replace("-", "").isalnum() and n == n.lower()


def test_only_the_head_publishes_a_port_and_pods_are_locked_down() -> None:
    s = spec(shards=2, replicas=2, uses_after="pkg.mod:Sum")
    pods = initial_pods(s, PodContext(owner="o", token="secret"))
    published = [p for p in pods if p.container.ports]
    assert [p.role for p in published] == ["head"]
    [binding] = published[0].container.ports
    assert (binding.host_ip, binding.host_port) == ("127.0.0.1", None)
    for pod in pods:
        c = pod.container
        assert c.cap_drop == ("ALL",)
        assert "no-new-privileges" in c.security_opt
        assert c.user is not None and not c.user.startswith("0")
        assert c.network == names.network_name("dep")
        assert c.labels["orchestrator.managed"] == "true"
        assert c.labels["orchestrator.deployment"] == "dep"
        assert not any("docker.sock" in m.source for m in c.mounts)
    head = head_pod(s, PodContext(owner="o", token="secret"))
    assert head.container.env["ORCHESTRATOR_TOKEN"] == "secret"
    assert head.container.labels["orchestrator.control"] == "dep-head:50051"
    assert "secret" not in "".join(head.container.labels.values())
    assert "secret" not in " ".join(head.container.command)


def test_every_pod_log_rotates_by_default_and_null_leaves_it_to_the_engine() -> None:
    ctx = PodContext(owner="o", token="secret")
    s = spec(replicas=2)
    assert (s.log_max_size, s.log_max_files) == (10 * 1024**2, 3)
    pods = [head_pod(s, ctx), *initial_pods(s, ctx)]
    assert {(p.container.log_max_bytes, p.container.log_max_files) for p in pods} == {
        (10 * 1024**2, 3)}
    small = spec(log_max_size="64k", log_max_files=2)
    assert (small.log_max_size, small.log_max_files) == (65536, 2)
    engine_own = spec(log_max_size=None)
    assert engine_own.log_max_size is None
    assert DeploymentSpec.from_fields(**engine_own.to_fields()) == engine_own
    assert head_pod(engine_own, ctx).container.log_max_bytes is None
