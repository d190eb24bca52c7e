"""GPUs per replica: what a `gpus` field asks for, and which devices each replica slot gets.

Pure: the engine's devices come in as a value (`available`, listed by the engine adapter's
`gpu_devices()`), so every rule here is a table test.

What `gpus` accepts (and Jina's forms):

- ``all``: every replica sees every device (Docker's ``--gpus all``);
- a count ``N``: each replica gets N devices of its own, spread over the host in slot
  order and wrapping around (slot 0 gets 0..N-1, slot 1 gets N..2N-1, ...), not the same
  first N for everyone;
- device ids, ``"device=0,1"``, ``"device=0,device=1"`` or ``["0", "1"]``: every replica
  sees exactly those;
- one list per replica slot, ``[["0", "1"], ["2", "3"]]``: slot j gets list ``j % len``;
- Jina's round robin, ``env: {CUDA_VISIBLE_DEVICES: RR}`` (or ``RR1:3``, ``RR0,2``): slot j
  gets one device, the j-th of the selection (all devices for plain ``RR``), wrapping
  around. The variable is not passed into the container: there the replica's one device
  is its only GPU, as the NVIDIA runtime exposes it.

A replacement of a slot (rolling update, heal) gets the devices of the slot it replaces:
the assignment is a function of the slot number alone.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from orchestrator.errors import SpecError

RR_ENV = "CUDA_VISIBLE_DEVICES"
# an index, a GPU-UUID or a MIG device, as nvidia-smi -L lists them
_DEVICE_ID = re.compile(r"^(\d+|GPU-[0-9A-Fa-f-]+|MIG-[0-9A-Za-z/-]+)$")


@dataclass(frozen=True)
class GpuRequest:
    """What a deployment asks for. `count`: devices per replica (-1: all of them);
    `groups`: explicit device ids, one tuple for every replica or one per slot (cycled);
    `round_robin`: one device per replica, cycling over `groups`' devices (or over every
    device of the engine when `groups` is empty)."""

    count: int = 0
    groups: tuple[tuple[str, ...], ...] = ()
    round_robin: bool = False

    @property
    def everything(self) -> bool:
        return self.count < 0

    def to_field(self) -> object:
        """The `gpus` value that parses back to this request (None for round robin, which
        the env carries)."""
        if self.round_robin:
            return None
        if self.groups:
            if len(self.groups) == 1:
                return "device=" + ",".join(self.groups[0])
            return [list(g) for g in self.groups]
        return "all" if self.count < 0 else self.count

    def label(self, devices: tuple[str, ...] | None) -> str:
        """What `ps` shows for one pod."""
        if devices is not None:
            return ",".join(devices)
        return "all"


def parse_gpus(value: object, env: Mapping[str, str]) -> GpuRequest | None:
    """`gpus` and the env's `CUDA_VISIBLE_DEVICES=RR...` as one request (None: no GPU).

    Raises:
        SpecError: naming `gpus` or `env.CUDA_VISIBLE_DEVICES`.
    """
    rr = env.get(RR_ENV, "")
    if rr.upper().startswith("RR"):
        if value not in (None, 0, "all"):
            raise SpecError(f"{RR_ENV}={rr} already assigns one device per replica; give "
                            "either it or gpus", field="gpus")
        return GpuRequest(count=1, groups=_rr_selection(rr[2:]), round_robin=True)
    if value is None or value == 0:
        return None
    if value == "all":
        return GpuRequest(count=-1)
    if isinstance(value, bool):
        raise SpecError(f"must be 'all', a GPU count or device ids, got {value!r}",
                        field="gpus")
    if isinstance(value, int):
        if value < 0:
            raise SpecError(f"must be 'all', a GPU count or device ids, got {value!r}",
                            field="gpus")
        return GpuRequest(count=value)
    if isinstance(value, str):
        text = value.strip()
        if text.isdigit():
            return parse_gpus(int(text), {})
        return _ids_request((_device_ids(text),))
    if isinstance(value, Sequence) and value:
        if all(isinstance(v, Sequence) and not isinstance(v, str) for v in value):
            return _ids_request(tuple(_ids_list(v) for v in value))
        return _ids_request((_ids_list(value),))
    raise SpecError(f"must be 'all', a GPU count or device ids, got {value!r}", field="gpus")


def _ids_request(groups: tuple[tuple[str, ...], ...]) -> GpuRequest:
    if any(not g for g in groups):
        raise SpecError("a device list is empty", field="gpus")
    return GpuRequest(count=len(groups[0]), groups=groups)


def _device_ids(text: str) -> tuple[str, ...]:
    """'device=0,1', 'device=0,device=1' or '0,1' -> ('0', '1'). Docker's other --gpus
    options (capabilities=, driver=) are refused: GPUs are requested with the gpu
    capability, nothing else."""
    ids: list[str] = []
    for part in text.split(","):
        part = part.strip()
        key, sep, rest = part.partition("=")
        if sep and key.strip() != "device":
            raise SpecError(f"{part!r}: only 'device=ID' is understood here", field="gpus")
        ids.append(rest.strip().strip("[]\"'") if sep else part.strip("[]\"'"))
    return _ids_list(ids)


def _ids_list(items: object) -> tuple[str, ...]:
    if not isinstance(items, Sequence) or isinstance(items, str):
        raise SpecError(f"{items!r} is not a list of device ids", field="gpus")
    out = tuple(str(i).strip() for i in items)
    bad = [i for i in out if not _DEVICE_ID.match(i)]
    if bad:
        raise SpecError(f"{bad[0]!r} is not a GPU device id (an index or a GPU-UUID)",
                        field="gpus")
    if len(set(out)) != len(out):
        raise SpecError(f"{list(out)!r} names a device twice", field="gpus")
    return out


def _rr_selection(text: str) -> tuple[tuple[str, ...], ...]:
    """Jina's RR selections: '' (all devices), 'A:B' (A..B-1) or 'A,B,C'."""
    text = text.strip()
    field = f"env.{RR_ENV}"
    if not text:
        return ()
    if ":" in text:
        start, _, end = text.partition(":")
        if not (start.isdigit() and end.isdigit()) or int(start) >= int(end):
            raise SpecError(f"RR{text}: a range is RRstart:end with start < end", field=field)
        return tuple((str(i),) for i in range(int(start), int(end)))
    ids = [p.strip() for p in text.split(",")]
    if not all(_DEVICE_ID.match(i) for i in ids):
        raise SpecError(f"RR{text}: expected RR, RRstart:end or RRid,id,...", field=field)
    return tuple((i,) for i in ids)


