"""A pytest plugin that makes the suite end when its tests have ended.

Two things keep a finished run from ending, and CI then waits for its whole budget:

* a non-daemon thread a test started and never stopped (a failed assertion skipped the
  ``stop``): the interpreter joins it at exit, forever;
* a process a test started (a descendant of the run) that still holds the run's
  standard output or error (a pipe to CI): the reader sees no end of file until that
  process exits.

After each test, a non-daemon thread that test left running is reported under the
test's name. At the end of the session, what still keeps the run open is listed (thread
stacks, process ids and command lines); the processes are terminated, and the run exits
at once with a failure status, so a leak is a red run that names its cause, never a hang.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
import traceback

import pytest

from dcnet.sysio import proc

THREAD_GRACE = float(os.environ.get("DCNET_EXIT_GUARD_GRACE", "10"))  # s a thread may take
PROCESS_GRACE = 5.0     # seconds between SIGTERM and SIGKILL for a process holding output

_before: set[int] = set()
_leaks: list[str] = []


def _lingering_threads() -> list[threading.Thread]:
    main = threading.main_thread()
    return [t for t in threading.enumerate() if t is not main and not t.daemon and t.is_alive()]


def pytest_runtest_logstart(nodeid, location):
    _before.clear()
    _before.update(t.ident for t in _lingering_threads())


def pytest_runtest_logfinish(nodeid, location):
    left = [t for t in _lingering_threads() if t.ident not in _before]
    for thread in left:
        _leaks.append(f"{nodeid}: non-daemon thread {thread.name!r} still running")


def _descends_from_me(pid: int) -> bool:
    """Whether ``pid`` is this process's child, grandchild, ... (never an orphan
    adopted by init, never something the run's caller started)."""
    me, seen = os.getpid(), 0
    while pid > 1 and seen < 4096:
        pid, seen = proc.parent(pid), seen + 1
        if pid == me:
            return True
    return False


def _pipe_of(fd: int) -> str | None:
    try:
        target = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return None
    return target if target.startswith("pipe:") else None


def holders_of_output() -> dict[int, str]:
    """This process's descendants holding the write end of its stdout or stderr pipe:
    pid -> command line. Nothing else is looked at: whatever the run's caller holds is
    the caller's."""
    pipes = {p for p in (_pipe_of(1), _pipe_of(2)) if p}
    if not pipes:
        return {}
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or not _descends_from_me(int(entry)):
            continue
        try:
            for fd in os.listdir(f"/proc/{entry}/fd"):
                if os.readlink(f"/proc/{entry}/fd/{fd}") not in pipes:
                    continue
                with open(f"/proc/{entry}/fdinfo/{fd}") as info:
                    flags = next(int(line.split()[1], 8) for line in info
                                 if line.startswith("flags:"))
                if flags & os.O_ACCMODE != os.O_RDONLY:
                    found[int(entry)] = proc.cmdline(int(entry))
                    break
        except (OSError, StopIteration, ValueError):
            continue
    return found


def running(pid: int) -> bool:
    """Whether ``pid`` is a process that has not exited (a zombie has)."""
    return proc.state(pid) not in ("", "Z", "X")


def _terminate(pids) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + PROCESS_GRACE
        while time.monotonic() < deadline and any(running(p) for p in pids):
            time.sleep(0.1)
        if not any(running(p) for p in pids):
            return


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    deadline = time.monotonic() + THREAD_GRACE
    threads = _lingering_threads()
    while threads and time.monotonic() < deadline:
        threads[0].join(max(0.0, deadline - time.monotonic()))
        threads = _lingering_threads()
    holders = holders_of_output()
    if not threads and not holders:
        return
    out = sys.__stderr__
    print("\n== exit guard: the tests have ended but these would keep the run open", file=out)
    for leak in _leaks:
        print(f"  {leak}", file=out)
    frames = sys._current_frames()
    for thread in threads:
        print(f"  thread {thread.name!r}:", file=out)
        stack = "".join(traceback.format_stack(frames.get(thread.ident))) \
            if thread.ident in frames else "    (no frame)\n"
        print(stack.rstrip(), file=out)
    for pid, cmdline in sorted(holders.items()):
        print(f"  process {pid} holds the run's output: {cmdline}", file=out)
    if holders:
        _terminate(list(holders))
        print("== exit guard: those processes were terminated", file=out)
    print("== exit guard: exiting with a failure status", file=out)
    out.flush()
    sys.stdout.flush()
    status = int(getattr(config, "_dcnet_exitstatus", 1)) or 1
    os._exit(status)


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session, exitstatus):
    session.config._dcnet_exitstatus = int(exitstatus)
