"""The macvlan agent's host shim: a macvlan on the master through which the node reaches
its own pods (a macvlan's parent cannot), with one /32 route per pod address. Its MAC
is fixed per shim name and master (``shim_mac``), so a shim made again keeps it.

``HostShim`` is mixed into ``dcnet.cni.dhcpagent.MacvlanAgent``: ``setup_shim`` creates
(or keeps) the shim link and its address, ``shim_route`` moves a pod's /32 route when its
address changes, ``sweep_shim_routes`` removes routes of addresses no lease holds.

With ``ipv6: slaac`` the shim carries IPv6 too: it takes no router advertisements itself
(accept_ra and autoconf off), gets the node's address (``hostShim.address6``, default
the master's first global IPv6 address) as a /128 without DAD, so the pods' neighbour
solicitations for the node's address are answered on the shim, and one /128 route per
pod's SLAAC address (``shim_route6``); the address is retried while the master has none.
"""

from __future__ import annotations

import contextlib

from dcnet.cni import ip4, slaac
from dcnet.cni.errors import TRY_AGAIN_LATER, CniError
from dcnet.cni.podns import write
from dcnet.hashing import fnv1a_64


def shim_mac(name: str, master_mac: str) -> str:
    """The shim's MAC, fixed per (shim, master): a shim made anew (agent restarted after
    it was deleted) answers at the MAC the pods' neighbour caches already hold for the
    node's addresses (a new random one left them talking to the old one for seconds)."""
    value = fnv1a_64(f"dcnshim {name} {master_mac}") & ((1 << 40) - 1)
    return ":".join(["0a", *(f"{(value >> s) & 0xFF:02x}" for s in range(32, -1, -8))])


class HostShim:
    """Host-shim upkeep of ``MacvlanAgent`` (no-ops when the network has no shim)."""

    def shim_route(self, old_cidr: str | None, new_cidr: str | None) -> None:
        """Keep the host shim's /32 route per pod address (no-op without a shim)."""
        if self.shim_index is None or old_cidr == new_cidr:
            return
        with self.node() as nl:
            if old_cidr:
                nl.delete_route(ip4.ip_bytes(ip4.parse_cidr(old_cidr)[0]), 32, self.shim_index)
            if new_cidr:
                nl.replace_route(ip4.ip_bytes(ip4.parse_cidr(new_cidr)[0]), 32, None,
                                 self.shim_index, protocol=self.conf.route_protocol)

    def setup_shim(self) -> None:
        """Create (or keep) the host shim macvlan with its address; sweep stale routes."""
        shim = self.conf.host_shim
        if not shim:
            return
        master = self.master_link(self.conf)
        with self.node() as nl:
            link = nl.link(shim["name"])
            if link is None:
                nl.add_macvlan(shim["name"], master["index"], "bridge",
                               mac=shim_mac(shim["name"], master["mac"] or ""))
                link = nl.link(shim["name"])
                self.log(f"created host shim {shim['name']} on {master['name']}")
            assert link is not None
            if shim["address"]:
                address, plen = ip4.parse_cidr(shim["address"])
            else:
                mine = [a for a in nl.addresses() if a["index"] == master["index"]]
                if not mine:
                    raise CniError(TRY_AGAIN_LATER, f"master {master['name']} has no IPv4 "
                                   "address for the host shim (give hostShim.address)")
                address, plen = int.from_bytes(mine[0]["address"], "big"), 32
            if not any(a["index"] == link["index"] and a["address"] == ip4.ip_bytes(address)
                       for a in nl.addresses()):
                nl.replace_address(link["index"], ip4.ip_bytes(address), plen, None)
            if self.ipv6.enabled:
                for key, value in (("disable_ipv6", "0"), ("accept_ra", "0"),
                                   ("autoconf", "0")):
                    with contextlib.suppress(OSError):
                        write(f"/proc/sys/net/ipv6/conf/{shim['name']}/{key}", value)
            nl.set_up(link["index"])
            self.shim_index = link["index"]
        self.setup_shim6()

    def setup_shim6(self) -> bool:
        """Put the node's IPv6 address on the shim (/128, no DAD); False while the
        master has none (logged once; retried when a pod route is added)."""
        if self.shim_index is None:
            return False
        settings = self.ipv6
        if not settings.enabled:
            return False
        master = self.master_link(self.conf)
        with self.node() as nl:
            have = slaac.addresses6(nl)
            if settings.shim_address:
                address = slaac.parse_cidr6(settings.shim_address)[0]
            elif any(a["index"] == self.shim_index and a["scope"] == 0 for a in have):
                return True  # keeps the address it has (the master's may come and go)
            else:  # static (permanent) addresses first: SLAAC ones follow the RAs
                mine = sorted(slaac.usable_global([a for a in have
                                                   if a["index"] == master["index"]]),
                              key=lambda a: not a["flags"] & slaac.IFA_F_PERMANENT)
                if not mine:
                    if not self._shim6_warned:
                        self._shim6_warned = True
                        self.log(f"host shim: master {master['name']} has no global IPv6 "
                                 "address (yet): the node cannot reach its pods over IPv6 "
                                 "until it has one (or give hostShim.address6)")
                    return False
                address = mine[0]["address"]
            if not any(a["index"] == self.shim_index and a["address"] == address
                       for a in have):
                slaac.add_address6(nl, self.shim_index, address, 128)
                self.log(f"host shim: {slaac.fmt6(address)}/128 on {self.conf.host_shim['name']}")
        return True

    def shim_route6(self, old_cidr: str | None, new_cidr: str | None) -> None:
        """Keep the host shim's /128 route per pod IPv6 address (no-op without a shim)."""
        if self.shim_index is None or old_cidr == new_cidr:
            return
        if new_cidr:
            self.setup_shim6()
        with self.node() as nl:
            if old_cidr:
                slaac.delete_route6(nl, slaac.parse_cidr6(old_cidr)[0], 128, self.shim_index)
            if new_cidr:
                slaac.replace_route6(nl, slaac.parse_cidr6(new_cidr)[0], 128,
                                     self.shim_index, protocol=self.conf.route_protocol)

    def sweep_shim_routes(self, wanted: set[str]) -> None:
        if self.shim_index is None:
            return
        with self.node() as nl:
            for route in nl.routes():
                if (route["oif"] == self.shim_index and route["plen"] == 32
                        and route["protocol"] == self.conf.route_protocol):
                    dst = ip4.fmt_ip(int.from_bytes(route["dst"], "big"))
                    if dst not in wanted:
                        nl.delete_route(route["dst"], 32, self.shim_index)
                        self.log(f"removed stale shim route {dst}/32")
            for route in slaac.routes6(nl):
                if (route["oif"] == self.shim_index and route["plen"] == 128
                        and route["protocol"] == self.conf.route_protocol):
                    dst = slaac.fmt6(route["dst"])
                    if dst not in wanted:
                        slaac.delete_route6(nl, route["dst"], 128, self.shim_index)
                        self.log(f"removed stale shim route {dst}/128")

