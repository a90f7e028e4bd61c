"""One serving dcnet-agent per node: an exclusive lock the owner holds for its whole life.

``AgentLock(path)`` is an ``flock`` on a small file (the owner's pid is written into it,
for messages). ``try_acquire`` takes it or says it is held; ``acquire(stop, log)`` makes
a second agent a **standby**: it logs who owns the node and polls the lock every
``POLL`` seconds until it gets it (or ``stop`` is set). The kernel drops an flock when
its holder exits, however it exits (SIGKILL included), so a standby takes over within
``POLL`` of the owner's death. Locks in use:

- ``<runDir>/<network>/agent.lock``: the agent of a network on this node (host-gw: the
  only writer of ``node.json``; macvlan: the owner of the DHCP agent socket and journal);
- ``<exec dir>/net-<netns inode>.lock``: the server of the shim's CNI invocations in a
  network namespace (``dcnet.cni.execd``).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
from collections.abc import Callable

POLL = 0.1


class AgentLock:
    """An exclusive, process-lifetime lock on ``path`` (see the module docstring)."""

    def __init__(self, path: str):
        self.path = path
        self.fd: int | None = None

    @property
    def held(self) -> bool:
        return self.fd is not None

    def try_acquire(self) -> bool:
        """Take the lock now if nobody holds it; True when this process holds it."""
        if self.fd is not None:
            return True
        os.makedirs(os.path.dirname(self.path) or ".", mode=0o700, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd
        return True

    def holder(self) -> str:
        """The pid written by the holder (``?`` when unreadable)."""
        try:
            with open(self.path) as handle:
                return handle.read().strip() or "?"
        except OSError:
            return "?"

    def acquire(self, stop: threading.Event, log: Callable[[str], None], what: str) -> bool:
        """Hold the lock, standing by while another agent holds it; False if ``stop``."""
        if self.try_acquire():
            return True
        log(f"standby: dcnet-agent pid {self.holder()} serves {what}; taking over when it "
            f"exits ({self.path})")
        while not stop.wait(POLL):
            if self.try_acquire():
                log(f"took over {what}: the previous agent exited")
                return True
        return False

    def release(self) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = None


def network_lock(run_dir: str, network: str) -> AgentLock:
    """The lock of the agent of ``network`` on this node."""
    return AgentLock(f"{run_dir.rstrip('/')}/{network}/agent.lock")
