"""The LVS traffic lab: a director, two carriers with a client each, three real servers.

Used by the kernel-lab tests and the demo. Pure topology plus small helpers that run
inside lab hosts (no Python process per server: busybox httpd serves a file naming the
host; clients are one ``sh`` loop of ``curl`` per burst; gateway observation is an
nftables counter in each carrier router's prerouting hook).

Hosts: ``director`` (uplinks ``ctc0``/``cuc0``, ``rs0`` to the servers, main default
route via the unicom gateway, as a real director has one), ``isp-telecom`` /
``isp-unicom`` (carrier gateways), ``cli-telecom`` / ``cli-unicom`` (clients inside the
carrier's prefix), ``rs-sw`` (bridge), ``rs1..rs3`` (busybox httpd on 8080 for NAT and
8081 for DR). Replies of the telecom VIPs reach the telecom gateway only if elbctl's
rules work: the main table would send them to unicom.
"""

from __future__ import annotations

import re
import shlex

from dcnet.model import parse_model

NAT_PORT, DR_PORT, RS_HTTP = 80, 8081, 8080
SERVERS = ("10.20.0.11", "10.20.0.12", "10.20.0.13")
WEIGHTS = (3, 2, 1)
VIPS = {"telecom": ("198.51.100.10", "198.51.100.11"),   # (NAT VIP, DR VIP)
        "unicom": ("198.51.100.74", "198.51.100.75")}
CLIENTS = {"telecom": ("192.0.2.1", "192.0.2.2"), "unicom": ("192.0.2.65", "192.0.2.66")}
GATEWAYS = {"telecom": "198.51.100.1", "unicom": "198.51.100.65"}
UPLINKS = {"telecom": "ctc0", "unicom": "cuc0"}
DIRECTOR_UPLINK = {"telecom": "198.51.100.2/26", "unicom": "198.51.100.66/26"}
# dual stack (model(ipv6=True), topology(..., ipv6=True)): the same lines, IPv6 beside IPv4
VIPS6 = {"telecom": ("2001:db8:10::10", "2001:db8:10::11"),
         "unicom": ("2001:db8:20::10", "2001:db8:20::11")}
VIP_RANGES6 = {"telecom": "2001:db8:10::/64", "unicom": "2001:db8:20::/64"}
SERVERS6 = ("fd00:20::11", "fd00:20::12", "fd00:20::13")
CLIENTS6 = {"telecom": ("2001:db8:c1::1", "2001:db8:c1::2"),
            "unicom": ("2001:db8:c2::1", "2001:db8:c2::2")}
GATEWAYS6 = {"telecom": "2001:db8:1::1", "unicom": "2001:db8:2::1"}
DIRECTOR_UPLINK6 = {"telecom": "2001:db8:1::2/64", "unicom": "2001:db8:2::2/64"}
JOB_NAT = "job.web_service.shop_cluster.prod_pdl.retail_owt.sre_cop.example"
JOB_DR = "job.push_service.push_cluster.prod_pdl.retail_owt.sre_cop.example"


def model_text(check: str = "none", drain_seconds: int = 30, ipv6: bool = False) -> str:
    """The lab's model; ``ipv6``: dual stack (each line also has an IPv6 gateway, VIP
    range and a VIP per service, and the real servers their IPv6 addresses)."""
    check = "{type: http, path: /id}" if check == "http" else f"{{type: {check}}}"
    servers = "\n".join(f"      - {{address: {a}, weight: {w}}}"
                        for a, w in zip(SERVERS, WEIGHTS, strict=True))
    if ipv6:
        servers += "\n" + "\n".join(f"      - {{address: '{a}', weight: {w}}}"
                                     for a, w in zip(SERVERS6, WEIGHTS, strict=True))

    def ranges(carrier: str, v4: str) -> str:
        if not ipv6:
            return f"vip_ranges: [{v4}]"
        return (f"vip_ranges: [{v4}, '{VIP_RANGES6[carrier]}'], "
                f"gateway6: '{GATEWAYS6[carrier]}'")

    def vips(i: int) -> str:
        if not ipv6:
            return f"{{telecom: {VIPS['telecom'][i]}, unicom: {VIPS['unicom'][i]}}}"
        return ("{" + ", ".join(f"{c}: [{VIPS[c][i]}, '{VIPS6[c][i]}']" for c in VIPS) + "}")

    return f"""version: 1
carriers:
  - {{name: telecom, uplink: ctc0, gateway: 198.51.100.1, table: 101,
     {ranges('telecom', '198.51.100.0/26')}, cidrs: telecom.txt}}
  - {{name: unicom, uplink: cuc0, gateway: 198.51.100.65, table: 102,
     {ranges('unicom', '198.51.100.64/26')}, cidrs: unicom.txt, default: true}}
lvs: {{drain_seconds: {drain_seconds}}}
services:
  - job: {JOB_NAT}
    vips: {vips(0)}
    ports: [{{port: {NAT_PORT}, scheduler: wrr, forward: nat, target_port: {RS_HTTP}}}]
    health_check: {check}
    real_servers:
{servers}
  - job: {JOB_DR}
    vips: {vips(1)}
    ports: [{{port: {DR_PORT}, scheduler: wrr, forward: dr}}]
    health_check: {check}
    real_servers:
{servers}
"""


CIDR_FILES = {"telecom.txt": "192.0.2.0/26\n", "unicom.txt": "192.0.2.64/26\n"}
CIDR_FILES6 = {"telecom.txt": "192.0.2.0/26\n2001:db8:c1::/64\n",
               "unicom.txt": "192.0.2.64/26\n2001:db8:c2::/64\n"}


def model(check: str = "none", drain_seconds: int = 30, source: str = "lvs-lab.yaml",
          ipv6: bool = False):
    files = CIDR_FILES6 if ipv6 else CIDR_FILES
    return parse_model(model_text(check, drain_seconds, ipv6), source=source,
                       read_text=files.__getitem__)


