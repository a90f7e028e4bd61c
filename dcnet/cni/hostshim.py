"""The macvlan agent's host shim: a macvlan on the master through which the node reaches
its own pods (a macvlan's parent cannot), with one /32 route per pod address.

``HostShim`` is mixed into ``dcnet.cni.dhcpagent.MacvlanAgent``: ``setup_shim`` creates
(or keeps) the shim link and its address, ``shim_route`` moves a pod's /32 route when its
address changes, ``sweep_shim_routes`` removes routes of addresses no lease holds.
"""

from __future__ import annotations

from dcnet.cni import ip4
from dcnet.cni.errors import TRY_AGAIN_LATER, CniError


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
                nl.add_macvlan(shim["name"], master["index"], "bridge")
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
            nl.set_up(link["index"])
            self.shim_index = link["index"]

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

