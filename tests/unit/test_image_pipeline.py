"""The image pipeline without Docker: host parsing, content hashing, and the build cache
driven through the in-memory engine."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import shutil
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from orchestrator.engine.memory import MemoryEngine
from orchestrator.errors import ImageBuildError
from orchestrator.images import (
    CONTENT_HASH_LABEL,
    DEFAULT_BASE_IMAGE,
    DEFAULT_RUNTIME_IMAGE,
    IMAGE_KIND_LABEL,
    AptSource,
    BootstrapPlan,
    choose_mirror,
    ensure_base_image,
    host_bootstrap_plan,
    parse_deb822_sources,
    parse_one_line_sources,
    parse_os_release_codename,
    prepare_runtime_image,
    project_dependencies,
    runtime_content_hash,
)

ROOT = Path(__file__).resolve().parents[2]

DEB822 = """\
Types: deb
# http://snapshot.debian.org/archive/debian/20250520T000000Z
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main

Types: deb-src
URIs: http://src.example/debian
Suites: bookworm
"""


def test_deb822_sources_skip_comments_and_source_repos() -> None:
    assert parse_deb822_sources(DEB822) == [
        AptSource("http://deb.debian.org/debian", ("bookworm", "bookworm-updates"), ("main",)),
        AptSource("http://deb.debian.org/debian-security", ("bookworm-security",), ("main",)),
    ]


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("deb http://m/debian bookworm main", AptSource("http://m/debian", ("bookworm",))),
        (
            "deb [signed-by=/k.gpg] http://m/debian bookworm main contrib",
            AptSource("http://m/debian", ("bookworm",), ("main", "contrib")),
        ),
        (
            "deb [ arch=amd64 ] http://m/debian bookworm main",
            AptSource("http://m/debian", ("bookworm",)),
        ),
        ("# deb http://m/debian bookworm main", None),
        ("deb-src http://m/debian bookworm main", None),
    ],
)
def test_one_line_sources(line: str, expected: AptSource | None) -> None:
    assert parse_one_line_sources(line) == ([expected] if expected else [])


def test_mirror_is_the_one_serving_the_suite_not_security() -> None:
    sources = parse_deb822_sources(DEB822)
    assert choose_mirror(reversed(sources), "bookworm") == "http://deb.debian.org/debian"


def test_no_mirror_for_the_suite_is_an_actionable_error() -> None:
    with pytest.raises(ImageBuildError, match="ORCHESTRATOR_BASE_IMAGE"):
        choose_mirror([AptSource("http://m/debian", ("bullseye",))], "bookworm")


@pytest.mark.parametrize(
    ("text", "codename"),
    [
        ('ID=debian\nVERSION_CODENAME=bookworm\n', "bookworm"),
        ('NAME="Ubuntu"\nVERSION_CODENAME="jammy"\n', "jammy"),
    ],
)
def test_os_release_codename(text: str, codename: str) -> None:
    assert parse_os_release_codename(text) == codename


def test_os_release_without_codename_is_an_error() -> None:
    with pytest.raises(ImageBuildError, match="VERSION_CODENAME"):
        parse_os_release_codename("ID=alpine\n")


def test_bootstrap_hash_names_suite_mirror_and_packages() -> None:
    plan = BootstrapPlan("bookworm", "http://a/debian")
    assert plan.tag == "orchestrator-base:bookworm"
    assert plan.content_hash == BootstrapPlan("bookworm", "http://a/debian").content_hash
    others = [
        BootstrapPlan("trixie", "http://a/debian"),
        BootstrapPlan("bookworm", "http://b/debian"),
        BootstrapPlan("bookworm", "http://a/debian", ("python3",)),
    ]
    assert plan.content_hash not in {other.content_hash for other in others}


# -- cache, through the in-memory engine -----------------------------------------------


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A tiny checkout: pyproject without dependencies, one module, the real Dockerfile."""
    root = tmp_path / "project"
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


def _hash(project: Path) -> str:
    return runtime_content_hash(
        dockerfile=project / "docker" / "Dockerfile",
        dependency_wheels=[],
        project_dir=project,
        base_ref="base:1",
        base_labels={},
    )


def test_content_hash_follows_sources_and_ignores_bytecode(project: Path) -> None:
    before = _hash(project)
    cache = project / "orchestrator" / "__pycache__"
    cache.mkdir()
    (cache / "__init__.cpython-311.pyc").write_bytes(b"\0bytecode")
    assert _hash(project) == before
    (project / "orchestrator" / "__init__.py").write_text("VALUE = 2\n")
    assert _hash(project) != before


def test_second_build_is_a_cache_hit_and_a_source_change_rebuilds(project: Path) -> None:
    engine = MemoryEngine(images={DEFAULT_BASE_IMAGE: {}})
    logs: list[str] = []

    first = prepare_runtime_image(engine, project_dir=project, log=logs.append)
    second = prepare_runtime_image(engine, project_dir=project, log=logs.append)
    (project / "orchestrator" / "__init__.py").write_text("VALUE = 2\n")
    third = prepare_runtime_image(engine, project_dir=project, log=logs.append)

    assert (first.cached, second.cached, third.cached) == (False, True, False)
    assert second.hash_ref == first.hash_ref != third.hash_ref
    labels = engine.image_labels(DEFAULT_RUNTIME_IMAGE)
    assert labels[CONTENT_HASH_LABEL] == third.content_hash
    assert labels[IMAGE_KIND_LABEL] == "runtime"
    assert sum("docker build" in line for line in logs) == 2


