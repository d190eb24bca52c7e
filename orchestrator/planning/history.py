"""Rollout history: revisions, their outcomes, and what `undo` goes back to. Pure values.

A revision is one rolling update that replaced every worker replica: an update of the
spec (`rolling_update`, `orchestrator rollout`, `up -f` with a changed file), a `restart`
(same spec, every replica replaced) or an `undo` (an earlier revision's spec). A scale or
a heal is not a revision, as in kubectl.

Each revision keeps the whole resolved spec (`fields`, what `DeploymentSpec.to_fields`
gives), so `undo` can restore it, plus its worker hash, the generation its replicas run,
when it started, what changed, and its outcome:

- ``in progress``: written before the first replica is replaced;
- ``rolled out``: every replica replaced;
- ``rolled back``: a new replica failed and the update was undone;
- ``cut short``: stopped half-way (a failure under ``failure_action: pause``, Ctrl-C, or the
  process was killed); the deployment may run both specs until the next update or scale.

An ``in progress`` revision whose process has gone is settled by `settle` from what runs:
every worker on its spec and generation means it got to the end.

The records live on the engine (see `orchestrator.control.history`); this module only
encodes, decodes and decides.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

from orchestrator.config import is_secret_key, redact
from orchestrator.errors import RolloutError, SpecError

Outcome = Literal["in progress", "rolled out", "rolled back", "cut short"]
OUTCOMES: tuple[Outcome, ...] = ("in progress", "rolled out", "rolled back", "cut short")
KEEP = 10
"""Revisions kept per deployment (kubectl's default revisionHistoryLimit)."""
KEPT_ON_UNDO = ("name", "replicas", "needs", "shards", "polling", "port", "host",
                "uses_before", "uses_after", "external", "protocol")
"""Fields an undo leaves as they run: the replica count (as kubectl's undo) and the fields
that shape the head, which no rolling update can change."""
_VALUE_WIDTH = 40


@dataclass(frozen=True)
class Revision:
    """One revision of a deployment, as recorded on the engine."""

    number: int
    at: float  # when the rollout began, seconds since the epoch
    change: str  # what changed, in words
    spec_hash: str  # DeploymentSpec.worker_hash() of the revision's spec
    generation: int  # the generation of the replicas it started
    fields: Mapping[str, Any] = field(default_factory=dict, repr=False)
    outcome: Outcome = "in progress"
    note: str = ""  # why it was rolled back or cut short
    host: str = ""  # where the rolling process ran, and its pid (to tell a dead one)
    pid: int = 0
    written: int = 0  # nanoseconds: the newest writing of a record wins

    def to_label(self) -> str:
        """The compact JSON kept in the record's label."""
        return json.dumps(asdict(self), separators=(",", ":"), sort_keys=True, default=str)

    @classmethod
    def from_label(cls, text: str) -> Revision | None:
        """The revision in a record's label; None for a label this version cannot read."""
        try:
            raw = json.loads(text)
            rev = cls(**raw)
        except (TypeError, ValueError):
            return None
        if not isinstance(rev.number, int) or rev.outcome not in OUTCOMES:
            return None
        return rev

    def finished(self, outcome: Outcome, note: str, written: int) -> Revision:
        return replace(self, outcome=outcome, note=note, written=written)

    def summary(self) -> dict[str, Any]:
        """What `rollout history --json` shows (the spec without secret values)."""
        return {"revision": self.number, "at": self.at, "change": self.change,
                "outcome": self.outcome, "note": self.note, "spec_hash": self.spec_hash,
                "generation": self.generation, "spec": redact(self.fields)}


def newest(revisions: Iterable[Revision]) -> list[Revision]:
    """One revision per number (the newest writing of its record), oldest number first."""
    best: dict[int, Revision] = {}
    for rev in revisions:
        kept = best.get(rev.number)
        if kept is None or rev.written > kept.written:
            best[rev.number] = rev
    return [best[n] for n in sorted(best)]


def next_number(revisions: Sequence[Revision]) -> int:
    return max((r.number for r in revisions), default=0) + 1


def beyond_limit(revisions: Sequence[Revision], keep: int = KEEP) -> list[Revision]:
    """The revisions to forget: all but the `keep` newest."""
    ordered = newest(revisions)
    return ordered[:max(0, len(ordered) - keep)]


# -- outcomes of revisions whose process has gone ----------------------------------------


def settle(rev: Revision, *, alive: bool | None,
           workers: Collection[tuple[str, int]]) -> Revision:
    """What an ``in progress`` revision became. `alive`: whether the process rolling it out
    still runs (None: cannot tell, e.g. it ran on another host); `workers`: (spec hash,
    generation) of every worker replica now. A dead process's revision is ``rolled out``
    when every replica runs its spec at its generation or later, else ``cut short``."""
    if rev.outcome != "in progress" or alive is not False:
        return rev
    done = bool(workers) and all(h == rev.spec_hash and g >= rev.generation
                                 for h, g in workers)
    if done:
        return replace(rev, outcome="rolled out",
                       note="its process ended before recording the end")
    return replace(rev, outcome="cut short",
                   note=f"its process (pid {rev.pid}) ended during the update")


# -- what undo goes back to -----------------------------------------------------------------


def current(revisions: Sequence[Revision], running_hash: str) -> Revision | None:
    """The revision that runs now: the newest one on the running spec that was not rolled
    back."""
    for rev in reversed(newest(revisions)):
        if rev.outcome != "rolled back" and rev.spec_hash == running_hash:
            return rev
    return None


def undo_target(revisions: Sequence[Revision], running_hash: str,
                to_revision: int | None = None) -> Revision:
    """The revision `undo` restores: `to_revision`, or the newest rolled-out revision before
    the one that runs now whose spec differs from it.

    Raises:
        SpecError: `to_revision` is not in the history (field ``to_revision``).
        RolloutError: there is no earlier revision to go back to.
    """
    ordered = newest(revisions)
    if to_revision is not None:
        for rev in ordered:
            if rev.number == to_revision:
                return rev
        kept = ", ".join(str(r.number) for r in ordered) or "none"
        raise SpecError(f"revision {to_revision} is not in the history (kept: {kept})",
                        field="to_revision")
    now = current(ordered, running_hash)
    before = [r for r in ordered if (now is None or r.number < now.number)
              and r.outcome == "rolled out" and r.spec_hash != running_hash]
    if not before:
        raise RolloutError("no earlier revision to roll back to: the history has only the "
                           "one that runs (see `orchestrator rollout history`)")
    return before[-1]


def undo_changes(target_fields: Mapping[str, Any]) -> dict[str, Any]:
    """The fields an undo applies: the revision's, but for those in `KEPT_ON_UNDO`."""
    return {k: v for k, v in target_fields.items() if k not in KEPT_ON_UNDO}


# -- what changed, in words --------------------------------------------------------------------


def describe(before: Mapping[str, Any], after: Mapping[str, Any],
             secret: Callable[[str], bool] = is_secret_key) -> str:
    """'image: a -> b; uses_with.tag: v1 -> v2' (the replica count left out: a scale is no
    revision); 'no change' when only replicas differ. Values of secret-looking keys, and
    every env value, are left out."""
    parts: list[str] = []
    for key in sorted(set(before) | set(after)):
        if key == "replicas" or before.get(key) == after.get(key):
            continue
        old, new = before.get(key), after.get(key)
        if isinstance(old, Mapping) or isinstance(new, Mapping):
            parts += _describe_map(key, old or {}, new or {},
                                   hide_all=key == "env", secret=secret)
        else:
            parts.append(f"{key}: {_short(old)} -> {_short(new)}")
    return "; ".join(parts) or "no change"


def _describe_map(prefix: str, old: Mapping[str, Any], new: Mapping[str, Any], *,
                  hide_all: bool, secret: Callable[[str], bool]) -> list[str]:
    out: list[str] = []
    for key in sorted(set(old) | set(new), key=str):
        if old.get(key) == new.get(key):
            continue
        name = f"{prefix}.{key}"
        if key not in new:
            out.append(f"{name} removed")
        elif hide_all or secret(str(key)):
            out.append(f"{name} {'changed' if key in old else 'set'}")
        elif key not in old:
            out.append(f"{name}: {_short(new[key])}")
        else:
            out.append(f"{name}: {_short(old[key])} -> {_short(new[key])}")
    return out


def _short(value: Any) -> str:
    """A value in at most 40 characters; a long one keeps its start and its end (a path's
    file and class, an image's tag)."""
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    if len(text) <= _VALUE_WIDTH:
        return text
    half = (_VALUE_WIDTH - 3) // 2
    return f"{text[:half]}...{text[-(_VALUE_WIDTH - 3 - half):]}"

