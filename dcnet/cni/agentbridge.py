"""The host-gw node bridge as the agent keeps it: per address family gateway addresses,
a pinned MAC, and the forwarding sysctls.

``setup_bridge`` makes the bridge exist (MAC ``0a:58:<IPv4 gateway>``, or the low four
bytes of the IPv6 gateway on an IPv6-only network, so enslaving ports never changes it),
puts the gateway (first address) of each of the node's subnets on it, removes stale
gateways of the same cluster ranges (an earlier subnet), brings it up and turns on
forwarding: ``net.ipv4.ip_forward`` and, with an IPv6 subnet, IPv6 enabled on the
bridge and ``net.ipv6.conf.all.forwarding=1``. IPv6 gateways are added without DAD
(``IFA_F_NODAD``): the address is the node's own and must answer pods at once.
Kernel I/O through the agent's pyroute2 ``IPRoute``.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable

from dcnet.cni import ip4, ip6

BRIDGE_MAC_PREFIX = b"\x0a\x58"
IFA_F_NODAD = 0x02


def write_sysctl(path: str, value: str) -> None:
    """Write ``value`` to a /proc/sys file unless it already holds it."""
    with open(path, "r+") as handle:
        if handle.read().strip() != value:
            handle.seek(0)
            handle.write(value)


def setup_bridge(ipr, name: str, gateways: list[tuple[str, int]], clusters: list[str],
                 log: Callable[[str], None]) -> None:
    """Bridge ``name`` with ``gateways`` [(address, plen)], IPv4 first; addresses inside
    ``clusters`` that are not wanted are removed."""
    first = gateways[0][0]
    fam = ip6.family_of(first)
    mac = ip4.mac_from_ip(BRIDGE_MAC_PREFIX, fam.parse_ip(first) & 0xFFFFFFFF)
    found = ipr.link_lookup(ifname=name)
    if not found:
        ipr.link("add", ifname=name, kind="bridge", address=mac)
        found = ipr.link_lookup(ifname=name)
        log(f"created bridge {name} ({mac})")
    index = found[0]
    link = ipr.get_links(index)[0]
    if link.get("address") != mac:
        ipr.link("set", index=index, address=mac)  # pinned: ports never change it
    has_v6 = any(":" in address for address, _ in gateways)
    if has_v6:
        write_sysctl(f"/proc/sys/net/ipv6/conf/{name}/disable_ipv6", "0")
    networks = [ipaddress.ip_network(c) for c in clusters]
    for family in (socket.AF_INET, socket.AF_INET6):
        wanted = {(a, p) for a, p in gateways if (":" in a) == (family == socket.AF_INET6)}
        present = set()
        for addr in ipr.get_addr(index=index, family=family):
            here = (addr.get("address"), addr["prefixlen"])
            present.add(here)
            inside = any(ipaddress.ip_address(here[0]) in net for net in networks
                         if net.version == (6 if family == socket.AF_INET6 else 4))
            if here not in wanted and inside:
                ipr.addr("del", index=index, address=here[0], prefixlen=here[1])
                log(f"removed stale gateway {here[0]}/{here[1]} from {name}")
        for address, plen in sorted(wanted - present):
            extra = {"flags": IFA_F_NODAD} if family == socket.AF_INET6 else {}
            ipr.addr("add", index=index, address=address, prefixlen=plen, **extra)
    ipr.link("set", index=index, state="up")
    write_sysctl("/proc/sys/net/ipv4/ip_forward", "1")
    if has_v6:
        write_sysctl("/proc/sys/net/ipv6/conf/all/forwarding", "1")
