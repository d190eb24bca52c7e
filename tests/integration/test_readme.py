"""The README's Python example runs as written (with a unique deployment name)."""

from __future__ import annotations

import re
import subprocess
import sys
import uuid
from typing import TYPE_CHECKING

import pytest

from orchestrator.engine.cleanup import list_owned, remove_owned
from tests.support.paths import ROOT

if TYPE_CHECKING:
    from orchestrator.engine.docker_engine import DockerEngine

pytestmark = pytest.mark.integration


def python_api_example() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Python API", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "the Python API section has no python block"
    return match.group(1)


def test_readme_python_example_runs(runtime_image: str, docker_engine: DockerEngine) -> None:
    code = python_api_example()
    assert 'name="echo"' in code
    name = f"treadme{uuid.uuid4().hex[:6]}"
    try:
        done = subprocess.run([sys.executable, "-c", code.replace('"echo"', f'"{name}"', 1)],
                              cwd=ROOT, capture_output=True, text=True, timeout=300,
                              check=False)
        assert done.returncode == 0, done.stderr[-3000:]
        host, port, pods, ready = done.stdout.split()
        assert host == "127.0.0.1" and int(port) > 0
        assert pods == str(1 + 5 * 2) and ready == "True"
    finally:
        leftovers = list_owned(docker_engine, name)
        remove_owned(docker_engine, name, grace=0)
    assert not leftovers
