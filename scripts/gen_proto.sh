#!/usr/bin/env bash
# Regenerate the checked-in Python code for orchestrator/proto/orchestrator.proto.
#
# Usage: scripts/gen_proto.sh [OUT_DIR]
#   OUT_DIR defaults to the repository root (files land in OUT_DIR/orchestrator/proto/).
#   tests/unit/runtime/test_proto_drift.py generates into a temp dir and compares.
# Env: PYTHON (default: .venv/bin/python if present, else python3).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${1:-$root}"
py="${PYTHON:-}"
if [[ -z "$py" ]]; then
  if [[ -x "$root/.venv/bin/python" ]]; then py="$root/.venv/bin/python"; else py="python3"; fi
fi
bindir="$(dirname "$(command -v "$py")")"
mkdir -p "$out/orchestrator/proto"
cd "$root"
# -I . keeps the package path in the generated imports (from orchestrator.proto import ...).
"$py" -m grpc_tools.protoc -I . \
  --python_out="$out" --grpc_python_out="$out" \
  --plugin=protoc-gen-mypy="$bindir/protoc-gen-mypy" --mypy_out="$out" \
  --plugin=protoc-gen-mypy_grpc="$bindir/protoc-gen-mypy_grpc" --mypy_grpc_out="$out" \
  orchestrator/proto/orchestrator.proto
