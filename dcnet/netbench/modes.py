"""Building each benchmark mode: a lab from its topology plus what the builder lacks.

``build(name, context, families)`` returns one :class:`~dcnet.netbench.live.LiveMode` per
address family asked for (a mode is built once, dual-stack when IPv6 is asked for, and
the IPv4 and IPv6 LiveModes share its labs; only modes whose catalogue entry supports
IPv6 are asked for it), with teardown registered on ``context.stack`` (an ExitStack the
engine unwinds on success, error, Ctrl-C and SIGTERM). Labs are entered on that stack,
so their namespaces, and with them the macvlan, vxlan and CNI devices created inside,
disappear at teardown. ``unavailable`` says why a mode cannot run here (no IPVS in this
kernel, no MACVLAN mode in this build of the dcnet CNI plugin) without building
anything; ``family_unavailable`` why it is not measured over a family.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Callable, Sequence
from typing import Any

from dcnet.lab.builder import Lab
from dcnet.netbench import catalogue, cnimodes, nftmode, topologies
from dcnet.netbench.buildcontext import (
    DEFAULT_PORTS,
    DEFAULT_PORTS_V6,
    BuildContext,
    family_address,
    lab_mode,
)
from dcnet.netbench.live import LiveMode, free_loopback_port, root_starter

__all__ = ["DEFAULT_PORTS", "BuildContext", "build", "family_unavailable", "lab_mode",
           "unavailable"]

IPVS_MASQ = 0  # IP_VS_CONN_F_MASQ
IFA_F_NODAD = 0x02
Built = dict[str, LiveMode]


def unavailable(name: str) -> str | None:
    """Why mode ``name`` cannot run on this machine, or None when it can."""
    if name == "ipvs":
        from dcnet.lab.kernel_lab import IPVS_MODULE, host_has_modules

        if not host_has_modules([IPVS_MODULE]):
            return ("this kernel has no IPVS (ip_vs cannot be loaded); run netbench in the "
                    "kernel lab or on a kernel with IPVS")
    if name.startswith("cni-"):
        return cnimodes.unavailable(name)
    if name == "nft-lb":
        return nftmode.unavailable()
    return None


def family_unavailable(name: str, family: str) -> str | None:
    """Why mode ``name`` is not measured over ``family``, or None when it is."""
    if family == "ipv6" and not catalogue.info(name).ipv6:
        return catalogue.info(name).ipv6_reason
    if family == "ipv6" and name == "cni-dcnet-host-gw":
        return cnimodes.dcnet_ipv6_unsupported()
    return None


def build(name: str, context: BuildContext,
          families: Sequence[str] = ("ipv4",)) -> Built:
    """Build mode ``name`` once; its LiveMode per family of ``families``."""
    for family in families:
        reason = family_unavailable(name, family)
        if reason:
            raise ValueError(f"mode {name} over {family}: {reason}")
    builders: dict[str, Callable[[BuildContext, bool], Built]] = {
        "loopback": _loopback, "veth": _veth, "bridge": _bridge, "macvlan": _macvlan,
        "host-gw": _host_gw, "vxlan": _vxlan, "nft-lb": nftmode.build,
    }
    ipv6 = "ipv6" in families
    if name in builders:
        built = builders[name](context, ipv6)
    elif name == "ipvs":
        built = _ipvs(context, ipv6)
    else:
        built = cnimodes.build(name, context, ipv6)
    return {family: built[family] for family in families}


def _per_family(name: str, context: BuildContext, lab: Lab, client: str, server: str,
                ifname: str, interfaces: list[tuple[str, str]], ipv6: bool) -> Built:
    """LiveModes for IPv4 (and IPv6) whose server listens on server/ifname's address."""
    families = ("ipv4", "ipv6") if ipv6 else ("ipv4",)
    return {family: lab_mode(name, context, lab, client, server,
                             family_address(lab, server, ifname, family), interfaces,
                             family=family) for family in families}


