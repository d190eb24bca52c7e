"""The executor bench/bench_scale.py deploys: /echo (pure overhead) and /work, a handler
that does real CPU work (about 1 ms of Python here), as a model or a parser would."""

from __future__ import annotations

from typing import Any

from orchestrator import Executor, requests


class Work(Executor):
    """/echo and /work."""

    @requests(on="/echo")
    def echo(self, docs: list[dict[str, Any]], **kwargs: Any) -> None:
        for d in docs:
            d["replica"] = self.runtime_args.replica_id

    @requests(on="/work")
    def work(self, docs: list[dict[str, Any]], parameters: dict[str, Any], **kw: Any) -> None:
        n = int(parameters.get("n", 20_000))
        for d in docs:
            d["sum"] = sum(i * i for i in range(n))
