"""Named network namespaces: the ONE module of dcnet that switches namespaces.

It owns creating, removing and listing namespaces under /run/netns, running a
Python callable inside one (in a dedicated thread, since setns is per-thread),
the argv prefix that runs a program inside one (``ip netns exec``), pyroute2
IPRoute handles bound to one, per-namespace sysctls and the pids living in one.
Everything else in dcnet goes through these functions instead of calling setns.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from pyroute2 import IPRoute
from pyroute2 import netns as pyroute2_netns

NETNS_DIR = "/run/netns"
CALLER_NETNS_PATH = "/proc/self/ns/net"
_VALID_NAME = re.compile(r"^[A-Za-z0-9_.][A-Za-z0-9_.-]{0,63}$")

T = TypeVar("T")


class NetnsError(RuntimeError):
    """A namespace operation failed (bad name, missing namespace, switch failure)."""


def path_of(name: str) -> str:
    """The bind-mount path that pins the named namespace."""
    check_name(name)
    return os.path.join(NETNS_DIR, name)


def check_name(name: str) -> None:
    """Reject names that are not a single, safe path component."""
    if not isinstance(name, str) or not _VALID_NAME.match(name) or name in (".", ".."):
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
    pyroute2_netns.create(name)
    if not exists(name):
        raise NetnsError(f"creating network namespace {name!r} failed")


def remove(name: str) -> bool:
    """Unmount and delete the named namespace; False if it did not exist."""
    if not exists(name):
        return False
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


def exec_argv(name: str | None, argv: Sequence[str]) -> list[str]:
    """The argv that runs ``argv`` inside the named namespace (unchanged if None)."""
    argv = [str(arg) for arg in argv]
    if name is None:
        return argv
    check_name(name)
    return ["ip", "netns", "exec", name, *argv]


def iproute(name: str) -> IPRoute:
    """A pyroute2 IPRoute bound to the named namespace (never creates it); caller closes."""
    if not exists(name):
        raise NetnsError(f"network namespace {name!r} does not exist")
    return IPRoute(netns=name, flags=0)


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


def is_caller_namespace(name: str) -> bool:
    """True if the named namespace is the one this process (its main thread) lives in."""
    st = os.stat(CALLER_NETNS_PATH)
    return identity(name) == (st.st_dev, st.st_ino)
