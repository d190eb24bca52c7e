"""Jina's option names: one table for `jtype: Deployment` files and for Deployment(args=...)
given a Namespace or dict; every Jina option maps to a field or is refused with a reason."""

from __future__ import annotations

import argparse
import enum
import textwrap
from dataclasses import fields as dc_fields
from pathlib import Path
from typing import Any

import pytest

from orchestrator.config import load_file
from orchestrator.errors import ConfigError, SpecError
from orchestrator.jina import JINA_OPTIONS, Joined, Refuse, To, fields_from_jina
from orchestrator.spec import DeploymentSpec

ROOT = Path(__file__).resolve().parents[2]
ECHO = str(ROOT / "executors" / "echo.py")

# What Jina's Deployment parser puts into a Namespace when the user gives nothing but uses
# (defaults read from jina/parsers/orchestrate/*.py; random ports and ids drawn as Jina
# draws them).
JINA_DEFAULTS: dict[str, Any] = {
    "name": None, "workspace": None, "log_config": "default", "quiet": False,
    "quiet_error": False, "workspace_id": "6f1c2a", "extra_search_paths": [],
    "timeout_ctrl": 60, "k8s_namespace": None, "polling": "ANY", "uses_with": None,
    "uses_metas": None, "uses_requests": None, "uses_dynamic_batching": None,
    "py_modules": None, "output_array_type": None, "exit_on_exceptions": [],
    "no_reduce": False, "grpc_server_options": None, "entrypoint": None,
    "docker_kwargs": None, "volumes": None, "gpus": None, "disable_auto_volume": False,
    "host": "0.0.0.0", "runtime_cls": "WorkerRuntime", "timeout_ready": 600000,
    "env": None, "env_from_secret": None, "shard_id": 0, "pod_role": "WORKER",
    "noblock_on_start": False, "floating": False, "reload": False,
    "install_requirements": False, "port": [53211], "monitoring": False,
    "port_monitoring": [61422], "retries": -1, "tracing": False,
    "traces_exporter_host": None, "traces_exporter_port": None, "metrics": False,
    "metrics_exporter_host": None, "metrics_exporter_port": None, "uses_before": None,
    "uses_after": None, "when": None, "external": False, "grpc_metadata": None,
    "deployment_role": None, "tls": False, "compression": None,
    "uses_before_address": None, "uses_after_address": None, "connection_list": None,
    "disable_reduce": False, "timeout_send": None, "shards": 1, "replicas": 1,
    "native": False, "stateful": False, "peer_ports": None, "include_gateway": True,
}


class Protocol(enum.Enum):  # as Jina's ProtocolType
    GRPC = 0
    HTTP = 1


def test_every_mapped_option_targets_a_spec_field_and_every_refusal_says_why() -> None:
    ours = {f.name for f in dc_fields(DeploymentSpec)}
    for name, entry in JINA_OPTIONS.items():
        if isinstance(entry, To):
            assert entry.field in ours, name
        elif isinstance(entry, Refuse):
            assert len(entry.reason) > 20, name
        else:
            assert isinstance(entry, Joined) and entry.note, name


def test_a_namespace_from_jinas_parser_with_only_uses_gives_the_same_deployment() -> None:
    ns = argparse.Namespace(**{**JINA_DEFAULTS, "name": "enc", "uses": f"{ECHO}:Echo"})
    fields = fields_from_jina(ns)
    assert fields == {"name": "enc", "uses": f"{ECHO}:Echo", "polling": "ANY",
                      "host": "0.0.0.0", "timeout_ready": 600.0, "port": 53211,
                      "external": False, "shards": 1, "replicas": 1,
                      "noblock_on_start": False, "reload": False}
    spec = DeploymentSpec.from_fields(**fields)
    assert (spec.port, spec.timeout_ready, spec.host) == (53211, 600.0, "0.0.0.0")


