"""Every code block of docs/ marked to run (`<!-- test: run -->`, `<!-- test: pytest -->`)
runs as written against the real engine, and leaves nothing behind.

Python blocks run with this interpreter from the repository root, their deployment names
made unique; shell blocks run with bash from the root, with `.venv/bin` on PATH and a
unique NAME; pytest blocks run as a test file with the project's plugin. The README's
blocks are run by test_readme.py, the YAML blocks loaded by tests/unit/test_docs.py.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from orchestrator.engine.cleanup import list_owned, remove_owned
from tests.support.docblocks import Block, marked, run_pytest, run_python, run_sh, unique_names

if TYPE_CHECKING:
    from orchestrator.engine.docker_engine import DockerEngine

pytestmark = pytest.mark.integration

def _leftovers(engine: DockerEngine, names: list[str]) -> list[str]:
    left = []
    for name in names:
        owned = list_owned(engine, name)
        if owned:
            left += owned.names()
            remove_owned(engine, name, grace=0)
    return left


def _cases(kind: str) -> list[object]:
    return [pytest.param(b, id=b.id) for b in marked(kind, readme=False)]


@pytest.mark.parametrize("block", _cases("run"))
def test_a_runnable_block_runs(block: Block, runtime_image: str,
                               docker_engine: DockerEngine) -> None:
    if block.lang == "python":
        code, names = unique_names(block.code)
        done = run_python(code)
    elif block.lang in ("sh", "bash"):
        names = [f"d{uuid.uuid4().hex[:8]}"]
        done = run_sh(block.code, names[0])
    else:
        pytest.fail(f"{block.id}: a `test: run` block must be python or sh, not "
                    f"{block.lang or 'unlabelled'}", pytrace=False)
    left = _leftovers(docker_engine, names)
    assert done.returncode == 0, f"{block.id} failed:\n{done.stdout[-2000:]}\n" \
                                 f"{done.stderr[-3000:]}"
    assert not left, f"{block.id} left {left} behind"


@pytest.mark.parametrize("block", _cases("pytest"))
def test_a_pytest_block_passes(block: Block, runtime_image: str, tmp_path: Path) -> None:
    assert block.lang == "python", f"{block.id}: a `test: pytest` block must be python"
    done = run_pytest(block.code, tmp_path)
    assert done.returncode == 0, f"{block.id}:\n{done.stdout[-3000:]}{done.stderr[-2000:]}"
    assert " passed" in done.stdout and "failed" not in done.stdout
