"""MACVLAN IPv6: the ``ipv6`` setting, a pod's SLAAC address and the IPv6 netlink it needs.

``ipv6_settings`` parses and validates the macvlan network's ``ipv6`` field (``off``,
the default; ``slaac``; ``dhcpv6``: the address from a DHCPv6 server, the router from the
RA, ``dcnet.cni.dhcp6client``) and
``hostShim.address6``; it is pure and light (the plugin's ADD path calls it). The rest is
used by the node agent: ``pod_sysctls`` (what to write in the pod before its link comes
up: IPv6 on, router advertisements accepted even with forwarding, autoconf, the address
generation mode and, for ``stable-privacy``, a secret derived from the pod's identity),
``wait_slaac`` (bounded wait for a global address that finished DAD and the default
router the RA installed) and a few IPv6 rtnetlink calls on a ``dcnet.cni.rtnl.Netlink``
(address and route dumps, /128 routes and a no-DAD address for the host shim).
"""

from __future__ import annotations

import _socket
import time
from struct import Struct

from dcnet.cni.errors import INVALID_CONFIG, TRY_AGAIN_LATER, CniError
from dcnet.cni.rtnl import (
    NLM_F_CREATE,
    NLM_F_DUMP,
    NLM_F_REPLACE,
    RT_SCOPE_LINK,
    RT_SCOPE_UNIVERSE,
    RT_TABLE_MAIN,
    RTA_DST,
    RTA_GATEWAY,
    RTA_OIF,
    RTA_TABLE,
    RTM_DELADDR,
    RTM_DELROUTE,
    RTM_GETADDR,
    RTM_GETROUTE,
    RTM_NEWADDR,
    RTM_NEWROUTE,
    RTN_UNICAST,
    Netlink,
    attr,
    attr_u32,
    parse_attrs,
)

AF_INET6 = 10
MODES = ("off", "slaac", "dhcpv6")
ADDR_GEN_MODES = {"eui64": "0", "stable-privacy": "2"}
DEFAULT_TIMEOUT = 20
IFA_ADDRESS, IFA_LOCAL, IFA_FLAGS = 1, 2, 8
IFA_F_TEMPORARY, IFA_F_NODAD, IFA_F_DADFAILED = 0x01, 0x02, 0x08
IFA_F_DEPRECATED, IFA_F_TENTATIVE, IFA_F_PERMANENT = 0x20, 0x40, 0x80
RTPROT_BOOT = 3

_IFADDRMSG = Struct("=BBBBI")
_RTMSG = Struct("=BBBBBBBBI")
_U32 = Struct("=I")


class Ipv6Settings:
    """The validated IPv6 part of a macvlan config."""

    __slots__ = ("addr_gen_mode", "mode", "shim_address", "timeout")

    def __init__(self, mode: str = "off", timeout: int = DEFAULT_TIMEOUT,
                 addr_gen_mode: str = "eui64", shim_address: str | None = None):
        self.mode, self.timeout = mode, timeout
        self.addr_gen_mode, self.shim_address = addr_gen_mode, shim_address

    @property
    def enabled(self) -> bool:
        return self.mode != "off"


def _bad(field: str, problem: str) -> CniError:
    return CniError(INVALID_CONFIG, f"invalid network config: {field}: {problem}")


def ipv6_settings(raw: dict) -> Ipv6Settings:
    """The macvlan network's ``ipv6`` field: ``"off" | "slaac" | "dhcpv6"`` or ``{"mode": ...,
    "timeout": seconds, "addrGenMode": "eui64" | "stable-privacy"}``, and
    ``hostShim.address6``. CniError (code 7) naming the field."""
    value = raw.get("ipv6", "off")
    if isinstance(value, str):
        value = {"mode": value}
    if not isinstance(value, dict):
        raise _bad("ipv6", f"expected \"off\", \"slaac\", \"dhcpv6\" or an object, "
                   f"got {value!r}")
    unknown = sorted(set(value) - {"mode", "timeout", "addrGenMode"})
    if unknown:
        raise _bad(f"ipv6.{unknown[0]}", "unknown field (known: mode, timeout, addrGenMode)")
    mode = value.get("mode", "off")
    if mode not in MODES:
        raise _bad("ipv6.mode" if "mode" in value and isinstance(raw.get("ipv6"), dict)
                   else "ipv6", f"{mode!r} is not one of {list(MODES)}")
    timeout = value.get("timeout", DEFAULT_TIMEOUT)
    if isinstance(timeout, bool) or not isinstance(timeout, int) or not 1 <= timeout <= 3600:
        raise _bad("ipv6.timeout", f"expected an integer in 1..3600, got {timeout!r}")
    gen = value.get("addrGenMode", "eui64")
    if gen not in ADDR_GEN_MODES:
        raise _bad("ipv6.addrGenMode", f"{gen!r} is not one of {list(ADDR_GEN_MODES)}")
    shim = raw.get("hostShim")
    shim_address = None
    if isinstance(shim, dict) and "address6" in shim:
        shim_address = shim["address6"]
        if mode == "off":
            raise _bad("hostShim.address6", "IPv6 is off for this network (set ipv6)")
        try:
            parse_cidr6(shim_address)
        except ValueError as exc:
            raise _bad("hostShim.address6", str(exc)) from None
    return Ipv6Settings(mode, timeout, gen, shim_address)