def test_a_jina_style_dict_maps_every_supported_field() -> None:
    fields = fields_from_jina({
        "name": "enc", "uses": "Echo", "py_modules": [ECHO], "uses_with": {"tag": "v2"},
        "replicas": 3, "shards": 2, "polling": '{"/index": "ALL", "*": "ANY"}',
        "port_expose": 50123, "host": ["127.0.0.1"], "env": {"A": "1"},
        "uses_after": "Sum", "uses_before": "docker://img:1", "timeout_ready": 1500,
        "volumes": ["/data", "/src:/dst"], "gpus": "2", "protocol": [Protocol.GRPC],
        "needs": ["other"], "external": False,
        "cpus": 0.5, "policy": {"max_surge": 2},  # our own names pass through
    })
    spec = DeploymentSpec.from_fields(**fields)
    assert str(spec.uses) == f"{ECHO}:Echo" and str(spec.uses_after) == f"{ECHO}:Sum"
    assert str(spec.uses_before) == "docker://img:1"
    assert (spec.replicas, spec.shards, spec.port, spec.host) == (3, 2, 50123, "127.0.0.1")
    assert spec.polling == {"/index": "ALL", "*": "ANY"} and spec.timeout_ready == 1.5
    assert [(v.source, v.target) for v in spec.volumes] == [("/data", "/data"),
                                                            ("/src", "/dst")]
    assert spec.gpus is not None and spec.gpus.count == 2
    assert (spec.protocol, spec.needs) == ("grpc", frozenset({"other"}))
    assert (spec.cpus, spec.policy.max_surge, spec.uses_with) == (0.5, 2, {"tag": "v2"})


def test_inline_executor_config_and_uses_with_overriding_its_with() -> None:
    fields = fields_from_jina({"name": "e", "uses": {
        "jtype": "Echo", "with": {"tag": "inner", "keep": 1}, "metas": {"py_modules": [ECHO]}},
        "uses_with": {"tag": "outer"}})
    assert fields["uses"] == f"{ECHO}:Echo"
    assert fields["uses_with"] == {"tag": "outer", "keep": 1}


def refused_values() -> list[tuple[str, Any]]:
    """Each refusable option at a value that asks for something."""
    out: list[tuple[str, Any]] = []
    for name, entry in JINA_OPTIONS.items():
        if not isinstance(entry, Refuse) or any(
                not isinstance(a, bool | int | str | list) for a in entry.accepts):
            continue  # options that are always let through (Jina fills them per pod)
        for candidate in (True, 5, "something", ["x"], {"k": "v"}):
            if not any(a == candidate and type(a) is type(candidate) for a in entry.accepts):
                out.append((name, candidate))
                break
    return out


@pytest.mark.parametrize(("name", "value"), refused_values())
def test_an_option_with_no_meaning_here_is_refused_by_name_with_the_reason(
        name: str, value: Any) -> None:
    entry = JINA_OPTIONS[name]
    assert isinstance(entry, Refuse)
    with pytest.raises(SpecError) as info:
        fields_from_jina({"name": "e", "uses": "pkg.m:E", name: value})
    assert info.value.field == name
    assert f"Jina's {name} has no meaning here: {entry.reason}" in str(info.value)


@pytest.mark.parametrize(
    ("options", "field", "problem"),
    [
        ({"uses": "jinaai+docker://jina-ai/CLIPEncoder"}, "uses", "no Executor Hub"),
        ({"uses": "jinahub://Encoder"}, "uses", "no Executor Hub"),
        ({"uses": "encoder.yml"}, "uses", "executor YAML files are not read"),
        ({"uses": "Echo"}, "uses", "bare class name"),
        ({"uses": "Echo", "py_modules": ["a.py", "b.py"]}, "py_modules", "one module only"),
        ({"uses": {"jtype": "Echo", "requests": {"/a": "f"}}}, "uses.requests",
         "only jtype, with and py_modules"),
        ({"uses": {"jtype": "Echo", "metas": {"name": "x"}}}, "uses.metas.name",
         "only jtype, with and py_modules"),
        ({"uses": "docker://img:1", "py_modules": ["a.py"]}, "py_modules",
         "only a bare class name"),
        ({"timeout_ready": -1}, "timeout_ready", "wait forever"),
        ({"port": [1234, 1235]}, "port", "one value only"),
        ({"port": 1234, "port_expose": 1235}, "port_expose", "given twice"),
        ({"polling": "{bad json"}, "polling", "not a JSON map"),
    ],
)
def test_conversions_that_cannot_be_made_are_refused(options: dict[str, Any], field: str,
                                                     problem: str) -> None:
    with pytest.raises(SpecError) as info:
        fields_from_jina({"name": "e", **options})
    assert info.value.field == field and problem in str(info.value)


