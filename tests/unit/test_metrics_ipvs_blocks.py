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


def three(kind: str, to: str, what: str, names: tuple) -> list[Family]:
    return [Family(f"dcnet_ipvs_{kind}_scheduled_connections", "Connections IPVS "
                   f"scheduled to {to}", "counter", names),
            Family(f"dcnet_ipvs_{kind}_packets", f"Packets through {what} (in: from "
                   "clients, out: to clients)", "counter", (*names, "direction")),
            Family(f"dcnet_ipvs_{kind}_bytes", f"Bytes through {what} (in: from "
                   "clients, out: to clients)", "counter", (*names, "direction"))]


def reference(tables: dict, carriers: dict, servers: dict | None = None) -> str:
    """What the families print through Family.add, one sample at a time."""
    out = three("service", "the service's real servers", "the service", NAMES)
    if servers is not None:
        out += three("server", "the real server", "the real server", (*NAMES, "server"))
    for netns, table in sorted(tables.items()):
        sources = [(out[:3], table.counters)]
        if servers is not None:
            sources.append((out[3:], servers.get(netns, {})))
        for (conns, packets, volume), counters in sources:
            sums: dict = {}
            for (vip, port, *server), counts in counters.items():
                service, carrier = carriers.get((vip, port), (vip, ""))
                key = (service, port, carrier, *server)
                old = sums.get(key)
                sums[key] = counts if old is None else tuple(
                    a + b for a, b in zip(old, counts, strict=True))
            for (service, port, carrier, *server), counts in sums.items():
                conns.add((netns, service, port, carrier, *server), counts[0])
                for family, at in ((packets, 1), (volume, 3)):
                    family.add((netns, service, port, carrier, *server, "in"), counts[at])
                    family.add((netns, service, port, carrier, *server, "out"),
                               counts[at + 1])
    return b"".join(encoded(out)).decode()


def written(tables: dict, carriers: dict, servers: dict | None = None) -> str:
    return b"".join(encoded(ipvs.families(tables, carriers, servers))).decode()


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


def test_per_server_blocks_are_the_generic_text():
    counters = {(f"10.0.0.{i}", 80): (i, i, i, i, i) for i in range(3)}
    servers = {"host": {(f"10.0.0.{i}", 80, f"10.1.{i}.{s}:8080"): (s, i, s, i, 2**50)
                        for i in range(3) for s in range(ipvs.BLOCK // 2 + 1)}}
    servers["host"][("10.0.0.1", 80, 'we"ird')] = (1, 2, 3, 4, 5.5)
    carriers = {("10.0.0.1", 80): ("svc", "c"), ("10.0.0.2", 80): ("svc", "c")}
    text = written({"host": table(counters)}, carriers, servers)
    assert text == reference({"host": table(counters)}, carriers, servers)
    assert 'server="we\\"ird",service="svc"} 5.5\n' in text


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
