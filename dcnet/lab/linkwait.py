"""Waiting for carrier after a lab build: the kernel reports a new veth's carrier (and so
lets a bridge forward on that port) from its link-watch work, up to a second after the
link is set up, and a bridge drops the frames of a port until then. A daemon started at
once loses its first packets (HAProxy's first health checks, ARP requests: issue #17),
so :class:`dcnet.lab.builder.Lab` returns only once every veth end, and every bridge that
has ports, is operationally up (about 60 ms a build here).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

CARRIER_WAIT = 20.0          # seconds a build waits for link-watch to report carrier


def wait_carrier(iproute_of: Callable[[str], object],
                 ends: Iterable[tuple[str, str, str | None]],
                 bridges: Iterable[tuple[str, str]], limit: float = CARRIER_WAIT) -> None:
    """Poll until every (host, ifname) of ``ends`` and every bridge (host, name) that one
    of them is a port of reports operstate UP; RuntimeError after ``limit`` seconds."""
    ends = list(ends)
    ported = {(host, bridge) for host, _, bridge in ends if bridge}
    pending = {(host, ifname) for host, ifname, _ in ends}
    pending |= {b for b in bridges if b in ported}      # a port-less bridge has no carrier
    deadline = time.monotonic() + limit
    while True:
        for host, ifname in sorted(pending):
            ipr = iproute_of(host)
            index = ipr.link_lookup(ifname=ifname)
            links = ipr.get_links(index[0]) if index else []
            if links and links[0].get_attr("IFLA_OPERSTATE") == "UP":
                pending.discard((host, ifname))
        if not pending:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"links without carrier after {limit:g}s: "
                               + ", ".join(f"{h}/{i}" for h, i in sorted(pending)))
        time.sleep(0.02)
