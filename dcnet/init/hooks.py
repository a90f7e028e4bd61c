"""Hook commands under dcnet-init: processes the supervisor starts and reaps itself.

A :class:`Job` is one command (an ``elbctl backend`` call or an operator's shell
command) with a deadline. Nothing here waits for a process: the supervisor's reaper
collects every child (``waitpid(-1)``), hands a job its exit status through
:meth:`Job.finish`, and kills a job whose deadline passed. A :class:`Sequence` runs
jobs one after the other (register, then the operator's hooks) and reports when all
are done.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable


class Job:
    def __init__(self, argv: tuple[str, ...], env: dict, timeout: float, label: str):
        self.argv, self.label = argv, label
        self.code: int | None = None
        self.deadline = time.monotonic() + timeout
        # start_new_session: a hook's own children are killed with it on timeout
        self.proc = subprocess.Popen(list(argv), env=env, stdin=subprocess.DEVNULL,
                                     start_new_session=True)
        self.pid = self.proc.pid

    def finish(self, code: int) -> None:
        self.code = code
        self.proc.returncode = code      # reaped by the supervisor: Popen must not wait

    def expire(self, now: float) -> bool:
        """Kill the job's session when its deadline passed; True when it did."""
        if self.code is None and now >= self.deadline:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGKILL)
            return True
        return False


class Sequence:
    """Run ``commands`` one at a time; ``done`` is called with every (argv, code)."""

    def __init__(self, name: str, commands: tuple[tuple[str, ...], ...], env: dict,
                 timeout: float, log: Callable[[str], None],
                 done: Callable[[list[tuple[tuple[str, ...], int]]], None]):
        self.name, self.pending = name, list(commands)
        self.env, self.timeout, self.log, self.done = env, timeout, log, done
        self.results: list[tuple[tuple[str, ...], int]] = []
        self.job: Job | None = None
        self.finished = False
        self._next()

    def _next(self) -> None:
        while self.pending:
            argv = self.pending.pop(0)
            try:
                self.job = Job(argv, self.env, self.timeout, self.name)
                return
            except OSError as exc:
                self.log(f"{self.name} hook {' '.join(argv)!r} could not start: {exc}")
                self.results.append((argv, 127))
        self.job = None
        self.finished = True
        self.done(self.results)

    def reaped(self, pid: int, code: int) -> bool:
        """Give the sequence a reaped child; True when it was this sequence's job."""
        if self.job is None or self.job.pid != pid:
            return False
        self.job.finish(code)
        if code != 0:
            self.log(f"{self.name} hook {' '.join(self.job.argv)!r} exited {code}")
        self.results.append((self.job.argv, code))
        self._next()
        return True

    def tick(self, now: float) -> None:
        if self.job is not None and self.job.expire(now):
            self.log(f"{self.name} hook {' '.join(self.job.argv)!r} timed out: killed")

    def cancel(self) -> None:
        """Stop the running job and drop the rest (a later phase takes over)."""
        self.pending.clear()
        if self.job is not None and self.job.code is None:
            self.job.deadline = 0.0
            self.job.expire(time.monotonic())
