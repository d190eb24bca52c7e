"""YAML deployment files: interpolation, single and multi files, one-line errors."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from orchestrator.cli import parse_address, parse_sets, spec_changes
from orchestrator.config import (
    REDACTED,
    DeploymentConfig,
    LoadedFile,
    config_schema,
    is_secret_key,
    load_file,
    load_text,
    render,
    resolve_file,
)
from orchestrator.errors import ConfigError, SpecError
from orchestrator.spec import DeploymentSpec

ROOT = Path(__file__).resolve().parents[2]


def load(text: str, tmp_path: Path, env: dict[str, str] | None = None) -> list[DeploymentConfig]:
    source = tmp_path / "app.yml"
    source.write_text(textwrap.dedent(text))
    return load_file(source, environ=env or {}, env_files=[])


def error(text: str, tmp_path: Path, env: dict[str, str] | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load(text, tmp_path, env)
    return info.value


def test_single_deployment_as_top_level_fields(tmp_path: Path) -> None:
    (cfg,) = load("""
        name: echo
        uses: pkg.mod:Echo
        replicas: 3
        uses_with: {tag: v1}
        policy: {max_surge: 2}
    """, tmp_path)
    assert cfg.spec.name == "echo" and cfg.spec.replicas == 3
    assert cfg.spec.uses_with == {"tag": "v1"} and cfg.spec.policy.max_surge == 2
    assert cfg.path == "" and cfg.base_dir == tmp_path


def test_several_deployments_under_deployments(tmp_path: Path) -> None:
    configs = load("""
        deployments:
          - {name: a, uses: pkg.mod:A}
          - {name: b, uses: pkg.mod:B, shards: 2}
    """, tmp_path)
    assert [(c.spec.name, c.spec.shards, c.path) for c in configs] == [
        ("a", 1, "deployments[0]"), ("b", 2, "deployments[1]")]


@pytest.mark.parametrize(
    ("env", "replicas", "tag", "name"),
    [
        ({}, 2, "v1", "echo-dev"),
        ({"N": "4", "TAG": "v9", "WHO": "x"}, 4, "v9", "echo-x"),
        ({"N": "", "TAG": "", "WHO": ""}, 2, "v1", "echo-dev"),  # empty counts as unset
    ],
)
def test_interpolation_with_defaults(tmp_path: Path, env: dict[str, str], replicas: int,
                                     tag: str, name: str) -> None:
    (cfg,) = load("""
        name: echo-${WHO:-dev}
        uses: pkg.mod:Echo
        replicas: ${N:-2}
        uses_with: {tag: "${TAG:-v1}"}
    """, tmp_path, env)
    assert (cfg.spec.replicas, cfg.spec.uses_with["tag"], cfg.spec.name) == (replicas, tag, name)


def test_whole_value_reference_takes_the_yaml_type_except_in_env_and_uses_with(
        tmp_path: Path) -> None:
    (cfg,) = load("""
        name: echo
        uses: pkg.mod:Echo
        replicas: ${N}
        stop_grace: ${G}
        env: {COUNT: "${N}"}
        uses_with: {count: "${N}", text: "a $$ b ${N}"}
    """, tmp_path, {"N": "3", "G": "1.5"})
    assert cfg.spec.replicas == 3 and cfg.spec.stop_grace == 1.5
    assert cfg.spec.env == {"COUNT": "3"}
    assert cfg.spec.uses_with == {"count": "3", "text": "a $ b 3"}


def test_relative_uses_and_volumes_resolve_against_the_file(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "ex.py").write_text("class Ex: ...\n")
    (tmp_path / "data").mkdir()
    monkeypatch.chdir(ROOT)  # the shell's cwd must not matter
    (cfg,) = load("""
        name: echo
        uses: sub/ex.py:Ex
        volumes: ["data:/data:ro", "/abs:/abs"]
    """, tmp_path)
    assert cfg.spec.uses.path == str((tmp_path / "sub" / "ex.py").resolve())
    assert [(v.source, v.target, v.read_only) for v in cfg.spec.volumes] == [
        (str((tmp_path / "data").resolve()), "/data", True), ("/abs", "/abs", False)]


@pytest.mark.parametrize(
    ("text", "path", "line", "problem"),
    [
        ("name: a\nuses: pkg.m:E\nreplica: 2\n", "replica", 3, "did you mean 'replicas'"),
        ("name: a\nuses: pkg.m:E\nreplicas: two\n", "replicas", 3, "must be an integer >= 1"),
        ("name: a\nuses: pkg.m:E\nreplicas: 0\n", "replicas", 3, "must be an integer >= 1"),
        ("name: a\nuses: pkg.m:E\nport: 70000\n", "port", 3, "1..65535"),
        ("name: Bad_Name\nuses: pkg.m:E\n", "name", 1, "not a valid name"),
        ("name: a\nuses: pkg.m:E\npolicy: {max_surge: -1}\n", "policy.max_surge", 3, ">= 0"),
        ("name: a\nuses: pkg.m:E\npolicy: {max_surg: 1}\n", "policy.max_surg", 3,
         "did you mean 'max_surge'"),
        ("name: a\nuses: pkg.m:E\nvolumes: [nocolon]\n", "volumes[0]", 3, "host_path"),
        ("name: a\nuses: ${NOPE:?set NOPE to the executor}\n", "uses", 2,
         "required variable NOPE is missing a value: set NOPE to the executor"),
        ("name: a\nuses: pkg.m:E\nenv: {A: '${B'}\n", "env.A", 3, "unclosed reference"),
        ("deployments:\n  - {name: a, uses: pkg.m:E}\n  - {name: b, uses: pkg.m:E, "
         "policy: {max_surge: x}}\n", "deployments[1].policy.max_surge", 3, ">= 0"),
        ("deployments:\n  - {name: a, uses: pkg.m:E}\n  - {name: a, uses: pkg.m:E}\n",
         "deployments[1].name", 3, "earlier deployment"),
        ("deployments:\n  - {name: a, uses: pkg.m:E, env: {X: '${UNSET?}'}}\n",
         "deployments[0].env.X", 2, "required variable UNSET is missing a value"),
        ("deployments: []\n", "deployments", 1, "non-empty list"),
        ("deployments:\n  - just-a-string\n", "deployments[0]", 2, "expected a mapping"),
        ("name: a\ndeployments: []\n", "name", 1, "cannot be mixed"),
    ],
)
def test_every_error_is_one_line_with_file_line_and_field_path(
        tmp_path: Path, text: str, path: str, line: int | None, problem: str) -> None:
    err = error(text, tmp_path)
    message = str(err)
    assert "\n" not in message
    at = f"{tmp_path / 'app.yml'}:{line}" if line else str(tmp_path / "app.yml")
    assert message.startswith(f"{at}: {path}: "), message
    assert problem in message
    assert err.path == path and err.line == line and isinstance(err, SpecError)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "the file is empty"),
        ("- a\n- b\n", "expected a mapping at the top, got a list"),
        ("name: a\n  uses: [\n", "invalid YAML: line 2"),
    ],
)
def test_document_level_errors(tmp_path: Path, text: str, problem: str) -> None:
    message = str(error(text, tmp_path))
    assert "\n" not in message and problem in message and "app.yml" in message


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_file(tmp_path / "nope.yml", environ={})


def test_load_text_reads_the_process_environment_only_when_asked(tmp_path: Path) -> None:
    configs = load_text("name: ${N}\nuses: pkg.m:E\n", tmp_path / "x.yml",
                        variables={"N": "given"})
    assert configs[0].spec.name == "given"


# -- CLI helpers (pure) ----------------------------------------------------------------


def spec(**fields: Any) -> DeploymentSpec:
    return DeploymentSpec.from_fields(**{"name": "dep", "uses": "pkg.mod:Exec", **fields})


@pytest.mark.parametrize(
    ("running", "wanted", "changes"),
    [
        (spec(), spec(), {}),
        (spec(port=30000), spec(), {}),  # the engine-chosen port is not a change
        (spec(port=30000), spec(port=30001), {"port": 30001}),
        (spec(replicas=2), spec(replicas=3), {"replicas": 3}),
        (spec(uses_with={"tag": "v1"}), spec(uses_with={"tag": "v2"}),
         {"uses_with": {"tag": "v2"}}),
        (spec(), spec(image="img:2", shards=2), {"image": "img:2", "shards": 2}),
    ],
)
def test_spec_changes(running: DeploymentSpec, wanted: DeploymentSpec,
                      changes: dict[str, object]) -> None:
    assert spec_changes(running, wanted) == changes


def test_parse_sets_reads_yaml_scalars() -> None:
    assert parse_sets(["tag=v2", "n=3", "f=1.5", "b=true", "s='3'", "e=", "u=a=b"]) == {
        "tag": "v2", "n": 3, "f": 1.5, "b": True, "s": "3", "e": "", "u": "a=b"}
    for bad in ("novalue", "=x"):
        with pytest.raises(SpecError):
            parse_sets([bad])


@pytest.mark.parametrize("text", ["foo", "host:", ":80", "h:0", "h:65536", "h:x"])
def test_parse_address_rejects(text: str) -> None:
    with pytest.raises(SpecError):
        parse_address(text)


def test_parse_address_accepts() -> None:
    assert parse_address("localhost:50051") == "localhost:50051"


@pytest.mark.parametrize("example", sorted((ROOT / "examples").glob("*.yml")), ids=str)
def test_every_example_file_is_valid(example: Path) -> None:
    assert load_file(example, environ={})  # raises ConfigError naming the field otherwise


# -- the resolved file (`orchestrator config`) ----------------------------------------------


def resolved(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> LoadedFile:
    source = tmp_path / "app.yml"
    source.write_text(textwrap.dedent(text))
    return resolve_file(source, environ=environ or {}, env_files=[])


def test_render_is_every_field_resolved_and_loads_back_to_the_same_specs(
        tmp_path: Path) -> None:
    loaded = resolved(tmp_path, """
        deployments:
          - name: ${P:-demo}-a
            uses: pkg.mod:A
            replicas: ${N:-2}
            uses_with: {price: "$$5", raw: "a $ b", API_KEY: k1}
          - name: ${P:-demo}-b
            uses: pkg.mod:B
            needs: ${P:-demo}-a
    """, {"N": "3"})
    for as_json in (False, True):
        text = render(loaded, as_json=as_json, secrets=True)
        doc = json.loads(text) if as_json else yaml.safe_load(text)
        assert [d["name"] for d in doc["deployments"]] == ["demo-a", "demo-b"]
        assert doc["deployments"][0]["policy"]["max_surge"] == 1  # defaults explicit
        again = tmp_path / f"again-{as_json}.yml"
        again.write_text(text)
        assert [c.spec for c in load_file(again, environ={}, env_files=[])] == [
            c.spec for c in loaded.configs]
        assert loaded.configs[0].spec.uses_with == {"price": "$5", "raw": "a $ b",
                                                    "API_KEY": "k1"}


def test_render_redacts_secret_looking_keys_in_env_and_uses_with(tmp_path: Path) -> None:
    loaded = resolved(tmp_path, """
        name: a
        uses: pkg.mod:A
        env: {GITHUB_TOKEN: t, DB_PASSWORD: p, LOG_LEVEL: info, KEYBOARD: us}
        uses_with: {apiKey: k, nested: {client_secret: s, region: eu}, tag: v1}
    """)
    doc = yaml.safe_load(render(loaded))
    assert doc["env"] == {"GITHUB_TOKEN": REDACTED, "DB_PASSWORD": REDACTED,
                          "LOG_LEVEL": "info", "KEYBOARD": "us"}
    assert doc["uses_with"] == {"apiKey": REDACTED, "tag": "v1",
                                "nested": {"client_secret": REDACTED, "region": "eu"}}
    assert "name" in doc and "deployments" not in doc  # a single deployment stays single


@pytest.mark.parametrize(
    ("key", "secret"),
    [("API_KEY", True), ("dbPassword", True), ("GITHUB_TOKEN", True), ("authToken", True),
     ("SECRET_KEY_BASE", True), ("AWS_ACCESS_KEY_ID", True), ("PASSWORD2", True),
     ("ssh-passphrase", True), ("KEYBOARD", False), ("MONKEY", False), ("TOKENIZER", False),
     ("LOG_LEVEL", False), ("author", False)],
)
def test_is_secret_key(key: str, secret: bool) -> None:
    assert is_secret_key(key) is secret


def test_a_jina_file_renders_in_our_format_and_the_result_validates(tmp_path: Path) -> None:
    import jsonschema

    loaded = resolve_file(ROOT / "examples" / "jina-deployment.yml", environ={})
    doc = yaml.safe_load(render(loaded))
    assert doc["timeout_ready"] == 60.0 and doc["uses"].endswith("executors/echo.py:Echo")
    jsonschema.validate(doc, config_schema())
