"""Paths the integration tests share."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ECHO = str(ROOT / "executors" / "echo.py")
TEST_EXECUTORS = ROOT / "tests" / "integration" / "executors"
