"""The exporter's IPVS counters against the real IPVS, in the kernel lab.

Three namespaces made with iproute2 (no pyroute2: its import alone costs about 30 s under
emulation): a client, a director with three IPVS NAT services (two on the model's VIPs,
one on no VIP of the model) programmed through dcnet's own generic netlink, and a real
server (busybox httpd). The exporter's own IPVS source (``elbctl exporter
--ipvs-netns``'s ``ipvs_source``) and collector are served in this process and scraped
over loopback before and after a few HTTP requests through one VIP: that service's and
its real server's packets, bytes and scheduled connections rose by at least what the
requests sent, the idle services stayed at zero, the per-service sums equal the
namespace's totals (``/proc/net/ip_vs_stats``, a path of the kernel independent of the
dumps) once two scrapes agree, and ``promtool check metrics`` finds nothing in the body.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request

import pytest

from dcnet.cli.elbctl_metrics import ipvs_source
from dcnet.lvs import genl
from dcnet.metrics.cardinality import Bound
from dcnet.metrics.elb import ELBCollector
from dcnet.metrics.exposition import Exposition
from dcnet.metrics.server import serve
from dcnet.model import parse_model
from dcnet.sysio import netns
from tests.unit.metrics_text import samples, value

pytestmark = pytest.mark.kernel

VIP, IDLE_VIP, STRAY_VIP = "198.51.100.10", "198.51.100.11", "198.51.100.12"
SERVER, PORT, SERVER_PORT = "10.20.0.11", 80, 8080
JOB = "job.web_service.shop_cluster.prod_pdl.retail_owt.sre_cop.example"
IDLE_JOB = "job.idle_service.idle_cluster.prod_pdl.retail_owt.sre_cop.example"
REQUESTS = 5
MODEL = f"""version: 1
carriers:
  - {{name: telecom, uplink: d0, gateway: 198.51.100.1, table: 101,
     vip_ranges: [198.51.100.0/26], default: true}}
services:
  - job: {JOB}
    vips: {{telecom: {VIP}}}
    ports: [{{port: {PORT}, scheduler: wrr, forward: nat, target_port: {SERVER_PORT}}}]
    real_servers: [{{address: {SERVER}}}]
  - job: {IDLE_JOB}
    vips: {{telecom: {IDLE_VIP}}}
    ports: [{{port: {PORT}, scheduler: wrr, forward: nat, target_port: {SERVER_PORT}}}]
    real_servers: [{{address: {SERVER}}}]
"""


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True)


@pytest.fixture
def lab():
    """(director namespace name, client namespace name) with the server listening."""
    tag = f"{os.getpid()}"
    director, client, server = (f"mipvs-{n}-{tag}" for n in ("d", "c", "r"))
    docroot = tempfile.mkdtemp(prefix="mipvs-www-")
    with open(os.path.join(docroot, "id"), "w") as handle:
        handle.write("rs1\n" * 200)            # a body of some size: bytes out count it
    httpd = None
    try:
        for name in (director, client, server):
            ip("netns", "add", name)
            ip("-n", name, "link", "set", "lo", "up")
        ip("-n", client, "link", "add", "c0", "type", "veth", "peer", "d0", "netns", director)
        ip("-n", server, "link", "add", "r0", "type", "veth", "peer", "d1", "netns", director)
        for name, ifname, address in ((client, "c0", "198.51.100.2/26"),
                                      (director, "d0", "198.51.100.1/26"),
                                      (director, "d1", "10.20.0.1/24"),
                                      (server, "r0", f"{SERVER}/24")):
            ip("-n", name, "addr", "add", address, "dev", ifname)
            ip("-n", name, "link", "set", ifname, "up")
        for vip in (VIP, IDLE_VIP, STRAY_VIP):
            ip("-n", director, "addr", "add", f"{vip}/32", "dev", "d0")
        ip("-n", server, "route", "add", "default", "via", "10.20.0.1")
        subprocess.run(["ip", "netns", "exec", director, "sysctl", "-qw",
                        "net.ipv4.ip_forward=1"], check=True)
        busybox = shutil.which("busybox") or "/bin/busybox"
        httpd = subprocess.Popen(["ip", "netns", "exec", server, busybox, "httpd", "-f",
                                  "-p", str(SERVER_PORT), "-h", docroot])
        program(director)
        wait_listening(server, httpd)
        yield director, client
    finally:
        if httpd is not None:
            httpd.terminate()
            httpd.wait(30)
        for name in (director, client, server):
            subprocess.run(["ip", "netns", "del", name], check=False)
        shutil.rmtree(docroot, ignore_errors=True)


def program(director: str) -> None:
    """Three NAT services on the real server, through dcnet's generic netlink."""
    sock = genl.IPVSSocket(netns.socket_in(netns.path_of(director), socket.AF_NETLINK,
                                           socket.SOCK_RAW, genl.NETLINK_GENERIC))
    try:
        requests = []
        for vip in (VIP, IDLE_VIP, STRAY_VIP):
            service = genl.WireService(socket.AF_INET, socket.IPPROTO_TCP, vip, PORT,
                                       sched="wrr")
            requests += [genl.Request(genl.CMD_NEW_SERVICE, service),
                         genl.Request(genl.CMD_NEW_DEST, service, genl.WireDest(
                             socket.AF_INET, SERVER, SERVER_PORT, fwd=0, weight=1))]
        assert sock.execute(requests) == [0] * len(requests)
    finally:
        sock.close()