def test_force_rebuilds_even_when_cached(project: Path) -> None:
    engine = MemoryEngine(images={DEFAULT_BASE_IMAGE: {}})
    prepare_runtime_image(engine, project_dir=project, log=lambda _: None)
    forced = prepare_runtime_image(engine, project_dir=project, force=True, log=lambda _: None)
    assert not forced.cached


def test_failed_build_raises_with_log_tail_and_leaves_no_tag(project: Path) -> None:
    engine = MemoryEngine(images={DEFAULT_BASE_IMAGE: {}})
    engine.faults.build_failure("orchestrator-runtime:*", log="RUN pip install: no wheel")
    with pytest.raises(ImageBuildError, match="no wheel") as caught:
        prepare_runtime_image(engine, project_dir=project, log=lambda _: None)
    assert "no wheel" in caught.value.log_tail
    assert not engine.image_exists(DEFAULT_RUNTIME_IMAGE)


def test_base_is_pulled_when_a_registry_has_it() -> None:
    engine = MemoryEngine()
    engine.registry["registry.local/python:3.11"] = {}
    ref = ensure_base_image(engine, base="registry.local/python:3.11", log=lambda _: None)
    assert ref == "registry.local/python:3.11"
    assert engine.image_exists(ref)


def test_base_env_variable_chooses_the_base(monkeypatch: pytest.MonkeyPatch) -> None:
    engine = MemoryEngine(images={"mybase:1": {}})
    monkeypatch.setenv("ORCHESTRATOR_BASE_IMAGE", "mybase:1")
    assert ensure_base_image(engine, log=lambda _: None) == "mybase:1"


def test_prune_untags_only_outdated_hash_tags_not_in_use() -> None:
    from orchestrator.engine.base import ContainerSpec
    from orchestrator.engine.memory import MemoryEngine
    from orchestrator.images import prune_runtime_images

    engine = MemoryEngine()
    runtime = {"orchestrator.image": "runtime"}
    for tag in ("aaaaaaaaaaaa", "bbbbbbbbbbbb", "cccccccccccc", "latest", "cli-test"):
        engine.add_image(f"orchestrator-runtime:{tag}", runtime)
    engine.add_image("user-app:v1", runtime)  # built FROM the runtime: inherits its labels
    engine.run_container(ContainerSpec(name="busy", image="orchestrator-runtime:bbbbbbbbbbbb",
                                       labels={"orchestrator.managed": "true"}))
    removed = prune_runtime_images(engine, keep="orchestrator-runtime:cccccccccccc")
    assert removed == ["orchestrator-runtime:aaaaaaaaaaaa"]
    assert engine.image_tags(runtime) == [
        "orchestrator-runtime:bbbbbbbbbbbb",  # a container uses it
        "orchestrator-runtime:cccccccccccc",  # the current one
        "orchestrator-runtime:cli-test",      # a user's tag
        "orchestrator-runtime:latest",
        "user-app:v1",
    ]


def test_prune_keeps_what_another_checkout_built() -> None:
    """Two checkouts on one engine (a clone beside a working tree, CI beside a developer):
    a build in one must not untag the image the other's tests are about to run."""
    from orchestrator.engine.memory import MemoryEngine
    from orchestrator.images import SOURCE_LABEL, prune_runtime_images, source_id

    engine = MemoryEngine()
    here, there = source_id(Path("/work/a")), source_id(Path("/work/b"))
    assert here != there and source_id(Path("/work/a/../a")) == here
    runtime = {"orchestrator.image": "runtime"}
    engine.add_image("orchestrator-runtime:aaaaaaaaaaaa", {**runtime, SOURCE_LABEL: here})
    engine.add_image("orchestrator-runtime:bbbbbbbbbbbb", {**runtime, SOURCE_LABEL: there})
    engine.add_image("orchestrator-runtime:dddddddddddd", runtime)  # from before the label
    engine.add_image("orchestrator-runtime:cccccccccccc", {**runtime, SOURCE_LABEL: here})
    removed = prune_runtime_images(engine, keep="orchestrator-runtime:cccccccccccc",
                                   source=here)
    assert removed == ["orchestrator-runtime:aaaaaaaaaaaa", "orchestrator-runtime:dddddddddddd"]
    assert engine.image_tags(runtime) == ["orchestrator-runtime:bbbbbbbbbbbb",
                                          "orchestrator-runtime:cccccccccccc"]


# -- declared dependencies ----------------------------------------------------------


