"""The catalogue of network modes netbench knows: names, titles and what each path crosses.

Pure data, no I/O: the definition schema checks mode names against it and the report
prints the descriptions. ``ipv6_reason`` says why a mode is not measured over IPv6 (empty:
it is); such a mode is recorded ``skipped`` for IPv6 with that reason, never failed.
How each mode is built lives in :mod:`dcnet.netbench.modes`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModeInfo:
    """One mode: its name in definitions, a short title and the path a packet takes."""

    name: str
    title: str
    path: str
    cross_node: bool = False
    ipv6_reason: str = ""

    @property
    def ipv6(self) -> bool:
        return not self.ipv6_reason


MODES: tuple[ModeInfo, ...] = (
    ModeInfo("loopback", "root-namespace loopback (baseline)",
             "127.0.0.1 in the root namespace: no device but lo"),
    ModeInfo("veth", "direct veth pair (baseline)",
             "one veth pair between two namespaces"),
    ModeInfo("bridge", "bridge + veth (one node)",
             "pod veth -> node bridge -> pod veth"),
    ModeInfo("macvlan", "MACVLAN bridge mode (one node)",
             "macvlan sibling -> macvlan sibling on the same parent (no wire crossed)"),
    ModeInfo("host-gw", "host-gw routing (two nodes)",
             "pod veth -> node bridge -> route via the other node -> underlay switch -> "
             "node -> bridge -> pod",
             cross_node=True),
    ModeInfo("vxlan", "VXLAN overlay (two nodes)",
             "pod -> bridge -> vxlan encap (UDP 4789) -> underlay switch -> decap -> "
             "bridge -> pod; pod MTU 1450", cross_node=True),
    ModeInfo("cni-dcnet-host-gw", "dcnet CNI plugin, host-gw mode",
             "pods made by the installed dcnet binary, host-gw routes by dcnet-agent; "
             "same underlay as host-gw",
             cross_node=True),
    ModeInfo("cni-dcnet-macvlan", "dcnet CNI plugin, MACVLAN mode",
             "pods made by the dcnet binary in MACVLAN mode (dcnet-agent, DHCP from "
             "dnsmasq on the underlay, IPv6 by SLAAC from its router advertisements); "
             "macvlan -> node uplink -> switch -> macvlan",
             cross_node=True),
    ModeInfo("cni-ref-bridge", "reference CNI bridge + host-local",
             "pods made by /usr/lib/cni/bridge with host-local, node routes as host-gw",
             cross_node=True),
    ModeInfo("cni-ref-macvlan", "reference CNI macvlan + host-local",
             "pods made by /usr/lib/cni/macvlan (bridge mode) on each node's uplink; "
             "macvlan -> node uplink -> switch -> macvlan",
             cross_node=True),
    ModeInfo("ipvs", "IPVS NAT path (client -> VIP -> real server)",
             "client -> director (IPVS masquerading) -> real server; needs kernel IPVS"),
    ModeInfo("nft-lb", "nftables NAT path (client -> VIP -> real server)",
             "client -> director (dcnet's nft target: DNAT, wrr) -> real server; "
             "replies back through the director"),
)

BY_NAME: dict[str, ModeInfo] = {mode.name: mode for mode in MODES}
MODE_NAMES: frozenset[str] = frozenset(BY_NAME)


def info(name: str) -> ModeInfo:
    """The catalogue entry of ``name`` (KeyError for unknown names)."""
    return BY_NAME[name]
