"""Jina's Namespace views of the pods (`head_args`, `all_args`, `get_worker_host`, ...),
built from the spec and the running pods by `orchestrator.pod_args`."""

from __future__ import annotations

import argparse

from orchestrator import pod_args as views
from orchestrator.facade.handle import Handle
from orchestrator.planning.hosts import Placement


class PodArgsViews(Handle):
    """The seed's argument Namespaces. They are views: rebuilt after every change."""

    def update_pod_args(self) -> None:
        """Rebuild every pod's argument Namespace from the spec and the running pods."""
        self.pod_args = views.build(self.state)

    def update_worker_pod_args(self) -> None:
        """Rebuild only the workers' Namespaces, grouped by shard, in replica order."""
        self.pod_args["pods"] = views.workers(self.state)

    @property
    def head_args(self) -> argparse.Namespace:
        ns = self.pod_args["head"]
        assert isinstance(ns, argparse.Namespace)
        return ns

    @property
    def uses_before_args(self) -> argparse.Namespace | None:
        return self.pod_args["uses_before"]  # type: ignore[no-any-return]

    @property
    def uses_after_args(self) -> argparse.Namespace | None:
        return self.pod_args["uses_after"]  # type: ignore[no-any-return]

    @property
    def first_pod_args(self) -> argparse.Namespace:
        """Arguments of the first replica of the first shard."""
        first: argparse.Namespace = self.pod_args["pods"][0][0]
        return first

    @property
    def all_args(self) -> list[argparse.Namespace]:
        """Every pod's Namespace: head, uses_before, uses_after, then workers."""
        return views.all_args(self.pod_args)

    @staticmethod
    def get_worker_host(
        pod_args: argparse.Namespace, pod: Placement, head_pod: Placement,
        orchestrator: Placement | None = None,
    ) -> str:
        """The host the head must dial to reach the worker described by `pod_args`/`pod`.

        `pod_args.host`/`pod_args.port` override the placement's host and port when set.
        """
        return views.get_worker_address(pod_args, pod, head_pod, orchestrator)[0]

    @staticmethod
    def get_worker_address(
        pod_args: argparse.Namespace, pod: Placement, head_pod: Placement,
        orchestrator: Placement | None = None,
    ) -> tuple[str, int]:
        return views.get_worker_address(pod_args, pod, head_pod, orchestrator)