def topology(busybox: str, docroot: str, ipv6: bool = False) -> dict:
    """The lab's hosts, links, routes and servers; ``ipv6``: every link also carries the
    IPv6 addresses above (the carrier routers route the line's IPv6 VIP range to the
    director; the director's main IPv6 default goes via unicom, as the IPv4 one)."""
    forward6 = {"net.ipv6.conf.all.forwarding": 1} if ipv6 else {}
    hosts = [{"name": "director", "sysctls": {"net.ipv4.ip_forward": 1, **forward6,
                                              "net.ipv4.conf.all.accept_local": 1}},
             {"name": "rs-sw"}]
    links, routes, processes = [], [], []

    def both(v4: str, v6: str) -> list[str]:
        return [v4, v6] if ipv6 else [v4]

    for carrier, uplink in UPLINKS.items():
        isp, cli = f"isp-{carrier}", f"cli-{carrier}"
        router, client = CLIENTS[carrier]
        router6, client6 = CLIENTS6[carrier]
        hosts += [{"name": isp, "sysctls": {"net.ipv4.ip_forward": 1, **forward6}},
                  {"name": cli}]
        links.append({"a": {"host": "director", "ifname": uplink,
                            "addresses": both(DIRECTOR_UPLINK[carrier],
                                              DIRECTOR_UPLINK6[carrier])},
                      "b": {"host": isp, "ifname": "down0",
                            "addresses": both(f"{GATEWAYS[carrier]}/26",
                                              f"{GATEWAYS6[carrier]}/64")}})
        links.append({"a": {"host": isp, "ifname": "cust0",
                            "addresses": both(f"{router}/26", f"{router6}/64")},
                      "b": {"host": cli, "ifname": "eth0",
                            "addresses": both(f"{client}/26", f"{client6}/64")}})
        routes.append({"host": cli, "dst": "default", "via": router})
        if ipv6:
            routes.append({"host": cli, "dst": "default", "via": router6})
            routes.append({"host": isp, "dst": VIP_RANGES6[carrier],
                           "via": DIRECTOR_UPLINK6[carrier].split("/")[0]})
    routes.append({"host": "director", "dst": "default", "via": GATEWAYS["unicom"]})
    if ipv6:
        routes.append({"host": "director", "dst": "default", "via": GATEWAYS6["unicom"]})
    links.append({"a": {"host": "director", "ifname": "rs0",
                        "addresses": both("10.20.0.1/24", "fd00:20::1/64")},
                  "b": {"host": "rs-sw", "ifname": "to-director", "bridge": "br0"}})
    for i, (address, address6) in enumerate(zip(SERVERS, SERVERS6, strict=True), start=1):
        host = f"rs{i}"
        hosts.append({"name": host})
        links.append({"a": {"host": host, "ifname": "eth0",
                            "addresses": both(f"{address}/24", f"{address6}/64")},
                      "b": {"host": "rs-sw", "ifname": f"to-{host}", "bridge": "br0"}})
        routes.append({"host": host, "dst": "default", "via": "10.20.0.1"})
        if ipv6:
            routes.append({"host": host, "dst": "default", "via": "fd00:20::1"})
        for port in (RS_HTTP, DR_PORT):
            processes.append({"name": f"{host}-http-{port}", "host": host,
                              "ready_tcp_port": port, "ready_timeout": 60,
                              "argv": [busybox, "httpd", "-f", "-p", str(port), "-h",
                                       f"{docroot}/{host}"]})
    return {"hosts": hosts, "bridges": [{"name": "br0", "host": "rs-sw"}], "links": links,
            "routes": routes, "processes": processes}


def write_docroots(docroot: str) -> None:
    """One directory per real server holding ``id`` (its host name)."""
    import os

    for i in range(1, len(SERVERS) + 1):
        os.makedirs(f"{docroot}/rs{i}", exist_ok=True)
        with open(f"{docroot}/rs{i}/id", "w") as fh:
            fh.write(f"rs{i}\n")


def curl_loop(url: str, count: int, timeout: float = 3.0) -> list[str]:
    """argv of one shell running ``count`` sequential requests; each prints
    ``<http code> <body>`` on its own line (``000`` when the request failed)."""
    script = (f"for i in $(seq {count}); do "
              f"b=$(curl -s -m {timeout:g} -w ' %{{http_code}}' {shlex.quote(url)}) || true; "
              f"echo \"$b\" | tr '\\n' ' '; echo; done")
    return ["sh", "-c", script]


def parse_curl(output: str) -> list[tuple[str, str]]:
    """(code, body) per request from :func:`curl_loop` output."""
    out = []
    for line in output.splitlines():
        parts = line.split()
        if not parts:
            continue
        out.append((parts[-1], parts[0] if len(parts) > 1 else ""))
    return out


def observe_script(vips: list[str], family: str = "ip") -> str:
    """nft script (for ``nft -f -``): a prerouting counter per VIP source address, i.e.
    the replies of that VIP arriving at this gateway. ``family="inet"`` counts IPv4 and
    IPv6 VIPs in one table (``nft list table inet obs``)."""
    rules = "".join(f"add rule {family} obs pre {'ip6' if ':' in v else 'ip'} saddr {v} "
                    "counter\n" for v in vips)
    return (f"add table {family} obs\n"
            f"add chain {family} obs pre {{ type filter hook prerouting priority -300; }}\n"
            + rules)


def counters(nft_output: str) -> dict[str, int]:
    """Packets per source address from ``nft list table ip|inet obs``."""
    return {m.group(1): int(m.group(2)) for m in
            re.finditer(r"ip6? saddr (\S+) counter packets (\d+)", nft_output)}
