"""The file format's JSON Schema: generated from the spec's fields, valid, accepting every
example in the repo, and refusing what the loader refuses."""

from __future__ import annotations

import dataclasses
import json
import textwrap
from pathlib import Path

import jsonschema
import pytest
import yaml

from orchestrator.config import config_schema, load_file
from orchestrator.errors import ConfigError
from orchestrator.jina import JINA_OPTIONS
from orchestrator.spec import DeploymentSpec, UpdatePolicy

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = config_schema()
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)


def schema_errors(text: str) -> list[str]:
    return [e.message for e in VALIDATOR.iter_errors(yaml.safe_load(text))]


def loader_error(tmp_path: Path, text: str) -> ConfigError | None:
    source = tmp_path / "app.yml"
    source.write_text(text)
    try:
        load_file(source, environ={}, env_files=[])
    except ConfigError as exc:
        return exc
    return None


def test_the_schema_is_a_valid_draft_2020_12_schema_and_json() -> None:
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    assert json.loads(json.dumps(SCHEMA)) == SCHEMA


def test_every_field_of_the_spec_is_a_property_with_its_description_and_default() -> None:
    defs = SCHEMA["$defs"]
    for cls, props in ((DeploymentSpec, defs["deployment"]["properties"]),
                       (UpdatePolicy, defs["policy"]["properties"])):
        for f in dataclasses.fields(cls):
            assert props[f.name]["description"], f.name
    deployment = defs["deployment"]["properties"]
    assert deployment["replicas"]["default"] == 1 and deployment["env"]["default"] == {}
    assert set(JINA_OPTIONS) <= set(defs["jina_options"]["properties"])


@pytest.mark.parametrize("example", sorted((ROOT / "examples").glob("*.yml")),
                         ids=lambda p: p.name)
def test_every_example_file_validates(example: Path) -> None:
    assert schema_errors(example.read_text()) == []


@pytest.mark.parametrize(
    "text",
    [
        "name: a\nuses: pkg.m:E\n",
        "name: ${NAME:-a}\nuses: pkg.m:E\nreplicas: ${N:-2}\nport: $PORT\n",
        "name: a\nuses: pkg.m:E\npolling: {/index: all, '*': ANY}\nmemory: 512m\ngpus: all\n",
        "name: a\nexternal: true\nport: 5000\n",
        "x-base: &b {uses: pkg.m:E}\ndeployments:\n  - {<<: *b, name: a, x-note: n}\n",
        "jtype: Deployment\nversion: '1'\nwith:\n  name: a\n  uses: Echo\n"
        "  py_modules: [e.py]\n  port: [5000]\n  quiet: false\n  cpus: 1\n",
    ],
)
def test_good_files_are_valid(text: str) -> None:
    assert schema_errors(text) == []