def _pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _lower_bounds() -> dict[str, str]:
    """name -> the version after '>=' in [project].dependencies (normalised names)."""
    bounds = {}
    for req in _pyproject()["project"]["dependencies"]:
        found = re.match(r"([A-Za-z0-9_.-]+)\s*>=\s*([0-9][0-9.]*)", req)
        assert found, f"{req!r} declares no lower bound"
        bounds[_norm(found[1])] = found[2]
    return bounds


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pins(path: Path) -> dict[str, str]:
    lines = [line.strip() for line in path.read_text().splitlines()]
    pairs = [line.split("==", 1) for line in lines if line and not line.startswith("#")]
    return {_norm(name): version for name, version in pairs}


def test_the_minimum_constraints_are_exactly_the_declared_lower_bounds() -> None:
    assert _pins(ROOT / "constraints-min.txt") == _lower_bounds()


def test_the_proto_code_needs_no_newer_runtime_than_declared() -> None:
    bounds = _lower_bounds()
    pb2 = (ROOT / "orchestrator" / "proto" / "orchestrator_pb2.py").read_text()
    grpc_code = (ROOT / "orchestrator" / "proto" / "orchestrator_pb2_grpc.py").read_text()
    protobuf = re.search(r"# Protobuf Python Version: (\S+)", pb2)
    grpcio = re.search(r"GRPC_GENERATED_VERSION = '(\S+)'", grpc_code)
    assert protobuf and grpcio
    assert bounds["protobuf"] == protobuf[1] and bounds["grpcio"] == grpcio[1]
    assert bounds["grpcio-health-checking"] == grpcio[1]


def test_code_generators_are_pinned_exactly() -> None:
    dev = _pyproject()["project"]["optional-dependencies"]["dev"]
    pinned = {_norm(req.split("==")[0]) for req in dev if "==" in req}
    assert {"grpcio-tools", "mypy-protobuf"} <= pinned


def test_the_lock_pins_every_package_of_the_dev_install() -> None:
    locked = _pins(ROOT / "constraints.txt")
    wanted = [*_pyproject()["project"]["dependencies"],
              *_pyproject()["project"]["optional-dependencies"]["dev"]]
    names = {_norm(re.split(r"[<>=!~; \[]", req, maxsplit=1)[0]) for req in wanted}
    assert names <= set(locked), sorted(names - set(locked))


# -- the lean runtime image: pods get only what the pod runtime imports ----------------


def _imports(path: Path) -> set[str]:
    """Modules `path` imports anywhere (also inside functions), skipping TYPE_CHECKING."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    return found


def _module_file(module: str) -> Path | None:
    base = ROOT.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _third_party_imported_by_pods() -> set[str]:
    """Top-level non-stdlib modules reachable from orchestrator.runtime (and the package
    __init__ that executors import), following the project's own imports."""
    todo = [p for p in (ROOT / "orchestrator" / "runtime").rglob("*.py")]
    todo.append(ROOT / "orchestrator" / "__init__.py")
    seen: set[Path] = set()
    third: set[str] = set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for module in _imports(path):
            top = module.split(".")[0]
            if top == "orchestrator":
                found = _module_file(module)
                if found is not None:
                    todo.append(found)
            elif top not in sys.stdlib_module_names and top != "__future__":
                third.add(top)
    return third


def test_pods_import_only_the_runtime_dependencies() -> None:
    runtime = {_norm(re.split(r"[<>=!~; \[]", req, maxsplit=1)[0])
               for req in project_dependencies(ROOT)}
    owners = importlib.metadata.packages_distributions()
    needed = {_norm(owners[top][0]) for top in _third_party_imported_by_pods()}
    assert needed == runtime  # nothing missing, nothing extra
    assert not {"docker", "rich", "pyyaml", "tenacity"} & runtime


def test_runtime_dependencies_repeat_the_project_specifiers() -> None:
    declared = set(_pyproject()["project"]["dependencies"])
    assert set(project_dependencies(ROOT)) <= declared


def test_repositories_follow_the_environment(project: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A cold build beside shared images: other names, and the shared ones untouched."""
    engine = MemoryEngine(images={DEFAULT_BASE_IMAGE: {}})
    engine.add_image("orchestrator-runtime:aaaaaaaaaaaa", {IMAGE_KIND_LABEL: "runtime"})
    monkeypatch.setenv("ORCHESTRATOR_RUNTIME_REPOSITORY", "cold-runtime")
    monkeypatch.setenv("ORCHESTRATOR_BASE_REPOSITORY", "cold-base")
    built = prepare_runtime_image(engine, project_dir=project, log=lambda _: None)
    assert built.ref == "cold-runtime:latest"
    assert re.fullmatch(r"cold-runtime:[0-9a-f]{12}", built.hash_ref)
    assert engine.image_exists("orchestrator-runtime:aaaaaaaaaaaa")  # not ours to prune
    assert not engine.image_exists(DEFAULT_RUNTIME_IMAGE)
    etc = project / "etc"
    (etc / "apt").mkdir(parents=True)
    (etc / "os-release").write_text("VERSION_CODENAME=bookworm\n")
    (etc / "apt" / "sources.list").write_text("deb http://m/debian bookworm main\n")
    assert host_bootstrap_plan(etc).tag == "cold-base:bookworm"
