"""Link faults: ``link-down`` and ``link-flap`` of a named interface in a named namespace.

``link-down`` sets the interface down for the step's duration; ``link-flap`` sets it
down and up again every ``period`` seconds (down for half of it), ``count`` times (0:
until reverted), in a thread of the runner. Reverting stops the thread (when this
process runs it) and sets the interface up unless it was down before the fault, so
after a SIGKILL of the runner, wherever the flap left the link, ``recover`` brings it
up. Reverting is idempotent. Kernel I/O is pyroute2 in a thread switched into the
namespace by :func:`dcnet.sysio.netns.run_in` (``IPRoute(netns=...)`` forks a helper
that inherits the caller's signal handlers).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

from dcnet.sysio import netns

T = TypeVar("T")

_flappers: dict[str, tuple[threading.Thread, threading.Event]] = {}
_lock = threading.Lock()


class LinkError(RuntimeError):
    """The interface is not there."""


def with_iproute(namespace: str, func: Callable[..., T], *args: Any) -> T:
    """``func(ipr, *args)`` with a pyroute2 IPRoute opened inside the namespace."""
    def body() -> T:
        from pyroute2 import IPRoute

        with IPRoute() as ipr:
            return func(ipr, *args)
    return netns.run_in(namespace, body)


def index_of(ipr: Any, interface: str, namespace: str) -> int:
    found = ipr.link_lookup(ifname=interface)
    if not found:
        raise LinkError(f"no interface {interface!r} in namespace {namespace}")
    return found[0]


def set_state(namespace: str, interface: str, state: str) -> None:
    def body(ipr: Any) -> None:
        ipr.link("set", index=index_of(ipr, interface, namespace), state=state)
    with_iproute(namespace, body)


def is_up(namespace: str, interface: str) -> bool:
    """The administrative state (IFF_UP) of the interface."""
    def body(ipr: Any) -> bool:
        return bool(ipr.get_links(index_of(ipr, interface, namespace))[0]["flags"] & 1)
    return with_iproute(namespace, body)


def check(namespace: str, interface: str) -> None:
    """Raise LinkError unless the interface exists (before the fault is journaled)."""
    is_up(namespace, interface)


def _flap(record: dict, stop: threading.Event) -> None:
    half = record["period"] / 2
    done = 0
    while not stop.is_set() and (record["count"] == 0 or done < record["count"]):
        set_state(record["namespace"], record["interface"], "down")
        if stop.wait(half):
            break
        set_state(record["namespace"], record["interface"], "up")
        done += 1
        stop.wait(half)


def apply(record: dict) -> None:
    if record["kind"] == "link-down":
        set_state(record["namespace"], record["interface"], "down")
        return
    stop = threading.Event()
    thread = threading.Thread(target=_flap, args=(record, stop), daemon=True,
                              name=f"chaos-flap-{record['interface']}")
    with _lock:
        _flappers[record["key"]] = (thread, stop)
    thread.start()


def revert(record: dict) -> str:
    what = f"{record['kind']} of {record['interface']} in {record['namespace']}"
    with _lock:
        flapper = _flappers.pop(record.get("key", ""), None)
    if flapper:
        flapper[1].set()
        flapper[0].join(30)
    if not netns.exists(record["namespace"]):
        return f"{what}: namespace gone, nothing to revert"
    if not record.get("was_up", True):
        return f"{what}: it was down before the fault, left as it is"
    try:
        set_state(record["namespace"], record["interface"], "up")
    except LinkError:
        return f"{what}: interface gone, nothing to revert"
    return f"{what}: set up"
