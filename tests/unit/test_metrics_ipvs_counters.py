"""IPVS traffic counters: the stats attributes of generic-netlink service and dest dumps
decoded from messages built as the kernel lays them out (ip_vs_genl_fill_service /
_fill_dest / _fill_stats / _fill_stats64), and the counter series the ELB collector makes
of them, per service and carrier, per real server only below the bound."""

from __future__ import annotations

import os
import socket
import struct

import pytest

import dcnet
from dcnet.cli.elbctl_metrics import ipvs_table
from dcnet.lvs import genl, ipvs_stats
from dcnet.metrics import ipvs
from dcnet.metrics.cardinality import Bound
from dcnet.metrics.elb import ELBCollector
from dcnet.model import load_model
from tests.unit.metrics_text import scrape, value

pytestmark = pytest.mark.unit
EXAMPLE = os.path.join(os.path.dirname(dcnet.__file__), "examples", "elb.yaml")
PAD = 11       # IPVS_STATS_ATTR_PAD: nla_put_u64_64bit's alignment attribute


def attr(kind: int, payload: bytes) -> bytes:
    length = 4 + len(payload)
    return struct.pack("=HH", length, kind) + payload + b"\0" * (-length & 3)


def nest(kind: int, *parts: bytes) -> bytes:
    return attr(kind | 0x8000, b"".join(parts))


def stats32(conns, inpkts, outpkts, inbytes, outbytes) -> bytes:
    """IPVS_*_ATTR_STATS: u32 conns and packets, u64 bytes, u32 rates."""
    u32, u64 = (lambda v: struct.pack("=I", v)), (lambda v: struct.pack("=Q", v))
    return b"".join([attr(1, u32(conns)), attr(2, u32(inpkts)), attr(3, u32(outpkts)),
                     attr(4, u64(inbytes)), attr(5, u64(outbytes)),
                     *(attr(k, u32(7)) for k in range(6, 11))])


def stats64(conns, inpkts, outpkts, inbytes, outbytes, pad: bool = True) -> bytes:
    """IPVS_*_ATTR_STATS64: every counter u64, each preceded by a zero-length PAD
    attribute where the kernel aligns it (``pad``)."""
    out = []
    for kind, v in enumerate((conns, inpkts, outpkts, inbytes, outbytes, 1, 2, 3, 4, 5), 1):
        if pad:
            out.append(attr(PAD, b""))
        out.append(attr(kind, struct.pack("=Q", v)))
    return b"".join(out)


def service_message(addr: str, port: int, s32: bytes | None, s64: bytes | None,
                    family: int = socket.AF_INET, proto: int = 6) -> bytes:
    """The attributes of one GET_SERVICE reply (after the genl header)."""
    parts = [attr(genl.SVC_AF, struct.pack("=H", family)),
             attr(genl.SVC_PROTOCOL, struct.pack("=H", proto)),
             attr(genl.SVC_ADDR, socket.inet_pton(family, addr)),
             attr(genl.SVC_PORT, struct.pack("!H", port)),
             attr(genl.SVC_SCHED_NAME, b"wrr\0"),
             attr(genl.SVC_FLAGS, struct.pack("=II", 0, 0xFFFFFFFF)),
             attr(genl.SVC_TIMEOUT, struct.pack("=I", 0)),
             attr(genl.SVC_NETMASK, struct.pack("=I", 0xFFFFFFFF))]
    if s32 is not None:
        parts.append(nest(ipvs_stats.SVC_STATS, s32))
    parts.append(attr(genl.SVC_PE_NAME, b"\0"))
    if s64 is not None:
        parts.append(nest(ipvs_stats.SVC_STATS64, s64))
    return nest(genl.CMD_ATTR_SERVICE, *parts)


def dest_message(addr: str, port: int, s64: bytes, family: int = socket.AF_INET) -> bytes:
    u32 = lambda v: struct.pack("=I", v)   # noqa: E731
    return nest(genl.CMD_ATTR_DEST,
                attr(genl.DEST_ADDR, socket.inet_pton(family, addr)),
                attr(genl.DEST_PORT, struct.pack("!H", port)),
                attr(genl.DEST_FWD, u32(0)), attr(genl.DEST_WEIGHT, u32(3)),
                attr(genl.DEST_U_THRESH, u32(0)), attr(genl.DEST_L_THRESH, u32(0)),
                attr(genl.DEST_ACTIVE, u32(2)), attr(genl.DEST_INACT, u32(1)),
                attr(genl.DEST_PERSIST, u32(0)),
                nest(ipvs_stats.DEST_STATS, stats32(1, 1, 1, 1, 1)),
                attr(genl.DEST_ADDR_FAMILY, struct.pack("=H", family)),
                nest(ipvs_stats.DEST_STATS64, s64))


