"""Kernel lab: run commands under a real distribution kernel booted with virtme-ng.

This module owns everything about *where* kernel features come from:

- ``host_has_modules`` tells whether the running kernel can provide some modules
  (``modprobe -q`` each; built-ins count);
- ``find_guest_kernel`` picks the newest ``/boot/vmlinuz-*`` whose modules tree ships
  IPVS (Debian's ``linux-image-amd64`` does; the Firecracker host kernel does not);
- ``build_vng_command`` / ``run_in_guest`` boot that kernel once under QEMU with
  ``vng --run KERNEL --user root --disable-kvm`` (KVM aborts on these machines), run
  one command in the host's root filesystem (shared read-only), capture the console
  to a log file and return a :class:`GuestRun`.

Facts this relies on (see docs of the lab): the guest's PATH is not the host's, so
commands are built with absolute paths (``sys.executable``) and an explicit ``env``;
directories given in ``rwdirs`` are shared read-write over 9p/virtiofs and must never
receive a socket or FIFO (QEMU kills the guest), use the guest's tmpfs ``/run`` or
``/tmp`` for those.  The pytest side lives in :mod:`dcnet.lab.pytest_kernel_lab`.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "DEFAULT_TIMEOUT",
    "IPVS_MODULE",
    "GuestRun",
    "KernelLabError",
    "build_guest_shell",
    "build_vng_command",
    "find_guest_kernel",
    "guest_timeout",
    "host_has_modules",
    "kernel_has_module",
    "run_in_guest",
    "select_guest_kernel",
    "version_key",
]

IPVS_MODULE = "ip_vs"
# seconds for one whole guest run (boot + every test); the LVS kernel tests alone took
# 731-1037 s under emulation on a loaded 2-core host, so the default leaves room
DEFAULT_TIMEOUT = 3600.0
ENV_TIMEOUT = "DCNET_KERNEL_LAB_TIMEOUT"
KERNEL_PACKAGE_HINT = "apt-get install -y linux-image-amd64 kmod"
QEMU_PACKAGE_HINT = "apt-get install -y qemu-system-x86"
VNG_PACKAGE_HINT = "pip install virtme-ng (or the 'test' extra of dcnet)"


class KernelLabError(RuntimeError):
    """The kernel lab cannot boot or its guest did not finish; the message says why."""

    def __init__(self, message: str, run: GuestRun | None = None):
        super().__init__(message)
        self.run = run


# --------------------------------------------------------------------------- host


def _norm(module: str) -> str:
    return module.strip().replace("-", "_")


def host_has_modules(modules: Iterable[str], *, modprobe: str | None = None) -> bool:
    """True only if the running kernel has every module (loaded, built in, or loadable).

    Each module not yet visible in ``/sys/module`` is loaded with ``modprobe -q``; a
    missing ``modprobe``, a missing module or no privilege all count as "no".
    """
    mods = [_norm(m) for m in modules]
    if not mods:
        return True
    probe = modprobe or shutil.which("modprobe") or "/sbin/modprobe"
    for mod in mods:
        if Path("/sys/module", mod).exists():
            continue
        try:
            res = subprocess.run(
                [probe, "-q", mod],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=60,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired):
            return False
        if res.returncode != 0:
            return False
    return True


def guest_timeout(environ: Mapping[str, str] | None = None) -> float:
    """Seconds a guest run may take: ``$DCNET_KERNEL_LAB_TIMEOUT`` or
    :data:`DEFAULT_TIMEOUT`; a value that is not a positive number is refused by name."""
    environ = os.environ if environ is None else environ
    text = environ.get(ENV_TIMEOUT, "").strip()
    if not text:
        return DEFAULT_TIMEOUT
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0 or value == float("inf"):
        raise KernelLabError(f"{ENV_TIMEOUT}={text!r}: expected a positive number of seconds")
    return value


# ------------------------------------------------------------------ kernel choice


def version_key(version: str) -> tuple:
    """Sort key for kernel release strings: numbers compare as numbers."""
    return tuple(
        (0, int(part), "") if part.isdigit() else (1, 0, part)
        for part in re.findall(r"\d+|\D+", version)
    )


def _module_names(lines: Iterable[str]) -> set[str]:
    names = set()
    for line in lines:
        path = line.split(":", 1)[0].strip()
        if not path:
            continue
        base = path.rsplit("/", 1)[-1]
        base = re.sub(r"\.ko(\.(xz|zst|gz))?$", "", base)
        names.add(_norm(base))
    return names


def kernel_has_module(moddir: str | os.PathLike, module: str = IPVS_MODULE) -> bool:
    """Whether ``/lib/modules/<ver>`` (``moddir``) ships ``module`` or has it built in."""
    moddir = Path(moddir)
    mod = _norm(module)
    for index in ("modules.dep", "modules.builtin"):
        try:
            text = (moddir / index).read_text(errors="replace")
        except OSError:
            continue
        if mod in _module_names(text.splitlines()):
            return True
    # no index (depmod never ran): look for the file itself
    return any(moddir.glob(f"kernel/**/{mod}.ko*"))


def select_guest_kernel(
    vmlinuz_names: Iterable[str], has_module: Callable[[str], bool]
) -> str | None:
    """Pick the newest ``vmlinuz-<ver>`` name for which ``has_module(ver)`` is true."""
    versions = []
    for name in vmlinuz_names:
        if not name.startswith("vmlinuz-"):
            continue
        ver = name[len("vmlinuz-"):]
        if ver and not ver.endswith((".old", ".bak", ".dpkg-tmp")):
            versions.append(ver)
    for ver in sorted(versions, key=version_key, reverse=True):
        if has_module(ver):
            return f"vmlinuz-{ver}"
    return None


def find_guest_kernel(
    boot: str | os.PathLike = "/boot",
    modules_root: str | os.PathLike = "/lib/modules",
    module: str = IPVS_MODULE,
) -> Path:
    """Newest ``/boot/vmlinuz-*`` whose modules tree has IPVS.

    ``DCNET_KERNEL_LAB_KERNEL`` overrides the choice with an explicit path.
    Raises :class:`KernelLabError` naming the package to install when none fits.
    """
    override = os.environ.get("DCNET_KERNEL_LAB_KERNEL")
    if override:
        path = Path(override)
        if not path.is_file():
            raise KernelLabError(f"DCNET_KERNEL_LAB_KERNEL={override}: no such kernel image")
        return path
    boot = Path(boot)
    try:
        names = sorted(p.name for p in boot.iterdir())
    except OSError:
        names = []
    chosen = select_guest_kernel(
        names, lambda ver: kernel_has_module(Path(modules_root, ver), module)
    )
    if chosen is None:
        found = ", ".join(n for n in names if n.startswith("vmlinuz-")) or "none"
        raise KernelLabError(
            f"kernel lab: no kernel in {boot} whose {modules_root}/<version> ships the "
            f"{module} module (vmlinuz found: {found}); install Debian's kernel package: "
            f"{KERNEL_PACKAGE_HINT}"
        )
    return boot / chosen


# ----------------------------------------------------------------- command lines


def build_guest_shell(
    argv: Sequence[str], *, cwd: str | os.PathLike | None = None,
    env: Mapping[str, str] | None = None,
) -> str:
    """The ``sh -c`` text run in the guest: ``cd CWD && exec env K=V... ARGV``.

    The guest does not inherit the host's environment, so ``env`` is spelled out.
    """
    if not argv:
        raise ValueError("argv must not be empty")
    parts = []
    if cwd is not None:
        parts.append(f"cd {shlex.quote(str(cwd))} &&")
    parts.append("exec")
    if env:
        parts.append("env")
        parts.extend(shlex.quote(f"{k}={v}") for k, v in env.items())
    parts.append(shlex.join(str(a) for a in argv))
    return " ".join(parts)


def build_vng_command(
    kernel: str | os.PathLike,
    shell: str,
    *,
    vng: str = "vng",
    rwdirs: Sequence[str | os.PathLike] = (),
    memory: str = "2G",
    cpus: int = 2,
    cwd: str | os.PathLike | None = None,
    extra: Sequence[str] = (),
) -> list[str]:
    """The ``vng`` argv booting ``kernel`` once to run ``shell`` (pure, no I/O)."""
    cmd = [
        vng, "--run", str(kernel), "--user", "root", "--disable-kvm",
        "--memory", str(memory), "--cpus", str(cpus),
    ]
    if cwd is not None:
        cmd += ["--cwd", str(cwd)]
    for d in rwdirs:
        cmd += ["--rwdir", str(d)]
    cmd += list(extra)
    cmd += ["--exec", shell]
    return cmd


# ----------------------------------------------------------------------- running


@dataclass
class GuestRun:
    """One finished boot: the vng argv, exit status, console log and timings."""

    command: list[str]
    kernel: Path
    log_path: Path
    returncode: int | None = None
    seconds: float = 0.0
    timed_out: bool = False
    extra: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError as exc:
            return f"(no console log at {self.log_path}: {exc})"
        return "\n".join(text.rstrip("\n").splitlines()[-lines:])


def _find_vng() -> str:
    cand = Path(sys.executable).parent / "vng"
    if cand.exists():
        return str(cand)
    found = shutil.which("vng")
    if not found:
        raise KernelLabError(f"kernel lab: virtme-ng (vng) not found; {VNG_PACKAGE_HINT}")
    return found


def _check_qemu() -> None:
    arch = os.uname().machine
    qemu = "qemu-system-x86_64" if arch in ("x86_64", "amd64") else f"qemu-system-{arch}"
    if not shutil.which(qemu):
        raise KernelLabError(f"kernel lab: {qemu} not found; {QEMU_PACKAGE_HINT}")


def run_in_guest(argv: Sequence[str], **options) -> GuestRun:
    """Boot the guest kernel once, run ``argv`` as root in it, power off: the
    :func:`start_in_guest` options, then :meth:`StartedGuest.wait`.

    Console output (the command's stdout/stderr; kernel messages too when
    ``DCNET_KERNEL_LAB_VERBOSE=1`` adds ``vng --verbose``) goes to
    ``log_path`` (default: a file in the first ``rwdirs`` entry, else /tmp).
    Returns a :class:`GuestRun` whatever the command's exit status; raises
    :class:`KernelLabError` if vng, QEMU or a suitable kernel is missing, or
    when the whole run exceeds ``timeout`` seconds (QEMU is then killed).
    """
    return start_in_guest(argv, **options).wait()


@dataclass
class StartedGuest:
    """A guest booting or running in the background (:func:`start_in_guest`)."""

    run: GuestRun
    proc: subprocess.Popen
    started: float
    timeout: float

    def running(self) -> bool:
        return self.proc.poll() is None

    def wait(self) -> GuestRun:
        """Wait for the guest (what is left of ``timeout`` since the start); the
        finished :class:`GuestRun`, or KernelLabError when it timed out (killed)."""
        run = self.run
        left = max(0.0, self.timeout - (time.monotonic() - self.started))
        try:
            run.returncode = self.proc.wait(timeout=left)
        except subprocess.TimeoutExpired:
            run.timed_out = True
            _kill_group(self.proc)
            run.returncode = self.proc.returncode
        run.seconds = time.monotonic() - self.started
        if run.timed_out:
            raise KernelLabError(
                f"kernel lab: guest did not finish within {self.timeout:.0f}s (killed); "
                f"console log {run.log_path}\nlast lines:\n{run.log_tail()}",
                run,
            )
        return run

    def stop(self) -> None:
        """Kill the guest if it still runs (an interrupted session)."""
        if self.running():
            _kill_group(self.proc)


def start_in_guest(
    argv: Sequence[str],
    *,
    rwdirs: Sequence[str | os.PathLike] = (),
    memory: str = "2G",
    cpus: int = 2,
    timeout: float = DEFAULT_TIMEOUT,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike | None = None,
    kernel: str | os.PathLike | None = None,
    log_path: str | os.PathLike | None = None,
) -> StartedGuest:
    """:func:`run_in_guest` without the wait: QEMU boots in the background (its own
    session) and the caller waits with :meth:`StartedGuest.wait` when it needs the
    results (the pytest plugin runs the host's tests meanwhile)."""
    vng = _find_vng()
    _check_qemu()
    kpath = Path(kernel) if kernel else find_guest_kernel()
    if not os.access(kpath, os.R_OK):
        raise KernelLabError(f"kernel lab: cannot read {kpath} (run as root)")
    cwd = Path(cwd) if cwd is not None else Path.cwd()
    shell = build_guest_shell(argv, cwd=cwd, env=env)
    extra = ["--verbose"] if os.environ.get("DCNET_KERNEL_LAB_VERBOSE") == "1" else []
    cmd = build_vng_command(
        kpath, shell, vng=vng, rwdirs=rwdirs, memory=memory, cpus=cpus, cwd=cwd, extra=extra
    )
    if log_path is None:
        base = Path(rwdirs[0]) if rwdirs else Path("/tmp")
        log_path = base / "guest-console.log"
    log_path = Path(log_path)
    host_env = dict(os.environ)
    # vng runs virtme-run & co. through PATH: make the venv's bin dir visible
    host_env["PATH"] = os.pathsep.join([str(Path(vng).parent), host_env.get("PATH", "")])
    run = GuestRun(command=cmd, kernel=kpath, log_path=log_path)
    started = time.monotonic()
    # (vng/QEMU reopen their stdout, so nothing of ours can be written before them)
    with open(log_path, "wb") as log:
        try:
            proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env=host_env, start_new_session=True,
            )
        except OSError as exc:
            raise KernelLabError(f"kernel lab: cannot start {vng}: {exc}", run) from exc
    return StartedGuest(run, proc, started, timeout)


def _kill_group(proc: subprocess.Popen) -> None:
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue
