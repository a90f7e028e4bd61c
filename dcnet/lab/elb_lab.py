"""The ELB lab: a network-namespace topology derived from a service model.

Hosts (each its own namespace):

- ``director``: the LVS director, one uplink per carrier (named as the carrier's
  ``uplink``) and ``rs0`` towards the real servers;
- ``isp-<carrier>``: the carrier's router, holding the carrier gateway on the link to the
  director and the first address of the carrier's first client prefix;
- ``cli-<carrier>``: a client inside that carrier's first client prefix;
- ``rs-sw``: a switch (bridge ``br0``) joining the director and the real servers;
- ``rs<N>``: one host per real-server address, running a TCP server on every TCP port its
  services send it to.

Pure: it only computes the topology; :class:`dcnet.lab.builder.Lab` builds it.
"""

from __future__ import annotations

import ipaddress
import sys
from dataclasses import dataclass

from dcnet.model import Carrier, Model, Protocol

DIRECTOR = "director"
SWITCH = "rs-sw"
RS_NET_PREFIX = 24


@dataclass(frozen=True)
class RealServerHost:
    host: str
    address: str
    tcp_ports: tuple[int, ...]


def carrier_transit(carrier: Carrier) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """The uplink subnet: the VIP range holding the gateway, else a /30 around it."""
    for net in carrier.vip_ranges:
        if carrier.gateway in net:
            return net
    bits = 30 if carrier.gateway.version == 4 else 126
    return ipaddress.ip_network(f"{carrier.gateway}/{bits}", strict=False)


def director_uplink_address(carrier: Carrier, model: Model) -> str:
    """The first host address of the transit net that is neither gateway nor VIP."""
    net = carrier_transit(carrier)
    taken = {carrier.gateway} | {vip for s in model.services for _, vip in s.vips}
    for host in net.hosts():
        if host not in taken:
            return f"{host}/{net.prefixlen}"
    raise ValueError(f"carrier {carrier.name}: no free address for the director in {net}")


def real_server_hosts(model: Model) -> list[RealServerHost]:
    ports: dict[str, set[int]] = {}
    for service in model.services:
        for ep in service.endpoints():
            bucket = ports.setdefault(str(ep.server.address), set())
            if ep.port.protocol is Protocol.TCP:
                bucket.add(ep.server_port)
    return [RealServerHost(f"rs{i}", addr, tuple(sorted(p)))
            for i, (addr, p) in enumerate(sorted(ports.items(), key=lambda kv:
                                                 ipaddress.ip_address(kv[0])), start=1)]


def rs_gateway(addresses: list[str]) -> str:
    """The director's address on the real-server network (.1 of each /24 used)."""
    nets = sorted({ipaddress.ip_network(f"{a}/{RS_NET_PREFIX}", strict=False) for a in addresses},
                  key=str)
    taken = set(addresses)
    out = []
    for net in nets:
        gw = next(str(h) for h in net.hosts() if str(h) not in taken)
        out.append(f"{gw}/{net.prefixlen}")
    return out


def elb_topology(model: Model, python: str = sys.executable) -> dict:
    """The lab topology (as data for ``Topology.from_dict``) for ``model``."""
    hosts = [{"name": DIRECTOR, "sysctls": {"net.ipv4.ip_forward": 1}}, {"name": SWITCH}]
    links, routes, processes = [], [], []
    for carrier in model.carriers:
        isp, transit = f"isp-{carrier.name}", carrier_transit(carrier)
        hosts.append({"name": isp, "sysctls": {"net.ipv4.ip_forward": 1}})
        links.append({
            "a": {"host": DIRECTOR, "ifname": carrier.uplink,
                  "addresses": [director_uplink_address(carrier, model)]},
            "b": {"host": isp, "ifname": "down0",
                  "addresses": [f"{carrier.gateway}/{transit.prefixlen}"]},
        })
        if carrier.cidrs:
            client_net = carrier.cidrs[0]
            router_ip, client_ip = list(client_net.hosts())[:2]
            client = f"cli-{carrier.name}"
            hosts.append({"name": client})
            links.append({
                "a": {"host": isp, "ifname": "cust0",
                      "addresses": [f"{router_ip}/{client_net.prefixlen}"]},
                "b": {"host": client, "ifname": "eth0",
                      "addresses": [f"{client_ip}/{client_net.prefixlen}"]},
            })
            routes.append({"host": client, "dst": "default", "via": str(router_ip)})
    servers = real_server_hosts(model)
    gateways = rs_gateway([s.address for s in servers]) if servers else []
    hosts.extend({"name": s.host} for s in servers)
    bridges = [{"name": "br0", "host": SWITCH}]
    if servers:
        links.append({"a": {"host": DIRECTOR, "ifname": "rs0", "addresses": gateways},
                      "b": {"host": SWITCH, "ifname": "to-director", "bridge": "br0"}})
    for s in servers:
        links.append({"a": {"host": s.host, "ifname": "eth0",
                            "addresses": [f"{s.address}/{RS_NET_PREFIX}"]},
                      "b": {"host": SWITCH, "ifname": f"to-{s.host}", "bridge": "br0"}})
        gw = next(g for g in gateways if ipaddress.ip_address(s.address) in
                  ipaddress.ip_interface(g).network)
        routes.append({"host": s.host, "dst": "default", "via": str(ipaddress.ip_interface(gw).ip)})
        for port in s.tcp_ports:
            processes.append({
                "name": f"{s.host}-http-{port}", "host": s.host, "ready_tcp_port": port,
                "argv": [python, "-m", "http.server", str(port), "--bind", s.address],
            })
    return {"hosts": hosts, "bridges": bridges, "links": links, "routes": routes,
            "processes": processes}