class Dumps:
    """Stands in for the socket's ``dump``: each reply message is the genl header then
    the attributes, as :meth:`IPVSSocket.dump` yields them (buffer, start, end)."""

    def __init__(self, services: list[bytes], dests: dict | None = None):
        self.services, self.dests, self.closed = services, dests or {}, 0
        self.dest_dumps = 0

    def dump(self, cmd: int, payload: bytes = b""):
        if cmd == genl.CMD_GET_SERVICE:
            messages = self.services
        else:
            self.dest_dumps += 1
            messages = self.dests.get(payload, [])
        for message in messages:
            data = b"\0" * 4 + message
            yield memoryview(data), 4, len(data)

    # the socket's own walks over the dumped messages
    service_entries = genl.IPVSSocket.service_entries
    dest_entries = genl.IPVSSocket.dest_entries

    def service_counts(self):
        return ipvs_stats.StatsSocket.service_counts(self)

    def dest_counts(self, *service):
        return ipvs_stats.StatsSocket.dest_counts(self, *service)

    def close(self):
        self.closed += 1


def test_stats64_preferred_and_read_past_padding():
    big = 2**40 + 5                 # beyond 32 bits: only STATS64 holds it
    sock = Dumps([service_message("198.51.100.10", 80, stats32(1, 2, 3, 4, 5),
                                  stats64(big, big + 1, 7, 8000, 9000))])
    [(ws, stats)] = ipvs_stats.StatsSocket.service_stats(sock)
    assert (ws.addr, ws.port, ws.protocol, ws.sched) == ("198.51.100.10", 80, 6, "wrr")
    assert stats == ipvs_stats.Stats(big, big + 1, 7, 8000, 9000)


def test_stats32_when_the_kernel_sends_no_stats64_and_none_without_either():
    sock = Dumps([service_message("2001:db8::10", 443, stats32(1, 2, 3, 2**33, 5), None,
                                  family=socket.AF_INET6),
                  service_message("198.51.100.11", 53, None, None, proto=17)])
    (ws6, s6), (_ws, none) = ipvs_stats.StatsSocket.service_stats(sock)
    assert ws6.addr == "2001:db8::10" and s6 == ipvs_stats.Stats(1, 2, 3, 2**33, 5)
    assert none is None and ipvs.counts_of(none) == ipvs.ZERO


def test_stats64_without_padding_attributes():
    data = stats64(1, 2, 3, 4, 5, pad=False)
    assert ipvs_stats.decode_stats(data, 0, len(data)) == ipvs_stats.Stats(1, 2, 3, 4, 5)


def test_dest_dump_gives_the_row_and_its_counters():
    sock = Dumps([], {})
    ws = genl.WireService(socket.AF_INET, 6, "198.51.100.10", 80)
    key = genl._nested(genl.CMD_ATTR_SERVICE, ws.key_attrs())
    sock.dests[key] = [dest_message("10.0.1.21", 8080, stats64(4, 40, 30, 4000, 30000))]
    [(row, stats)] = ipvs_stats.StatsSocket.dest_stats(sock, ws)
    assert row[:5] == (socket.AF_INET, "10.0.1.21", 8080, 0, 3) and row[7:9] == (2, 1)
    assert stats == ipvs_stats.Stats(4, 40, 30, 4000, 30000)


# ----------------------------------------------------------------- the series

# the example model's first service: 198.51.100.10 (telecom) and 203.0.113.10 (bgp), :80
PROC = """IP Virtual Server version 1.2.1 (size=4096)
Prot LocalAddress:Port Scheduler Flags
  -> RemoteAddress:Port Forward Weight ActiveConn InActConn
TCP  C633640A:0050 wrr
  -> 0A000115:1F90      Masq    7      3          1
TCP  CB00710A:0050 wrr
  -> 0A000115:1F90      Masq    7      5          0
TCP  C0000201:0050 rr
  -> 0A000117:0050      Masq    1      0          0
"""


