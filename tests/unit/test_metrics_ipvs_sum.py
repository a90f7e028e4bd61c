"""The summing pass over /proc/net/ip_vs (procfs.sum_dests, no row made) gives the sums
of the row-based path (procfs.parse, then the collector's rows): on the kernel's captured
text, on a generated table (IPv4 and IPv6, TCP, UDP and SCTP on one VIP:port, fwmark
services, weight-0 servers, services without servers, a service printed twice), and the
ELB collector's whole scrape is byte for byte the same from either table, per service
and per server; malformed text is refused as the strict parser refuses it."""

from __future__ import annotations

import functools
import io
import os
import random
import socket
from pathlib import Path

import pytest

import dcnet
from dcnet.cli.elbctl_metrics import ipvs_summed_table, ipvs_table
from dcnet.lvs import procfs
from dcnet.lvs.genl import WireDest, WireService
from dcnet.metrics.cardinality import Bound
from dcnet.metrics.elb import ELBCollector, ServiceIndex
from dcnet.model import load_model
from tests.unit.metrics_text import scrape, value

pytestmark = pytest.mark.unit
EXAMPLE = os.path.join(os.path.dirname(dcnet.__file__), "examples", "elb.yaml")
CAPTURED = (Path(__file__).parent.parent / "data" / "lvs" / "proc_net_ip_vs.txt").read_text()
V4, V6, TCP, UDP, SCTP = socket.AF_INET, socket.AF_INET6, 6, 17, 132
STATS = "   Total Incoming\n   Conns  Packets\n      1F      3E8      3E9     FA00     FA01\n"


@functools.cache
def generated(seed: int = 18) -> str:
    """A mixed table as the kernel prints it; the example model's first VIP among it."""
    rng = random.Random(seed)
    table = []
    for n in range(200):
        family = V6 if n % 7 == 0 else V4
        addr = f"2001:db8::{n:x}" if family == V6 else f"10.1.{n // 256}.{n % 256}"
        if n == 4:
            family, addr = V4, "198.51.100.10"          # labelled by the example model
        if n % 11 == 0:
            ws = WireService(V4, 0, "", 0, fwmark=n + 1, sched="rr")
        else:
            ws = WireService(family, (TCP, UDP, SCTP)[n % 3], addr, 80 + n % 2, sched="wrr")
        dests = []
        for s in range(rng.randrange(0, 13) if n != 4 else 3):   # some have no server
            dfamily = V6 if (n + s) % 5 == 0 else V4
            daddr = f"2001:db8:1::{s + 1:x}" if dfamily == V6 else f"172.16.{n % 256}.{s}"
            dests.append(WireDest(dfamily, daddr, 8080 + s, fwd=rng.choice((0, 1, 2, 3)),
                                  weight=rng.choice((0, 0, 1, 7, 65535)),
                                  active=rng.randrange(10 ** rng.randrange(8)),
                                  inactive=rng.randrange(10 ** rng.randrange(8))))
        table.append((ws, dests))
        if n % 3 == 2 and not ws.fwmark:  # the VIP:port in another protocol (summed)
            table.append((WireService(family, TCP if ws.protocol != TCP else UDP, ws.addr,
                                      ws.port, sched="rr"), dests[:2]))
    table.append(table[1])                        # printed twice (a read racing a change)
    return procfs.format_table(table)


def row_sums(text: str) -> dict:
    out = {}
    for service, rows in procfs.parse(text).items():
        out[service] = [sum(r[7] for r in rows), sum(r[8] for r in rows),
                        sum(r[4] > 0 for r in rows), len(rows)]
    return out


@pytest.mark.parametrize("text", [CAPTURED, generated(), generated(7)])
def test_the_sums_are_those_of_the_parsed_rows(text):
    sums = procfs.sum_dests(text)
    assert sums == row_sums(text)
    assert list(sums) == list(procfs.parse(text))            # same services, same order


def test_counters_summed_past_int64_and_signed_are_summed_as_parse_sums_them():
    """Columns are summed in int64 only where the sums are exact: counters near 2^63
    (kernels print u32, the text could say more) and signed ones sum as int() reads them."""
    head = "\n".join(procfs.HEADER[:1]) + " (size=4096)\n" + "\n".join(procfs.HEADER[1:])
    big = 2**62 + 5
    text = (f"{head}\nTCP  C000020A:0050 wrr \n"
            f"  -> C6336414:1F90      Masq    7      {big:<10d} -3        \n"
            f"  -> C6336415:1F90      Masq    0      {big:<10d} +4        \n"
            f"  -> C6336416:1F90      Masq    1      {big:<10d} 1_0       \n"
            "UDP  C000020C:0035 rr \n"
            "  -> C6336414:1F90      Route   2      -1         5         \n")
    sums = procfs.sum_dests(text)
    assert sums == row_sums(text)
    assert sums[(6, "192.0.2.10", 80)] == [3 * big, 11, 2, 3]      # past 2^63
    huge = text.replace(str(big), str(2**70), 1)                   # past int64
    assert procfs.sum_dests(huge) == row_sums(huge)
    assert sums[(17, "192.0.2.12", 53)] == [-1, 5, 1, 1]
    small = text.replace(str(big), "12")  # summed in int64
    assert procfs.sum_dests(small) == row_sums(small)
    assert procfs.sum_dests(small)[(6, "192.0.2.10", 80)] == [36, 11, 2, 3]