BAD = [
    "name: a\nuses: pkg.m:E\nreplica: 2\n",
    "name: a\nuses: pkg.m:E\nreplicas: 0\n",
    "name: a\nuses: pkg.m:E\nreplicas: two\n",
    "name: a\nuses: pkg.m:E\nreplicas: true\n",
    "name: a\nuses: pkg.m:E\nport: 70000\n",
    "name: Bad_Name\nuses: pkg.m:E\n",
    f"name: {'a' * 41}\nuses: pkg.m:E\n",
    "name: a\nuses: pkg.m:E\npolling: SOME\n",
    "name: a\nuses: pkg.m:E\npolling: {/a: NONE}\n",
    "name: a\nuses: no-colon\n",
    "name: a\nuses: pkg.m:E\nrestart_policy: sometimes\n",
    "name: a\nuses: pkg.m:E\npolicy: {max_surge: -1}\n",
    "name: a\nuses: pkg.m:E\npolicy: {max_surg: 1}\n",
    "name: a\nuses: pkg.m:E\npolicy: {order: random}\n",
    "name: a\nuses: pkg.m:E\npolicy: {shard_parallelism: 0}\n",
    "name: a\nuses: pkg.m:E\nvolumes: [nocolon]\n",
    "name: a\nuses: pkg.m:E\nvolumes: /a:/b\n",
    "name: a\nuses: pkg.m:E\nmemory: lots\n",
    "name: a\nuses: pkg.m:E\ngpus: -1\n",
    "name: a\nuses: pkg.m:E\ncpus: 0\n",
    "name: a\nuses: pkg.m:E\ntimeout_ready: 0\n",
    "name: a\nuses: pkg.m:E\nstop_grace: -1\n",
    "name: a\nuses: pkg.m:E\nlog_max_files: 0\n",
    "name: a\nuses: pkg.m:E\nprotocol: websocket\n",
    "name: a\nuses: pkg.m:E\nneeds: [Bad_Name]\n",
    "name: a\nuses: pkg.m:E\nenv: [a, b]\n",
    "name: a\nuses: pkg.m:E\nuses_with: [1]\n",
    "name: a\nuses: pkg.m:E\nhost: a b\n",
    "name: a\nuses: pkg.m:E\nimage: a b\n",
    "name: a\nuses: pkg.m:E\nsandbox: true\n",
    "name: a\n",
    "name: a\nexternal: true\n",
    "uses: pkg.m:E\n",
    "- a\n- b\n",
    "deployments: []\n",
    "deployments:\n  - just-a-string\n",
    "name: a\ndeployments:\n  - {name: b, uses: pkg.m:E}\n",
    "jtype: Flow\n",
    "jtype: Deployment\nwith: {name: a, uses: pkg.m:E}\nexecutors: []\n",
    "jtype: Deployment\nwith: {name: a, uses: pkg.m:E, workspace: /ws}\n",
    "jtype: Deployment\nwith: {name: a, uses: pkg.m:E, quiet: true}\n",
    "jtype: Deployment\nwith: {name: a, uses: pkg.m:E, replicas: 0}\n",
    "jtype: Deployment\nwith: {name: a, uses: pkg.m:E, timeout_ready: -1}\n",
    "jtype: Deployment\nwith: {name: a, uses: pkg.m:E, port: [1, 2]}\n",
    "jtype: Deployment\nwith: {name: a, uses: pkg.m:E, py_modules: [a.py, b.py]}\n",
    "jtype: Deployment\nwith: {name: a, uses: pkg.m:E, replica: 2}\n",
]


@pytest.mark.parametrize("text", BAD)
def test_the_schema_refuses_what_the_loader_refuses(tmp_path: Path, text: str) -> None:
    assert loader_error(tmp_path, text) is not None, "the loader accepted it"
    assert schema_errors(text), "the schema accepted it"


@pytest.mark.parametrize(
    "text",
    [
        "name: a\nuses: missing.py:E\n",  # the file system
        "name: a\nuses: pkg.m:E\nmemory: 1k\n",  # a size written as text, below 6 MiB
        "name: a\nuses: pkg.m:E\npolicy: {max_surge: 0, max_unavailable: 0}\n",  # two fields
        "deployments:\n  - {name: a, uses: pkg.m:E}\n  - {name: a, uses: pkg.m:E}\n",
    ],
)
def test_what_only_the_loader_can_check(tmp_path: Path, text: str) -> None:
    """The schema is a file's shape; these need the disk or several values at once."""
    assert loader_error(tmp_path, textwrap.dedent(text)) is not None
    assert schema_errors(text) == []


def test_the_schema_names_the_field_at_fault() -> None:
    errors = list(VALIDATOR.iter_errors(yaml.safe_load("name: a\nuses: pkg.m:E\nreplicas: 0\n")))
    paths = {tuple(c.absolute_path) for e in errors for c in (e.context or [e])}
    assert ("replicas",) in paths


def test_the_markdown_reference_lists_every_field_and_jina_option_once() -> None:
    from orchestrator.schema import reference_markdown

    text = reference_markdown()
    rows = [line.split("|")[1].strip().strip("`") for line in text.splitlines()
            if line.startswith("| `")]
    expected = ([f.name for f in dataclasses.fields(DeploymentSpec)]
                + [f.name for f in dataclasses.fields(UpdatePolicy)]
                + list(SCHEMA["$defs"]["jina_options"]["properties"]))
    assert rows == expected
    assert "| `uses` | required unless `external` |" in text
