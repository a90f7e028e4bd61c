"""Named network namespaces: the ONE module of dcnet that switches namespaces.

It owns creating, removing and listing namespaces under /run/netns, running a
Python callable inside one (in a dedicated thread, since setns is per-thread),
the argv prefix that runs a program inside one (``ip netns exec``), pyroute2
IPRoute handles bound to one, per-namespace sysctls and the pids living in one.
Everything else in dcnet goes through these functions instead of calling setns.

It also owns ``call_here_in``/``socket_in``: switching the *calling* thread into a
namespace given by path (CNI_NETNS is a path, not a name) just long enough to run a
callable, e.g. to create a netlink socket that then stays bound to that namespace, and
switching back. The CNI plugin's ADD path uses them, so this module's import must stay
cheap: pyroute2, threading and typing are imported only where they are used.
"""

from __future__ import annotations

import os
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    import re
    from collections.abc import Callable, Sequence
    from typing import Any, TypeVar

    from pyroute2 import IPRoute

    T = TypeVar("T")

NETNS_DIR = "/run/netns"
CALLER_NETNS_PATH = "/proc/self/ns/net"
_VALID_NAME_PATTERN = r"^[A-Za-z0-9_.][A-Za-z0-9_.-]{0,63}$"
_valid_name: re.Pattern[str] | None = None  # compiled on first use: ``re`` is not cheap
CLONE_NEWNET = 0x40000000
_libc_setns: Any = None


class NetnsError(RuntimeError):
    """A namespace operation failed (bad name, missing namespace, switch failure)."""


# pyroute2 waits 2 s for the helper process it forks (netns.create, IPRoute(netns=...))
# and then kills it: on a loaded node that fails a namespace creation or a socket that
# would have come a moment later (a lab build failed so in CI at a load of 10+). The
# wait only bounds a helper that is stuck, so it is generous.
PYROUTE2_HELPER_TIMEOUT = 60


def _pyroute2_netns():
    """pyroute2's netns module, its helper-process waits raised once."""
    from pyroute2 import config
    from pyroute2 import netns as pyroute2_netns

    config.default_communicate_timeout = max(config.default_communicate_timeout,
                                             PYROUTE2_HELPER_TIMEOUT)
    config.default_create_socket_timeout = max(config.default_create_socket_timeout,
                                               PYROUTE2_HELPER_TIMEOUT)
    return pyroute2_netns


def path_of(name: str) -> str:
    """The bind-mount path that pins the named namespace."""
    check_name(name)
    return os.path.join(NETNS_DIR, name)


def check_name(name: str) -> None:
    """Reject names that are not a single, safe path component."""
    global _valid_name
    if _valid_name is None:
        import re

        _valid_name = re.compile(_VALID_NAME_PATTERN)
    if not isinstance(name, str) or not _valid_name.match(name) or name in (".", ".."):
        raise NetnsError(f"invalid network namespace name {name!r}")


def exists(name: str) -> bool:
    """True when /run/netns/<name> exists."""
    return os.path.exists(path_of(name))


def list_names() -> list[str]:
    """Names of all namespaces under /run/netns, sorted."""
    try:
        return sorted(os.listdir(NETNS_DIR))
    except FileNotFoundError:
        return []


def create(name: str) -> None:
    """Create the named namespace; FileExistsError if it already exists."""
    if exists(name):
        raise FileExistsError(f"network namespace {name!r} already exists")
    pyroute2_netns = _pyroute2_netns()

    pyroute2_netns.create(name)
    if not exists(name):
        raise NetnsError(f"creating network namespace {name!r} failed")


def remove(name: str) -> bool:
    """Unmount and delete the named namespace; False if it did not exist."""
    if not exists(name):
        return False
    pyroute2_netns = _pyroute2_netns()

    pyroute2_netns.remove(name)
    return True


def created_at(name: str) -> float:
    """Creation time (epoch seconds) of the namespace, from its nsfs inode."""
    return os.stat(path_of(name)).st_mtime


def age_seconds(name: str) -> float:
    """How long ago the namespace was created."""
    return max(0.0, time.time() - created_at(name))


def identity(name: str) -> tuple[int, int]:
    """(st_dev, st_ino) identifying the namespace object behind the name."""
    st = os.stat(path_of(name))
    return st.st_dev, st.st_ino