def test_an_empty_table_and_services_without_servers():
    assert procfs.sum_dests(procfs.format_table([])) == {}
    text = procfs.format_table([(WireService(V4, TCP, "10.0.0.1", 80, sched="rr"), [])])
    assert procfs.sum_dests(text) == {(TCP, "10.0.0.1", 80): [0, 0, 0, 0]}


def test_the_summed_table_counts_and_sums_as_the_rows_do():
    text = generated()
    rows, summed = ipvs_table(text, STATS), ipvs_summed_table(text, STATS)
    assert summed.rows == [] and summed.row_count() == len(rows.rows) > 1000
    assert summed.vip_sums() == rows.vip_sums()
    assert summed.server_rows() == rows.rows
    assert summed.totals == rows.totals


@pytest.mark.parametrize("bound", [Bound(mode="service"), Bound(mode="server"),
                                   Bound(10**6), Bound(5)])
def test_the_scrape_is_byte_for_byte_the_same(bound):
    model = load_model(EXAMPLE)
    texts = {"host": generated(), "other": generated(7)}

    def collect(make) -> str:
        tables = {name: make(text, STATS) for name, text in texts.items()}
        return scrape(ELBCollector(model=lambda: model, bound=bound,
                                   ipvs_tables=lambda: tables))

    before, after = collect(ipvs_table), collect(ipvs_summed_table)
    assert after == before
    assert ("server=" in after) == bound.per_server(2 * 2000)
    job = model.services[0].name                      # the sums reached the series
    assert value(after, "dcnet_ipvs_service_connections", carrier="telecom", netns="host",
                 port="80", service=job, state="active") == sum(
        r.active for r in ipvs_table(texts["host"], "").rows if r.vip == "198.51.100.10"
        and r.port == 80)


def test_a_table_is_summed_afresh_at_each_scrape():
    """Every VIP of a port labelled as one service and carrier: their sums are added
    into new lists, the table's are left as they are for the next scrape."""
    table = ipvs_summed_table(generated(), STATS)
    sums = {key: list(values) for key, values in table.vip_sums().items()}
    index = ServiceIndex({key: ("svc", "c") for key in sums}, {})
    collector = ELBCollector(model=lambda: index, ipvs_tables=lambda: {"host": table},
                             bound=Bound(5))
    first = scrape(collector)
    assert scrape(collector) == first and table.vip_sums() == sums
    assert value(first, "dcnet_ipvs_service_connections", carrier="c", netns="host",
                 port="80", service="svc", state="active") == sum(
        active for (_, port), (active, _, _) in sums.items() if port == 80)


@pytest.mark.parametrize(("text", "number", "problem"), [
    ("", 1, "expected the header"),
    (CAPTURED.replace("Prot LocalAddress", "Proto LocalAddress"), 2, "expected the header"),
    (CAPTURED.replace("SCTP  C000020D:0009 lc  ", "  -> C000020D:0009      Masq 1 0 0"),
     4, "a dest line before any service"),
    (CAPTURED.replace("C633641E:01BB      Route", "C633641E:01BB      Bounce"), 7,
     "unknown forwarding method 'Bounce'"),
    (CAPTURED.replace("Route   9      0", "Route   9      x"), 9, "bad weight or counter"),
    (CAPTURED.replace("Route   9      0          0", "Route   9      0"), 9, "6 fields"),
    (CAPTURED.replace("Route   9      0          0", "Route   9      0    0    0"), 9,
     "6 fields"),
    (CAPTURED.replace("  -> C633641E:01BB", " -> C633641E:01BB"), 7, "bad service line"),
    (CAPTURED.replace("UDP  C000020C:0035", "XTP  C000020C:0035"), 16, "unknown protocol"),
    (CAPTURED + "\n", 27, "bad service line"),
])
def test_malformed_text_is_refused_as_parse_refuses_it(text, number, problem):
    for read in (procfs.parse, procfs.sum_dests):
        with pytest.raises(procfs.ProcFormatError) as caught:
            read(text)
        assert caught.value.number == number and problem in str(caught.value)


HEAD = "\n".join(CAPTURED.split("\n")[:3]) + "\n"
EDGES = [HEAD, HEAD[:-1], HEAD + "\n", CAPTURED, CAPTURED[:-1], CAPTURED + "\n",
         CAPTURED + "\n\n", HEAD + "\n" + CAPTURED[len(HEAD):], CAPTURED.replace(
             "TCP  C000020E:1F90 wrr  \n", "TCP  C000020E:1F90 wrr  \n\n"),
         CAPTURED.replace("Route   9      0", "Route   -9     0"),      # not the kernel's
         CAPTURED.replace("Route   9      0", "Route   0_0    0")]


def outcome(read, text):
    try:
        return read(text)
    except procfs.ProcFormatError as exc:
        return (exc.number, exc.problem)


