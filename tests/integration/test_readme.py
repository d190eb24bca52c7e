"""The README's blocks run as written: the quickstart's demo command, the Python example
and the CLI example (each with a unique deployment name). The quickstart's test command is
the one CI runs (checked in tests/unit/test_docs.py: it cannot run the suite from inside
the suite)."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from orchestrator.engine.cleanup import list_owned, remove_owned
from tests.support.docblocks import (
    DEADLINE,
    Block,
    block_env,
    blocks_in,
    marked,
    run_python,
    run_sh,
    unique_names,
)
from tests.support.paths import ROOT

if TYPE_CHECKING:
    from orchestrator.engine.docker_engine import DockerEngine

pytestmark = pytest.mark.integration


def readme_block(lang: str) -> Block:
    """The README's one runnable block in `lang`."""
    found = [b for b in marked("run", readme=True) if b.lang == lang]
    assert len(found) == 1, f"the README should have one runnable {lang} block: {found}"
    return found[0]


def quickstart_commands() -> list[str]:
    """The lines of the first block under "## Quickstart"."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Quickstart", 1)[1]
    block = blocks_in(section, Path("README.md"))[0]
    return [line for line in block.code.splitlines() if line.strip()]


def test_the_quickstart_demo_command_runs(runtime_image: str,
                                          docker_engine: DockerEngine) -> None:
    demo = quickstart_commands()[0]
    assert demo == "scripts/demo"
    name = f"tqs{uuid.uuid4().hex[:6]}"
    try:
        # as written, plus a unique name and 2 replicas (the engine is shared)
        done = subprocess.run(["bash", "-c", f"{demo} --name {name} --replicas 2"], cwd=ROOT,
                              capture_output=True, text=True, timeout=DEADLINE, check=False,
                              env=block_env())
        out = done.stdout
        assert done.returncode == 0, done.stderr[-2000:] + out[-2000:]
        assert "polling ALL -> 2 docs, one per shard" in out
        assert "served by 4 replicas" in out
        assert ", 0 failed" in out
        assert "answers after the update: {'v2':" in out
        assert "resources left on the engine: 0" in out
    finally:
        left = list_owned(docker_engine, name)
        remove_owned(docker_engine, name, grace=0)
    assert not left


def test_the_python_example_runs(runtime_image: str, docker_engine: DockerEngine) -> None:
    code, names = unique_names(readme_block("python").code)
    assert len(names) == 1
    try:
        done = run_python(code)
        assert done.returncode == 0, done.stderr[-3000:]
        host, port, pods, ready = done.stdout.split()
        assert host == "127.0.0.1" and int(port) > 0
        assert pods == str(1 + 5 * 2) and ready == "True"
    finally:
        left = list_owned(docker_engine, names[0])
        remove_owned(docker_engine, names[0], grace=0)
    assert not left


def test_the_cli_example_runs(runtime_image: str, docker_engine: DockerEngine) -> None:
    script = readme_block("sh").code
    assert "orchestrator up" in script and "orchestrator down $NAME" in script
    name = f"tcli{uuid.uuid4().hex[:6]}"
    try:
        done = run_sh(script, name)
        assert done.returncode == 0, done.stderr[-3000:]
        assert f"{name}-head" in done.stdout  # ps printed the pods
        assert "rolling update" in done.stderr
    finally:
        left = list_owned(docker_engine, name)
        remove_owned(docker_engine, name, grace=0)
    assert not left
