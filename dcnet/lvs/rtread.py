"""The LVS target's routing objects read without pyroute2 (for its drift check).

:meth:`dcnet.lvs.routing.Routing.read` reads the VIP interface and its addresses, the
policy rules in elbctl's priority range and the routes of its protocol through
pyroute2, whose import alone weighs on a short-lived drift-check child and whose dumps
return every message parsed at once (a rule and an address per VIP: 20,000 messages at
10,000 services). :func:`read` reads the same objects over one ``NETLINK_ROUTE`` socket
(:class:`dcnet.cni.rtnl.Netlink`, a stdlib client), keeping only each reply's raw bytes
until its few fields are parsed, and returns the same state: the keys and attributes
``Routing.read`` puts in :attr:`RoutingRead.state` (not its notes nor the rule specs,
which only a plan's apply needs), with equal attributes shared (one dict for every
rule of one table and priority, one for every VIP address of one prefix length: never
change them in place). Keep the two in step: a netns test compares them.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterable
from struct import Struct

from dcnet.cni.rtnl import (
    IFA_ADDRESS,
    NETLINK_ROUTE,
    NLM_F_DUMP,
    RTA_DST,
    RTA_GATEWAY,
    RTA_OIF,
    RTA_TABLE,
    RTM_GETADDR,
    RTM_GETROUTE,
    RTM_NEWADDR,
    RTM_NEWROUTE,
    Netlink,
    _cstr,
    _u32,
    parse_attrs,
)
from dcnet.lvs.routing import FR_ACT_TO_TBL
from dcnet.lvs.state import host_bits, norm

RTM_NEWRULE, RTM_GETRULE = 32, 34
FRA_DST, FRA_SRC, FRA_IIFNAME, FRA_PRIORITY, FRA_FWMARK, FRA_TABLE, FRA_OIFNAME = (
    1, 2, 3, 6, 10, 15, 17)
_SELECTORS = ((FRA_SRC, "src"), (FRA_DST, "dst"), (FRA_FWMARK, "fwmark"),
              (FRA_IIFNAME, "iifname"), (FRA_OIFNAME, "oifname"))
_IFADDRMSG = Struct("=BBBBI")
_RTMSG = Struct("=BBBBBBBBI")       # also fib_rule_hdr: family dst_len src_len tos table


def _address(value: bytes) -> str:
    return socket.inet_ntop(socket.AF_INET if len(value) == 4 else socket.AF_INET6, value)


def read(netns_path: str | None, settings, sysctls: Iterable[str] = (),
         sysctl_get: Callable[[str], str | None] | None = None) -> dict:
    """The state ``Routing.read`` returns (``settings``: the model's LVSSettings), the
    sysctls named read through ``sysctl_get``."""
    if netns_path is None:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
    else:
        from dcnet.sysio import netns

        sock = netns.socket_in(netns_path, socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
    out: dict = {}
    with Netlink(sock) as nl:
        links = {link["index"]: (link["name"], link["flags"]) for link in nl.links()}
        _link_and_vips(nl, links, settings.vip_interface, out)
        _rules(nl, settings.rule_priority_min, settings.rule_priority_max, out)
        _routes(nl, settings.route_protocol, links, out)
    for name in sysctls:
        value = sysctl_get(name)
        if value is not None:
            out[("sysctl", (name,))] = {"value": value}
    shared: dict = {}
    return {ident: shared.setdefault(tuple(attrs.items()), attrs)
            for ident, attrs in out.items()}


def _link_and_vips(nl: Netlink, links: dict, name: str, out: dict) -> None:
    found = [index for index, (ifname, _flags) in links.items() if ifname == name]
    if not found:
        return
    index = found[0]
    out[("link", (name,))] = {"state": "up" if links[index][1] & 1 else "down"}
    for kind, body in nl.request(RTM_GETADDR, NLM_F_DUMP, _IFADDRMSG.pack(0, 0, 0, 0, 0)):
        if kind != RTM_NEWADDR:
            continue
        _family, prefixlen, _flags, scope, ifindex = _IFADDRMSG.unpack_from(body)
        if ifindex != index or scope != 0:      # link-local and host-scope are not VIPs
            continue
        value = parse_attrs(body, _IFADDRMSG.size).get(IFA_ADDRESS)
        if value is not None:
            out[("vip", (norm(_address(value)),))] = {"prefixlen": prefixlen}


def _rules(nl: Netlink, low: int, high: int, out: dict) -> None:
    seen: set = set()
    for kind, body in nl.request(RTM_GETRULE, NLM_F_DUMP, _RTMSG.pack(0, 0, 0, 0, 0, 0, 0,
                                                                       0, 0)):
        if kind != RTM_NEWRULE:
            continue
        _family, dst_len, src_len, _tos, table, _r1, _r2, action, _flags = \
            _RTMSG.unpack_from(body)
        attrs = parse_attrs(body, _RTMSG.size)
        priority = _u32(attrs.get(FRA_PRIORITY)) or 0
        if not low <= priority <= high:
            continue
        table = _u32(attrs.get(FRA_TABLE)) or table
        src = _address(attrs[FRA_SRC]) if FRA_SRC in attrs else None
        simple = (src and src_len == host_bits(src) and action == FR_ACT_TO_TBL
                  and not dst_len and not _cstr(attrs.get(FRA_IIFNAME))
                  and not _cstr(attrs.get(FRA_OIFNAME)) and not _u32(attrs.get(FRA_FWMARK)))
        if simple:
            key: tuple = (norm(src),)
        else:
            selectors = [f"{label} {_selector(number, attrs[number])}"
                         for number, label in _SELECTORS if number in attrs]
            key = ("other", priority, " ".join(selectors) or "all")
        while key in seen:
            key = (*key[:3], f"#{len(seen)}")
        seen.add(key)
        out[("rule", key)] = {"table": table, "priority": priority}


def _selector(number: int, value: bytes):
    if number in (FRA_SRC, FRA_DST):
        return _address(value)
    return _u32(value) if number == FRA_FWMARK else _cstr(value)


def _routes(nl: Netlink, proto: int, links: dict, out: dict) -> None:
    for family in (socket.AF_INET, socket.AF_INET6):
        body_in = _RTMSG.pack(family, 0, 0, 0, 0, 0, 0, 0, 0)
        for kind, body in nl.request(RTM_GETROUTE, NLM_F_DUMP, body_in):
            if kind != RTM_NEWROUTE:
                continue
            got, dst_len, _src_len, _tos, table, protocol, _scope, _type, _flags = \
                _RTMSG.unpack_from(body)
            if protocol != proto or got != family:
                continue
            attrs = parse_attrs(body, _RTMSG.size)
            table = _u32(attrs.get(RTA_TABLE)) or table
            dst = f"{_address(attrs[RTA_DST])}/{dst_len}" if RTA_DST in attrs else (
                "0.0.0.0/0" if family == socket.AF_INET else "::/0")
            gateway = _address(attrs[RTA_GATEWAY]) if RTA_GATEWAY in attrs else None
            oif = _u32(attrs.get(RTA_OIF))
            dev = links.get(oif, (None, 0))[0] if oif else None
            out[("route", (table, dst))] = {"gateway": gateway, "dev": dev}
