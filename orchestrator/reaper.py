"""The reaper: removes a deployment whose owning process died without closing it.

`Deployment.start()` spawns `python -m orchestrator.reaper NAME OWNER` in its own session
(so a Ctrl-C aimed at the owner's process group does not reach it) and keeps the write
end of its stdin. The reaper blocks reading that pipe: no polling. When the owner closes
the deployment or detaches it, it writes one line and the reaper exits. When the owner
dies (SIGKILL, OOM, a crash), the kernel closes the pipe, the read returns end-of-file,
and the reaper removes every container and network labelled with that deployment *and*
that owner, nothing else. It is a host process talking to the engine the owner used
(same environment): no container ever gets the Docker socket.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import threading

GOODBYE = ("done", "detach")
GRACE = 2.0


class ReaperHandle:
    """The owner's side: spawn the reaper, later say goodbye ("done" or "detach")."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self._process = process

    @classmethod
    def spawn(cls, deployment: str, owner: str) -> ReaperHandle:
        return cls(subprocess.Popen(
            [sys.executable, "-m", "orchestrator.reaper", deployment, owner],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
            start_new_session=True,  # a Ctrl-C to the owner's process group must not reach it
        ))

    def goodbye(self, word: str) -> None:
        """Tell the reaper to exit without reaping. It exits by itself within milliseconds;
        a daemon thread collects it (and kills it after 10 s), so that a close does not
        wait for an interpreter's shutdown (7-11 ms of a 0.4 s close of one replica)."""
        assert word in GOODBYE
        stdin = self._process.stdin
        assert stdin is not None
        with contextlib.suppress(OSError):
            stdin.write(word + "\n")
            stdin.flush()
        with contextlib.suppress(OSError):
            stdin.close()
        threading.Thread(target=self._collect, name="reaper-exit", daemon=True).start()

    def _collect(self) -> None:
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()


def reap(deployment: str, owner: str) -> int:
    """Remove what `owner` created for `deployment`; returns how many resources went."""
    from orchestrator.engine.cleanup import remove_owned
    from orchestrator.engine.docker_engine import DockerEngine

    engine = DockerEngine.from_env()
    try:
        gone = remove_owned(engine, deployment, owner=owner, grace=GRACE)
    finally:
        engine.close()
    return len(gone.names())


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m orchestrator.reaper DEPLOYMENT OWNER", file=sys.stderr)
        return 2
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # only the owner's goodbye or death count
    line = sys.stdin.readline()
    if line.strip() in GOODBYE:
        return 0
    count = reap(argv[0], argv[1])
    print(f"orchestrator reaper: owner of {argv[0]} died; removed {count} resources",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
