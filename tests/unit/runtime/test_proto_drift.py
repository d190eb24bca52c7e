"""The checked-in generated code must match what scripts/gen_proto.sh makes from the .proto."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.unit.runtime.harness import ROOT

GENERATED = ["orchestrator_pb2.py", "orchestrator_pb2.pyi",
             "orchestrator_pb2_grpc.py", "orchestrator_pb2_grpc.pyi"]


def test_generated_code_matches_proto(tmp_path: Path) -> None:
    subprocess.run([str(ROOT / "scripts" / "gen_proto.sh"), str(tmp_path)], check=True,
                   capture_output=True, timeout=120, env={**os.environ, "PYTHON": sys.executable})
    for name in GENERATED:
        fresh = (tmp_path / "orchestrator" / "proto" / name).read_text()
        checked_in = (ROOT / "orchestrator" / "proto" / name).read_text()
        assert fresh == checked_in, f"{name} drifted: run scripts/gen_proto.sh"
