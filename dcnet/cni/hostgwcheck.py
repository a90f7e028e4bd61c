"""host-gw CHECK: compare the cached ADD result (prevResult) with the live state, per
address family, reading only.

For every address the result lists on the pod interface (IPv4 and/or IPv6) it checks the
reservation's owner, then the host veth on the bridge, then inside the pod: the link, its
MAC, that it is up, the address and a default route of that family via the result's
gateway. Any difference is code 103 naming what differs.
"""

from __future__ import annotations

import os

from dcnet.cni import ip6
from dcnet.cni.errors import CHECK_FAILED, UNKNOWN_CONTAINER, CniError
from dcnet.cni.ipam import Reservations
from dcnet.cni.nsref import resolve
from dcnet.cni.rtnl import AF_INET, AF_INET6, Netlink


class Checker:
    """CHECK: compare prevResult with the live state; reads only."""

    def __init__(self, conf, args, prev: dict):
        self.conf, self.args, self.prev = conf, args, prev

    def fail(self, problem: str) -> CniError:
        return CniError(CHECK_FAILED, f"CHECK failed: {problem}")

    def run(self) -> None:
        args, prev = self.args, self.prev
        ours = [i for i, iface in enumerate(prev["interfaces"])
                if iface.get("name") == args.ifname and iface.get("sandbox")]
        if not ours:
            raise self.fail(f"prevResult has no interface {args.ifname} with a sandbox")
        index = ours[-1]
        iface = prev["interfaces"][index]
        if iface["sandbox"] != args.netns:
            raise self.fail(f"prevResult sandbox {iface['sandbox']} is not {args.netns}")
        ips = [ip for ip in prev["ips"] if ip.get("interface") == index]
        if not ips:
            raise self.fail(f"prevResult has no address on {args.ifname}")
        wanted = []  # (family module, address, plen, gateway)
        for ip in ips:
            text = str(ip.get("address", ""))
            fam = ip6.family_of(text)
            try:
                address, plen = fam.parse_cidr(text)
                gateway = fam.parse_ip(ip.get("gateway", ""))
            except ValueError as exc:
                raise self.fail(f"prevResult address: {exc}") from None
            wanted.append((fam, address, plen, gateway))
        for fam, address, _plen, _gateway in wanted:
            self.check_reservation(fam, address)
        self.check_host_side()
        if not os.path.exists(resolve(args.netns)):
            raise CniError(UNKNOWN_CONTAINER, f"network namespace {args.netns} does not exist")
        self.check_pod_side(iface, wanted)

    def check_reservation(self, fam, address: int) -> None:
        owner = Reservations(self.conf.ipam_dir, fam).owner(address)
        if owner != (self.args.container_id, self.args.ifname):
            raise self.fail(f"{fam.fmt_ip(address)} is reserved for {owner}, not "
                            f"{self.args.container_id}/{self.args.ifname}")

    def check_host_side(self) -> None:
        from dcnet.cni.hostgw import host_veth_name

        name = host_veth_name(self.args.container_id, self.args.ifname)
        with Netlink() as nl:
            link, bridge = nl.link(name), nl.link(self.conf.bridge)
        if link is None:
            raise self.fail(f"host veth {name} is missing")
        if bridge is None or link["master"] != bridge["index"]:
            raise self.fail(f"host veth {name} is not in bridge {self.conf.bridge}")

    def check_pod_side(self, iface: dict, wanted: list) -> None:
        from dcnet.cni.hostgw import _pod_netlink

        pod = _pod_netlink(resolve(self.args.netns))
        ifname = self.args.ifname
        try:
            link = pod.link(ifname)
            if link is None:
                raise self.fail(f"{ifname} is missing in {self.args.netns}")
            if iface.get("mac") and link["mac"] != iface["mac"].lower():
                raise self.fail(f"{ifname} has MAC {link['mac']}, prevResult says "
                                f"{iface['mac']}")
            if not link["flags"] & 1:
                raise self.fail(f"{ifname} is down")
            for fam, address, plen, gateway in wanted:
                family = AF_INET6 if fam is ip6 else AF_INET
                if not any(a["index"] == link["index"] and a["address"] == fam.ip_bytes(address)
                           and a["plen"] == plen for a in pod.addresses(family)):
                    raise self.fail(f"{ifname} lacks {fam.fmt_cidr(address, plen)}")
                if not any(r["plen"] == 0 and r["gateway"] == fam.ip_bytes(gateway)
                           and r["oif"] == link["index"] for r in pod.routes(family=family)):
                    raise self.fail(f"no default route via {fam.fmt_ip(gateway)} on {ifname}")
        finally:
            pod.close()
