"""The README and the documentation site, without an engine: the landing page's promises
(short, CI runs its test command, its links resolve), the code-block markers, the YAML
examples load, the site's navigation, and the generated references (CLI, YAML)."""

from __future__ import annotations

import argparse
import importlib.util
import re
from pathlib import Path
from types import ModuleType

import pytest
import yaml

from orchestrator.cli import build_parser
from orchestrator.cli.reference import anchor, cli_markdown, commands
from orchestrator.config import load_text
from tests.support.docblocks import (
    MARKERS,
    Block,
    all_blocks,
    blocks_in,
    doc_files,
    marked,
    unique_names,
)
from tests.support.paths import ROOT

README = ROOT / "README.md"


# -- the README landing page ------------------------------------------------------------------


def test_the_readme_is_a_short_landing_page() -> None:
    lines = README.read_text().splitlines()
    assert len(lines) < 150, f"README.md has {len(lines)} lines: move detail into docs/"


def test_the_quickstart_test_command_is_the_one_ci_runs() -> None:
    section = README.read_text().split("## Quickstart", 1)[1]
    commands_ = [c for c in blocks_in(section, Path("README.md"))[0].code.splitlines() if c]
    assert commands_ == ["scripts/demo", "scripts/test"]
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert "scripts/test" in ci  # exactly the README's command, with no arguments


def test_the_readme_runs_one_python_and_one_shell_example() -> None:
    langs = sorted(b.lang for b in marked("run", readme=True))
    assert langs == ["python", "sh"]


def _relative_links(text: str) -> list[str]:
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    return [link for link in links if not re.match(r"[a-z]+:|#", link)]


@pytest.mark.parametrize("page", doc_files(), ids=str)
def test_relative_links_point_at_files_that_exist(page: Path) -> None:
    """(mkdocs --strict checks docs/ too, anchors included; this also covers the README,
    which the site does not build.)"""
    for link in _relative_links((ROOT / page).read_text()):
        target = (ROOT / page).parent / link.split("#", 1)[0]
        generated = target.name.endswith(".schema.json")  # added by the build
        assert generated or target.exists(), f"{page}: broken link {link}"


# -- code blocks ------------------------------------------------------------------------------

_LANGS = {"run": ("python", "sh", "bash"), "pytest": ("python",), "config": ("yaml",)}


@pytest.mark.parametrize("block", [b for b in all_blocks() if b.marker], ids=lambda b: b.id)
def test_a_marked_block_has_a_known_marker_and_language(block: Block) -> None:
    assert block.marker in MARKERS, f"{block.id}: unknown marker {block.marker!r}"
    assert block.lang in _LANGS[block.marker], f"{block.id}: {block.lang!r} block"
    if block.lang == "python":
        compile(block.code, block.id, "exec")


@pytest.mark.parametrize("block", marked("config"), ids=lambda b: b.id)
def test_a_yaml_example_loads_as_a_deployment_file(block: Block) -> None:
    configs = load_text(block.code, ROOT / "examples" / "doc-example.yml", variables={})
    assert configs and all(c.spec.name for c in configs)


def test_the_docs_have_runnable_examples_of_every_kind() -> None:
    kinds = {(b.marker, b.lang) for b in all_blocks()
             if b.marker and b.path != Path("README.md")}
    assert {("run", "python"), ("run", "sh"), ("pytest", "python"), ("config", "yaml")} <= kinds


@pytest.mark.parametrize(("text", "expected"), [
    # (text, [(line, lang, marker, code)])
    ("<!-- test: run -->\n```python\nx = 1\n```\n", [(2, "python", "run", "x = 1\n")]),
    ("<!-- test: run -->\n\n```sh\nls\n```\n", [(3, "sh", "run", "ls\n")]),
    ("```yaml\na: 1\n```\n", [(1, "yaml", None, "a: 1\n")]),
    ("<!-- test: run -->\nsome prose\n```python\nx\n```\n", [(3, "python", None, "x\n")]),
    ("- item\n\n  <!-- test: config -->\n  ```yaml\n  a: 1\n    b: 2\n  ```\n",
     [(4, "yaml", "config", "a: 1\n  b: 2\n")]),
    ("```\nplain\n```\n<!-- test: run -->\n````sh\n```\n````\n",
     [(1, "", None, "plain\n"), (5, "sh", "run", "```\n")]),
])
def test_blocks_and_their_markers_are_found(text: str, expected: list[tuple[object, ...]]
                                            ) -> None:
    found = blocks_in(text, Path("x.md"))
    assert [(b.line, b.lang, b.marker, b.code) for b in found] == expected


def test_deployment_names_in_python_examples_are_made_unique() -> None:
    code = 'Deployment(name="echo", uses="x")\nDeployment(name = "b-2")\nd["name"] = "k"\n'
    new, names = unique_names(code)
    assert len(names) == 2 and names[0].startswith("echo-") and names[1].startswith("b-2-")
    assert f'name="{names[0]}"' in new and f'name = "{names[1]}"' in new
    assert 'd["name"] = "k"' in new
    assert unique_names(code)[1] != names  # fresh per run


