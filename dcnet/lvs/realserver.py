"""``elbctl render realserver``: what each DR/TUN real server needs, as a shell script.

In DR and TUN modes the real servers answer clients directly, so the director's carrier
rules do nothing for the replies: each real server needs the VIPs it serves on ``lo``
(DR) or ``tunl0`` (TUN), ``arp_ignore=1``/``arp_announce=2`` so it never answers ARP for
them, and the same per-carrier policy routing as the director (a default route in the
carrier's table via the carrier's next hop, and ``from VIP lookup <table>``). The script
is idempotent: run it again and it changes nothing new. NAT-only real servers need
nothing and get no section.

IPv6 VIPs go on ``lo`` as ``/128`` (``nodad``: usable at once; TUN servers also bring up
``ip6tnl0``, which decapsulates IPVS's IPv6-in-IPv6). IPv6 has no ``arp_ignore`` /
``arp_announce``: Linux answers a neighbour solicitation only for an address on the
interface it arrived on (``ndisc_recv_ns`` looks the target up strictly on that device),
so a VIP on ``lo`` is never announced; what must stay off is ``proxy_ndp`` (a proxy
entry for the VIP would answer for it). The script checks that and says so instead of
changing it. The IPv4 sysctls are written only when the server has an IPv4 VIP. Each
family's carrier table gets a next hop of that family: the carrier's ``gateway`` or
``gateway6``, or ``--via CARRIER=ADDR`` (once per family).
"""

from __future__ import annotations

import ipaddress
import shlex


class RealServerError(ValueError):
    pass


def _parse_vias(model, vias) -> dict[tuple[str, int], str]:
    """``CARRIER=ADDR`` items -> {(carrier, IP version): address}."""
    out = {}
    names = {c.name for c in model.carriers}
    for item in vias:
        carrier, sep, addr = item.partition("=")
        if not sep or carrier not in names:
            raise RealServerError(f"--via {item!r}: expected CARRIER=ADDRESS with a carrier "
                                  f"of the model ({', '.join(sorted(names))})")
        try:
            parsed = ipaddress.ip_address(addr)
        except ValueError:
            raise RealServerError(f"--via {item!r}: {addr!r} is not an IP address") from None
        out[(carrier, parsed.version)] = str(parsed)
    return out


def _next_hop(carrier, version: int, vias: dict[tuple[str, int], str]) -> str:
    """The carrier's next hop of this IP version: --via, else the model's (``gateway`` or
    ``gateway6``, the model refuses a VIP whose carrier has no next hop of its family)."""
    if (carrier.name, version) in vias:
        return vias[(carrier.name, version)]
    gateway = carrier.gateway_of(version)
    if gateway is None:
        raise RealServerError(f"carrier {carrier.name} has no IPv{version} next hop: give "
                              f"one with --via {carrier.name}=ADDR")
    return str(gateway)


def needs(model) -> dict[str, dict]:
    """Per real-server address: its forwarding methods and (carrier, VIP) pairs."""
    out: dict[str, dict] = {}
    for service in model.services:
        for port in service.ports:
            if port.forward.value == "nat":
                continue
            for server in service.real_servers:
                entry = out.setdefault(str(server.address), {"methods": set(), "vips": set()})
                entry["methods"].add(port.forward.value)
                same = port.forward.value == "dr"     # DR pairs a VIP with its own family
                entry["vips"].update((c, str(v)) for c, v in service.vips
                                     if not same or v.version == server.address.version)
    return out


def render_one(model, address: str, entry: dict, vias: dict[tuple[str, int], str]) -> str:
    lvs = model.lvs
    q = shlex.quote
    lines = [f"# real server {address}: {'/'.join(sorted(entry['methods'])).upper()} for "
             f"{len(entry['vips'])} VIP(s)"]
    has4 = any(":" not in vip for _, vip in entry["vips"])
    has6 = any(":" in vip for _, vip in entry["vips"])
    if has4:
        lines += ["sysctl -qw net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.all.arp_announce=2",
                  "sysctl -qw net.ipv4.conf.lo.arp_ignore=1 net.ipv4.conf.lo.arp_announce=2"]
    if has6:
        lines += ["# IPv6: no arp_ignore/arp_announce needed; a VIP on lo is never answered "
                  "for in NDP unless proxy_ndp is on",
                  'if [ "$(sysctl -n net.ipv6.conf.all.proxy_ndp)" != 0 ]; then '
                  'echo "warning: net.ipv6.conf.all.proxy_ndp is on: a proxy entry for a VIP '
                  'would answer NDP for it" >&2; fi']
    tun = "tun" in entry["methods"]
    if tun and has4:
        lines += ["modprobe ipip 2>/dev/null || true", "ip link set tunl0 up",
                  "sysctl -qw net.ipv4.conf.tunl0.rp_filter=0 net.ipv4.conf.all.rp_filter=0"]
    if tun and has6:
        lines += ["modprobe ip6_tunnel 2>/dev/null || true", "ip link set ip6tnl0 up"]
    carriers = {c.name: c for c in model.carriers}
    tables_done = set()
    for carrier_name, vip in sorted(entry["vips"]):
        carrier = carriers[carrier_name]
        version = 6 if ":" in vip else 4
        bits, family, nodad = (128, "-6 ", " nodad") if version == 6 else (32, "", "")
        dev = "tunl0" if tun and version == 4 else "lo"
        lines.append(f"ip {family}addr replace {q(vip)}/{bits} dev {dev}{nodad}")
        if (carrier.table, version) not in tables_done:
            tables_done.add((carrier.table, version))
            via = _next_hop(carrier, version, vias)
            lines.append(f"ip {family}route replace default via {q(via)} table {carrier.table}"
                         f" proto {lvs.route_protocol}")
        rule = f"from {q(vip)} lookup {carrier.table} priority {lvs.rule_priority_min}"
        lines.append(f"ip {family}rule del {rule} 2>/dev/null || true")
        lines.append(f"ip {family}rule add {rule}")
    return "\n".join(lines) + "\n"


def render_all(model, servers=(), vias=()) -> str:
    via_map = _parse_vias(model, vias)
    wanted = needs(model)
    chosen = sorted(wanted, key=lambda a: (ipaddress.ip_address(a).version,
                                           ipaddress.ip_address(a)))
    if servers:
        unknown = [s for s in servers if s not in wanted]
        if unknown:
            raise RealServerError(f"not a DR/TUN real server of the model: {', '.join(unknown)}"
                                  f" (known: {', '.join(chosen) or 'none'})")
        chosen = [s for s in chosen if s in servers]
    parts = ["#!/bin/sh\n# generated by elbctl render realserver; idempotent\nset -e\n"]
    parts += [render_one(model, address, wanted[address], via_map) for address in chosen]
    return "\n".join(parts)
