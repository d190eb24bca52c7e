"""The layer rules of ARCHITECTURE.md, checked on the package's own import graph.

Every `import` and `from ... import` of every module counts, also the ones inside a
function or under `if TYPE_CHECKING:`: a circle that only typing sees is still a circle
for the reader.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "orchestrator"
GENERATED = ("orchestrator.proto.orchestrator_pb2", "orchestrator.proto.orchestrator_pb2_grpc")
# What a module of runtime/ (code that runs INSIDE a container) may import of the project.
RUNTIME_MAY_IMPORT = ("orchestrator.runtime", "orchestrator.proto", "orchestrator.errors")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    found = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: path for name, path in found.items() if name not in GENERATED}


MODULES = all_modules()


def _resolve(current: str, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    package = current if MODULES[current].name == "__init__.py" else current.rpartition(".")[0]
    for _ in range(node.level - 1):
        package = package.rpartition(".")[0]
    return f"{package}.{node.module}" if node.module else package


def imported(name: str) -> Iterator[str]:
    """Every module name `name` imports (a `from pkg import mod` yields pkg.mod when that
    is a module, else pkg)."""
    tree = ast.parse(MODULES[name].read_text(), filename=str(MODULES[name]))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(name, node)
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                yield candidate if candidate in MODULES else base


def project_graph() -> dict[str, set[str]]:
    return {name: {m for m in imported(name) if m in MODULES and m != name}
            for name in MODULES}


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10_000))
    try:
        for node in sorted(graph):
            if node not in index:
                visit(node)
    finally:
        sys.setrecursionlimit(limit)
    return found


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen: set[str] = set()
    todo = [start]
    while todo:
        for nxt in graph[todo.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def external(name: str) -> set[str]:
    """Top-level names of the non-project modules `name` imports."""
    return {m.split(".")[0] for m in imported(name) if not m.startswith("orchestrator")}


def under(prefix: str) -> list[str]:
    return sorted(m for m in MODULES if m == prefix or m.startswith(prefix + "."))


# -- the rules ------------------------------------------------------------------------------
def test_no_circle_among_the_packages_modules() -> None:
    assert circles(project_graph()) == []


@pytest.mark.parametrize("module", under("orchestrator.planning"))
def test_planning_is_pure(module: str) -> None:
    graph = project_graph()
    closure = {module} | reachable(graph, module)
    assert not [m for m in closure if m.startswith("orchestrator.engine")]
    forbidden = {"docker", "grpc", "grpc_health", "asyncio"}
    assert {m: external(m) & forbidden for m in closure if external(m) & forbidden} == {}


@pytest.mark.parametrize("module", under("orchestrator.runtime"))
def test_runtime_imports_nothing_host_side(module: str) -> None:
    host_side = [m for m in project_graph()[module]
                 if not m.startswith(RUNTIME_MAY_IMPORT)]
    assert host_side == []


def test_only_the_docker_adapter_imports_docker() -> None:
    importers = sorted(m for m in MODULES if "docker" in external(m))
    assert importers == ["orchestrator.engine.docker_engine",
                         "orchestrator.engine.docker_engine_swarm"]  # the Swarm adapter


def test_the_engine_package_does_not_load_the_fake_nor_docker() -> None:
    code = ("import sys, orchestrator.engine as e; "
            "print(sorted(m for m in sys.modules if m in "
            "('orchestrator.engine.memory', 'docker'))); e.MemoryEngine; "
            "print('orchestrator.engine.memory' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout.split("\n")
    assert out[:2] == ["[]", "True"]  # loaded on first use of its names, not before


def test_the_managed_label_is_defined_once() -> None:
    definitions = []
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) \
                    and node.value.value == "orchestrator.managed":
                definitions.append(name)
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.BinOp) \
                    and isinstance(node.value.right, ast.Constant) \
                    and node.value.right.value == "managed":
                definitions.append(name)
    assert definitions == ["orchestrator.labels"]


# -- the checker itself ----------------------------------------------------------------------
def test_the_circle_finder_finds_a_planted_circle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert circles(graph) == [["a", "b", "c"]]
    assert circles({"a": {"b"}, "b": set()}) == []


def test_the_graph_sees_function_local_and_type_checking_imports() -> None:
    graph = project_graph()
    assert graph, "no module found"
    # orchestrator/__init__ re-exports Deployment: the edge must be there
    assert "orchestrator.deployment" in graph["orchestrator"]