def _loopback(context: BuildContext, ipv6: bool) -> Built:
    built = {}
    for family, host in (("ipv4", "127.0.0.1"), ("ipv6", "::1")):
        if family == "ipv6" and not ipv6:
            continue
        ports = {key: free_loopback_port(host) for key in DEFAULT_PORTS}
        built[family] = LiveMode(
            name="loopback", client_ns=None, server_ns=None, bind_address=host, target=host,
            ports=ports, interfaces=[(None, "lo")], starter=root_starter(context.stack),
            log_dir=context.log_dir, family=family)
    return built


def _veth(context: BuildContext, ipv6: bool) -> Built:
    lab = context.lab(topologies.veth(ipv6))
    return _per_family("veth", context, lab, "c", "s", "eth0", [("c", "eth0"), ("s", "eth0")],
                       ipv6)


def _bridge(context: BuildContext, ipv6: bool) -> Built:
    lab = context.lab(topologies.bridge(ipv6))
    return _per_family("bridge", context, lab, "c", "s", "eth0",
                       [("c", "eth0"), ("node", "br0"), ("s", "eth0")], ipv6)


def _index(ipr: Any, ifname: str) -> int:
    found = ipr.link_lookup(ifname=ifname)
    if not found:
        raise RuntimeError(f"interface {ifname!r} not found")
    return found[0]


def add_address(ipr: Any, index: int, text: str) -> None:
    """Add ``text`` (address/prefixlen) to interface ``index``; IPv6 without DAD."""
    address = ipaddress.ip_interface(text)
    extra = {"flags": IFA_F_NODAD} if address.version == 6 else {}
    ipr.addr("add", index=index, address=str(address.ip), prefixlen=address.network.prefixlen,
             **extra)


def move_and_configure(lab: Lab, node: str, temporary: str, host: str, ifname: str,
                       address: str | None, *more: str) -> None:
    """Move ``temporary`` from ``node`` into ``host`` as ``ifname``, address it, bring it up."""
    node_ipr = lab.iproute(node)
    node_ipr.link("set", index=_index(node_ipr, temporary), net_ns_fd=lab.netns(host))
    ipr = lab.iproute(host)
    index = _index(ipr, temporary)
    ipr.link("set", index=index, ifname=ifname)
    for text in (address, *more):
        if text:
            add_address(ipr, index, text)
    ipr.link("set", index=index, state="up")


def _macvlan(context: BuildContext, ipv6: bool) -> Built:
    lab = context.lab(topologies.macvlan())
    ipr = lab.iproute("node")
    parent = _index(ipr, "eth0")
    for (pod, address), (_, address6) in zip(topologies.MACVLAN_PODS,
                                             topologies.MACVLAN_PODS_V6, strict=True):
        temporary = f"mv-{pod}"
        ipr.link("add", ifname=temporary, kind="macvlan", link=parent, macvlan_mode="bridge")
        move_and_configure(lab, "node", temporary, pod, "eth0", address,
                           *((address6,) if ipv6 else ()))
    interfaces = [("c", "eth0"), ("node", "eth0"), ("s", "eth0")]
    built = {"ipv4": lab_mode("macvlan", context, lab, "c", "s",
                              topologies.MACVLAN_PODS[1][1].split("/")[0], interfaces)}
    if ipv6:
        built["ipv6"] = lab_mode("macvlan", context, lab, "c", "s",
                                 topologies.MACVLAN_PODS_V6[1][1].split("/")[0], interfaces,
                                 family="ipv6")
    return built


def _host_gw(context: BuildContext, ipv6: bool) -> Built:
    lab = context.lab(topologies.host_gw(ipv6))
    return _per_family("host-gw", context, lab, "p1", "p2", "eth0",
                       [("p1", "eth0"), ("n1", "eth0"), ("n2", "eth0"), ("p2", "eth0")], ipv6)