def run_in(name: str, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run ``func(*args, **kwargs)`` inside the named namespace and return its result.

    The call happens in a fresh thread that switches namespace and then exits,
    so the calling thread never leaves its own namespace. Exceptions propagate.
    """
    import threading

    pyroute2_netns = _pyroute2_netns()

    target = path_of(name)
    if not os.path.exists(target):
        raise NetnsError(f"network namespace {name!r} does not exist")
    outcome: dict[str, Any] = {}

    def body() -> None:
        try:
            pyroute2_netns.setns(target, flags=0)
            outcome["value"] = func(*args, **kwargs)
        except BaseException as exc:  # handed to the caller below
            outcome["error"] = exc

    worker = threading.Thread(target=body, name=f"netns-{name}", daemon=True)
    worker.start()
    worker.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def run_in_new(func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run ``func`` in a fresh, private network namespace (``unshare(CLONE_NEWNET)`` in a
    thread of its own, gone when ``func`` returns); programs it starts run there too."""
    import threading

    outcome: dict[str, Any] = {}

    def body() -> None:
        try:
            unshare = getattr(os, "unshare", None)
            if unshare is not None:
                unshare(CLONE_NEWNET)
            else:
                import ctypes

                libc = ctypes.CDLL(None, use_errno=True)
                if libc.unshare(CLONE_NEWNET) != 0:
                    errno = ctypes.get_errno()
                    raise OSError(errno, f"unshare: {os.strerror(errno)}")
            outcome["value"] = func(*args, **kwargs)
        except BaseException as exc:  # handed to the caller below
            outcome["error"] = exc

    worker = threading.Thread(target=body, name="netns-private", daemon=True)
    worker.start()
    worker.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def exec_argv(name: str | None, argv: Sequence[str]) -> list[str]:
    """The argv that runs ``argv`` inside the named namespace (unchanged if None)."""
    argv = [str(arg) for arg in argv]
    if name is None:
        return argv
    check_name(name)
    return ["ip", "netns", "exec", name, *argv]


def iproute(name: str) -> IPRoute:
    """A pyroute2 IPRoute bound to the named namespace (never creates it); caller closes.

    pyroute2 forks a helper process for it and ends it with SIGTERM; the fork would keep
    this process's Python SIGTERM handlers (a lab's teardown, the chaos runner's revert)
    and run them there. Every fork of this process therefore starts with SIGTERM's
    default action (:func:`_default_sigterm_in_forks`)."""
    if not exists(name):
        raise NetnsError(f"network namespace {name!r} does not exist")
    from pyroute2 import IPRoute

    _pyroute2_netns()
    _default_sigterm_in_forks()
    return IPRoute(netns=name, flags=0)


_fork_hook_registered = False


def _default_sigterm_in_forks() -> None:
    """Register (once) a hook that resets SIGTERM to its default action in each child
    forked by Python code (pyroute2's netns helper; subprocess's exec'd children are not
    affected: they start with default handlers anyway)."""
    global _fork_hook_registered
    if not _fork_hook_registered:
        os.register_at_fork(after_in_child=_sigterm_default)
        _fork_hook_registered = True


def _sigterm_default() -> None:
    import signal

    if signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, signal.SIG_IGN, None):
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _sysctl_path(key: str) -> str:
    parts = key.replace("/", ".").split(".")
    if not all(parts) or any(part in (".", "..") for part in parts):
        raise NetnsError(f"invalid sysctl key {key!r}")
    return os.path.join("/proc/sys", *parts)


def _read_file(path: str) -> str:
    with open(path) as handle:
        return handle.read().strip()


def _write_file(path: str, text: str) -> None:
    with open(path, "w") as handle:
        handle.write(text)


def sysctl_get(name: str, key: str) -> str:
    """Read sysctl ``key`` (e.g. ``net.ipv4.ip_forward``) as seen inside the namespace."""
    return run_in(name, _read_file, _sysctl_path(key))


def sysctl_set(name: str, key: str, value: object) -> None:
    """Write sysctl ``key`` inside the namespace."""
    run_in(name, _write_file, _sysctl_path(key), str(value))


def _pid_identity(pid: str) -> tuple[int, int] | None:
    try:
        st = os.stat(f"/proc/{pid}/ns/net")
    except OSError:
        return None
    return st.st_dev, st.st_ino


