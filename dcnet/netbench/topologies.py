"""Lab topologies of the benchmark modes, as plain data for :class:`dcnet.lab.builder.Lab`.

Pure functions returning dicts: every mode gets its own address range so that result
files and logs are unambiguous. What the lab builder cannot express (macvlan and vxlan
devices, CNI pods, IPVS services) is added after the build by :mod:`dcnet.netbench.modes`
and :mod:`dcnet.netbench.cnimodes`, inside the same namespaces, so it goes with them.

With ``ipv6=True`` a topology is dual-stack: every IPv4 address gets a ULA twin
(:func:`v6`: ``10.<octet>.<subnet>.<host>`` becomes ``fd00:6e62:<octet>:<subnet>::<host>``,
the underlay ``192.168.<octet>.<host>`` becomes ``fd00:6e62:<octet>:c0a8::<host>``, so
every mode's IPv6 ranges are distinct), routers forward IPv6 too, and the cross-node
modes get IPv6 routes beside the IPv4 ones. The lab builder adds IPv6 addresses with
``nodad``, so they work at once.
"""

from __future__ import annotations

from typing import Any

FORWARDING = {"net.ipv4.ip_forward": 1}
FORWARDING_V6 = {"net.ipv4.ip_forward": 1, "net.ipv6.conf.all.forwarding": 1}
VXLAN_MTU = 1450
ULA = "fd00:6e62"          # "nb"; fd00:6e62:<octet>::/48 per mode
UNDERLAY_V6 = 0xc0a8       # the subnet id of a mode's IPv6 underlay


def v6(octet: int, subnet: int, host: int, prefixlen: int | None = 64) -> str:
    """The IPv6 twin of 10.<octet>.<subnet>.<host> (with /prefixlen unless None)."""
    address = f"{ULA}:{octet}:{subnet:x}::{host:x}"
    return f"{address}/{prefixlen}" if prefixlen else address


def v6_net(octet: int, subnet: int) -> str:
    return f"{ULA}:{octet}:{subnet:x}::/64"


def _forwarding(ipv6: bool) -> dict[str, int]:
    return FORWARDING_V6 if ipv6 else FORWARDING


def _twin(address: str | None, ipv6: bool) -> list[str]:
    """``[address]`` plus its IPv6 twin when ``ipv6`` (10.x or 192.168.x, /24)."""
    if not address:
        return []
    if not ipv6:
        return [address]
    ip = address.split("/")[0]
    a, b, c, d = (int(part) for part in ip.split("."))
    octet, subnet = (c, UNDERLAY_V6) if (a, b) == (192, 168) else (b, c)
    return [address, v6(octet, subnet, d)]


def _pair(a_host: str, a_if: str, b_host: str, b_if: str, a_addr: str | None = None,
          b_addr: str | None = None, bridge_b: str | None = None,
          mtu: int | None = None, ipv6: bool = False) -> dict[str, Any]:
    a: dict[str, Any] = {"host": a_host, "ifname": a_if}
    b: dict[str, Any] = {"host": b_host, "ifname": b_if}
    if a_addr:
        a["addresses"] = _twin(a_addr, ipv6)
    if b_addr:
        b["addresses"] = _twin(b_addr, ipv6)
    if bridge_b:
        b["bridge"] = bridge_b
    if mtu:
        a["mtu"] = mtu
        b["mtu"] = mtu
    return {"a": a, "b": b}


def veth(ipv6: bool = False) -> dict[str, Any]:
    """Client ``c`` and server ``s`` joined by one veth pair."""
    return {"hosts": ["c", "s"],
            "links": [_pair("c", "eth0", "s", "eth0", "10.61.0.1/24", "10.61.0.2/24",
                            ipv6=ipv6)]}


def bridge(ipv6: bool = False) -> dict[str, Any]:
    """Two pods on one node's bridge (the docker/cni0 path without routing)."""
    return {"hosts": ["node", "c", "s"],
            "bridges": [{"name": "br0", "host": "node"}],
            "links": [_pair("c", "eth0", "node", "vc", "10.62.0.1/24", bridge_b="br0",
                            ipv6=ipv6),
                      _pair("s", "eth0", "node", "vs", "10.62.0.2/24", bridge_b="br0",
                            ipv6=ipv6)]}


def macvlan() -> dict[str, Any]:
    """A node whose uplink (a veth to ``wire``, which only gives it carrier) is the
    macvlan parent; the pods ``c`` and ``s`` are empty until their macvlans arrive."""
    return {"hosts": ["node", "wire", "c", "s"],
            "links": [_pair("node", "eth0", "wire", "eth0")]}


MACVLAN_PODS = (("c", "10.63.0.1/24"), ("s", "10.63.0.2/24"))
MACVLAN_PODS_V6 = (("c", v6(63, 0, 1)), ("s", v6(63, 0, 2)))


