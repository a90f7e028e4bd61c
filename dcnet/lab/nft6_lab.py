"""A dual-stack lab for the nft target: ``client`` -- ``director`` -- bridge -- ``rs1..rs3``.

``client`` (fd00:1::2, 10.1.0.2) reaches ``director`` (fd00:1::1, 10.1.0.1; forwarding on;
the VIPs go on its ``lo``), which reaches ``rs1..rs3`` (fd00:2::11.., 10.2.0.11..) over a
bridge in ``sw``; the real servers' default routes are the director (NAT replies come back
through it). Each real server runs :func:`dcnet.lab.haproxy6_lab.serve` (dual stack; the
body names the address asked). Used by tests/netns/test_nft_ipv6.py and the demo.
"""

from __future__ import annotations

import sys

from dcnet.lab import haproxy6_lab as h6

VIP6, VIP4 = "2001:db8::10", "198.51.100.10"
RS6 = [f"fd00:2::{10 + i}" for i in (1, 2, 3)]
RS4 = [f"10.2.0.{10 + i}" for i in (1, 2, 3)]
PORT = h6.SERVER_PORT


def topology() -> dict:
    links = [{"a": {"host": "client", "ifname": "eth0",
                    "addresses": ["fd00:1::2/64", "10.1.0.2/24"]},
              "b": {"host": "director", "ifname": "c0",
                    "addresses": ["fd00:1::1/64", "10.1.0.1/24"]}},
             {"a": {"host": "director", "ifname": "s0",
                    "addresses": ["fd00:2::1/64", "10.2.0.1/24"]},
              "b": {"host": "sw", "ifname": "to-dir", "bridge": "br0"}}]
    routes = [{"host": "client", "dst": "default", "via": "fd00:1::1"},
              {"host": "client", "dst": "default", "via": "10.1.0.1"}]
    processes = []
    for i, (six, four) in enumerate(zip(RS6, RS4, strict=True), start=1):
        links.append({"a": {"host": f"rs{i}", "ifname": "eth0",
                            "addresses": [f"{six}/64", f"{four}/24"]},
                      "b": {"host": "sw", "ifname": f"to-rs{i}", "bridge": "br0"}})
        routes += [{"host": f"rs{i}", "dst": "default", "via": "fd00:2::1"},
                   {"host": f"rs{i}", "dst": "default", "via": "10.2.0.1"}]
        processes.append({"name": f"rs{i}-http", "host": f"rs{i}", "ready_tcp_port": PORT,
                          "argv": [sys.executable, "-m", "dcnet.lab.haproxy6_lab",
                                   str(PORT)]})
    director = {"name": "director", "sysctls": {"net.ipv4.ip_forward": 1,
                                                "net.ipv6.conf.all.forwarding": 1}}
    return {"hosts": ["client", director, "sw", "rs1", "rs2", "rs3"],
            "bridges": [{"name": "br0", "host": "sw"}], "links": links, "routes": routes,
            "processes": processes}
