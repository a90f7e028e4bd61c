"""Running external commands, optionally inside a named network namespace.

It owns ``run`` (wait for a command, raise CommandError naming argv, exit code
and stderr), ``start`` (a background process in its own process group),
``stop`` (SIGTERM, then SIGKILL, always reaped), reading a process's start
time from /proc (to tell a live pid from a reused one), and signal handling shared by
the labs and pools (``die_by_default``, ``signals_deferred``).
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
from collections.abc import Iterator, Mapping, Sequence

from dcnet.sysio import netns as netns_mod

DEFAULT_TIMEOUT = 30.0


class CommandError(RuntimeError):
    """A command exited non-zero (or timed out); carries argv, exit code and stderr."""

    def __init__(self, argv: Sequence[str], returncode: int | None, stderr: str, stdout: str = ""):
        self.argv = list(argv)
        self.returncode = returncode
        self.stderr = stderr
        self.stdout = stdout
        status = "timed out" if returncode is None else f"exited {returncode}"
        detail = stderr.strip() or stdout.strip() or "(no output)"
        super().__init__(f"command {shlex.join(self.argv)!r} {status}: {detail}")


def run(
    argv: Sequence[str],
    netns: str | None = None,
    check: bool = True,
    timeout: float | None = DEFAULT_TIMEOUT,
    input: str | None = None,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run argv (inside ``netns`` if given), wait, and return its text output."""
    full_argv = netns_mod.exec_argv(netns, argv)
    try:
        done = subprocess.run(
            full_argv,
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=dict(env) if env is not None else None,
            stdin=None if input is not None else subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as exc:
        raise CommandError(full_argv, None, _as_text(exc.stderr), _as_text(exc.stdout)) from exc
    except FileNotFoundError as exc:
        raise CommandError(full_argv, 127, str(exc)) from exc
    if check and done.returncode != 0:
        raise CommandError(full_argv, done.returncode, done.stderr, done.stdout)
    return done


def _as_text(data: bytes | str | None) -> str:
    if data is None:
        return ""
    return data.decode(errors="replace") if isinstance(data, bytes) else data


def start(
    argv: Sequence[str],
    netns: str | None = None,
    log_path: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """Start argv in the background in its own process group; output goes to log_path."""
    full_argv = netns_mod.exec_argv(netns, argv)
    log = open(log_path, "ab") if log_path is not None else subprocess.DEVNULL  # noqa: SIM115
    try:
        return subprocess.Popen(
            full_argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=dict(env) if env is not None else None,
        )
    finally:
        if log_path is not None:
            log.close()


def _signal_group(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signum)


def stop(popen: subprocess.Popen, timeout: float = 5.0) -> int:
    """SIGTERM the process group, SIGKILL it after ``timeout``; reap and return the exit code."""
    if popen.poll() is not None:
        return popen.returncode
    _signal_group(popen.pid, signal.SIGTERM)
    try:
        return popen.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        _signal_group(popen.pid, signal.SIGKILL)
        return popen.wait()


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (index 0 is the state)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            stat = handle.read()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()


def state(pid: int) -> str:
    """The process's state letter (``R``, ``S``, ``T``, ``Z``, ...); "" when it is gone."""
    fields = _stat_fields(pid)
    return fields[0] if fields else ""


def parent(pid: int) -> int:
    """The process's parent pid; 0 when it is gone."""
    fields = _stat_fields(pid)
    return int(fields[1]) if fields else 0


def cmdline(pid: int) -> str:
    """The process's command line, arguments joined by spaces; "" when it is gone."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/<pid>/stat)."""
    fields = _stat_fields(pid)
    return int(fields[19]) if fields else None


def is_same_process(pid: int, expected_start_time: int | None) -> bool:
    """True if ``pid`` is alive (not a zombie) and started at ``expected_start_time``."""
    fields = _stat_fields(pid)
    if not fields or fields[0] in ("Z", "X"):
        return False
    return int(fields[19]) == expected_start_time


def kill(pid: int, signum: int = signal.SIGKILL) -> bool:
    """Send a signal to one pid; False if it no longer exists."""
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        return False
    return True


def die_by_default(signum: int) -> None:
    """End this process as the signal's default action would: for a Python handler
    inherited by a fork (``IPRoute(netns=...)`` forks a helper that keeps its parent's
    handlers; a lab's SIGTERM handler must not tear the lab down from there)."""
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold SIGINT/SIGTERM (e.g. during a teardown that must not stop half-way) and
    re-deliver them once the block is done. Only the main thread can hold them; in other
    threads the block runs as it is."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    saved = {signum: signal.signal(signum, lambda s, f: received.append(s))
             for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)
        for signum in dict.fromkeys(received):
            signal.raise_signal(signum)
