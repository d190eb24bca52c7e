"""An executor that writes to its log on request: for the log-rotation test."""

from __future__ import annotations

import sys
from typing import Any

from orchestrator import Executor, requests


class Chatty(Executor):
    """`/say` writes `parameters["lines"]` numbered lines of about 1 KiB to stdout."""

    @requests(on="/say")
    def say(self, docs: list[dict[str, Any]], parameters: dict[str, Any], **kwargs: Any) -> None:
        first = int(parameters.get("first", 0))
        for i in range(first, first + int(parameters["lines"])):
            print(f"line {i:06d} " + "x" * 1000, flush=True)
        print(f"said up to line {first + int(parameters['lines']) - 1:06d}", file=sys.stderr,
              flush=True)
