"""A dual-stack HAProxy lab for the IPv6 tests: two carriers' clients -- lb -- real servers.

``client`` (telecom: fd00:251::2, 10.251.0.2) and ``client2`` (unicom: fd00:253::2,
10.253.0.2) each reach ``lb`` over their own veth; ``lb`` holds each carrier's VIPs on
that carrier's link (IPv6 /128s, IPv4 /32s; the lab adds IPv6 addresses with ``nodad``,
so they are usable at once) and reaches ``rs1..rsN`` (fd00:252::1N and 10.252.0.1N) over
the bridge in ``sw``. Each real server runs :func:`serve` (``python -m
dcnet.lab.haproxy6_lab PORT``): a dual-stack HTTP server on ``[::]:PORT`` answering every
GET with ``ok <its address the request came to> xff=<X-Forwarded-For>``.

:func:`model_data` builds the service model: ``web`` (IPv6 VIPs on both carriers, IPv6
servers, port 80 in ``mode: http``), and with ``mixed=True`` also ``v4to6`` (IPv4 VIPs,
IPv6 servers) and ``v6to4`` (IPv6 VIPs, IPv4 servers), both on port 8080. IPVS cannot
mix address families except in TUN forwarding, so the model only accepts the mixed
services as ``forward: tun`` (which keeps the port: hence 8080); HAProxy ignores
``forward`` and proxies across families.
Pure data except :func:`serve` and :func:`get`, which run inside a lab's namespaces.
"""

from __future__ import annotations

import copy
import http.client
import http.server
import socket
import socketserver
import sys

JOB = "job.web_service.shop_cluster.prod_pdl.retail_owt.sre_cop.example"
JOB_V4TO6 = JOB.replace("service.shop_", "service.shop46_")
JOB_V6TO4 = JOB.replace("service.shop_", "service.shop64_")
SERVER_PORT = 8080
CLIENTS = {"telecom": ("client", "c0", "fd00:251::", "10.251.0."),
           "unicom": ("client2", "c1", "fd00:253::", "10.253.0.")}
VIP6 = {"telecom": "2001:db8:1::10", "unicom": "2001:db8:2::10"}
VIP6_B = {"telecom": "2001:db8:1::11", "unicom": "2001:db8:2::11"}      # v6to4
VIP4 = {"telecom": "198.51.100.10", "unicom": "198.51.100.70"}          # v4to6
PORTS = {JOB: 80, JOB_V4TO6: SERVER_PORT, JOB_V6TO4: SERVER_PORT}   # TUN: no target_port


def server6(index: int) -> str:
    """rs1 is fd00:252::11."""
    return f"fd00:252::{10 + index}"


def server4(index: int) -> str:
    """rs1 is 10.252.0.11."""
    return f"10.252.0.{10 + index}"


def client_address(carrier: str, version: int = 6) -> str:
    _, _, six, four = CLIENTS[carrier]
    return f"{six}2" if version == 6 else f"{four}2"


def topology(servers: int, python: str = sys.executable) -> dict:
    hosts = ["client", "client2", "lb", "sw", *(f"rs{i}" for i in range(1, servers + 1))]
    links, routes = [], []
    for carrier, (host, ifname, six, four) in CLIENTS.items():
        vips = [f"{VIP6[carrier]}/128", f"{VIP6_B[carrier]}/128", f"{VIP4[carrier]}/32"]
        links.append({"a": {"host": host, "ifname": "eth0",
                            "addresses": [f"{six}2/64", f"{four}2/24"]},
                      "b": {"host": "lb", "ifname": ifname,
                            "addresses": [f"{six}1/64", f"{four}1/24", *vips]}})
        routes += [{"host": host, "dst": "default", "via": f"{six}1"},
                   {"host": host, "dst": "default", "via": f"{four}1"}]
    links.append({"a": {"host": "lb", "ifname": "s0",
                        "addresses": ["fd00:252::1/64", "10.252.0.1/24"]},
                  "b": {"host": "sw", "ifname": "to-lb", "bridge": "br0"}})
    processes = []
    for i in range(1, servers + 1):
        links.append({"a": {"host": f"rs{i}", "ifname": "eth0",
                            "addresses": [f"{server6(i)}/64", f"{server4(i)}/24"]},
                      "b": {"host": "sw", "ifname": f"to-rs{i}", "bridge": "br0"}})
        processes.append({"name": f"rs{i}-http", "host": f"rs{i}",
                          "ready_tcp_port": SERVER_PORT,
                          "argv": [python, "-m", "dcnet.lab.haproxy6_lab", str(SERVER_PORT)]})
    return {"hosts": hosts, "bridges": [{"name": "br0", "host": "sw"}], "links": links,
            "routes": routes, "processes": processes}