def two_nodes(octet: int, pod_mtu: int | None = None,
              node_routes: bool = True, ipv6: bool = False) -> dict[str, Any]:
    """Nodes n1/n2 on the same switched underlay as the CNI modes (192.168.<octet>.0/24,
    node ``eth0`` ports of ``br0`` in host ``sw``), a bridge ``cbr0`` per node with pod
    subnet 10.<octet>.<node>.0/24, one pod per node (p1 client, p2 server), and host-gw
    routes between the nodes unless ``node_routes`` is False (vxlan adds its own through
    the overlay)."""
    forwarding = _forwarding(ipv6)
    topology: dict[str, Any] = {
        "hosts": [{"name": "n1", "sysctls": forwarding}, {"name": "n2", "sysctls": forwarding},
                  "sw", "p1", "p2"],
        "bridges": [{"name": "br0", "host": "sw"}] + [
            {"name": "cbr0", "host": node, "addresses": _twin(f"10.{octet}.{i}.1/24", ipv6),
             **({"mtu": pod_mtu} if pod_mtu else {})} for i, node in ((1, "n1"), (2, "n2"))],
        "links": [*(_pair(node, "eth0", "sw", f"p-{node}", f"192.168.{octet}.{i}/24",
                          bridge_b="br0", ipv6=ipv6) for i, node in ((1, "n1"), (2, "n2"))),
                  _pair("p1", "eth0", "n1", "vp1", f"10.{octet}.1.2/24", bridge_b="cbr0",
                        mtu=pod_mtu, ipv6=ipv6),
                  _pair("p2", "eth0", "n2", "vp2", f"10.{octet}.2.2/24", bridge_b="cbr0",
                        mtu=pod_mtu, ipv6=ipv6)],
        "routes": [{"host": "p1", "dst": "default", "via": f"10.{octet}.1.1"},
                   {"host": "p2", "dst": "default", "via": f"10.{octet}.2.1"}],
    }
    if ipv6:
        topology["routes"] += [
            {"host": "p1", "dst": "default", "via": v6(octet, 1, 1, None)},
            {"host": "p2", "dst": "default", "via": v6(octet, 2, 1, None)}]
    if node_routes:
        topology["routes"] += [
            {"host": "n1", "dst": f"10.{octet}.2.0/24", "via": f"192.168.{octet}.2"},
            {"host": "n2", "dst": f"10.{octet}.1.0/24", "via": f"192.168.{octet}.1"}]
        if ipv6:
            topology["routes"] += [
                {"host": "n1", "dst": v6_net(octet, 2), "via": v6(octet, UNDERLAY_V6, 2, None)},
                {"host": "n2", "dst": v6_net(octet, 1), "via": v6(octet, UNDERLAY_V6, 1, None)}]
    return topology


HOST_GW_OCTET = 64
VXLAN_OCTET = 65


def host_gw(ipv6: bool = False) -> dict[str, Any]:
    return two_nodes(HOST_GW_OCTET, ipv6=ipv6)


def vxlan(ipv6: bool = False) -> dict[str, Any]:
    """host-gw's shape without underlay routes: the overlay (IPv4 underlay, IPv4 and
    IPv6 inside) is added after the build by :mod:`dcnet.netbench.modes`."""
    return two_nodes(VXLAN_OCTET, pod_mtu=VXLAN_MTU, node_routes=False, ipv6=ipv6)


def cni_nodes(octet: int, node_routes: bool = False, ipv6: bool = False) -> dict[str, Any]:
    """Nodes n1/n2 whose ``eth0`` are ports of bridge ``br0`` in host ``sw`` (the underlay
    192.168.<octet>.0/24, one L2 segment as host-gw and macvlan both need), and two
    empty pod namespaces (p1 on n1, p2 on n2) for a CNI plugin to fill; optionally
    host-gw routes towards pod subnets 10.<octet>.<node>.0/24 (reference bridge), and
    with ``ipv6`` the IPv6 twins of the underlay and of those routes."""
    forwarding = _forwarding(ipv6)
    topology: dict[str, Any] = {
        "hosts": [{"name": "n1", "sysctls": forwarding}, {"name": "n2", "sysctls": forwarding},
                  "sw", "p1", "p2"],
        "bridges": [{"name": "br0", "host": "sw"}],
        "links": [_pair(node, "eth0", "sw", f"p-{node}", f"192.168.{octet}.{i}/24",
                        bridge_b="br0", ipv6=ipv6) for i, node in ((1, "n1"), (2, "n2"))],
    }
    if node_routes:
        topology["routes"] = [
            {"host": "n1", "dst": f"10.{octet}.2.0/24", "via": f"192.168.{octet}.2"},
            {"host": "n2", "dst": f"10.{octet}.1.0/24", "via": f"192.168.{octet}.1"}]
        if ipv6:
            topology["routes"] += [
                {"host": "n1", "dst": v6_net(octet, 2), "via": v6(octet, UNDERLAY_V6, 2, None)},
                {"host": "n2", "dst": v6_net(octet, 1), "via": v6(octet, UNDERLAY_V6, 1, None)}]
    return topology


IPVS_VIP = "10.69.0.100"
IPVS_VIP6 = "fd00:6e62:69::64"   # v6(69, 0, 100) written canonically, on the client's /64


def ipvs(ipv6: bool = False) -> dict[str, Any]:
    """Client ``c`` -> director ``d`` (VIP on its client side) -> real server ``r``;
    with ``ipv6`` also the IPv6 twins, the IPv6 VIP /128 and the real server's IPv6
    default route via the director."""
    routes = [{"host": "r", "dst": "default", "via": "10.69.1.1"}]
    if ipv6:
        routes.append({"host": "r", "dst": "default", "via": v6(69, 1, 1, None)})
    director = _twin("10.69.0.1/24", ipv6) + [f"{IPVS_VIP}/32"] + (
        [f"{IPVS_VIP6}/128"] if ipv6 else [])
    return {"hosts": ["c", {"name": "d", "sysctls": _forwarding(ipv6)}, "r"],
            "links": [{"a": {"host": "c", "ifname": "eth0",
                             "addresses": _twin("10.69.0.2/24", ipv6)},
                       "b": {"host": "d", "ifname": "c0", "addresses": director}},
                      _pair("d", "s0", "r", "eth0", "10.69.1.1/24", "10.69.1.2/24",
                            ipv6=ipv6)],
            "routes": routes}