@pytest.mark.parametrize("text", EDGES)
def test_the_texts_edges_as_parse_reads_them(text):
    parsed = outcome(procfs.parse, text)
    summed = outcome(procfs.sum_dests, text)
    assert summed == (row_sums(text) if isinstance(parsed, dict) else parsed)


@pytest.mark.parametrize("size", [1, 2, 5, 64])
def test_any_cut_of_the_text_sums_the_same(size):
    for text in [*EDGES, CAPTURED.replace("Route   9      0", "Route   9      x")]:
        pieces = [text[i:i + size] for i in range(0, len(text), size)]
        assert outcome(procfs.sum_pieces, pieces) == outcome(procfs.sum_dests, text)
    text = generated()
    for big in (size * 61, size * 4096):
        pieces = (text[i:i + big] for i in range(0, len(text), big))
        assert procfs.sum_pieces(pieces) == row_sums(text)


def test_a_file_is_summed_and_kept_only_when_small():
    text = generated()
    sums, kept = procfs.sum_read(io.StringIO(text), keep=len(text))
    assert sums == row_sums(text) and kept == text
    sums, kept = procfs.sum_read(io.StringIO(text), keep=len(text) - 1)
    assert sums == row_sums(text) and kept is None


def test_a_binary_file_is_summed_as_its_text():
    """The exporter opens the file binary (procfs.open_in): the same sums and kept text."""
    text = generated()
    sums, kept = procfs.sum_read(io.BytesIO(text.encode()), keep=len(text))
    assert sums == row_sums(text) and kept == text
    assert procfs.sum_read(io.BytesIO(text.encode()), keep=0) == (row_sums(text), None)


@pytest.mark.parametrize("weight", ["00", "000", "100", "01", "0"])
def test_weights_of_zeros_are_counted_as_parse_counts_them(weight):
    """Weights of 0 are counted as the string "0" where no weight starts with "00"
    (the kernel's "%d"), else each is converted: "00" is 0, "100" and "01" are not."""
    text = CAPTURED.replace("Route   9      0", f"Route   {weight:<6} 0")
    assert text != CAPTURED
    for size in (61, 4096, len(text)):
        pieces = [text[i:i + size] for i in range(0, len(text), size)]
        assert procfs.sum_pieces(pieces) == row_sums(text)


def test_rows_read_again_label_both_per_service_and_per_server_series():
    """Above the size kept, per-server rows come from a second read; the per-service
    series of that scrape are then summed from those rows, so both agree."""
    model = load_model(EXAMPLE)
    first, second = generated(), generated(7)
    table = ipvs_summed_table("", STATS, procfs.sum_dests(first), lambda: second)
    again = scrape(ELBCollector(model=lambda: model, bound=Bound(mode="server"),
                                ipvs_tables=lambda: {"host": table}))
    once = scrape(ELBCollector(model=lambda: model, bound=Bound(mode="server"),
                               ipvs_tables=lambda: {"host": ipvs_table(second, STATS)}))
    rows = "dcnet_metrics_server_rows"                  # counted at the first read
    counted = value(again, rows, source="ipvs")
    assert counted == len(ipvs_table(first, "").rows) != value(once, rows, source="ipvs")
    line = f'{rows}{{source="ipvs"}} '
    assert again.replace(f"{line}{counted}", "") == once.replace(
        f"{line}{value(once, rows, source='ipvs')}", "")


@pytest.mark.parametrize("keep", [0, 1 << 20])
def test_the_source_reads_the_file_once_or_twice_to_the_same_scrape(keep, tmp_path,
                                                                     monkeypatch):
    from dcnet.cli import elbctl_metrics
    from dcnet.lvs import ipvs_stats

    class NoCounters(ipvs_stats.StatsSocket):      # empty dumps (tested elsewhere)
        def __init__(self, sock):
            pass

        def dump(self, cmd, payload=b""):
            return iter(())

        def close(self):
            pass

    (tmp_path / "ip_vs").write_text(generated())
    (tmp_path / "ip_vs_stats").write_text(STATS)
    monkeypatch.setattr(procfs, "PROC_PATH", str(tmp_path / "ip_vs"))
    monkeypatch.setattr(elbctl_metrics, "STATS_PATH", str(tmp_path / "ip_vs_stats"))
    monkeypatch.setattr(elbctl_metrics, "KEEP_IPVS_TEXT", keep)
    monkeypatch.setattr(ipvs_stats, "StatsSocket", NoCounters)
    reads = []
    monkeypatch.setattr(procfs, "_read", lambda path: reads.append(path) or Path(
        path).read_text())
    model = load_model(EXAMPLE)
    rows = {"host": ipvs_table(generated(), STATS)}
    for bound in (Bound(mode="server"), Bound(5)):
        text = scrape(ELBCollector(model=lambda: model, bound=bound,
                                   ipvs_tables=elbctl_metrics.ipvs_source(["host"])))
        assert text == scrape(ELBCollector(model=lambda: model, bound=bound,
                                           ipvs_tables=lambda: rows))
    assert len(reads) == (1 if keep == 0 else 0)     # read again in server mode only
