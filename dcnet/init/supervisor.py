"""PID 1 duties and the ELB lifecycle of one app under dcnet-init.

One single-threaded event loop (signals arrive through ``signal.set_wakeup_fd``):

- the app runs in its own process group; TERM, INT, HUP, QUIT, USR1, USR2 and WINCH
  are forwarded to the group (TERM/INT first drain, see below);
- every child is reaped here (``waitpid(-1, WNOHANG)``): the app, hook jobs, command
  checks and re-parented orphans (outside PID 1 the init makes itself a child
  subreaper, so orphans come to it too);
- lifecycle: *starting* until the health check passes ``rise`` times (or at once
  without a check), then the start hooks (``elbctl backend add``) run once and the
  phase is *serving*; on SIGTERM/SIGINT the phase is *draining* (the health endpoint
  answers 503), the drain hooks run (``elbctl backend drain``, bounded by
  ``drain_deadline``), then the signal goes to the app, which gets ``grace`` seconds
  before SIGKILL of its group; once it exited the stop hooks run (``elbctl backend
  remove``) and the init exits with the app's code (128+N for signal N). An app that
  exits on its own (a crash) is deregistered at once; in debug mode a non-zero exit
  keeps the init up, with the app's last output in ``debug_file`` and ``/debug``.
"""

from __future__ import annotations

import collections
import contextlib
import os
import select
import signal
import subprocess
import sys
import threading
import time

from dcnet.init.config import FORWARDED, InitConfig
from dcnet.init.health import Checker, Health, serve
from dcnet.init.hooks import Job, Sequence

PR_SET_CHILD_SUBREAPER = 36
TAIL_BYTES = 64 * 1024


def become_subreaper() -> None:
    """Outside PID 1, adopt orphaned descendants so they are reaped here."""
    if os.getpid() == 1:
        return
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def exit_code(status: int) -> int:
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