def pids(name: str) -> list[int]:
    """Pids of every process whose network namespace is the named one."""
    try:
        wanted = identity(name)
    except FileNotFoundError:
        return []
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and _pid_identity(entry) == wanted:
            found.append(int(entry))
    return sorted(found)


def wait_entered(name: str, pid: int, timeout: float = 5.0) -> bool:
    """Wait until ``pid`` lives in the named namespace (``ip netns exec`` switches after
    fork, so a just-started child is briefly still in the caller's namespace).

    Returns False if the process exited or the deadline passed first.
    """
    wanted = identity(name)
    deadline = time.monotonic() + timeout
    while True:
        current = _pid_identity(str(pid))
        if current == wanted:
            return True
        if current is None or time.monotonic() >= deadline:
            return False
        time.sleep(0.005)


def is_caller_namespace(name: str) -> bool:
    """True if the named namespace is the one this process (its main thread) lives in."""
    st = os.stat(CALLER_NETNS_PATH)
    return identity(name) == (st.st_dev, st.st_ino)


def _load_libc_setns() -> Any:
    """libc's setns through ``_ctypes`` directly: ~1 ms to import where ``ctypes`` costs ~7."""
    import _ctypes

    class CInt(_ctypes._SimpleCData):
        _type_ = "i"

    class CFunction(_ctypes.CFuncPtr):
        _flags_ = _ctypes.FUNCFLAG_CDECL | _ctypes.FUNCFLAG_USE_ERRNO
        _restype_ = CInt

    class Libc:
        _handle = _ctypes.dlopen(None, os.RTLD_NOW)

    function = CFunction(("setns", Libc()))
    return lambda fd, flags: (function(fd, flags), _ctypes.get_errno())


def _setns(fd: int) -> None:
    """setns(fd, CLONE_NEWNET) for the calling thread (os.setns arrives in Python 3.12)."""
    global _libc_setns
    setns = getattr(os, "setns", None)
    if setns is not None:
        setns(fd, CLONE_NEWNET)
        return
    if _libc_setns is None:
        _libc_setns = _load_libc_setns()
    result, errno = _libc_setns(fd, CLONE_NEWNET)
    if result != 0:
        raise OSError(errno, f"setns: {os.strerror(errno)}")


def call_here_in(path: str, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run ``func`` with the CALLING thread inside the namespace pinned at ``path``.

    The thread switches back before returning (also on exceptions). Meant for short,
    single-threaded callers such as the CNI binary, where spawning a thread (``run_in``)
    costs more than the work; objects created inside (sockets) keep that namespace.
    FileNotFoundError (with ``filename``) when ``path`` does not exist; NetnsError when
    ``path`` is not a network namespace.
    """
    target = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            try:
                _setns(target)
            except OSError as exc:
                raise NetnsError(f"{path} is not a network namespace ({exc})") from None
            try:
                return func(*args, **kwargs)
            finally:
                _setns(home)
        finally:
            os.close(home)
    finally:
        os.close(target)


def socket_in(path: str, family: int, kind: int, proto: int = 0) -> Any:
    """A stdlib socket created inside the namespace at ``path`` (it stays bound there)."""
    import _socket

    return call_here_in(path, _socket.socket, family, kind, proto)


def start_thread_in(path: str, func: Callable[..., Any], *args: Any, name: str = "netns",
                    **kwargs: Any) -> Any:
    """Start a daemon thread that moves into the namespace at ``path`` for its whole life
    and runs ``func(*args, **kwargs)`` there; returns the started ``threading.Thread``.

    For long-lived work bound to one namespace (a DHCP client of a pod: its raw and netlink
    sockets are created inside). Returns only once the thread has switched; raises
    FileNotFoundError (missing path) or NetnsError (not a network namespace) in the
    caller, and then ``func`` never runs.
    """
    import threading

    target = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    switched = threading.Event()
    failure: list[BaseException] = []

    def body() -> None:
        try:
            _setns(target)
        except OSError as exc:
            failure.append(NetnsError(f"{path} is not a network namespace ({exc})"))
            return
        finally:
            os.close(target)
            switched.set()
        func(*args, **kwargs)

    thread = threading.Thread(target=body, name=name, daemon=True)
    thread.start()
    switched.wait()
    if failure:
        thread.join()
        raise failure[0]
    return thread