# -- jtype: Deployment files -----------------------------------------------------------------


def load(tmp_path: Path, text: str) -> DeploymentSpec:
    source = tmp_path / "jina.yml"
    source.write_text(textwrap.dedent(text).lstrip())
    (cfg,) = load_file(source, environ={}, env_files=[])
    return cfg.spec


def test_the_example_from_jinas_documentation_loads() -> None:
    (cfg,) = load_file(ROOT / "examples" / "jina-deployment.yml", environ={})
    assert cfg.path == "with"
    assert (cfg.spec.name, str(cfg.spec.uses), cfg.spec.replicas) == (
        "jina-echo", f"{ECHO}:Echo", 2)
    assert cfg.spec.timeout_ready == 60.0 and cfg.spec.uses_with == {"tag": "v1"}


def test_a_jina_file_with_py_modules_relative_to_the_file(tmp_path: Path) -> None:
    (tmp_path / "ex.py").write_text("class Ex: ...\n")
    spec = load(tmp_path, """
        jtype: Deployment
        with:
          name: ex
          uses: Ex
          py_modules: [ex.py]
          replicas: 2
    """)
    assert spec.uses.path == str((tmp_path / "ex.py").resolve()) and spec.replicas == 2


@pytest.mark.parametrize(
    ("text", "path", "line", "problem"),
    [
        ("jtype: Flow\nexecutors: []\n", "jtype", 1, "a Jina Flow is not read"),
        ("jtype: Executor\n", "jtype", 1, "only 'Deployment'"),
        ("jtype: Deployment\nwith: {name: a, uses: pkg.m:E}\nexecutors: []\n", "executors",
         3, "only jtype, version and with"),
        ("jtype: Deployment\nwith: [a]\n", "with", 2, "expected a mapping"),
        ("jtype: Deployment\nwith:\n  name: a\n  uses: pkg.m:E\n  workspace: /ws\n",
         "with.workspace", 5, "Jina's workspace has no meaning here"),
        ("jtype: Deployment\nwith:\n  name: a\n  uses: pkg.m:E\n  replicas: 0\n",
         "with.replicas", 5, "must be an integer >= 1"),
        ("jtype: Deployment\nwith:\n  name: a\n  uses: pkg.m:E\n  replica: 2\n",
         "with.replica", 5, "did you mean 'replicas'"),
    ],
)
def test_jina_file_errors_name_the_option_and_line(tmp_path: Path, text: str, path: str,
                                                   line: int, problem: str) -> None:
    source = tmp_path / "jina.yml"
    source.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_file(source, environ={}, env_files=[])
    assert (info.value.path, info.value.line) == (path, line)
    assert problem in str(info.value)


def test_x_keys_are_ignored_at_any_level_but_kept_as_data_in_env(tmp_path: Path) -> None:
    spec = load(tmp_path, """
        x-common: &common
          replicas: 2
        jtype: Deployment
        with:
          <<: *common
          x-note: ignored
          name: a
          uses: pkg.m:E
          env: {x-kept: "1"}
          uses_with: {x-kept: 1}
          policy: {max_surge: 2, x-why: faster}
    """)
    assert spec.replicas == 2 and spec.policy.max_surge == 2
    assert spec.env == {"x-kept": "1"} and spec.uses_with == {"x-kept": 1}


def test_x_keys_in_our_own_format_too(tmp_path: Path) -> None:
    spec = load(tmp_path, """
        x-defaults: &defaults {uses: pkg.m:E, stop_grace: 1}
        deployments:
          - <<: *defaults
            name: a
            x-owner: team-a
    """)
    assert (spec.name, spec.stop_grace) == ("a", 1.0)
