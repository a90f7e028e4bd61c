"""Deleting host veths off DEL's critical path: retire now, delete later.

A veth's RTM_DELLINK waits on the kernel (RCU grace periods, ~20 ms on a loaded node:
most of DEL's time), while setting the link down takes ~0.2 ms. So DEL *retires* the
host end: down (the pair loses carrier: the pod's end can send and receive nothing, the
bridge port stops forwarding) and renamed from ``dcn<hash>`` to ``dcx<hash>`` (the
"dying" state: the pod's name is free at once for a new ADD of the same container, and
nothing but a dying link carries the ``dcx`` prefix). Then:

- in the agent (``enable`` was called, by ``execd.start``) the dying link goes to a
  reaper thread that deletes it after DEL has answered, and ``collect`` (at start and
  every ``SWEEP`` seconds) deletes any dying link left behind, e.g. by an agent killed
  with links queued;
- in a plugin process (the fallback: no reaper) it is deleted before DEL returns, as
  before;
- CNI GC deletes dying links too (``hostgw.gc``).

The address reservation is released after the link is retired, so a new pod given the
same address never shares the wire with the old one.
"""

from __future__ import annotations

import contextlib

from dcnet.cni.rtnl import Netlink

# queue and threading are imported by the agent's Reaper only: the plugin's hot path
# (hostgw imports this module) stays without them (docs/cni.md, "Keeping ADD light").

DYING_PREFIX = "dcx"
SWEEP = 5.0

_reaper: Reaper | None = None


def dying_name(name: str) -> str:
    """``dcn<hash>`` -> ``dcx<hash>`` (same length, so it fits IFNAMSIZ)."""
    return DYING_PREFIX + name[3:]


def retire(nl: Netlink, name: str) -> bool:
    """Make host link ``name`` unusable now and have it deleted (here, or by the agent's
    reaper after DEL answers); False when there is no such link."""
    link = nl.link(name)
    if link is None:
        return False
    reaper = _reaper
    if reaper is None:
        return nl.delete_link(name)  # a plugin process: nobody would finish the job
    nl.set_down(link["index"])
    dying = dying_name(name)
    try:
        nl.rename(link["index"], dying)
    except OSError:  # a dying twin not yet reaped (EEXIST): delete this one now
        return nl.delete_link(name)
    reaper.queue.put(dying)
    return True


class Reaper:
    """The agent's thread deleting retired links (see the module docstring)."""

    def __init__(self, log):
        import queue
        import threading

        self.log = log
        self.queue = queue.Queue()
        self.empty = queue.Empty
        self.thread = threading.Thread(target=self._run, name="veth-reaper", daemon=True)

    def start(self) -> None:
        self.collect()
        self.thread.start()

    def collect(self) -> list[str]:
        """Delete every dying link in this namespace; returns their names."""
        removed = []
        with Netlink() as nl:
            for link in nl.links():
                name = link["name"] or ""
                if name.startswith(DYING_PREFIX):
                    with contextlib.suppress(OSError):
                        if nl.delete_link(name):
                            removed.append(name)
        return removed

    def _run(self) -> None:
        with Netlink() as nl:
            while True:
                try:
                    name = self.queue.get(timeout=SWEEP)
                except self.empty:
                    self._sweep()
                    continue
                try:
                    nl.delete_link(name)
                except OSError as exc:
                    self.log(f"deleting retired link {name}: {exc}")

    def _sweep(self) -> None:
        try:
            self.collect()
        except OSError as exc:
            self.log(f"collecting retired links: {exc}")


def enable(log) -> Reaper:
    """Retire links from now on in this process (the agent); idempotent."""
    global _reaper
    if _reaper is None:
        reaper = Reaper(log)
        reaper.start()
        _reaper = reaper
    return _reaper


def disable() -> None:
    """Back to deleting in DEL (tests)."""
    global _reaper
    _reaper = None
