"""The /proc/net/ip_vs parser (dcnet.lvs.procfs) against text captured from the kernel.

tests/data/lvs/proc_net_ip_vs.txt was captured in the kernel lab (Debian 6.1 guest,
ipvsadm 1.31) from a scratch namespace after these ipvsadm commands; ipvsadm_Sn.txt is
``ipvsadm -Sn`` of the same table (the same facts through generic netlink/sockopt):
TCP/UDP(ops)/SCTP services, IPv4 and IPv6 (a persistent one with a /64 netmask), a v6
service with an IPv4 tunnel dest, masq/route/tunnel dests, weights 0, 65535 and
2**31-1, a dest with thresholds (not in /proc), a service without dests, and two fwmark
services (one IPv6, persistent).
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from dcnet.lvs import procfs
from dcnet.lvs.genl import WireDest, WireService

pytestmark = pytest.mark.unit

DATA = Path(__file__).parent.parent / "data" / "lvs"
CAPTURED = (DATA / "proc_net_ip_vs.txt").read_text()
V4, V6 = socket.AF_INET, socket.AF_INET6
TCP, UDP, SCTP = socket.IPPROTO_TCP, socket.IPPROTO_UDP, 132
MASQ, TUNNEL, ROUTE = 0, 2, 3


def row(family, address, port, fwd, weight, active=0, inactive=0):
    return (family, address, port, fwd, weight, None, None, active, inactive, None)


EXPECTED = {
    (SCTP, "192.0.2.13", 9): [],
    (TCP, "192.0.2.14", 8080): [],
    (TCP, "192.0.2.11", 443): [row(V4, "198.51.100.30", 443, ROUTE, 1)],
    (UDP, "2001:db8::53", 53): [row(V6, "2001:db8::153", 53, ROUTE, 9)],
    (TCP, "203.0.113.255", 65535): [row(V4, "203.0.113.1", 65535, TUNNEL, 2147483647)],
    (TCP, "2001:db8::10", 443): [row(V4, "198.51.100.60", 443, TUNNEL, 4),
                                 row(V6, "2001:db8:0:1::abcd", 443, ROUTE, 1),
                                 row(V6, "2001:db8::20", 8443, MASQ, 5)],
    (UDP, "192.0.2.12", 53): [row(V4, "198.51.100.40", 5353, MASQ, 2)],
    (TCP, "192.0.2.10", 80): [row(V4, "127.0.0.1", 80, MASQ, 1),
                              row(V4, "198.51.100.23", 80, MASQ, 3),
                              row(V4, "198.51.100.22", 80, TUNNEL, 0),
                              row(V4, "198.51.100.21", 80, ROUTE, 65535),
                              row(V4, "198.51.100.20", 8080, MASQ, 7)],
    ("fwmark", 7): [row(V4, "198.51.100.50", 0, ROUTE, 1)],
    ("fwmark", 8): [],
}


def test_captured_kernel_text_parses_to_the_table_programmed():
    assert procfs.parse(CAPTURED) == EXPECTED
    assert list(procfs.parse(CAPTURED)) == list(EXPECTED)        # in the printed order


def test_captured_text_agrees_with_ipvsadm_save():
    """Every dest of ``ipvsadm -Sn`` (sockopt/netlink) is in the parsed /proc text."""
    parsed = procfs.parse(CAPTURED)
    listed = {(d[1], d[2]) for rows in parsed.values() for d in rows}
    saved = set()
    for line in (DATA / "ipvsadm_Sn.txt").read_text().splitlines():
        words = line.split()
        if words[0] == "-a":
            where = words[words.index("-r") + 1]
            address, _, port = where.rpartition(":")
            saved.add((address.strip("[]"), int(port)))
    assert saved == listed


def services_like_the_capture():
    """The captured table as WireService/WireDest values, in the kernel's order."""
    def svc(proto, addr, port, sched, **kw):
        family = V6 if ":" in addr else V4
        return WireService(family, proto, addr, port, sched=sched,
                           netmask=kw.pop("netmask", 0xFFFFFFFF if family == V4 else 128), **kw)

    def dst(addr, port, fwd, weight, **kw):
        return WireDest(V6 if ":" in addr else V4, addr, port, fwd=fwd, weight=weight, **kw)

    return [
        (svc(SCTP, "192.0.2.13", 9, "lc"), []),
        (svc(TCP, "192.0.2.14", 8080, "wrr"), []),
        (svc(TCP, "192.0.2.11", 443, "sh", flags=1, timeout=300),
         [dst("198.51.100.30", 443, ROUTE, 1)]),
        (svc(UDP, "2001:db8::53", 53, "wlc", flags=1, timeout=60, netmask=64),
         [dst("2001:db8::153", 53, ROUTE, 9)]),
        (svc(TCP, "203.0.113.255", 65535, "nq"),
         [dst("203.0.113.1", 65535, TUNNEL, 2147483647)]),
        (svc(TCP, "2001:db8::10", 443, "mh"),
         [dst("198.51.100.60", 443, TUNNEL, 4), dst("2001:db8:0:1::abcd", 443, ROUTE, 1),
          dst("2001:db8::20", 8443, MASQ, 5)]),
        (svc(UDP, "192.0.2.12", 53, "rr", flags=4), [dst("198.51.100.40", 5353, MASQ, 2)]),
        (svc(TCP, "192.0.2.10", 80, "wrr"),
         [dst("127.0.0.1", 80, MASQ, 1), dst("198.51.100.23", 80, MASQ, 3, u_thresh=100,
                                              l_thresh=10),
          dst("198.51.100.22", 80, TUNNEL, 0), dst("198.51.100.21", 80, ROUTE, 65535),
          dst("198.51.100.20", 8080, MASQ, 7)]),
        (WireService(V4, 0, "", 0, fwmark=7, sched="rr"), [dst("198.51.100.50", 0, ROUTE, 1)]),
        (WireService(V6, 0, "", 0, fwmark=8, sched="wlc", flags=1, timeout=120, netmask=128),
         []),
    ]


