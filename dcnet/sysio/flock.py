"""Exclusive file locks with a bounded wait that name their holder.

Every ELB target holds one of these for the whole read -> apply of a run, and
``elbctl backend`` holds the same one, so runs never interleave. The lock is an
``flock`` on a file (released by the kernel when the holder exits, even on SIGKILL);
the holder writes ``pid``, command and start time into the file after taking it, so a
waiter that gives up can say who holds it. The lock file is created 0600 in a
directory created 0700: no other local user can take it and stall elbctl.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator


class LockTimeout(RuntimeError):
    """The lock stayed held by someone else for longer than the wait allowed."""


def holder(path: str) -> str:
    """What the lock file says about its holder ('' when it says nothing)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.read(512).strip()
    except OSError:
        return ""


def _expired(path: str, timeout: float) -> LockTimeout:
    who = holder(path)
    named = f" (held by {who})" if who else ""
    return LockTimeout(f"{path} is held by another elbctl for more than {timeout:g}s{named}")


def acquire(fd: int, timeout: float | None, path: str) -> None:
    """flock(LOCK_EX), waiting in the kernel (no polling: hundreds of waiting hooks cost
    nothing); the timeout is a SIGALRM timer in the main thread, polling elsewhere."""
    if timeout is None:
        fcntl.flock(fd, fcntl.LOCK_EX)
        return
    if threading.current_thread() is threading.main_thread():
        def on_alarm(signum, frame):
            raise _expired(path, timeout)

        previous = signal.signal(signal.SIGALRM, on_alarm)
        signal.setitimer(signal.ITIMER_REAL, max(timeout, 0.001))
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
        return
    deadline = time.monotonic() + timeout
    pause = 0.005
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise _expired(path, timeout) from None
            time.sleep(min(pause, max(0.0, deadline - time.monotonic())))
            pause = min(pause * 2, 0.2)


def _record_holder(fd: int) -> None:
    command = " ".join(os.path.basename(a) if i == 0 else a
                       for i, a in enumerate(sys.argv[:6]))[:200]
    text = (f"pid {os.getpid()} since {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}"
            f" ({command})\n")
    with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)
        os.pwrite(fd, text.encode(), 0)


@contextlib.contextmanager
def exclusive(path: str, timeout: float | None = None) -> Iterator[None]:
    """Hold ``path``'s exclusive lock (waiting at most ``timeout`` s, None = forever)."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, mode=0o700, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        with contextlib.suppress(OSError):
            os.fchmod(fd, 0o600)
        acquire(fd, timeout, path)
        _record_holder(fd)
        try:
            yield
        finally:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
    finally:
        os.close(fd)   # closing releases the lock