def kernel() -> Dumps:
    services = [service_message("198.51.100.10", 80, None, stats64(10, 100, 90, 1000, 9000)),
                service_message("203.0.113.10", 80, None, stats64(1, 2, 3, 4, 5)),
                service_message("192.0.2.1", 80, None, stats64(0, 0, 0, 0, 0))]
    dests = {}
    for addr, counts in (("198.51.100.10", (6, 60, 50, 600, 5000)),
                         ("203.0.113.10", (1, 2, 3, 4, 5)), ("192.0.2.1", (0,) * 5)):
        ws = genl.WireService(socket.AF_INET, 6, addr, 80)
        dests[genl._nested(genl.CMD_ATTR_SERVICE, ws.key_attrs())] = [
            dest_message("10.0.1.21" if addr != "192.0.2.1" else "10.0.1.23", 8080
                         if addr != "192.0.2.1" else 80, stats64(*counts))]
    return Dumps(services, dests)


def collect(bound: Bound, sock: Dumps) -> str:
    model = load_model(EXAMPLE)
    table = ipvs.attach(ipvs_table(PROC, ""), lambda: sock)
    return scrape(ELBCollector(model=lambda: model, ipvs_tables=lambda: {"host": table},
                               bound=bound))


def test_service_counters_labelled_by_service_and_carrier():
    sock = kernel()
    text = collect(Bound(10), sock)
    job = load_model(EXAMPLE).services[0].name
    labels = {"netns": "host", "service": job, "port": "80", "carrier": "telecom"}
    assert value(text, "dcnet_ipvs_service_scheduled_connections_total", **labels) == 10
    assert value(text, "dcnet_ipvs_service_packets_total", direction="in", **labels) == 100
    assert value(text, "dcnet_ipvs_service_packets_total", direction="out", **labels) == 90
    assert value(text, "dcnet_ipvs_service_bytes_total", direction="out", **labels) == 9000
    assert value(text, "dcnet_ipvs_service_bytes_total", direction="in", netns="host",
                 service=job, port="80", carrier="bgp") == 4
    # a service on no VIP of the model: its VIP as the service, no carrier
    assert value(text, "dcnet_ipvs_service_packets_total", direction="in", netns="host",
                 service="192.0.2.1", port="80", carrier="") == 0
    assert value(text, "dcnet_ipvs_server_bytes_total", direction="out",
                 server="10.0.1.21:8080", **labels) == 5000
    assert sock.dest_dumps == 3 and sock.closed == 2     # one socket per dump kind
    assert "# TYPE dcnet_ipvs_service_packets_total counter" in text


def test_above_the_bound_no_dest_dump_and_no_server_counters():
    sock = kernel()
    text = collect(Bound(2), sock)
    assert sock.dest_dumps == 0
    assert "dcnet_ipvs_server_" not in text
    assert value(text, "dcnet_metrics_per_server_series_enabled", source="ipvs") == 0
    assert value(text, "dcnet_ipvs_service_scheduled_connections_total", netns="host",
                 service="192.0.2.1", port="80", carrier="") == 0


def test_a_failing_dump_marks_the_source_down_and_keeps_the_rest():
    class Broken(Dumps):
        def dest_counts(self, *service):
            raise genl.NetlinkError(1, "EPERM")

    text = collect(Bound(10), Broken(kernel().services, {}))
    assert value(text, "dcnet_exporter_source_up", source="ipvs") == 0
    assert "dcnet_ipvs_service_packets_total" not in text
    assert "dcnet_elb_drift" in text or "dcnet_exporter_source_up" in text


def test_the_scrape_path_reads_what_the_generic_decoder_reads():
    messages = [service_message("198.51.100.10", 80, stats32(1, 2, 3, 4, 5),
                                stats64(2**40, 7, 8, 9, 10)),
                service_message("198.51.100.11", 80, None, stats64(1, 2, 3, 4, 5, pad=False)),
                service_message("2001:db8::10", 443, stats32(5, 4, 3, 2**33, 1), None,
                                family=socket.AF_INET6),
                service_message("198.51.100.12", 53, None, None, proto=17)]
    sock = Dumps(messages)
    fast = ipvs_stats.StatsSocket.service_counts(sock)
    generic = ipvs_stats.StatsSocket.service_stats(sock)
    assert [(f[2], f[3], f[1], *f[5:]) for f in fast] == [
        (ws.addr, ws.port, ws.protocol, *ipvs.counts_of(stats)) for ws, stats in generic]
    assert fast[0][5] == 2**40 and fast[2][8] == 2**33
