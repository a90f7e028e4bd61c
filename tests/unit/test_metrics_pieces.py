"""A scrape written in pieces: lines made as a family is written are the same text,
cut every few thousand lines; HAProxy's answer parsed line by line as it arrives gives
what its whole text gives; the service-info text decompressed in pieces is the same;
the per-server label sets written directly are what ``labels`` writes."""

from __future__ import annotations

import zlib

import pytest

from dcnet.metrics.elb import ServiceIndex
from dcnet.metrics.exposition import Family, encoded, labels
from dcnet.metrics.haproxy_stat import (
    HAProxyServer,
    parse_show_stat,
    server_labels,
    state_labels,
)

pytestmark = pytest.mark.unit


def test_lines_made_when_written_are_the_same_text_in_pieces():
    eager = Family("dcnet_x", "Help", "counter", ("service",))
    lazy = Family("dcnet_x", "Help", "counter", ("service",))
    made: list[int] = []

    def later():
        for i in range(1, 5):
            made.append(i)
            yield lazy.line(labels(("service",), (f"s{i}",)), i)

    eager.add(("s0",), 0)
    lazy.add(("s0",), 0)
    for i in range(1, 5):
        eager.add((f"s{i}",), i)
    lazy.extend(later())
    assert made == []                               # nothing made before writing
    pieces = list(lazy.pieces(lines_per_piece=2))
    assert made == [1, 2, 3, 4] and len(pieces) == 3
    assert "".join(pieces) == eager.text()
    assert lazy.text() == ""                        # written once: the lines are gone
    empty = Family("dcnet_y", "Nothing")
    empty.extend(iter(()))
    assert list(encoded([empty, b"", "x\n", [b"a", b"b"]])) == [b"x\n", b"a", b"b"]


SHOW_STAT = """# pxname,svname,scur,stot,bin,bout,status,weight,act,type,addr,
web:80,FRONTEND,0,9,1,1,OPEN,,,0,,
web:80,s1,1,4,0,0,UP,1,1,2,10.0.0.1:8080,
web:80,s2,0,5,0,0,DRAIN,0,0,2,10.0.0.2:8080,
web:80,s3,0,0,0,0,MAINT,1,0,2,0.0.0.0:0,
web:80,BACKEND,1,9,10,20,UP,1,1,1,,

"""


def test_show_stat_parsed_from_its_lines_as_from_its_text():
    stats = parse_show_stat(SHOW_STAT)
    assert parse_show_stat(iter(SHOW_STAT.split("\n"))) == stats
    assert [(s.server, s.state) for s in stats.servers] == [("10.0.0.1:8080", "up"),
                                                            ("10.0.0.2:8080", "drain")]
    assert [(b.service, b.sessions_total, b.usable) for b in stats.backends] == [
        ("web", 9, 1)]


def test_label_sets_written_directly_match_labels():
    s = HAProxyServer('we"ird:svc', "80", "10.0.0.1:8080", "up", 1, 2)
    assert server_labels(s) == labels(("service", "port", "server"),
                                      (s.service, s.port, s.server))
    assert server_labels(s, "up") == labels(("service", "port", "server", "state"),
                                            (s.service, s.port, s.server, "up"))
    assert state_labels("a\\b", "53", "drain") == labels(("service", "port", "state"),
                                                         ("a\\b", "53", "drain"))


def test_service_info_decompressed_in_pieces_is_the_same():
    family = Family("dcnet_service_info", "Tags")
    for i in range(3000):
        family.add_formatted(labels(("service",), (f"job.svc{i}_service",)), 1)
    index = ServiceIndex({}, {}, zlib.compress(family.text().encode()), None)
    pieces = list(index.info_pieces(size=4096))
    assert len(pieces) > 2 and b"".join(pieces) == index.info_bytes()
    assert b"".join(ServiceIndex({}, {}).info_pieces()) == b""
