"""netbench's ``nft-lb`` mode: client -> VIP on a director running dcnet's nft target ->
real server (issue #16, the nftables counterpart of the ``ipvs`` mode).

Lab (octet 71, dual-stack when IPv6 is asked for): client ``c`` (10.71.0.2) -- director
``d`` (10.71.0.1 and the VIP 10.71.0.100/32 on ``c0``, forwarding on) -- real server ``r``
(10.71.1.2 on ``eth0``, default route via the director, so NAT replies come back through
it); IPv6 twins in ``fd00:6e62:71::/48``, the IPv6 VIP ``fd00:6e62:71::64``. The client
has no route to the real server's network, so every sample crosses the director's DNAT.

The director's nftables are what ``elbctl apply --target nft`` writes (through
:func:`dcnet.target.session.run`, the path of ``elbctl``) for the model of
:func:`model_text`: per family one service on the VIP with a TCP and a UDP port for each
benchmark port of that family (the IPv6 ports are netbench's IPv6 ports), forward ``nat``,
scheduler ``wrr``, the real server at weight 1. One real server per VIP, as in the
``ipvs`` mode: iperf3 (``-u``) and qperf open a TCP control connection and a data flow
on another service (another protocol or port), and the nft target chooses a backend per
service (weighted random per connection: with several servers a test's control and
data would land on different ones; ``sh`` would pin a client across a VIP's services,
its Maglev tables being seeded by the real servers' addresses, but one server keeps
the measured path a single ``goto``).
"""

from __future__ import annotations

import ipaddress
import os
import shutil

from dcnet.netbench import topologies
from dcnet.netbench.buildcontext import (
    DEFAULT_PORTS,
    DEFAULT_PORTS_V6,
    BuildContext,
    family_address,
    lab_mode,
)
from dcnet.netbench.live import LiveMode

OCTET = 71
VIP = f"10.{OCTET}.0.100"
VIP6 = str(ipaddress.ip_address(topologies.v6(OCTET, 0, 100, None)))   # fd00:6e62:71::64
SCHEDULER = "wrr"


def unavailable() -> str | None:
    """Why the mode cannot run here (no nft program), or None."""
    if shutil.which("nft") is None:
        return "the nft program (package nftables) is not installed"
    return None


def topology(ipv6: bool = False) -> dict:
    """Client ``c`` -> director ``d`` (VIP on ``c0``) -> real server ``r``."""
    def addresses(subnet: int, host: int, *vips: str) -> list[str]:
        out = [f"10.{OCTET}.{subnet}.{host}/24", *vips[:1]]
        if ipv6:
            out += [topologies.v6(OCTET, subnet, host), *vips[1:]]
        return out

    routes = [{"host": "r", "dst": "default", "via": f"10.{OCTET}.1.1"}]
    if ipv6:
        routes.append({"host": "r", "dst": "default", "via": topologies.v6(OCTET, 1, 1, None)})
    sysctls = topologies.FORWARDING_V6 if ipv6 else topologies.FORWARDING
    return {"hosts": ["c", {"name": "d", "sysctls": sysctls}, "r"],
            "links": [{"a": {"host": "c", "ifname": "eth0", "addresses": addresses(0, 2)},
                       "b": {"host": "d", "ifname": "c0",
                             "addresses": addresses(0, 1, f"{VIP}/32", f"{VIP6}/128")}},
                      {"a": {"host": "d", "ifname": "s0", "addresses": addresses(1, 1)},
                       "b": {"host": "r", "ifname": "eth0", "addresses": addresses(1, 2)}}],
            "routes": routes}


def model_text(servers: dict[str, str]) -> str:
    """The model the director applies: per family of ``servers`` (``ipv4``/``ipv6`` ->
    the real server's address) one NAT service on that family's VIP, TCP and UDP on
    every benchmark port of the family."""
    ranges = f"10.{OCTET}.0.0/24, '{topologies.ULA}:{OCTET}::/48'"
    lines = ["version: 1\n",
             f"carriers:\n  - {{name: lab, uplink: c0, gateway: 10.{OCTET}.0.254, "
             f"gateway6: '{topologies.v6(OCTET, 0, 254, None)}', table: 101, "
             f"vip_ranges: [{ranges}], default: true}}\n",
             "services:\n"]
    for family, address in servers.items():
        vip, ports = (VIP6, DEFAULT_PORTS_V6) if family == "ipv6" else (VIP, DEFAULT_PORTS)
        lines.append(f"  - job: job.web_service.nftlb{family[-1]}_cluster.prod_pdl."
                     f"bench_owt.sre_cop.example\n    vips: {{lab: '{vip}'}}\n    ports:\n")
        lines += [f"      - {{port: {port}, protocol: {protocol}, scheduler: {SCHEDULER}, "
                  f"forward: nat, target_port: {port}}}\n"
                  for port in sorted(set(ports.values())) for protocol in ("tcp", "udp")]
        lines.append(f"    real_servers:\n      - {{address: '{address}', weight: 1}}\n")
    return "".join(lines)


def build(context: BuildContext, ipv6: bool) -> dict[str, LiveMode]:
    """Build the lab, apply the model on the director; one LiveMode per family."""
    from dcnet.model import parse_model
    from dcnet.target import session

    lab = context.lab(topology(ipv6))
    families = ("ipv4", "ipv6") if ipv6 else ("ipv4",)
    servers = {family: family_address(lab, "r", "eth0", family) for family in families}
    text = model_text(servers)
    options = {"netns": lab.netns("d"),
               "state_dir": os.path.join(context.work_dir, "nft-lb-state")}
    outcome = session.run("nft", parse_model(text, source="netbench-nft-lb.yaml"), options,
                          apply=True, lock_timeout=60.0)
    if not outcome.ok:
        raise RuntimeError("nft-lb: elbctl apply --target nft failed:\n"
                           f"{outcome.result.to_text() if outcome.result else ''}")
    interfaces = [("c", "eth0"), ("d", "c0"), ("d", "s0"), ("r", "eth0")]
    built: dict[str, LiveMode] = {}
    for family in families:
        vip = VIP6 if family == "ipv6" else VIP
        built[family] = lab_mode(
            "nft-lb", context, lab, "c", "r", servers[family], interfaces, target=vip,
            family=family, vip=vip, forwarding="nat (dcnet nft target)", scheduler=SCHEDULER,
            nft_changes=len(outcome.plan.changes), model=text)
    return built