def container_env(env: Mapping[str, str], request: GpuRequest | None) -> dict[str, str]:
    """The workers' environment: Jina's RR marker is consumed here, not passed on."""
    if request is not None and request.round_robin:
        return {k: v for k, v in env.items() if k != RR_ENV}
    return dict(env)


def slot_devices(request: GpuRequest, slot: int, available: Sequence[str]
                 ) -> tuple[str, ...] | None:
    """The device ids replica `slot` gets (None: all of them, Docker's `--gpus all`).

    `available`: the engine's devices, in order. Ids given by the user are used as given
    (`check_available` says whether they exist).
    """
    if request.everything:
        return None
    if request.round_robin:
        pool = [g[0] for g in request.groups] or list(available)
        return (pool[slot % len(pool)],) if pool else ()
    if request.groups:
        return request.groups[slot % len(request.groups)]
    if not available:
        return ()
    n = len(available)
    return tuple(available[(slot * request.count + k) % n] for k in range(request.count))


def check_available(request: GpuRequest, available: Sequence[str], where: str) -> None:
    """Raise before anything starts when the engine cannot give what is asked.

    Raises:
        SpecError: naming `gpus` (or the RR variable): no GPU at all, too few, or an id
            the engine does not have.
    """
    field = f"env.{RR_ENV}" if request.round_robin else "gpus"
    if not available:
        raise SpecError(f"GPUs were asked for, but the engine at {where} has none (no "
                        "/dev/nvidia<N> device on its host; set ORCHESTRATOR_GPUS=0,1,... "
                        "for a remote engine): nothing was started", field=field)
    wanted = {d for g in request.groups for d in g}
    missing = sorted(wanted - set(available))
    if missing:
        raise SpecError(f"device(s) {', '.join(missing)} not found; the engine has "
                        f"{', '.join(available)}", field=field)
    if not request.groups and request.count > len(available):
        raise SpecError(f"{request.count} GPUs per replica asked for; the engine has "
                        f"{len(available)}", field=field)