# -- the site ---------------------------------------------------------------------------------


def _nav_pages(entries: list[object]) -> list[str]:
    pages: list[str] = []
    for entry in entries:
        values = entry.values() if isinstance(entry, dict) else [entry]
        for value in values:
            pages += _nav_pages(value) if isinstance(value, list) else [str(value)]
    return pages


def test_every_nav_entry_is_a_page_and_every_page_of_ours_is_in_nav() -> None:
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    nav = _nav_pages(config["nav"])
    assert len(nav) == len(set(nav))
    for page in nav:
        assert (ROOT / "docs" / page).is_file(), f"mkdocs.yml nav: no docs/{page}"
    readme_targets = {link.removeprefix("docs/").split("#")[0]
                      for link in _relative_links(README.read_text())}
    assert readme_targets <= set(nav), "the README links a page the site's nav lacks"


def test_the_test_command_builds_the_site_in_strict_mode() -> None:
    """scripts/test builds the site with --strict, and never with --quiet: mkdocs 1.6 then
    hides the warnings from its strict count too, and a broken link passes."""
    build = [line for line in (ROOT / "scripts" / "test").read_text().splitlines()
             if "mkdocs build" in line and not line.lstrip().startswith(("#", "echo"))]
    assert len(build) == 1 and "--strict" in build[0]
    assert not re.search(r"\s(-q|--quiet)\b", build[0])


def _hooks() -> ModuleType:
    spec = importlib.util.spec_from_file_location("mkdocs_hooks",
                                                  ROOT / "scripts" / "mkdocs_hooks.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_hook_fills_the_generated_references_and_refuses_unknown_markers() -> None:
    hooks = _hooks()
    page = "# CLI\n\n<!-- generated: cli-reference -->\n\n<!-- generated: yaml-reference -->\n"
    filled = hooks.fill(page, "p.md")
    assert "<!-- generated" not in filled
    assert "### `orchestrator up`" in filled and "## Deployment fields" in filled
    inline = "text <!-- generated: cli-reference --> inline"  # a marker is a line of its own
    assert hooks.fill(inline) == inline
    with pytest.raises(ValueError, match=r"p\.md: unknown generated block 'nope'"):
        hooks.fill("<!-- generated: nope -->", "p.md")


def test_the_pages_that_ask_for_generated_parts_exist() -> None:
    texts = {p: (ROOT / p).read_text() for p in doc_files()}
    assert "<!-- generated: cli-reference -->" in texts[Path("docs/reference/cli.md")]
    assert "<!-- generated: yaml-reference -->" in texts[Path("docs/reference/yaml.md")]


# -- the CLI reference ------------------------------------------------------------------------


def test_the_cli_reference_has_every_command_and_option_of_the_parser() -> None:
    parser = build_parser()
    text = cli_markdown(parser)
    found = list(commands(parser))
    assert ("orchestrator", "images", "build") in [path for path, _ in found]
    for path, sub in found:
        assert f"## `{' '.join(path)}`" in text
        assert f"(#{anchor(path)})" in text  # linked from its parent's table
        for action in sub._actions:
            if action.help == argparse.SUPPRESS or not action.option_strings:
                continue
            for flag in action.option_strings:
                if flag not in ("-h", "--help"):
                    assert f"`{flag}" in text.split(f"## `{' '.join(path)}`", 1)[1], \
                        f"{' '.join(path)}: {flag} missing"


def test_the_cli_reference_of_a_small_parser() -> None:
    parser = argparse.ArgumentParser(prog="tool", description="A tool.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    run = sub.add_parser("run", help="run | it", description="Run  it.")
    run.add_argument("name", help="what to run")
    run.add_argument("--mode", choices=["a", "b"], default="a", help="how")
    run.add_argument("--set", action="append", metavar="K=V", help="a value")
    run.add_argument("--hidden", help=argparse.SUPPRESS)
    text = cli_markdown(parser)
    assert "## `tool`" in text and "## `tool run`" in text
    assert "| [`run`](#tool-run) | run \\| it |" in text
    assert "Run it." in text and "usage: tool run [-h]" in text
    assert "| `name` | what to run |" in text
    assert "| `--mode {a,b}` | how; one of `a`, `b`; default `a` |" in text
    assert "| `--set K=V` | a value; repeatable |" in text
    assert "--hidden" not in text


# -- the YAML reference -----------------------------------------------------------------------


def test_the_yaml_reference_says_what_each_value_may_be() -> None:
    from orchestrator.schema import reference_markdown

    fields = reference_markdown().split("## `policy` fields")[0]
    rows = {line.split("|")[1].strip(): line for line in fields.splitlines()
            if line.startswith("| `")}
    assert rows["`replicas`"].endswith("(integer >= 1) |")
    assert rows["`port`"].endswith("(integer from 1 to 65535 or null) |")
    assert '`"unless-stopped"`' in rows["`restart_policy`"]
    assert rows["`volumes`"].endswith("(list of string) |")
    assert "see `policy` below" in rows["`policy`"]
    assert rows["`name`"].endswith("(string of at most 40) |")
    assert "$" not in rows["`replicas`"]  # the interpolation form is not a kind of value
