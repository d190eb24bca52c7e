"""`orchestrator config -f FILE` / `--schema`, `--env-file` and `--env` on `config` and `up`,
and every deployment file and YAML example of the repository against the JSON Schema."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from orchestrator.cli import build_parser, main
from orchestrator.config import REDACTED, config_schema, load_file

ROOT = Path(__file__).resolve().parents[2]
VALIDATOR = jsonschema.Draft202012Validator(config_schema())
APP = """\
name: ${NAME:-app}
uses: pkg.mod:Exec
replicas: ${REPLICAS:-1}
env:
  API_TOKEN: ${TOKEN:-none}
  MODE: ${MODE:-dev}
uses_with:
  password: hunter2
  tag: ${TAG:-v1}
"""


def run(capsys: pytest.CaptureFixture[str], *words: str) -> tuple[int, str, str]:
    code = main(["config", *words])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("NAME", "REPLICAS", "TOKEN", "MODE", "TAG"):
        monkeypatch.delenv(name, raising=False)
    path = tmp_path / "app.yml"
    path.write_text(APP)
    return path


def test_config_prints_the_resolved_spec_that_loads_back_the_same(
        app: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, err = run(capsys, "-f", str(app))
    assert code == 0 and err == ""
    doc = yaml.safe_load(out)
    assert doc["name"] == "app" and doc["replicas"] == 1 and doc["image"]
    assert doc["env"] == {"API_TOKEN": REDACTED, "MODE": "dev"}
    assert doc["uses_with"] == {"password": REDACTED, "tag": "v1"}
    assert VALIDATOR.is_valid(doc)
    again = tmp_path / "again.yml"
    again.write_text(out)
    assert load_file(again, environ={}, env_files=[])[0].spec.replicas == 1


def test_config_json(app: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "-f", str(app), "--json", "--env", "NAME=other")
    assert code == 0 and json.loads(out)["name"] == "other"


def test_config_schema_is_the_generated_schema(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--schema")
    assert code == 0 and json.loads(out) == config_schema()


@pytest.mark.parametrize(("words", "message"), [
    ((), "give -f FILE"),
    (("--schema", "-f", "x.yml"), "not both"),
    (("-f", "missing.yml"), "missing.yml: cannot read"),
])
def test_config_usage_errors_exit_2(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch, words: tuple[str, ...],
                                   message: str) -> None:
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, *words)
    assert code == 2 and out == "" and message in err and len(err.splitlines()) == 1


def test_an_invalid_file_exits_2_naming_file_line_and_field(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text("name: a\nuses: pkg.m:E\nreplicas: 0\n")
    code, out, err = run(capsys, "-f", str(bad))
    assert (code, out) == (2, "")
    assert re.fullmatch(r"orchestrator: error: .*bad\.yml:3: replicas: .*\n", err)


def test_a_required_variable_without_a_value_exits_2(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "req.yml"
    path.write_text("name: a\nuses: pkg.m:E\nimage: ${IMAGE:?set IMAGE}\n")
    code, _, err = run(capsys, "-f", str(path), "--env-file", str(tmp_path / "none.env"))
    assert code == 2 and "none.env" in err  # a named env file must exist
    (tmp_path / "empty.env").write_text("")
    code, _, err = run(capsys, "-f", str(path), "--env-file", str(tmp_path / "empty.env"))
    assert code == 2 and "req.yml:3: image" in err and "IMAGE" in err


def test_env_precedence_env_over_shell_over_env_files_over_dot_env(
        app: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path) -> None:
    def resolved(*words: str) -> dict[str, Any]:
        code, out, err = run(capsys, "-f", str(app), "--json", *words)
        assert code == 0, err
        return dict(json.loads(out))

    (tmp_path / ".env").write_text("TAG=dotenv\nMODE=dotenv\nREPLICAS=2\n")
    assert resolved()["uses_with"]["tag"] == "dotenv"  # .env beside the file
    (tmp_path / "a.env").write_text("TAG=a\nMODE=a\n")
    (tmp_path / "b.env").write_text("TAG=b\n")
    files = ("--env-file", str(tmp_path / "a.env"), "--env-file", str(tmp_path / "b.env"))
    doc = resolved(*files)
    assert doc["uses_with"]["tag"] == "b" and doc["env"]["MODE"] == "a"  # later file wins
    assert doc["replicas"] == 1  # --env-file replaces .env
    monkeypatch.setenv("TAG", "shell")
    assert resolved(*files)["uses_with"]["tag"] == "shell"  # the shell over env files
    assert resolved(*files, "--env", "TAG=flag")["uses_with"]["tag"] == "flag"  # --env on top
    assert resolved("--env", "TAG")["uses_with"]["tag"] == "shell"  # KEY alone: the shell's


def test_up_takes_env_file_and_env_and_passes_them_to_the_loader(
        monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    class Stop(Exception):
        pass

    def fake_load(path: str, **kw: Any) -> Any:
        seen.update(path=path, **kw)
        raise Stop

    import orchestrator.cli.up as up

    monkeypatch.setattr(up, "load_file", fake_load)
    args = build_parser(only={"up"}).parse_args(
        ["up", "-f", "app.yml", "--env-file", "a.env", "--env-file", "b.env",
         "--env", "TAG=v2", "--env", "MODE"])
    with pytest.raises(Stop):
        args.handler(args)
    assert seen == {"path": "app.yml", "env": ["TAG=v2", "MODE"],
                    "env_files": ["a.env", "b.env"]}
    plain = build_parser(only={"up"}).parse_args(["up", "-f", "app.yml"])
    assert plain.env_files is None and plain.env == []  # None: read .env beside the file


# -- every deployment file and YAML example of the repository ------------------------------


def repo_files() -> list[Path]:
    listed = subprocess.run(["git", "ls-files", "*.yml", "*.yaml", "*.md"], cwd=ROOT,
                            capture_output=True, text=True, check=False).stdout.split()
    return sorted(ROOT / p for p in listed)


def is_deployment(doc: object) -> bool:
    """Our format or Jina's (a Compose file, a CI workflow or a Kubernetes manifest is not)."""
    return isinstance(doc, dict) and ("uses" in doc or "deployments" in doc
                                      or doc.get("jtype") == "Deployment")


def examples() -> list[tuple[str, str]]:
    """(where, text) of every deployment file and every ```yaml block of the Markdown
    pages that holds one."""
    found: list[tuple[str, str]] = []
    for path in repo_files():
        rel = str(path.relative_to(ROOT))
        texts = [path.read_text()] if path.suffix != ".md" else \
            re.findall(r"```ya?ml\n(.*?)```", path.read_text(), flags=re.S)
        for i, text in enumerate(texts):
            try:
                doc = yaml.safe_load(text)
            except yaml.YAMLError:
                continue
            if is_deployment(doc):
                found.append((rel if path.suffix != ".md" else f"{rel}#yaml{i}", text))
    return found


EXAMPLES = examples()


def test_the_repository_has_examples_of_every_kind() -> None:
    where = [w for w, _ in EXAMPLES]
    assert any(w.startswith("examples/") for w in where)
    assert any(w.endswith(".md") or "#yaml" in w for w in where)
    assert any("jtype" in text for _, text in EXAMPLES)


@pytest.mark.parametrize(("where", "text"), EXAMPLES, ids=[w for w, _ in EXAMPLES])
def test_every_deployment_example_in_the_repository_validates(where: str, text: str) -> None:
    errors = [e.message for e in VALIDATOR.iter_errors(yaml.safe_load(text))]
    assert errors == [], where