# ---------------------------------------------------------------- addresses as text


def parse_cidr6(text: object) -> tuple[bytes, int]:
    """``"2001:db8::1/64"`` (or no prefix length: /128) -> (16 bytes, plen); ValueError."""
    if not isinstance(text, str):
        raise ValueError(f"expected an IPv6 address like '2001:db8::1/64', got {text!r}")
    address, _, plen_text = text.partition("/")
    try:
        packed = _socket.inet_pton(AF_INET6, address)
    except OSError:
        raise ValueError(f"{address!r} is not an IPv6 address") from None
    if not plen_text:
        return packed, 128
    if not plen_text.isdigit() or not 0 <= int(plen_text) <= 128:
        raise ValueError(f"invalid prefix length in {text!r} (0..128)")
    return packed, int(plen_text)


def fmt6(packed: bytes) -> str:
    return _socket.inet_ntop(AF_INET6, packed)


# ---------------------------------------------------------------- the pod's sysctls


def stable_secret(identity: str) -> str:
    """A per-pod IPv6 stable_secret (an address-shaped 128-bit value) from its identity,
    so stable-privacy gives a pod the same address in every incarnation."""
    import hashlib

    return fmt6(hashlib.sha256(f"dcnet-slaac {identity}".encode()).digest()[:16])


def pod_sysctls(ifname: str, settings: Ipv6Settings, identity: str) -> list[tuple[str, str]]:
    """(path, value) to write in the pod's namespace before ``ifname`` comes up."""
    base = f"/proc/sys/net/ipv6/conf/{ifname}/"
    autoconf = "1" if settings.mode == "slaac" else "0"  # dhcpv6: the address from DHCP
    out = [(base + "disable_ipv6", "0"), (base + "accept_ra", "2"),
           (base + "autoconf", autoconf), (base + "accept_dad", "1")]
    if settings.addr_gen_mode == "stable-privacy":
        out.append((base + "stable_secret", stable_secret(identity)))
    out.append((base + "addr_gen_mode", ADDR_GEN_MODES[settings.addr_gen_mode]))
    return out


# ---------------------------------------------------------------- IPv6 rtnetlink


def addresses6(nl: Netlink, index: int | None = None) -> list[dict]:
    """IPv6 addresses: {index, address (bytes), plen, scope, flags} (of ``index`` only when
    given)."""
    out = []
    body = _IFADDRMSG.pack(AF_INET6, 0, 0, 0, 0)
    for kind, reply in nl.request(RTM_GETADDR, NLM_F_DUMP, body):
        if kind != RTM_NEWADDR:
            continue
        family, plen, flags, scope, ifindex = _IFADDRMSG.unpack_from(reply)
        if family != AF_INET6 or (index is not None and ifindex != index):
            continue
        attrs = parse_attrs(reply, _IFADDRMSG.size)
        local = attrs.get(IFA_LOCAL) or attrs.get(IFA_ADDRESS)
        if IFA_FLAGS in attrs:
            flags = _U32.unpack_from(attrs[IFA_FLAGS])[0]
        if local:
            out.append({"index": ifindex, "address": local, "plen": plen, "scope": scope,
                        "flags": flags})
    return out


def usable_global(addresses: list[dict]) -> list[dict]:
    """Global addresses that finished DAD and are neither temporary nor deprecated."""
    bad = IFA_F_TENTATIVE | IFA_F_DADFAILED | IFA_F_TEMPORARY | IFA_F_DEPRECATED
    return [a for a in addresses if a["scope"] == RT_SCOPE_UNIVERSE and not a["flags"] & bad]


def routes6(nl: Netlink, table: int = RT_TABLE_MAIN) -> list[dict]:
    """IPv6 unicast routes of ``table``: {dst, plen, gateway, oif, protocol}."""
    out = []
    body = _RTMSG.pack(AF_INET6, 0, 0, 0, 0, 0, 0, 0, 0)
    for kind, reply in nl.request(RTM_GETROUTE, NLM_F_DUMP, body):
        if kind != RTM_NEWROUTE:
            continue
        family, plen, _, _, rtable, protocol, _, rtype, _ = _RTMSG.unpack_from(reply)
        attrs = parse_attrs(reply, _RTMSG.size)
        rtable = _U32.unpack_from(attrs[RTA_TABLE])[0] if RTA_TABLE in attrs else rtable
        if family != AF_INET6 or rtable != table or rtype != RTN_UNICAST:
            continue
        oif = attrs.get(RTA_OIF)
        out.append({"dst": attrs.get(RTA_DST, bytes(16)), "plen": plen,
                    "gateway": attrs.get(RTA_GATEWAY),
                    "oif": None if oif is None else _U32.unpack_from(oif)[0],
                    "protocol": protocol})
    return out


