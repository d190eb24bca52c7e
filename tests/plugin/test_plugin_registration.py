"""The pytest plugin without Docker: registration, import cost, image resolution, names."""

from __future__ import annotations

import importlib.metadata
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.engine.memory import MemoryEngine
from orchestrator.errors import ConfigError, ImageBuildError
from orchestrator.images import CONTENT_HASH_LABEL, DEFAULT_BASE_IMAGE, DEFAULT_RUNTIME_IMAGE
from orchestrator.pytest_plugin import YamlDeploymentFactory, resolve_image, unique_name

ROOT = Path(__file__).resolve().parents[2]


def test_installing_the_package_registers_the_plugin() -> None:
    plugins = importlib.metadata.entry_points(group="pytest11")
    assert [ep.value for ep in plugins if ep.name == "orchestrator"] == [
        "orchestrator.pytest_plugin"
    ]


def test_loading_the_plugin_imports_nothing_heavy() -> None:
    heavy = ("grpc", "docker", "yaml", "rich", "orchestrator.deployment",
             "orchestrator.engine.docker_engine")
    code = ("import json, sys, orchestrator.pytest_plugin; "
            f"print(json.dumps([m for m in {heavy!r} if m in sys.modules]))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert json.loads(done.stdout) == []


def test_the_options_are_in_pytest_help(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--help")
    result.stdout.fnmatch_lines(["*--orchestrator-image=IMAGE*", "*--orchestrator-keep*"])


@pytest.mark.parametrize("prefix", ["echo", "Test_Some::Thing[1-2]", "x" * 60, "---"])
def test_unique_names_are_dns_safe_and_short(prefix: str) -> None:
    name = unique_name(prefix)
    assert re.fullmatch(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?", name) and len(name) <= 40
    assert unique_name(prefix) != name


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A tiny source checkout (no dependencies), so a build runs no pip download."""
    root = tmp_path / "checkout"
    (root / "orchestrator").mkdir(parents=True)
    (root / "docker").mkdir()
    (root / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools>=68"]\nbuild-backend = "setuptools.build_meta"\n'
        '[project]\nname = "orchestrator"\nversion = "0.0.1"\ndependencies = []\n'
        '[tool.setuptools.packages.find]\ninclude = ["orchestrator*"]\n'
    )
    (root / "orchestrator" / "__init__.py").write_text("VALUE = 1\n")
    shutil.copy(ROOT / "docker" / "Dockerfile", root / "docker" / "Dockerfile")
    return root


def test_a_missing_image_is_built_under_its_content_hash_and_latest_is_left(
        project: Path) -> None:
    engine = MemoryEngine(images={DEFAULT_BASE_IMAGE: {}})
    first = resolve_image(engine, None, search_from=project)
    again = resolve_image(engine, None, search_from=project)
    assert re.fullmatch(r"orchestrator-runtime:[0-9a-f]{12}", first) and again == first
    assert engine.image_labels(first)[CONTENT_HASH_LABEL].startswith(first.split(":")[1])
    assert not engine.image_exists(DEFAULT_RUNTIME_IMAGE)  # a shared tag is never moved


def test_a_named_image_is_used_when_present_and_built_when_missing(project: Path) -> None:
    engine = MemoryEngine(images={DEFAULT_BASE_IMAGE: {}, "mine:1": {}})
    assert resolve_image(engine, "mine:1", search_from=project) == "mine:1"
    assert resolve_image(engine, "mine:2", search_from=project) == "mine:2"
    assert engine.image_labels("mine:2").get(CONTENT_HASH_LABEL)


def test_without_a_checkout_the_default_image_is_used_or_the_error_says_what_to_do(
        tmp_path: Path) -> None:
    engine = MemoryEngine()
    with pytest.raises(ImageBuildError, match="orchestrator images build"):
        resolve_image(engine, None, search_from=tmp_path)
    engine.add_image(DEFAULT_RUNTIME_IMAGE, {})
    assert resolve_image(engine, None, search_from=tmp_path) == DEFAULT_RUNTIME_IMAGE


class _Recorder:
    """Stands in for the deployment factory: records the fields it would start with."""

    def __init__(self) -> None:
        self.calls: list[dict[str, object]] = []

    def __call__(self, **fields: object) -> object:
        self.calls.append(fields)
        return fields


TWO = """
deployments:
  - name: first
    uses: docker://busybox:1
  - name: second
    uses: docker://busybox:1
    replicas: 2
    needs: first
"""


def test_a_yaml_file_with_several_deployments_needs_select(tmp_path: Path) -> None:
    (tmp_path / "deploy").mkdir()
    (tmp_path / "deploy" / "app.yml").write_text(TWO)
    recorder = _Recorder()
    factory = YamlDeploymentFactory(recorder, tmp_path)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="several deployments \\(first, second\\)"):
        factory("deploy/app.yml")
    with pytest.raises(ConfigError, match="no deployment named 'third'"):
        factory("deploy/app.yml", select="third")
    factory("deploy/app.yml", select="second", replicas=3)
    [fields] = recorder.calls
    assert fields["name"] == "second" and fields["replicas"] == 3 and "needs" not in fields
    assert fields["base_dir"] == tmp_path / "deploy"  # the file's own paths stay relative to it