def test_format_table_prints_what_the_kernel_prints():
    """The fake's bulk read goes through format_table: byte for byte the kernel's text."""
    assert procfs.format_table(services_like_the_capture()) == CAPTURED


def test_service_id_matches_the_parsed_keys():
    ids = [procfs.service_id(ws) for ws, _ in services_like_the_capture()]
    assert ids == list(EXPECTED)


def test_counters_and_a_large_generated_table():
    services = []
    for i in range(300):
        ws = WireService(V4, TCP, f"10.0.{i // 250}.{i % 250}", 80 + i, sched="wrr")
        services.append((ws, [WireDest(V4, f"172.16.{i % 250}.{j}", 8080, fwd=MASQ, weight=j,
                                       active=i, inactive=j * 1000) for j in range(1, 11)]))
    parsed = procfs.parse(procfs.format_table(services))
    assert len(parsed) == 300
    rows = parsed[(TCP, "10.0.1.7", 80 + 257)]
    assert rows[3] == row(V4, "172.16.7.4", 8080, MASQ, 4, 257, 4000)


def test_an_empty_table():
    assert procfs.parse(procfs.format_table([])) == {}
    assert procfs.parse("\n".join(CAPTURED.splitlines()[:3])) == {}


@pytest.mark.parametrize(("text", "number", "problem"), [
    ("", 1, "expected the header"),
    ("IP Virtual Server version 1.2.1 (size=4096)\nProt LocalAddress:Port Scheduler Flags\n",
     3, "expected the header"),
    (CAPTURED.replace("Prot LocalAddress", "Proto LocalAddress"), 2, "expected the header"),
    (CAPTURED.replace("SCTP  C000020D:0009 lc  ", "  -> C000020D:0009      Masq 1 0 0"),
     4, "a dest line before any service"),
    (CAPTURED.replace("C633641E:01BB      Route", "C633641E:01BB      Bounce"), 7,
     "unknown forwarding method 'Bounce'"),
    (CAPTURED.replace("C633641E:01BB", "C63364:01BB"), 7, "bad dest address"),
    (CAPTURED.replace("Route   9      0", "Route   9      x"), 9, "bad weight or counter"),
    (CAPTURED.replace("Route   9      0          0", "Route   9      0"), 9, "6 fields"),
    (CAPTURED.replace("UDP  C000020C:0035", "XTP  C000020C:0035"), 16, "unknown protocol"),
    (CAPTURED.replace("TCP  C000020E:1F90 wrr  ", "TCP  C000020E:1F90"), 5, "no scheduler"),
    (CAPTURED + "\n", 27, "bad service line"),
])
def test_malformed_text_names_the_line_and_field(text, number, problem):
    with pytest.raises(procfs.ProcFormatError) as caught:
        procfs.parse(text)
    assert caught.value.number == number
    assert problem in str(caught.value)
    assert f"/proc/net/ip_vs line {number}:" in str(caught.value)


def test_read_in_reads_the_calling_threads_namespace(tmp_path, monkeypatch):
    """Without a namespace the file is read from /proc/thread-self (no switch)."""
    fake = tmp_path / "ip_vs"
    fake.write_text(CAPTURED)
    monkeypatch.setattr(procfs, "PROC_PATH", str(fake))
    assert procfs.read_in(None) == CAPTURED