class Supervisor:
    def __init__(self, config: InitConfig, log_stream=None):
        self.c = config
        self.stream = log_stream or sys.stderr
        self.health = Health(config.rise, config.fall)
        self.app: subprocess.Popen | None = None
        self.app_code: int | None = None
        self.sequence: Sequence | None = None
        self.check_job: Job | None = None
        self.next_check = 0.0
        self.kill_at: float | None = None
        self.stop_signal = signal.SIGTERM
        self.exit_now = False
        self.reaped_orphans = 0
        self.registered = False
        self.tail: collections.deque[bytes] = collections.deque()
        self.tail_size = 0
        self.copiers: list[threading.Thread] = []
        self.pending: list[int] = []
        self.started_at = time.time()
        self.times: dict[str, float] = {"start": time.monotonic()}
        self.hook_failures: dict[str, int] = {}
        self.pusher = None
        if config.pushgateway:
            from dcnet.init.push import Pusher
            self.pusher = Pusher(config.pushgateway, config.jobname, self.log)

    def log(self, text: str) -> None:
        self.stream.write(f"dcnet-init: {text}\n")
        self.stream.flush()

    # ------------------------------------------------------------------ start

    def start(self) -> None:
        become_subreaper()
        self._install_signals()
        if self.c.health_port is not None:
            serve(self.health, self.c.health_address, self.c.health_port)
        output = subprocess.PIPE if self.c.debug else None
        self.app = subprocess.Popen(list(self.c.command), env=self.c.env, process_group=0,
                                    stdout=output, stderr=output)
        if self.c.debug:
            for src, dst in ((self.app.stdout, sys.stdout.buffer),
                             (self.app.stderr, sys.stderr.buffer)):
                thread = threading.Thread(target=self._copy, args=(src, dst), daemon=True)
                thread.start()
                self.copiers.append(thread)
        self._give_terminal(self.app.pid)
        if self.c.check is None:
            self.health.record(True)
            self.health.healthy = True
        elif self.c.check.kind != "cmd":
            Checker(self.c.check, self.health, self.c.interval, self.c.check_timeout).start()

    def _give_terminal(self, pgid: int) -> None:
        with contextlib.suppress(OSError):
            if os.isatty(0):
                previous = signal.signal(signal.SIGTTOU, signal.SIG_IGN)
                os.tcsetpgrp(0, pgid)
                signal.signal(signal.SIGTTOU, previous)

    def _copy(self, src, dst) -> None:
        for chunk in iter(lambda: src.read1(65536), b""):
            with contextlib.suppress(OSError):
                dst.write(chunk)
                dst.flush()
            self.tail.append(chunk)
            self.tail_size += len(chunk)
            while self.tail_size > TAIL_BYTES and len(self.tail) > 1:
                self.tail_size -= len(self.tail.popleft())

    def _install_signals(self) -> None:
        r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.wakeup = r
        signal.set_wakeup_fd(w)
        for name in (*FORWARDED, "CHLD"):
            signal.signal(getattr(signal, f"SIG{name}"), self._on_signal)

    def _on_signal(self, signum, frame) -> None:
        self.pending.append(signum)

    # ------------------------------------------------------------------ loop

    def run(self) -> int:
        self.start()
        while not self.exit_now:
            timeout = 0.05 if self.pending else min(0.2, max(self.c.interval, 0.01))
            with contextlib.suppress(InterruptedError):
                select.select([self.wakeup], [], [], timeout)
            with contextlib.suppress(OSError):
                os.read(self.wakeup, 4096)
            signals, self.pending = self.pending, []
            for signum in signals:
                if signum != signal.SIGCHLD:
                    self._signal(signum)
            self._reap()
            self._tick(time.monotonic())
        for thread in self.copiers:
            thread.join(1.0)
        return self.app_code if self.app_code is not None else 0

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            code = exit_code(status)
            if self.app is not None and pid == self.app.pid:
                self.app.returncode = code
                self._app_exited(code)
            elif self.sequence is not None and self.sequence.reaped(pid, code):
                pass
            elif self.check_job is not None and pid == self.check_job.pid:
                self.check_job.finish(code)
                self.health.record(code == 0)
                self.check_job = None
            else:
                self.reaped_orphans += 1

    def _tick(self, now: float) -> None:
        if self.sequence is not None:
            self.sequence.tick(now)
        if (self.c.check is not None and self.c.check.kind == "cmd" and self.app_code is None
                and self.check_job is None and now >= self.next_check):
            self.next_check = now + self.c.interval
            with contextlib.suppress(OSError):
                self.check_job = Job(("/bin/sh", "-c", self.c.check.target), self.c.env,
                                     max(self.c.check_timeout, 0.1), "check")
        if self.check_job is not None and self.check_job.expire(now):
            self.health.record(False)
        if self.health.phase == "starting" and self.health.healthy and self.app_code is None:
            self.times["healthy"] = now
            self._phase("registering")
            self.sequence = Sequence("start", self.c.on_start, self.c.env, self.c.hook_timeout,
                                     self.log, self._started)
        if self.kill_at is not None and now >= self.kill_at and self.app_code is None:
            self.log(f"the app did not exit within {self.c.grace:g}s: SIGKILL")
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.app.pid, signal.SIGKILL)
            self.kill_at = None

    def _phase(self, phase: str) -> None:
        if self.c.verbose:
            self.log(f"phase {self.health.phase} -> {phase}")
        self.health.phase = phase

    # ------------------------------------------------------------------ lifecycle

    def _started(self, results) -> None:
        if self.health.phase != "registering":
            return                       # cancelled by a signal or a crash
        self.registered = any(code == 0 for _, code in results) or not results
        self._count_failures("start", results)
        self._phase("serving")
        self._push()

    def _signal(self, signum: int) -> None:
        terminating = signum in (signal.SIGTERM, signal.SIGINT)
        if not terminating or self.app_code is not None:
            if self.health.phase == "debug" and terminating:
                self.exit_now = True
                return
            self._forward(signum)
            return
        if self.health.phase in ("starting", "registering", "serving"):
            self.stop_signal = signum
            if self.sequence is not None and not self.sequence.finished:
                self.sequence.cancel()
            self._phase("draining")
            self.times["drain"] = time.monotonic()
            self.sequence = Sequence("drain", self.c.on_drain, self.c.env,
                                     min(self.c.hook_timeout, self.c.drain_deadline),
                                     self.log, self._drained)
        else:                             # a second TERM while draining: stop now
            self._stop_app(signum)

    def _drained(self, results) -> None:
        self._count_failures("drain", results)
        if self.health.phase == "draining":
            self.times["drained"] = time.monotonic()
            self._stop_app(self.stop_signal)

    def _stop_app(self, signum: int) -> None:
        self._phase("stopping")
        self._forward(signum)
        if self.kill_at is None:
            self.kill_at = time.monotonic() + self.c.grace

    def _forward(self, signum: int) -> None:
        if self.app is None or self.app_code is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.app.pid, signum)

    def _app_exited(self, code: int) -> None:
        self.app_code = code
        crashed = self.health.phase in ("starting", "registering", "serving", "draining")
        if crashed:
            self.log(f"the app exited on its own with {code}")
        if self.sequence is not None and not self.sequence.finished:
            self.sequence.cancel()
        self._phase("deregistering")
        self.sequence = Sequence("stop", self.c.on_stop, self.c.env, self.c.hook_timeout,
                                 self.log, self._stopped)

    def _stopped(self, results) -> None:
        self._count_failures("stop", results)
        if self.pusher is not None:
            self.pusher.final(self._lifecycle())
        if self.c.debug and self.app_code:
            self._keep_for_debugging()
            return
        self.exit_now = True

    # ------------------------------------------------------------------ push

    def _count_failures(self, sequence: str, results) -> None:
        failed = sum(1 for _, code in results if code != 0)
        self.hook_failures[sequence] = self.hook_failures.get(sequence, 0) + failed

    def _lifecycle(self) -> dict:
        """The numbers pushed (:mod:`dcnet.init.push`); None values are left out."""
        t = self.times
        healthy = t["healthy"] - t["start"] if "healthy" in t else None
        drain = t["drained"] - t["drain"] if "drained" in t and "drain" in t else None
        return {"dcnet_init_start_timestamp_seconds": self.started_at,
                "dcnet_init_healthy_seconds": healthy,
                "dcnet_init_registered": int(self.registered),
                "dcnet_init_hook_failures": dict(self.hook_failures) or None,
                "dcnet_init_drain_seconds": drain,
                "dcnet_init_exit_code": self.app_code,
                "dcnet_init_reaped_orphans": self.reaped_orphans,
                "dcnet_init_last_push_timestamp_seconds": time.time()}

    def _push(self) -> None:
        if self.pusher is not None:
            self.pusher.push(self._lifecycle())

    def _keep_for_debugging(self) -> None:
        for thread in self.copiers:
            thread.join(1.0)
        text = b"".join(self.tail).decode("utf-8", "replace")
        self.health.last_output = text
        with contextlib.suppress(OSError), open(self.c.debug_file, "w",
                                                  encoding="utf-8") as fh:
            fh.write(text)
        self.log(f"debug mode: the app exited {self.app_code}; staying up for inspection "
                 f"(last output in {self.c.debug_file}); SIGTERM ends it")
        self._phase("debug")
