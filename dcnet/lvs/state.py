"""The LVS back end's state vocabulary: kinds, keys, attributes (pure).

Kinds, in apply order (deletes run in reverse)::

    sysctl  (name,)                       {value}
    link    (ifname,)                     {state}
    route   (table, dst)                  {gateway, dev}
    rule    (src,) | ("other", ...)       {table, priority}
    vip     (address,)                    {prefixlen}
    service (protocol, vip, port)         {scheduler, persistence[, flags]}
    dest    (protocol, vip, port, rip, rport)  {forward, weight[, u_thresh, l_thresh]}

Keys are normalized (addresses as ``ipaddress`` prints them, protocol names) so a kernel
read and a model compare equal when they mean the same. Attributes that are zero and
that the model never sets (scheduler flags, thresholds) are left out unless non-zero.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable, Mapping

from dcnet.lvs.ipvs import (
    FLAG_HASHED,
    FLAG_PERSISTENT,
    FORWARD_CODES,
    FORWARD_NAMES,
    PROTOCOL_NAMES,
    PROTOCOLS,
    WireDest,
    WireService,
)
from dcnet.lvs.layout import ServiceLayout, effective_servers
from dcnet.model.types import Forwarding

KIND_ORDER = ("sysctl", "link", "route", "rule", "vip", "service", "dest")
IPVS_KINDS = ("service", "dest")
SYSCTLS = {
    "net.ipv4.ip_forward": "1",                   # NAT replies pass through the director
    "net.ipv4.vs.snat_reroute": "1",              # NAT replies follow the carrier rules
    "net.ipv4.vs.expire_nodest_conn": "1",        # drop conns of deleted real servers
    "net.ipv4.vs.expire_quiescent_template": "1",  # persistence ends at weight 0 (drain)
    "net.ipv4.vs.conn_reuse_mode": "1",
}

Key = tuple
StateDict = dict[tuple[str, Key], dict]


def family_of(address: str) -> int:
    return socket.AF_INET6 if ":" in address else socket.AF_INET


def host_bits(address: str) -> int:
    return 128 if ":" in address else 32


def norm(address: str) -> str:
    return str(ipaddress.ip_address(address))


# ---------------------------------------------------------------- desired (from model)


def desired_ipvs(layouts: Iterable[ServiceLayout],
                 registry: Mapping[str, Mapping[str, dict]] | None = None) -> StateDict:
    """Services and dests for the layouts, with the dynamic registry merged in."""
    registry = registry or {}
    out: StateDict = {}
    shared: dict[tuple, dict] = {}      # one attrs dict per (forward, weight): never mutated
    for layout in layouts:
        entries = registry.get(layout.name)
        servers = effective_servers(layout, dict(entries)) if entries else layout.servers
        for _carrier, vip in layout.vips:
            for port in layout.ports:
                proto, number, forward, mapped = (port.protocol, port.port, port.forward,
                                                  port.backend_port)
                out[("service", (proto, vip, number))] = {"scheduler": port.scheduler,
                                                          "persistence": port.persistence}
                for s in servers:
                    if forward != "tun" and (":" in s.address) != (":" in vip):
                        continue            # dual stack: NAT/DR pair a VIP with its family
                    rport = s.port if s.port is not None else mapped
                    attrs = shared.get((forward, s.weight))
                    if attrs is None:
                        attrs = shared[(forward, s.weight)] = {"forward": forward,
                                                               "weight": s.weight}
                    out[("dest", (proto, vip, number, s.address, rport))] = attrs
    return out


def desired_routing(model) -> StateDict:
    """elbctl's interface, the carrier tables' default routes (one per family the line
    has a gateway for), a rule and an address per VIP (IPv4 and IPv6 alike)."""
    lvs = model.lvs
    out: StateDict = {("link", (lvs.vip_interface,)): {"state": "up"}}
    for carrier in model.carriers:
        for gateway in carrier.gateways():       # dual-stack lines: one per family
            dst = "0.0.0.0/0" if gateway.version == 4 else "::/0"
            out[("route", (carrier.table, dst))] = {"gateway": str(gateway),
                                                    "dev": carrier.uplink}
    for service in model.services:
        for name, vip in service.vips:
            table = model.carrier(name).table
            out[("rule", (str(vip),))] = {"table": table, "priority": lvs.rule_priority_min}
            out[("vip", (str(vip),))] = {"prefixlen": host_bits(str(vip))}
    return out


# dest attributes the bulk read (/proc/net/ip_vs) shows; a service whose desired dests
# carry any other (thresholds) has its dests read exactly, by generic netlink
BULK_READ_DEST_ATTRS = frozenset({"forward", "weight"})


def exact_read_services(desired: StateDict) -> set[Key]:
    """Service keys whose desired dests set an attribute the bulk read cannot show."""
    superset = BULK_READ_DEST_ATTRS.issuperset
    return {key[:3] for (kind, key), attrs in desired.items()
            if kind == "dest" and not superset(attrs)}


IPV6_FORWARDING = "net.ipv6.conf.all.forwarding"   # IPv6 NAT replies pass the director


def needs_ipv6_forwarding(model) -> bool:
    """Whether ``model`` has an IPv6 VIP on a NAT port (only then is IPv6 forwarding
    turned on: it also makes the director ignore router advertisements)."""
    return any(vip.version == 6 and any(p.forward is Forwarding.NAT for p in s.ports)
               for s in model.services for _, vip in s.vips)


def managed_sysctls(model=None) -> dict[str, str]:
    """The sysctls elbctl sets for ``model`` (name -> value)."""
    out = dict(SYSCTLS)
    if model is not None and needs_ipv6_forwarding(model):
        out[IPV6_FORWARDING] = "1"
    return out


def desired_sysctls(model=None) -> StateDict:
    return {("sysctl", (name,)): {"value": value}
            for name, value in managed_sysctls(model).items()}


# ---------------------------------------------------------------- kernel <-> state


def observed_service(ws: WireService) -> tuple[Key, dict] | None:
    """The key and attributes of a kernel service; None for fwmark services."""
    if ws.fwmark or ws.protocol not in PROTOCOL_NAMES:
        return None
    addr = norm(ws.addr) if ":" in ws.addr else ws.addr      # inet_ntop's IPv4 is canonical
    key = (PROTOCOL_NAMES[ws.protocol], addr, ws.port)
    attrs: dict = {"scheduler": ws.sched,
                   "persistence": ws.timeout if ws.flags & FLAG_PERSISTENT else 0}
    extra = ws.flags & ~(FLAG_PERSISTENT | FLAG_HASHED)
    if extra:
        attrs["flags"] = extra
    return key, attrs


def observed_dest(skey: Key, wd: WireDest) -> tuple[Key, dict]:
    return observed_row(skey, (wd.family, wd.addr, wd.port, wd.fwd, wd.weight, wd.u_thresh,
                               wd.l_thresh))


def observed_row(skey: Key, row: tuple) -> tuple[Key, dict]:
    """Key and attributes of a dest row (WireDest field order); the kernel prints IPv4
    addresses canonically already, IPv6 ones are normalized."""
    _family, addr, port, fwd, weight, u_thresh, l_thresh = row[:7]
    attrs: dict = {"forward": FORWARD_NAMES.get(fwd, str(fwd)), "weight": weight}
    if u_thresh or l_thresh:
        attrs["u_thresh"], attrs["l_thresh"] = u_thresh, l_thresh
    return (*skey, norm(addr) if ":" in addr else addr, port), attrs


def wire_service(key: Key, attrs: Mapping | None = None) -> WireService:
    protocol, vip, port = key
    attrs = attrs or {}
    persistence = attrs.get("persistence", 0)
    family = family_of(vip)
    return WireService(
        family=family, protocol=PROTOCOLS[protocol], addr=vip, port=port,
        sched=attrs.get("scheduler", "wlc"),
        flags=(FLAG_PERSISTENT if persistence else 0) | attrs.get("flags", 0),
        timeout=persistence, netmask=0xFFFFFFFF if family == socket.AF_INET else 128)


def wire_dest(key: Key, attrs: Mapping | None = None) -> WireDest:
    rip, rport = key[3], key[4]
    attrs = attrs or {}
    return WireDest(family=family_of(rip), addr=rip, port=rport,
                    fwd=FORWARD_CODES.get(attrs.get("forward", "dr"), 3),
                    weight=attrs.get("weight", 1), u_thresh=attrs.get("u_thresh", 0),
                    l_thresh=attrs.get("l_thresh", 0))
