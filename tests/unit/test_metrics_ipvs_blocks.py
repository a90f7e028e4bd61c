"""The IPVS counter families written in joined blocks (ipvs.families, Family.extend_text)
are the text the generic path writes (Family.add: labels() and number() per sample),
byte for byte: several blocks, VIPs of one service summed, escaped label values, and
values number() prints otherwise (floats, bools, counts past 10^15, negative)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from dcnet.metrics import ipvs
from dcnet.metrics.exposition import Family, encoded

pytestmark = pytest.mark.unit
NAMES = ("netns", "service", "port", "carrier")


def reference(tables: dict, carriers: dict) -> str:
    """What the families print through Family.add, one sample at a time."""
    conns = Family("dcnet_ipvs_service_scheduled_connections", "Connections IPVS "
                   "scheduled to the service's real servers", "counter", NAMES)
    packets = Family("dcnet_ipvs_service_packets", "Packets through the service (in: "
                     "from clients, out: to clients)", "counter", (*NAMES, "direction"))
    volume = Family("dcnet_ipvs_service_bytes", "Bytes through the service (in: from "
                    "clients, out: to clients)", "counter", (*NAMES, "direction"))
    for netns, table in sorted(tables.items()):
        sums: dict = {}
        for (vip, port), counts in table.counters.items():
            service, carrier = carriers.get((vip, port), (vip, ""))
            old = sums.get((service, port, carrier))
            sums[(service, port, carrier)] = counts if old is None else tuple(
                a + b for a, b in zip(old, counts, strict=True))
        for (service, port, carrier), counts in sums.items():
            conns.add((netns, service, port, carrier), counts[0])
            for family, at in ((packets, 1), (volume, 3)):
                family.add((netns, service, port, carrier, "in"), counts[at])
                family.add((netns, service, port, carrier, "out"), counts[at + 1])
    return b"".join(encoded([conns, packets, volume])).decode()


def written(tables: dict, carriers: dict) -> str:
    return b"".join(encoded(ipvs.families(tables, carriers, None))).decode()


def table(counters: dict) -> SimpleNamespace:
    return SimpleNamespace(counters=counters)


def test_blocks_are_the_generic_text():
    count = 2 * ipvs.BLOCK + 3                        # three blocks, the last short
    counters = {(f"10.0.{i // 256}.{i % 256}", 80): (i, 10 * i, 20 * i, 3 * i, 2**40 + i)
                for i in range(count)}
    carriers = {(f"10.0.{i // 256}.{i % 256}", 80): (f"svc{i // 2}", ("a", 'b"\\')[i % 2])
                for i in range(count - 5)}           # the last five: no service
    carriers[("10.0.0.7", 80)] = ("svc3", "a")        # a second VIP of svc3 on "a"
    tables = {"host": table(counters), "ns\n2": table(dict(list(counters.items())[:9]))}
    text = written(tables, carriers)
    assert text == reference(tables, carriers)
    assert text.count("\n") == 2 * 3 + 5 * (count - 1 + 8)       # two sums, 2 tables
    assert 'carrier="b\\"\\\\"' in text and 'netns="ns\\n2"' in text
    assert 'port="80",service="svc3"} 13.0\n' in text           # 6 + 7, summed


@pytest.mark.parametrize("odd", [1.5, True, 10**15, -(10**15), -3, float("inf"),
                                 float("nan"), 2**64])
def test_values_printed_otherwise_are_the_generic_text(odd):
    counters = {(f"10.0.0.{i}", 80): (i, i, i, i, i) for i in range(ipvs.BLOCK + 2)}
    counters[("10.0.0.5", 80)] = (1, 2, odd, 4, 5)
    text = written({"host": table(counters)}, {})
    assert text == reference({"host": table(counters)}, {})
    assert ipvs.plain_counts(counters.values()) == (type(odd) is int and abs(odd) < 10**15)


def test_plain_counts():
    assert ipvs.plain_counts([]) and ipvs.plain_counts([(0, 10**15 - 1, -(10**15) + 1)])
    assert not ipvs.plain_counts([(1, 2), (3, False)])
    assert not ipvs.plain_counts([(10**15,)]) and not ipvs.plain_counts([(1.0,)])


def test_an_empty_table_prints_no_family():
    assert written({"host": table({})}, {}) == ""


def test_text_blocks_follow_the_lines_and_take_the_header_once():
    family = Family("dcnet_x", "Help", "counter", ("a",))
    family.add(("1",), 1)
    family.extend_text(iter(["", 'dcnet_x_total{a="2"} 2.0\n']))
    family.extend_text(iter(['dcnet_x_total{a="3"} 3.0\n']))
    eager = Family("dcnet_x", "Help", "counter", ("a",))
    for i in (1, 2, 3):
        eager.add((str(i),), i)
    assert family.text() == eager.text() and family.text() == ""
    only = Family("dcnet_y", "Only blocks")
    only.extend_text(iter(["", "dcnet_y 1.0\n"]))
    assert only.text() == "# HELP dcnet_y Only blocks\n# TYPE dcnet_y gauge\ndcnet_y 1.0\n"
    empty = Family("dcnet_z", "Nothing")
    empty.extend_text(iter([""]))
    assert empty.text() == ""
