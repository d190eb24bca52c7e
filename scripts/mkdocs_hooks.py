"""mkdocs hooks (``hooks:`` in mkdocs.yml): the generated parts of the documentation.

A page asks for generated text with a marker on a line of its own:

    <!-- generated: cli-reference -->    every command and option, from the argparse parser
    <!-- generated: yaml-reference -->   every field of a deployment file, from the JSON Schema

and the marker is replaced at build time, so the reference cannot drift from the code.
The build also adds the JSON Schema itself next to the YAML reference
(``reference/deployment-file.schema.json``). An unknown marker fails the build.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

MARKER = re.compile(r"^<!-- generated: ([a-z-]+) -->$", re.MULTILINE)
SCHEMA_FILE = "reference/deployment-file.schema.json"


def _cli_reference() -> str:
    from orchestrator.cli.reference import cli_markdown

    return cli_markdown(level=3)  # under the page's "## Commands"


def _yaml_reference() -> str:
    from orchestrator.schema import reference_markdown

    return reference_markdown()


GENERATORS: dict[str, Callable[[], str]] = {
    "cli-reference": _cli_reference,
    "yaml-reference": _yaml_reference,
}


def fill(markdown: str, where: str = "") -> str:
    """`markdown` with every marker replaced by its generated text.

    Raises:
        ValueError: a marker names no generator (the build fails, naming the page).
    """

    def generated(match: re.Match[str]) -> str:
        generator = GENERATORS.get(match[1])
        if generator is None:
            raise ValueError(f"{where}: unknown generated block {match[1]!r} "
                             f"(known: {', '.join(sorted(GENERATORS))})")
        return generator().strip()

    return MARKER.sub(generated, markdown)


def on_page_markdown(markdown: str, page: Any, **_: Any) -> str:
    return fill(markdown, page.file.src_uri)


def on_files(files: Any, config: Any, **_: Any) -> Any:
    """Add the JSON Schema as a page-less file, so pages can link to it (and the link is
    checked like any other)."""
    from mkdocs.structure.files import File

    from orchestrator.schema import config_schema

    text = json.dumps(config_schema(), indent=2) + "\n"
    files.append(File.generated(config, SCHEMA_FILE, content=text))
    return files