def default_router(nl: Netlink, index: int) -> bytes | None:
    """The gateway of the IPv6 default route on link ``index`` (the RA's router)."""
    for route in routes6(nl):
        if route["plen"] == 0 and route["oif"] == index and route["gateway"]:
            return route["gateway"]
    return None


def replace_route6(nl: Netlink, dst: bytes, plen: int, oif: int, gateway: bytes | None = None,
                   protocol: int = RTPROT_BOOT) -> None:
    scope = RT_SCOPE_UNIVERSE if gateway else RT_SCOPE_LINK
    body = _RTMSG.pack(AF_INET6, plen, 0, 0, RT_TABLE_MAIN, protocol, scope, RTN_UNICAST, 0)
    if plen:
        body += attr(RTA_DST, dst)
    if gateway:
        body += attr(RTA_GATEWAY, gateway)
    body += attr_u32(RTA_OIF, oif)
    nl.request(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_REPLACE, body)


def delete_route6(nl: Netlink, dst: bytes, plen: int, oif: int) -> bool:
    """Delete the IPv6 route to dst/plen on ``oif``; False when it was not there."""
    body = _RTMSG.pack(AF_INET6, plen, 0, 0, RT_TABLE_MAIN, 0, 255, 0, 0)
    if plen:
        body += attr(RTA_DST, dst)
    body += attr_u32(RTA_OIF, oif)
    try:
        nl.request(RTM_DELROUTE, 0, body)
    except OSError as exc:
        if exc.errno in (3, 19):  # ESRCH, ENODEV
            return False
        raise
    return True


def delete_address6(nl: Netlink, index: int, address: bytes, plen: int) -> bool:
    """Delete one IPv6 address; False when it was not there."""
    body = _IFADDRMSG.pack(AF_INET6, plen, 0, 0, index) + attr(IFA_LOCAL, address)
    try:
        nl.request(RTM_DELADDR, 0, body)
    except OSError as exc:
        if exc.errno in (99, 19):  # EADDRNOTAVAIL, ENODEV
            return False
        raise
    return True


def add_address6(nl: Netlink, index: int, address: bytes, plen: int) -> None:
    """Put an IPv6 address on link ``index`` without duplicate address detection."""
    body = _IFADDRMSG.pack(AF_INET6, plen, IFA_F_NODAD, RT_SCOPE_UNIVERSE, index)
    body += attr(IFA_LOCAL, address) + attr(IFA_ADDRESS, address)
    body += attr_u32(IFA_FLAGS, IFA_F_NODAD)
    nl.request(RTM_NEWADDR, NLM_F_CREATE | NLM_F_REPLACE, body)


# ---------------------------------------------------------------- waiting for SLAAC


def slaac_state(nl: Netlink, index: int) -> dict | None:
    """``{"address": "A/plen", "gateway": "fe80::..."}`` once the link has a usable global
    address and a default router; None before."""
    usable = usable_global(addresses6(nl, index))
    if not usable:
        return None
    gateway = default_router(nl, index)
    if gateway is None:
        return None
    first = usable[0]
    return {"address": f"{fmt6(first['address'])}/{first['plen']}", "gateway": fmt6(gateway)}


def wait_router(nl: Netlink, index: int, ifname: str, timeout: float,
                step: float = 0.05) -> str:
    """Wait (at most ``timeout`` s) for an IPv6 default route on ``index``; its router."""
    deadline = time.monotonic() + timeout
    while True:
        gateway = default_router(nl, index)
        if gateway is not None:
            return fmt6(gateway)
        if time.monotonic() > deadline:
            raise CniError(TRY_AGAIN_LATER, f"no IPv6 default router from a router "
                           f"advertisement on {ifname} within ipv6.timeout",
                           "is a router sending advertisements on that segment?")
        time.sleep(step)


def wait_slaac(nl: Netlink, index: int, ifname: str, timeout: float,
               step: float = 0.05) -> dict:
    """Wait (at most ``timeout`` s) for ``slaac_state``; CniError 11 naming the timeout."""
    deadline = time.monotonic() + timeout
    while True:
        state = slaac_state(nl, index)
        if state is not None:
            return state
        if time.monotonic() > deadline:
            have = addresses6(nl, index)
            why = ("no global address" if not any(a["scope"] == RT_SCOPE_UNIVERSE
                                                  for a in have)
                   else "the global address is still tentative or failed DAD"
                   if not usable_global(have) else "no default router")
            raise CniError(TRY_AGAIN_LATER, f"no IPv6 address from a router advertisement "
                           f"on {ifname} within ipv6.timeout ({timeout:g}s): {why}",
                           "is a router sending advertisements with an autonomous prefix "
                           "on that segment?")
        time.sleep(step)
