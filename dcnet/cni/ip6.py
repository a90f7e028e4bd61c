"""Tiny IPv6 helpers on integers, the twin of ``ip4`` for dual-stack host-gw.

It owns parsing ``x:y::z`` and ``x:y::/len`` into integers (with ``inet_pton``, so the ADD
path need not import ``ipaddress``), formatting them back in the canonical compressed
form, and the subnet computations the plugin and its allocator need, with the same names
as ``ip4`` so callers can take either module as an address family. ``broadcast`` is the
last address of a prefix (IPv6 has no broadcast; the allocator only needs the end).
Errors are ValueError. ``family_of`` picks ``ip4`` or this module for a text.
"""

from __future__ import annotations

import sys
from _socket import AF_INET6, inet_ntop, inet_pton

ModuleType = type(sys)  # types.ModuleType without importing types

BITS = 32 * 4
ALL_ONES = (1 << BITS) - 1
VERSION = 6


def parse_ip(text: str) -> int:
    """'fd00::1' -> int; rejects IPv4, zone ids and anything inet_pton refuses."""
    if not isinstance(text, str) or ":" not in text or "%" in text:
        raise ValueError(f"invalid IPv6 address {text!r}")
    try:
        return int.from_bytes(inet_pton(AF_INET6, text), "big")
    except OSError:
        raise ValueError(f"invalid IPv6 address {text!r}") from None


def fmt_ip(value: int) -> str:
    return inet_ntop(AF_INET6, value.to_bytes(16, "big"))


def ip_bytes(value: int) -> bytes:
    return value.to_bytes(16, "big")


def parse_cidr(text: str, strict: bool = False) -> tuple[int, int]:
    """'fd00:10::/48' -> (address int, prefix length); strict: host bits must be zero."""
    if not isinstance(text, str) or text.count("/") != 1:
        raise ValueError(f"invalid IPv6 CIDR {text!r} (expected x:y::/len)")
    addr, _, plen_text = text.partition("/")
    if not plen_text.isdigit() or not 0 <= int(plen_text) <= BITS:
        raise ValueError(f"invalid IPv6 prefix length in {text!r} (0..128)")
    address, plen = parse_ip(addr), int(plen_text)
    if strict and address & ~netmask(plen) & ALL_ONES:
        raise ValueError(f"{text!r} has host bits set "
                         f"(network is {fmt_cidr(network(address, plen), plen)})")
    return address, plen


def fmt_cidr(address: int, plen: int) -> str:
    return f"{fmt_ip(address)}/{plen}"


def netmask(plen: int) -> int:
    return (ALL_ONES << (BITS - plen)) & ALL_ONES


def network(address: int, plen: int) -> int:
    return address & netmask(plen)


def broadcast(address: int, plen: int) -> int:
    """The last address of the prefix."""
    return network(address, plen) | (~netmask(plen) & ALL_ONES)


def contains(net: int, plen: int, address: int) -> bool:
    return network(address, plen) == net


def family_of(text: str) -> ModuleType:
    """``ip6`` for a text with a colon (an IPv6 address or CIDR), else ``ip4``."""
    from dcnet.cni import ip4

    return sys.modules[__name__] if ":" in text else ip4
