"""The scrape's read of a service dump (ipvs_stats.service_counts): services laid out as
ip_vs_genl_fill_service lays them out (AF, PROTOCOL, a 16-byte ADDR, PORT first; STATS
then an unpadded STATS64 last) are read by the two-unpack path, and give what the walk
over every attribute gives; any other layout (pad attributes, no STATS64, a fwmark
service, a short address) is walked. The counter families write their sample lines
themselves: each value as the exposition prints it."""

from __future__ import annotations

import socket
import struct

import pytest

from dcnet.lvs import genl, ipvs_stats
from dcnet.metrics import ipvs

pytestmark = pytest.mark.unit
PAD = 11
BIG = 2**63 + 12345


def attr(kind: int, payload: bytes) -> bytes:
    length = 4 + len(payload)
    return struct.pack("=HH", length, kind) + payload + b"\0" * (-length & 3)


def stats(kind: int, values, width: str = "Q", pad: bool = False, nested_flag: int = 0):
    parts = []
    for i, v in enumerate(values, 1):
        if pad:
            parts.append(attr(PAD, b""))
        parts.append(attr(i, struct.pack("=" + ("I" if width == "I" and i < 4 else "Q"),
                                         v)))
    return attr(kind | nested_flag, b"".join(parts))


def service(family=socket.AF_INET, addr="198.51.100.10", port=443, proto=6, fwmark=0,
            counts=(1, 2, 3, 4, 5), pe=b"", pad=False, stats64=True, addr_size=16,
            nested_flag=0) -> bytes:
    """A service's attributes (the IPVS_CMD_ATTR_SERVICE payload)."""
    parts = [attr(genl.SVC_AF, struct.pack("=H", family))]
    if fwmark:
        parts.append(attr(genl.SVC_FWMARK, struct.pack("=I", fwmark)))
    else:
        raw = socket.inet_pton(family, addr)
        parts += [attr(genl.SVC_PROTOCOL, struct.pack("=H", proto)),
                  attr(genl.SVC_ADDR, (raw + bytes(16))[:max(addr_size, len(raw))]),
                  attr(genl.SVC_PORT, struct.pack("!H", port))]
    parts.append(attr(genl.SVC_SCHED_NAME, b"wrr\0"))
    if pe:
        parts.append(attr(genl.SVC_PE_NAME, pe))
    parts += [attr(genl.SVC_FLAGS, struct.pack("=II", 0, 0xFFFFFFFF)),
              attr(genl.SVC_TIMEOUT, struct.pack("=I", 0)),
              attr(genl.SVC_NETMASK, struct.pack("=I", 0xFFFFFFFF)),
              stats(ipvs_stats.SVC_STATS, [c & 0xFFFFFFFF for c in counts] + [0] * 5, "I",
                    nested_flag=nested_flag)]
    if stats64:
        parts.append(stats(ipvs_stats.SVC_STATS64, [*counts, 7, 7, 7, 7, 7], pad=pad,
                           nested_flag=nested_flag))
    return b"".join(parts)


KERNEL = [
    service(),
    service(socket.AF_INET6, "2001:db8::10", 80, proto=17, counts=(BIG, 1, 2**40, 0, BIG)),
    service(port=0xFFFF, proto=132, pe=b"sip\0", counts=(0, 0, 0, 0, 0)),
    service(nested_flag=0x8000),
]
OTHER = [
    service(pad=True),                                 # architectures that align u64
    service(stats64=False, counts=(9, 8, 7, 2**40, 5)),
    service(fwmark=7),
    service(addr_size=4),                              # not the kernel's 16 bytes
]


@pytest.mark.parametrize("data", KERNEL + OTHER)
def test_the_result_is_the_walks(data):
    got = ipvs_stats.service_counts(data, 0, len(data))
    assert got == ipvs_stats._walked_service_counts(data, 0, len(data))
    assert len(got) == 10


@pytest.mark.parametrize("data", KERNEL)
def test_the_kernel_layout_is_read_without_the_walk(data, monkeypatch):
    monkeypatch.setattr(ipvs_stats, "_walked_service_counts", None)
    view = memoryview(b"\0" * 8 + data + b"\0" * 8)
    ipvs_stats.service_counts(view, 8, 8 + len(data))


def test_values_read():
    data = KERNEL[1]
    assert ipvs_stats.service_counts(data, 0, len(data)) == (
        socket.AF_INET6, 17, "2001:db8::10", 80, 0, BIG, 1, 2**40, 0, BIG)
    data = KERNEL[2]
    assert ipvs_stats.service_counts(data, 0, len(data))[:5] == (
        socket.AF_INET, 132, "198.51.100.10", 0xFFFF, 0)
    data = OTHER[2]
    assert ipvs_stats.service_counts(data, 0, len(data))[:5] == (socket.AF_INET, 0, "", 0, 7)


def test_counter_lines_print_values_as_the_exposition_does():
    """The counter families write their lines themselves: each value as
    exposition.number prints it (large counters too)."""
    from dcnet.metrics.elb import IPVSTable
    from dcnet.metrics.exposition import encoded, number

    values = (0, 10**15 - 1, 10**15, 2**64 - 1, 7)
    table = IPVSTable(counters={("198.51.100.10", 80): values})
    text = b"".join(encoded(ipvs.families({"host": table}, {}, None))).decode()
    labels = 'carrier="",netns="host",port="80",service="198.51.100.10"'
    head, tail = labels.split(",", 1)
    assert (f"dcnet_ipvs_service_scheduled_connections_total{{{labels}}} "
            f"{number(values[0])}") in text.splitlines()
    for name, direction, value in (("packets", "in", values[1]), ("packets", "out",
                                   values[2]), ("bytes", "in", values[3]),
                                   ("bytes", "out", values[4])):
        line = (f'dcnet_ipvs_service_{name}_total{{{head},direction="{direction}",'
                f'{tail}}} {number(value)}')
        assert line in text.splitlines()
    big = IPVSTable(counters={("198.51.100.11", 80): (10**15, 1, 2, 3, 4)})
    text = b"".join(encoded(ipvs.families({"host": big}, {}, None))).decode()
    assert (f'dcnet_ipvs_service_scheduled_connections_total{{carrier="",netns="host",'
            f'port="80",service="198.51.100.11"}} {number(10**15)}') in text.splitlines()


def test_connection_lines_print_values_as_the_exposition_does():
    """The per-service connection gauges are written as lines too: each sum as
    exposition.number prints it."""
    from dcnet.metrics.elb import IPVSTable, ServiceIndex, ipvs_families
    from dcnet.metrics.exposition import Family, encoded, number

    healthy = Family("dcnet_elb_vip_healthy_servers", "h", "gauge", ())
    for active, inactive in ((10**15 - 1, 0), (10**15, -3), (2**64 - 1, 10**15)):
        table = IPVSTable(sums={("198.51.100.10", 80): [active, inactive, 1]}, count=1)
        text = b"".join(encoded(ipvs_families({"host": table}, ServiceIndex({}, {}), False,
                                              healthy))).decode().splitlines()
        head = ('dcnet_ipvs_service_connections{carrier="",netns="host",port="80",'
                'service="198.51.100.10",state=')
        assert f'{head}"active"}} {number(active)}' in text
        assert f'{head}"inactive"}} {number(inactive)}' in text
