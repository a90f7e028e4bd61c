"""HAProxy's server rows kept column by column (``ServerRows``): what was parsed comes
back as it was read (names, states, counts past 64 bits, non-ASCII addresses), and the
families written from the columns are the lines ``labels`` and ``number`` make for each
server, in the order HAProxy listed them."""

from __future__ import annotations

import pytest

from dcnet.metrics.exposition import labels, number
from dcnet.metrics.haproxy_stat import (
    SERVER_STATES,
    HAProxyServer,
    ServerRows,
    families,
    parse_show_stat,
)

pytestmark = pytest.mark.unit

HEADER = "# pxname,svname,scur,stot,bin,bout,status,weight,act,type,addr,"
BIG = 2**64 + 5                     # past what an array of 64-bit counts holds
ROWS = [
    'we"ird\\x:80,s1,1,4,0,0,UP,1,1,2,10.0.0.1:8080,',
    f'we"ird\\x:80,s2,0,{BIG},0,0,DRAIN,0,0,2,[2001:db8::1]:80,',
    "web:80,s3,0,0,0,0,MAINT,1,0,2,0.0.0.0:0,",                      # a free slot
    "web:80,s4,1000000000000000,0,0,0,MAINT,1,0,2,h\u00e9st:1,",
    "web:80,s5,7,0,0,0,no check,1,0,2,10.0.0.5:1,",
    "web:80,s6,7,0,0,0,DOWN,1,0,2,10.0.0.6:1,",
    "other,s1,7,0,0,0,UP,1,0,2,10.0.0.7:1,",                         # not dcnet's
    "web:80,BACKEND,1,9,10,20,UP,1,1,1,,",
    'we"ird\\x:80,BACKEND,1,9,10,20,UP,1,1,1,,',
    "web:80,s7,1,4,0,0,UP,1,1,2,10.0.0.9:8080,",                     # after its backend
]
EXPECTED = [
    HAProxyServer('we"ird\\x', "80", "10.0.0.1:8080", "up", 1, 4),
    HAProxyServer('we"ird\\x', "80", "[2001:db8::1]:80", "drain", 0, BIG),
    HAProxyServer("web", "80", "h\u00e9st:1", "maint", 10**15, 0),
    HAProxyServer("web", "80", "10.0.0.5:1", "up", 7, 0),
    HAProxyServer("web", "80", "10.0.0.6:1", "down", 7, 0),
    HAProxyServer("web", "80", "10.0.0.9:8080", "up", 1, 4),
]


def test_rows_come_back_as_they_were_read():
    stats = parse_show_stat("\n".join([HEADER, *ROWS]) + "\n")
    assert list(stats.servers) == EXPECTED and len(stats.servers) == 6
    assert stats.servers.names == [('we"ird\\x', "80"), ("web", "80")]
    assert stats.servers == parse_show_stat(iter([HEADER, *ROWS])).servers
    assert stats.servers != ServerRows()


def test_families_from_the_columns_are_what_labels_writes_per_server():
    stats = parse_show_stat("\n".join([HEADER, *ROWS]) + "\n")
    written, healthy = families(stats, {"web": ("a", "b")}, per_server=True)
    text = {f.sample + ":" + f.kind: f.text() for f in written}
    names = ("service", "port", "server", "state")
    up = [f"dcnet_haproxy_server_up{labels(names, (s.service, s.port, s.server, s.state))}"
          f" {number(int(s.state == 'up'))}" for s in EXPECTED]
    cur = [f"dcnet_haproxy_server_sessions"
           f"{labels(('service', 'port', 'server'), (s.service, s.port, s.server))}"
           f" {number(s.sessions)}" for s in EXPECTED]
    assert text["dcnet_haproxy_server_up:gauge"].splitlines()[2:] == up
    assert text["dcnet_haproxy_server_sessions:gauge"].splitlines()[2:] == cur
    by_state = [f"dcnet_haproxy_backend_servers"
                f"{labels(('service', 'port', 'state'), (service, '80', state))} "
                f"{number(count)}"
                for service, counts in (('we"ird\\x', (1, 0, 1, 0)), ("web", (2, 1, 0, 1)))
                for state, count in zip(SERVER_STATES, counts, strict=True)]
    assert text["dcnet_haproxy_backend_servers:gauge"].splitlines()[2:] == by_state
    assert healthy == {("web", "80", "a"): 1, ("web", "80", "b"): 1,
                       ('we"ird\\x', "80", ""): 1}


def test_without_the_act_column_the_up_rows_are_counted():
    header = HEADER.replace(",act,", ",xact,")
    stats = parse_show_stat("\n".join([header, *ROWS]) + "\n")
    assert [b.usable for b in stats.backends] == [None, None]
    _, healthy = families(stats, {}, per_server=False)
    assert healthy == {("web", "80", ""): 2, ('we"ird\\x', "80", ""): 1}