def wait_listening(server: str, httpd: subprocess.Popen, timeout: float = 120) -> None:
    """Until the server's port accepts (a bound on the wait, never a timing assertion)."""
    deadline = time.monotonic() + timeout

    def attempt() -> bool:
        with socket.socket() as probe:
            probe.settimeout(2)
            return probe.connect_ex((SERVER, SERVER_PORT)) == 0

    while not netns.call_here_in(netns.path_of(server), attempt):
        assert httpd.poll() is None, "busybox httpd exited"
        assert time.monotonic() < deadline, "busybox httpd never listened"
        time.sleep(0.2)


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=120) as answer:
        return answer.read().decode()


# The kernel folds its per-CPU IPVS counters into the ones netlink and /proc report only
# in the rate estimator's run, every 2 s: two scrapes closer than that can agree while
# the requests' counts are still pending.
ESTIMATOR_PERIOD = 2.0


def settled(url: str, timeout: float = 60) -> str:
    """A scrape whose IPVS counters equal the previous scrape's, taken more than one
    estimator period before: the last packets of the requests' connections (closing
    handshakes) are counted in both, so the service dump, the dest dumps and the totals
    (read one after another) agree. The deadline only bounds the wait."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        text = scrape(url)
        counters = {k: v for k, v in samples(text).items() if k[0].startswith("dcnet_ipvs")
                    and k[0].endswith("_total")}
        if counters == last or time.monotonic() > deadline:
            return text
        last = counters
        time.sleep(ESTIMATOR_PERIOD + 0.5)


def total(text: str, name: str, **labels) -> float:
    """The sum of the samples of ``name`` whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples(text).items() if n == name and want <= ls)


def test_ipvs_counters_rise_with_traffic(lab):
    director, client = lab
    model = parse_model(MODEL)
    exposition = Exposition()
    exposition.register(ELBCollector(model=lambda: model, bound=Bound(100),
                                     ipvs_tables=ipvs_source([director])))
    server = serve(exposition, "127.0.0.1:0")
    try:
        url = server.url
        before = scrape(url)
        out = subprocess.run(["ip", "netns", "exec", client, "sh", "-c",
                              f"for i in $(seq {REQUESTS}); do curl -s -m 20 -o /dev/null "
                              f"-w '%{{http_code}}\\n' http://{VIP}:{PORT}/id; done"],
                             capture_output=True, text=True, timeout=300, check=True).stdout
        assert out.split() == ["200"] * REQUESTS
        after = settled(url)
    finally:
        server.close()
    assert value(after, "dcnet_exporter_source_up", source="ipvs") == 1
    labels = {"netns": director, "service": JOB, "port": str(PORT), "carrier": "telecom"}
    rise = {key: value(after, name, **labels, **extra) - value(before, name, **labels, **extra)
            for key, name, extra in (
                ("conns", "dcnet_ipvs_service_scheduled_connections_total", {}),
                ("pin", "dcnet_ipvs_service_packets_total", {"direction": "in"}),
                ("pout", "dcnet_ipvs_service_packets_total", {"direction": "out"}),
                ("bin", "dcnet_ipvs_service_bytes_total", {"direction": "in"}),
                ("bout", "dcnet_ipvs_service_bytes_total", {"direction": "out"}))}
    # each request: one connection; SYN, ACK, request, FIN, ACK in at least; the 1 KiB
    # body (and its headers) out
    assert rise["conns"] == REQUESTS
    assert rise["pin"] >= 4 * REQUESTS and rise["pout"] >= 3 * REQUESTS
    assert rise["bin"] >= 40 * rise["pin"] and rise["bout"] >= 1000 * REQUESTS
    server_labels = {**labels, "server": f"{SERVER}:{SERVER_PORT}"}
    for direction in ("in", "out"):
        for kind in ("packets", "bytes"):
            assert value(after, f"dcnet_ipvs_server_{kind}_total", direction=direction,
                         **server_labels) == value(after, f"dcnet_ipvs_service_{kind}_total",
                                                   direction=direction, **labels)
    for idle in ({**labels, "service": IDLE_JOB}, {**labels, "service": STRAY_VIP,
                                                    "carrier": ""}):
        assert value(after, "dcnet_ipvs_service_packets_total", direction="in", **idle) == 0
    # the dumps' sums equal the namespace totals of /proc/net/ip_vs_stats
    for counter, name, extra in (("packets_in", "packets", {"direction": "in"}),
                                 ("packets_out", "packets", {"direction": "out"}),
                                 ("bytes_in", "bytes", {"direction": "in"}),
                                 ("bytes_out", "bytes", {"direction": "out"}),
                                 ("connections", "scheduled_connections", {})):
        assert total(after, f"dcnet_ipvs_service_{name}_total", netns=director, **extra) \
            == value(after, "dcnet_ipvs_total", netns=director, counter=counter)
    check = subprocess.run(["promtool", "check", "metrics"], input=after,
                           capture_output=True, text=True, timeout=120)
    assert check.returncode == 0 and not check.stdout.strip() and not check.stderr.strip(), \
        check.stdout + check.stderr
