"""The nftables ruleset that copies chosen client->server packets at the director.

It owns the text of table ``ip dcnet_mirror``: in prerouting, before conntrack, the
packets of each chosen VIP:port whose session hash (``jhash ip saddr . tcp sport``)
falls below the sampled share are duplicated by the kernel (``dup to ADDR device DEV``)
into the veth whose other end is in the mirror namespace. Packets arriving from that
veth are dropped and counted, so a copy's side can never answer production. Building
the text is pure; :func:`apply` and :func:`remove` run ``nft`` (in a namespace if
given).
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
    and where: the mirror address reached through ``device``."""

    services: tuple[tuple[str, int], ...]
    to_address: str
    device: str
    percent: int = 100

    def __post_init__(self) -> None:
        if not self.services:
            raise ValueError("at least one VIP:port to mirror")
        for vip, port in self.services:
            ipaddress.IPv4Address(vip)
            if not 0 < int(port) < 65536:
                raise ValueError(f"bad port {port}")
        ipaddress.IPv4Address(self.to_address)
        if not 0 < self.percent <= 100:
            raise ValueError(f"percent must be in 1..100, not {self.percent}")
        if not self.device or any(c in self.device for c in ' "\n;'):
            raise ValueError(f"bad device name {self.device!r}")


def parse_service(text: str) -> tuple[str, int]:
    """``VIP:PORT`` -> (VIP, port), validated."""
    vip, _, port = text.rpartition(":")
    ipaddress.IPv4Address(vip)
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"bad service {text!r} (VIP:PORT)")
    return vip, int(port)


def ruleset(spec: MirrorSpec) -> str:
    """The nft script (replaces the table atomically)."""
    sample = "" if spec.percent >= 100 else \
        f"jhash ip saddr . tcp sport mod 100 seed 0x0 < {spec.percent} "
    lines = [f"table ip {TABLE}", f"delete table ip {TABLE}", f"table ip {TABLE} {{",
             "  counter copied { }",
             "  counter from_mirror { }",
             "  chain copy {",
             "    type filter hook prerouting priority -300; policy accept;",
             f'    iifname "{spec.device}" counter name from_mirror drop']
    for vip, port in spec.services:
        lines.append(f"    ip daddr {vip} tcp dport {port} {sample}"
                     f'counter name copied dup to {spec.to_address} device "{spec.device}"')
    return "\n".join([*lines, "  }", "}"]) + "\n"


def apply(spec: MirrorSpec, netns: str | None = None) -> None:
    """Install (or replace) the mirror table."""
    proc.run(["nft", "-f", "-"], netns=netns, input=ruleset(spec))


def remove(netns: str | None = None) -> None:
    """Delete the mirror table if present."""
    proc.run(["nft", "-f", "-"], netns=netns,
             input=f"table ip {TABLE}\ndelete table ip {TABLE}\n")


def counters(netns: str | None = None) -> dict[str, int]:
    """Packets of the named counters: ``copied`` and ``from_mirror``."""
    done = proc.run(["nft", "-j", "list", "counters", "table", "ip", TABLE], netns=netns)
    out = {}
    for item in json.loads(done.stdout).get("nftables", []):
        counter = item.get("counter")
        if counter:
            out[counter["name"]] = int(counter["packets"])
    return out
