"""Building each benchmark mode: a lab from its topology plus what the builder lacks.

``build(name, context)`` returns a :class:`~dcnet.netbench.live.LiveMode` whose teardown
is registered on ``context.stack`` (an ExitStack the engine unwinds on success, error,
Ctrl-C and SIGTERM). Labs are entered on that stack, so their namespaces, and with them
the macvlan, vxlan and CNI devices created inside, disappear at teardown. ``unavailable``
says why a mode cannot run here (no IPVS in this kernel, no MACVLAN mode in this build of
the dcnet CNI plugin) without building anything.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

from dcnet.lab.builder import Lab
from dcnet.netbench import cnimodes, topologies
from dcnet.netbench.buildcontext import DEFAULT_PORTS, BuildContext, lab_mode
from dcnet.netbench.live import LiveMode, free_loopback_port, root_starter

__all__ = ["DEFAULT_PORTS", "BuildContext", "build", "lab_mode", "unavailable"]

IPVS_MASQ = 0  # IP_VS_CONN_F_MASQ


def unavailable(name: str) -> str | None:
    """Why mode ``name`` cannot run on this machine, or None when it can."""
    if name == "ipvs":
        from dcnet.lab.kernel_lab import IPVS_MODULE, host_has_modules

        if not host_has_modules([IPVS_MODULE]):
            return ("this kernel has no IPVS (ip_vs cannot be loaded); run netbench in the "
                    "kernel lab or on a kernel with IPVS")
    if name.startswith("cni-"):
        return cnimodes.unavailable(name)
    return None


def build(name: str, context: BuildContext) -> LiveMode:
    builders: dict[str, Callable[[BuildContext], LiveMode]] = {
        "loopback": _loopback, "veth": _veth, "bridge": _bridge, "macvlan": _macvlan,
        "host-gw": _host_gw, "vxlan": _vxlan, "ipvs": _ipvs,
    }
    if name in builders:
        return builders[name](context)
    return cnimodes.build(name, context)


def _loopback(context: BuildContext) -> LiveMode:
    ports = {key: free_loopback_port() for key in DEFAULT_PORTS}
    return LiveMode(name="loopback", client_ns=None, server_ns=None, bind_address="127.0.0.1",
                    target="127.0.0.1", ports=ports, interfaces=[(None, "lo")],
                    starter=root_starter(context.stack), log_dir=context.log_dir)


def _veth(context: BuildContext) -> LiveMode:
    lab = context.lab(topologies.veth())
    return lab_mode("veth", context, lab, "c", "s", lab.address("s", "eth0"),
                    [("c", "eth0"), ("s", "eth0")])


def _bridge(context: BuildContext) -> LiveMode:
    lab = context.lab(topologies.bridge())
    return lab_mode("bridge", context, lab, "c", "s", lab.address("s", "eth0"),
                    [("c", "eth0"), ("node", "br0"), ("s", "eth0")])


def _index(ipr: Any, ifname: str) -> int:
    found = ipr.link_lookup(ifname=ifname)
    if not found:
        raise RuntimeError(f"interface {ifname!r} not found")
    return found[0]


def move_and_configure(lab: Lab, node: str, temporary: str, host: str, ifname: str,
                       address: str | None) -> None:
    """Move ``temporary`` from ``node`` into ``host`` as ``ifname``, address it, bring it up."""
    node_ipr = lab.iproute(node)
    node_ipr.link("set", index=_index(node_ipr, temporary), net_ns_fd=lab.netns(host))
    ipr = lab.iproute(host)
    index = _index(ipr, temporary)
    ipr.link("set", index=index, ifname=ifname)
    if address:
        ip, prefix = address.split("/")
        ipr.addr("add", index=index, address=ip, prefixlen=int(prefix))
    ipr.link("set", index=index, state="up")


def _macvlan(context: BuildContext) -> LiveMode:
    lab = context.lab(topologies.macvlan())
    ipr = lab.iproute("node")
    parent = _index(ipr, "eth0")
    for pod, address in topologies.MACVLAN_PODS:
        temporary = f"mv-{pod}"
        ipr.link("add", ifname=temporary, kind="macvlan", link=parent, macvlan_mode="bridge")
        move_and_configure(lab, "node", temporary, pod, "eth0", address)
    server_address = topologies.MACVLAN_PODS[1][1].split("/")[0]
    return lab_mode("macvlan", context, lab, "c", "s", server_address,
                    [("c", "eth0"), ("node", "eth0"), ("s", "eth0")])


def _host_gw(context: BuildContext) -> LiveMode:
    lab = context.lab(topologies.host_gw())
    return lab_mode("host-gw", context, lab, "p1", "p2", lab.address("p2", "eth0"),
                    [("p1", "eth0"), ("n1", "eth0"), ("n2", "eth0"), ("p2", "eth0")])


def _vxlan(context: BuildContext) -> LiveMode:
    lab = context.lab(topologies.vxlan())
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
    return lab_mode("vxlan", context, lab, "p1", "p2", lab.address("p2", "eth0"),
                    [("p1", "eth0"), ("n1", "vx0"), ("n1", "eth0"), ("p2", "eth0")])


def _ipvs(context: BuildContext) -> LiveMode:
    lab = context.lab(topologies.ipvs())
    real = lab.address("r", "eth0")
    lab.call("d", _program_ipvs, topologies.IPVS_VIP, real, sorted(set(DEFAULT_PORTS.values())))
    return lab_mode("ipvs", context, lab, "c", "r", real,
                    [("c", "eth0"), ("d", "c0"), ("d", "s0"), ("r", "eth0")],
                    target=topologies.IPVS_VIP, vip=topologies.IPVS_VIP, forwarding="masq")


def _program_ipvs(vip: str, real: str, ports: list[int]) -> None:
    """Inside the director: one TCP and one UDP virtual service per port, NAT to ``real``."""
    from pyroute2 import IPVS, IPVSDest, IPVSService

    with IPVS() as ipvs:
        for port in ports:
            for protocol in (socket.IPPROTO_TCP, socket.IPPROTO_UDP):
                service = IPVSService(addr=vip, port=port, protocol=protocol, sched_name="rr")
                ipvs.service("add", service=service)
                ipvs.dest("add", service=service,
                          dest=IPVSDest(addr=real, port=port, weight=1, fwd_method=IPVS_MASQ))
