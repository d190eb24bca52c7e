"""The doers: each takes a deployment's state, the engine and the head's control as
collaborators and carries out what planning decided. None imports `Deployment`.

    head.py      HeadControl: the control-RPC client of one head
    link.py      HeadLink: the one cached control channel of a deployment, re-aimed when
                 the head moves
    lock.py      DeploymentLock: one start, update, scale or heal at a time, per host
    lifecycle.py start, register, attach (rebuild from labels), teardown
    rollout.py   Rollout: rolling update and scale, start-first, drained, undone on failure
    healer.py    Healer: heal and converge, from planning.heal's decisions
"""

from orchestrator.control.head import HeadControl
from orchestrator.model import WorkerStatus

__all__ = ["HeadControl", "WorkerStatus"]
