"""Tiny IPv4 helpers on integers, so the ADD path need not import ``ipaddress``.

It owns parsing ``a.b.c.d`` and ``a.b.c.d/len`` into integers, formatting them back, and
the few subnet computations the plugin and its allocator need. Errors are ValueError.
"""

from __future__ import annotations

from _socket import inet_aton, inet_ntoa


def parse_ip(text: str) -> int:
    """'10.1.2.3' -> int; rejects anything but four dotted decimal octets."""
    if not isinstance(text, str):
        raise ValueError(f"invalid IPv4 address {text!r}")
    if ":" in text:
        raise ValueError(f"{text!r} is IPv6: IPv6 is not supported here")
    parts = text.split(".")
    if len(parts) != 4 or not all(p.isdigit() and len(p) <= 3 and int(p) < 256
                                  and (p == "0" or not p.startswith("0")) for p in parts):
        raise ValueError(f"invalid IPv4 address {text!r}")
    return int.from_bytes(inet_aton(text), "big")


def fmt_ip(value: int) -> str:
    return inet_ntoa(value.to_bytes(4, "big"))


def ip_bytes(value: int) -> bytes:
    return value.to_bytes(4, "big")


def parse_cidr(text: str, strict: bool = False) -> tuple[int, int]:
    """'10.1.2.3/24' -> (address int, prefix length); strict: host bits must be zero."""
    if not isinstance(text, str) or text.count("/") != 1:
        raise ValueError(f"invalid IPv4 CIDR {text!r} (expected a.b.c.d/len)")
    addr, _, plen_text = text.partition("/")
    if ":" in addr:
        raise ValueError(f"{text!r} is IPv6: IPv6 is not supported here")
    if not plen_text.isdigit() or not 0 <= int(plen_text) <= 32:
        raise ValueError(f"invalid prefix length in {text!r}")
    address, plen = parse_ip(addr), int(plen_text)
    if strict and address & ~netmask(plen) & 0xFFFFFFFF:
        raise ValueError(f"{text!r} has host bits set "
                         f"(network is {fmt_cidr(network(address, plen), plen)})")
    return address, plen


def fmt_cidr(address: int, plen: int) -> str:
    return f"{fmt_ip(address)}/{plen}"


def netmask(plen: int) -> int:
    return (0xFFFFFFFF << (32 - plen)) & 0xFFFFFFFF


def network(address: int, plen: int) -> int:
    return address & netmask(plen)


def broadcast(address: int, plen: int) -> int:
    return network(address, plen) | (~netmask(plen) & 0xFFFFFFFF)


def contains(net: int, plen: int, address: int) -> bool:
    return network(address, plen) == net


def mac_from_ip(prefix: bytes, address: int) -> str:
    """A locally administered MAC: two prefix bytes then the four address bytes."""
    return ":".join(f"{b:02x}" for b in prefix + ip_bytes(address))
