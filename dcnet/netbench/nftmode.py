"""netbench's ``nft-lb`` mode: client -> VIP on a director running dcnet's nft target ->
real servers (issue #16, the nftables counterpart of the ``ipvs`` mode).

Lab (octet 71, dual-stack when IPv6 is asked for): client ``c`` (10.71.0.2) -- director
``d`` (10.71.0.1 and the VIP 10.71.0.100/32 on ``c0``, forwarding on) -- one veth per
real server to ``r1`` (10.71.1.2) and ``r2`` (10.71.2.2), whose default routes are the
director (NAT replies come back through it); IPv6 twins in ``fd00:6e62:71::/48``, the
IPv6 VIP ``fd00:6e62:71::64``. The client has no route to the real servers' networks,
so every sample crosses the director's DNAT.

The director's nftables are what ``elbctl apply --target nft`` writes for a small model
(:func:`model_text`): per family one service on the VIP with a TCP and a UDP port for
each benchmark port (the IPv6 ports are netbench's IPv6 ports), forward ``nat``,
scheduler ``sh`` (Maglev on the client address), both real servers at weight 1. ``sh``
because iperf3 opens a control and data connections that must meet the same server,
so a per-connection scheduler (``wrr``, ``mh``) would split one test over two servers.
Every benchmark server runs on both real servers (:class:`BalancedLiveMode`), so the
client is measured against whichever one its address hashes to; the model, the plan's
change count and the servers are kept in the mode's notes.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
from dataclasses import dataclass, field

from dcnet.netbench import topologies
from dcnet.netbench.buildcontext import (
    DEFAULT_PORTS,
    DEFAULT_PORTS_V6,
    BuildContext,
    family_address,
    lab_mode,
)
from dcnet.netbench.live import LiveMode, wait_listening

OCTET = 71
VIP = f"10.{OCTET}.0.100"
VIP6 = str(ipaddress.ip_address(topologies.v6(OCTET, 0, 100, None)))   # fd00:6e62:71::64
REAL_SERVERS = ("r1", "r2")
SCHEDULER = "sh"
FORWARDING_V6 = topologies.FORWARDING_V6


def unavailable() -> str | None:
    """Why the mode cannot run here (no nft program), or None."""
    if shutil.which("nft") is None:
        return "the nft program (package nftables) is not installed"
    return None


def topology(ipv6: bool = False) -> dict:
    """Client ``c`` -> director ``d`` (VIP on ``c0``) -> real servers ``r1``, ``r2``."""
    def addresses(subnet: int, host: int, *extra: str) -> list[str]:
        out = [f"10.{OCTET}.{subnet}.{host}/24", *extra[:1]]
        if ipv6:
            out += [topologies.v6(OCTET, subnet, host), *extra[1:]]
        return out

    links = [{"a": {"host": "c", "ifname": "eth0", "addresses": addresses(0, 2)},
              "b": {"host": "d", "ifname": "c0",
                    "addresses": addresses(0, 1, f"{VIP}/32", f"{VIP6}/128")}}]
    routes = []
    for index, server in enumerate(REAL_SERVERS, start=1):
        links.append({"a": {"host": "d", "ifname": f"s{index}",
                            "addresses": addresses(index, 1)},
                      "b": {"host": server, "ifname": "eth0",
                            "addresses": addresses(index, 2)}})
        routes.append({"host": server, "dst": "default", "via": f"10.{OCTET}.{index}.1"})
        if ipv6:
            routes.append({"host": server, "dst": "default",
                           "via": topologies.v6(OCTET, index, 1, None)})
    sysctls = FORWARDING_V6 if ipv6 else topologies.FORWARDING
    return {"hosts": ["c", {"name": "d", "sysctls": sysctls}, *REAL_SERVERS],
            "links": links, "routes": routes}


def model_text(servers: dict[str, list[str]]) -> str:
    """The model the director applies: per family of ``servers`` (``ipv4``/``ipv6`` ->
    real server addresses) one NAT service on that family's VIP, TCP and UDP on every
    benchmark port of the family, scheduler ``sh``."""
    ranges = [f"10.{OCTET}.0.0/24", f"'{topologies.ULA}:{OCTET}::/48'"]
    lines = ["version: 1\n",
             "carriers:\n  - {name: lab, uplink: c0, gateway: " f"10.{OCTET}.0.254, "
             f"gateway6: '{topologies.v6(OCTET, 0, 254, None)}', table: 101, "
             f"vip_ranges: [{', '.join(ranges)}], default: true}}\n",
             "services:\n"]
    for family, addresses in servers.items():
        vip, ports = (VIP6, DEFAULT_PORTS_V6) if family == "ipv6" else (VIP, DEFAULT_PORTS)
        lines.append(f"  - job: job.web_service.nftlb{family[-1]}_cluster.prod_pdl."
                     f"bench_owt.sre_cop.example\n    vips: {{lab: '{vip}'}}\n    ports:\n")
        lines += [f"      - {{port: {port}, protocol: {protocol}, scheduler: {SCHEDULER}, "
                  f"forward: nat, target_port: {port}}}\n"
                  for port in sorted(set(ports.values())) for protocol in ("tcp", "udp")]
        lines.append("    real_servers:\n")
        lines += [f"      - {{address: '{address}', weight: 1}}\n" for address in addresses]
    return "".join(lines)


@dataclass
class BalancedLiveMode(LiveMode):
    """A LiveMode whose servers also run on the other real servers (``replicas``: host
    name -> that host's address of the mode's family), each waited for like the first."""

    replicas: dict[str, str] = field(default_factory=dict)

    def start_server(self, key: str, argv: list[str], protocol: str, port: int) -> None:
        super().start_server(key, argv, protocol, port)
        lab = self.labs[0]
        for host, address in self.replicas.items():
            name = f"{key}@{host}"
            if name in self.servers and self.servers[name].poll() is None:
                continue
            own = [address if arg == self.bind_address else arg for arg in argv]
            log_path = os.path.join(self.log_dir,
                                    f"{self.name}-{self.server_name(key)}-{host}.log")
            popen = lab.start(host, own, name=f"netbench-{self.server_name(key)}-{host}",
                                   log_path=log_path)
            self.servers[name] = popen
            wait_listening(lab.netns(host), protocol, port, popen, log_path)


def build(context: BuildContext, ipv6: bool) -> dict[str, LiveMode]:
    """Build the lab, apply the model on the director; one LiveMode per family."""
    from dcnet.model import parse_model
    from dcnet.target import session

    lab = context.lab(topology(ipv6))
    families = ("ipv4", "ipv6") if ipv6 else ("ipv4",)
    servers = {family: [family_address(lab, host, "eth0", family) for host in REAL_SERVERS]
               for family in families}
    text = model_text(servers)
    options = {"netns": lab.netns("d"),
               "state_dir": os.path.join(context.work_dir, "nft-lb-state")}
    outcome = session.run("nft", parse_model(text, source="netbench-nft-lb.yaml"), options,
                          apply=True, lock_timeout=60.0)
    if not outcome.ok:
        raise RuntimeError(f"nft-lb: elbctl apply --target nft failed:\n"
                           f"{outcome.result.to_text() if outcome.result else ''}")
    interfaces = [("c", "eth0"), ("d", "c0")]
    for index, host in enumerate(REAL_SERVERS, start=1):
        interfaces += [("d", f"s{index}"), (host, "eth0")]
    built: dict[str, LiveMode] = {}
    for family in families:
        vip = VIP6 if family == "ipv6" else VIP
        primary, *others = servers[family]
        base = lab_mode("nft-lb", context, lab, "c", REAL_SERVERS[0], primary, interfaces,
                        target=vip, family=family, vip=vip, forwarding="nat (dcnet nft target)",
                        scheduler=SCHEDULER, real_servers=servers[family],
                        nft_changes=len(outcome.plan.changes), model=text)
        built[family] = BalancedLiveMode(
            **{name: getattr(base, name) for name in base.__dataclass_fields__},
            replicas=dict(zip(REAL_SERVERS[1:], others, strict=True)))
    return built