def _vxlan(context: BuildContext, ipv6: bool) -> Built:
    lab = context.lab(topologies.vxlan(ipv6))
    octet = topologies.VXLAN_OCTET
    for node, peer, me in (("n1", "n2", 1), ("n2", "n1", 2)):
        other = 3 - me
        ipr = lab.iproute(node)
        ipr.link("add", ifname="vx0", kind="vxlan", vxlan_id=1,
                 vxlan_link=_index(ipr, "eth0"), vxlan_local=lab.address(node, "eth0"),
                 vxlan_group=lab.address(peer, "eth0"), vxlan_port=4789, vxlan_learning=0)
        index = _index(ipr, "vx0")
        ipr.addr("add", index=index, address=f"10.{octet}.255.{me}", prefixlen=24)
        ipr.link("set", index=index, state="up")
        ipr.route("add", dst=f"10.{octet}.{other}.0/24", gateway=f"10.{octet}.255.{other}",
                  oif=index)
        if ipv6:
            add_address(ipr, index, topologies.v6(octet, 255, me))
            ipr.route("add", family=socket.AF_INET6, dst=topologies.v6_net(octet, other),
                      gateway=topologies.v6(octet, 255, other, None), oif=index)
    return _per_family("vxlan", context, lab, "p1", "p2", "eth0",
                       [("p1", "eth0"), ("n1", "vx0"), ("n1", "eth0"), ("p2", "eth0")], ipv6)


def _ipvs(context: BuildContext, ipv6: bool) -> Built:
    """IPVS NAT on the director: per family one TCP and one UDP service per benchmark
    port of that family on its VIP, masquerading to the real server's address."""
    lab = context.lab(topologies.ipvs(ipv6))
    interfaces = [("c", "eth0"), ("d", "c0"), ("d", "s0"), ("r", "eth0")]
    plan = [("ipv4", topologies.IPVS_VIP, DEFAULT_PORTS)]
    if ipv6:
        plan.append(("ipv6", topologies.IPVS_VIP6, DEFAULT_PORTS_V6))
    built, services = {}, []
    for family, vip, ports in plan:
        real = family_address(lab, "r", "eth0", family)
        services.append((vip, real, sorted(set(ports.values()))))
        built[family] = lab_mode("ipvs", context, lab, "c", "r", real, interfaces,
                                 target=vip, family=family, vip=vip, forwarding="masq")
    program_ipvs(lab.netns("d"), services)
    return built


def ipvs_requests(services: Sequence[tuple[str, str, Sequence[int]]]) -> list[Any]:
    """dcnet's IPVS genl requests for (VIP, real server, ports) triples: per port a TCP
    and a UDP service (scheduler rr; IPv6 with prefix 128) with the real server behind
    it by masquerading on the same port."""
    from dcnet.lvs.genl import CMD_NEW_DEST, CMD_NEW_SERVICE, Request, WireDest, WireService

    requests = []
    for vip, real, ports in services:
        family = socket.AF_INET6 if ":" in vip else socket.AF_INET
        netmask = 128 if family == socket.AF_INET6 else 0xFFFFFFFF
        for port in ports:
            for protocol in (socket.IPPROTO_TCP, socket.IPPROTO_UDP):
                service = WireService(family, protocol, vip, port, sched="rr",
                                      netmask=netmask)
                requests += [Request(CMD_NEW_SERVICE, service),
                             Request(CMD_NEW_DEST, service,
                                     WireDest(family, real, port, fwd=IPVS_MASQ, weight=1))]
    return requests


def program_ipvs(namespace: str, services: Sequence[tuple[str, str, Sequence[int]]]) -> None:
    """Write :func:`ipvs_requests` into the IPVS table of ``namespace`` (the director)."""
    from dcnet.lvs.ipvs import KernelIPVS

    requests = ipvs_requests(services)
    table = KernelIPVS(namespace)
    try:
        errors = table.execute(requests)
    finally:
        table.close()
    failed = [(request, code) for request, code in zip(requests, errors, strict=True) if code]
    if failed:
        request, code = failed[0]
        raise OSError(code, f"IPVS refused {len(failed)} of {len(requests)} requests, first "
                            f"{request.service.addr} port {request.service.port}: "
                            f"{os.strerror(abs(code))}")
