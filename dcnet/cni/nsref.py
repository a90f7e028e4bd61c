"""The pod's network namespace as the plugin process opened it, for code run in the agent.

The agent may live in another mount namespace than the container runtime (a DaemonSet
without ``mountPropagation: HostToContainer``, a systemd unit with ``PrivateMounts``):
there the ``CNI_NETNS`` path names an empty file, not the namespace. So the C shim,
which runs in the runtime's mount namespace, opens ``CNI_NETNS`` and passes the
descriptor over the unix socket (SCM_RIGHTS); ``dcnet.cni.execd`` pins it for the
request's thread with ``pinned(path, fd)`` and every place that opens the namespace
goes through ``resolve(path)``, which gives ``/proc/self/fd/<fd>``: a magic link that
reaches the namespace itself whatever the mount namespace. ``CNI_NETNS`` keeps its role
as the pod's name (results' ``sandbox``, CHECK's comparison). Outside the agent (the
in-process fallback) nothing is pinned and ``resolve`` returns the path unchanged.

Stdlib builtins only (``_thread``): this is on the plugin's light path.
"""

from __future__ import annotations

from _thread import _local

_pins = _local()


class pinned:  # a context manager used like a function
    """``with pinned(path, fd):`` the calling thread opens ``path`` through ``fd``."""

    def __init__(self, path: str, fd: int | None):
        self.path, self.fd = path, fd

    def __enter__(self) -> None:
        if self.path and self.fd is not None:
            _pins.map = {self.path: f"/proc/self/fd/{self.fd}"}
            _pins.fd = self.fd

    def __exit__(self, *exc) -> None:
        _pins.map = _pins.fd = None


def resolve(path: str) -> str:
    """What to open for the namespace ``path``: the pinned descriptor, else ``path``."""
    pins = getattr(_pins, "map", None)
    if pins:
        return pins.get(path, path)
    return path


def pinned_fd(path: str) -> int | None:
    """The descriptor pinned for ``path`` in this thread (to pass on to the macvlan
    agent), None when there is none."""
    pins = getattr(_pins, "map", None)
    return getattr(_pins, "fd", None) if pins and path in pins else None