CARRIERS = [
    {"name": "telecom", "uplink": "c0", "gateway": "10.251.0.254",
     "gateway6": "fd00:251::fe", "table": 101,
     "vip_ranges": ["198.51.100.0/26", "2001:db8:1::/64"]},
    {"name": "unicom", "uplink": "c1", "gateway": "10.253.0.254",
     "gateway6": "fd00:253::fe", "table": 102,
     "vip_ranges": ["198.51.100.64/26", "2001:db8:2::/64"], "default": True},
]


def _service(job: str, vips: dict, servers: list[str], mode: str, forward: str) -> dict:
    return {"job": job, "vips": dict(vips),
            "ports": [{"port": PORTS[job], "scheduler": "wrr", "forward": forward,
                       "mode": mode, **({"target_port": SERVER_PORT} if forward == "nat"
                                        else {})}],
            "real_servers": [{"address": a, "weight": 10} for a in servers],
            "health_check": {"type": "http", "path": "/healthz", "interval": 1,
                             "timeout": 1}}


def model_data(servers: list[int], mixed: bool = False, **haproxy) -> dict:
    """The model: ``web`` over the IPv6 servers of ``servers`` (indexes), plus the
    mixed-family services when asked."""
    data = {"version": 1, "carriers": copy.deepcopy(CARRIERS),
            "haproxy": {"spare_slots": 4, "hard_stop_after": 30, "maxconn": 2000, **haproxy},
            "services": [_service(JOB, VIP6, [server6(i) for i in servers], "http", "nat")]}
    if mixed:
        data["services"] += [
            _service(JOB_V4TO6, VIP4, [server6(i) for i in servers], "tcp", "tun"),
            _service(JOB_V6TO4, VIP6_B, [server4(i) for i in servers], "tcp", "tun")]
    return data


def get(address: str, port: int, timeout: float = 5.0) -> str:
    """Inside a client: one GET on a fresh connection; the body (``ok ADDR xff=...``)."""
    conn = http.client.HTTPConnection(address, port, timeout=timeout)
    try:
        conn.request("GET", "/")
        answer = conn.getresponse()
        body = answer.read().decode()
        if answer.status != 200:
            raise RuntimeError(f"GET [{address}]:{port}: status {answer.status}")
        return body.strip()
    finally:
        conn.close()


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def do_GET(self) -> None:
        local = self.connection.getsockname()[0].removeprefix("::ffff:")
        xff = self.headers.get("X-Forwarded-For", "-")
        body = f"ok {local} xff={xff}\n".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


class _Server(http.server.ThreadingHTTPServer):
    address_family = socket.AF_INET6
    request_queue_size = 512
    daemon_threads = True

    def server_bind(self) -> None:
        # dual-stack [::]: IPv4 clients arrive as ::ffff:a.b.c.d (no name lookup)
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = "rs", self.server_address[1]


def serve(port: int) -> None:
    """A real server for the lab: 200 to every GET, on both families."""
    _Server(("::", port), _Handler).serve_forever()


if __name__ == "__main__":
    serve(int(sys.argv[1]))
