"""The fenced code blocks of the README and docs/, and which of them the tests run.

A block is run when the line before its opening fence (blank lines aside) is a marker:

    <!-- test: run -->      python: run with this interpreter; sh: run with bash
    <!-- test: pytest -->   python: a test file, run with pytest
    <!-- test: config -->   yaml: loaded as a deployment file placed in examples/

docs/development.md documents the convention for writers.
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from tests.support.paths import ROOT

MARKERS = ("run", "pytest", "config")
_MARKER = re.compile(r"^\s*<!--\s*test:\s*(\S+)\s*-->\s*$")
_FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})\s*([\w+-]*)")
# a deployment's name in a Python example: Deployment(name="echo", ...) or name="echo",
_PY_NAME = re.compile(r"""\bname\s*=\s*(["'])([a-z][a-z0-9-]*)\1""")


@dataclass(frozen=True)
class Block:
    """One fenced block: where it is, its language, its text and its marker (or None)."""

    path: Path  # relative to the repository root
    line: int  # of the opening fence, 1-based
    lang: str
    code: str
    marker: str | None

    @property
    def id(self) -> str:
        return f"{self.path}:{self.line}"


def doc_files() -> list[Path]:
    """README.md and every Markdown page under docs/, relative to the root, sorted."""
    pages = sorted(p.relative_to(ROOT) for p in (ROOT / "docs").rglob("*.md"))
    return [Path("README.md"), *pages]


def blocks_in(text: str, path: Path) -> list[Block]:
    """Every fenced block of `text`, with the marker that precedes it, if any. A fence's
    indentation (a block inside a list item) is removed from its lines."""
    found: list[Block] = []
    lines = text.splitlines()
    marker: str | None = None
    i = 0
    while i < len(lines):
        match = _FENCE.match(lines[i])
        if match is None:
            stripped = lines[i].strip()
            if stripped:
                seen = _MARKER.match(lines[i])
                marker = seen[1] if seen else None
            i += 1
            continue
        indent, fence, lang = match[1], match[2], match[3]
        start = i
        body: list[str] = []
        i += 1
        while i < len(lines) and not lines[i].strip().startswith(fence):
            line = lines[i]
            body.append(line[len(indent):] if line.startswith(indent) else line.lstrip())
            i += 1
        found.append(Block(path, start + 1, lang, "\n".join(body) + "\n", marker))
        marker = None
        i += 1  # past the closing fence
    return found


def all_blocks() -> list[Block]:
    return [b for p in doc_files() for b in blocks_in((ROOT / p).read_text(), p)]


def marked(kind: str, *, readme: bool | None = None) -> list[Block]:
    """The blocks marked `kind`; `readme`: only the README's (True) or only docs/ (False)."""
    return [b for b in all_blocks() if b.marker == kind
            and (readme is None or (b.path == Path("README.md")) == readme)]


def unique_names(code: str) -> tuple[str, list[str]]:
    """`code` with every deployment name literal (``name="echo"``) made unique for this
    run, and the new names (so a test can check that nothing of them is left)."""
    suffix = secrets.token_hex(3)
    names: list[str] = []

    def rename(match: re.Match[str]) -> str:
        new = f"{match[2][:24]}-d{suffix}{len(names)}"
        names.append(new)
        return match[0].replace(match[2], new)

    return _PY_NAME.sub(rename, code), names


# -- running them -------------------------------------------------------------------------

BIN = Path(sys.executable).parent
DEADLINE = 600  # a subprocess that hangs must not hang the suite; never asserted on


def block_env(**extra: str) -> dict[str, str]:
    """The environment a reader has: this venv's bin first on PATH, none of the variables
    the example files read (NAME, TAG, REPLICAS, IMAGE) left over from the caller."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("NAME", "TAG", "REPLICAS", "IMAGE", "NO_COLOR")}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=DEADLINE, check=False, env=block_env())


def run_sh(code: str, name: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "-euo", "pipefail", "-c", code], cwd=ROOT,
                          capture_output=True, text=True, timeout=DEADLINE, check=False,
                          env=block_env(NAME=name))


def run_pytest(code: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    test_file = tmp_path / "test_doc_example.py"
    test_file.write_text(code)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
         "--rootdir", str(ROOT), "-c", os.devnull, str(test_file)],
        cwd=ROOT, capture_output=True, text=True, timeout=DEADLINE, check=False,
        env=block_env())
