"""The nftables ruleset that copies chosen client->server packets at the director.

It owns the text of tables ``ip dcnet_mirror`` and ``ip6 dcnet_mirror``: in prerouting,
before conntrack, the packets of each chosen VIP:port whose session hash (``jhash ip
saddr . tcp sport``, ``ip6 saddr`` for IPv6 VIPs) falls below the sampled share are
duplicated by the kernel (``dup to ADDR device DEV``, an IPv6 ``to_address6`` for IPv6
VIPs) into the veth whose other end is in the mirror namespace (IPv6 neighbour
discovery on that veth is let through, the kernel needs it to reach the mirror
address). Packets arriving from that veth are dropped and counted, so a copy's side can
never answer production. Building the text is pure; :func:`apply` and :func:`remove`
run ``nft`` (in a namespace if given).
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass

from dcnet.sysio import proc

TABLE = "dcnet_mirror"


@dataclass(frozen=True)
class MirrorSpec:
    """What to copy: services as (VIP, port), share of sessions in percent (1..100),
    and where: the mirror address reached through ``device`` (``to_address`` IPv4, for
    IPv4 VIPs; ``to_address6`` IPv6, for IPv6 VIPs)."""

    services: tuple[tuple[str, int], ...]
    to_address: str | None
    device: str
    percent: int = 100
    to_address6: str | None = None

    def __post_init__(self) -> None:
        if not self.services:
            raise ValueError("at least one VIP:port to mirror")
        for vip, port in self.services:
            ipaddress.ip_address(vip)
            if not 0 < int(port) < 65536:
                raise ValueError(f"bad port {port}")
        if self.services_of(4):
            ipaddress.IPv4Address(self.to_address or "")
        elif self.to_address:
            ipaddress.IPv4Address(self.to_address)
        if self.services_of(6):
            if not self.to_address6:
                raise ValueError("IPv6 VIPs need an IPv6 mirror address (to_address6)")
            ipaddress.IPv6Address(self.to_address6)
        elif self.to_address6:
            ipaddress.IPv6Address(self.to_address6)
        if not 0 < self.percent <= 100:
            raise ValueError(f"percent must be in 1..100, not {self.percent}")
        if not self.device or any(c in self.device for c in ' "\n;'):
            raise ValueError(f"bad device name {self.device!r}")


    def services_of(self, version: int) -> list[tuple[str, int]]:
        return [(v, p) for v, p in self.services
                if ipaddress.ip_address(v).version == version]


def parse_service(text: str) -> tuple[str, int]:
    """``VIP:PORT`` or ``[VIP6]:PORT`` -> (VIP, port), validated."""
    vip, port = split_address(text)
    return vip, port


def split_address(text: str) -> tuple[str, int]:
    """``IP:PORT``, ``[IPv6]:PORT`` (or ``IPv6:PORT``) -> (IP, port); ValueError if not."""
    host, _, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"bad address {text!r} (IP:PORT or [IPv6]:PORT)") from None
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"bad address {text!r} (IP:PORT or [IPv6]:PORT)")
    return host, int(port)


def _table(family: str, spec: MirrorSpec, services: list[tuple[str, int]],
           to_address: str | None) -> list[str]:
    saddr = "ip saddr" if family == "ip" else "ip6 saddr"
    daddr = "ip daddr" if family == "ip" else "ip6 daddr"
    sample = "" if spec.percent >= 100 else \
        f"jhash {saddr} . tcp sport mod 100 seed 0x0 < {spec.percent} "
    lines = [f"table {family} {TABLE}", f"delete table {family} {TABLE}"]
    if family == "ip6" and not services:
        return lines            # a previous IPv6 table goes; none is made
    lines += [f"table {family} {TABLE} {{",
              "  counter copied { }",
              "  counter from_mirror { }",
              "  chain copy {",
              "    type filter hook prerouting priority -300; policy accept;"]
    if family == "ip6":         # neighbour discovery of the mirror address (never forwarded)
        lines.append(f'    iifname "{spec.device}" icmpv6 type '
                     "{ nd-neighbor-solicit, nd-neighbor-advert } accept")
    lines.append(f'    iifname "{spec.device}" counter name from_mirror drop')
    for vip, port in services:
        lines.append(f"    {daddr} {vip} tcp dport {port} {sample}"
                     f'counter name copied dup to {to_address} device "{spec.device}"')
    return [*lines, "  }", "}"]


def ruleset(spec: MirrorSpec) -> str:
    """The nft script (replaces both tables atomically; the ip6 table only exists when
    an IPv6 VIP is mirrored)."""
    lines = [*_table("ip", spec, spec.services_of(4), spec.to_address),
             *_table("ip6", spec, spec.services_of(6), spec.to_address6)]
    return "\n".join(lines) + "\n"


def apply(spec: MirrorSpec, netns: str | None = None) -> None:
    """Install (or replace) the mirror table."""
    proc.run(["nft", "-f", "-"], netns=netns, input=ruleset(spec))


def remove(netns: str | None = None) -> None:
    """Delete the mirror table if present."""
    proc.run(["nft", "-f", "-"], netns=netns,
             input=f"table ip {TABLE}\ndelete table ip {TABLE}\n"
                   f"table ip6 {TABLE}\ndelete table ip6 {TABLE}\n")


def counters(netns: str | None = None, family: str = "ip") -> dict[str, int]:
    """Packets of the named counters of the ``ip`` (or ``ip6``) table: ``copied`` and
    ``from_mirror``."""
    done = proc.run(["nft", "-j", "list", "counters", "table", family, TABLE], netns=netns)
    out = {}
    for item in json.loads(done.stdout).get("nftables", []):
        counter = item.get("counter")
        if counter:
            out[counter["name"]] = int(counter["packets"])
    return out
