"""The IPVS table contract: what dcnet.lvs relies on from ``services/dests/execute``.

:class:`IPVSContract` holds the tests; a subclass provides the ``table`` fixture. Here it
runs against :class:`dcnet.lvs.fake.FakeIPVS`; tests/kernel/test_lvs.py (test_contract) runs the
same class against the real kernel (a fresh namespace per test) in the kernel lab, so
the fake stays honest.
"""

from __future__ import annotations

import errno
import socket

import pytest

from dcnet.lvs import procfs, state
from dcnet.lvs.fake import FakeIPVS
from dcnet.lvs.ipvs import (
    CMD_DEL_DEST,
    CMD_DEL_SERVICE,
    CMD_NEW_DEST,
    CMD_NEW_SERVICE,
    CMD_SET_DEST,
    CMD_SET_SERVICE,
    Request,
    WireDest,
    WireService,
)

VIP, VIP6 = "192.0.2.10", "2001:db8::10"


def svc(addr=VIP, port=80, proto=socket.IPPROTO_TCP, **kw) -> WireService:
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    netmask = 128 if family == socket.AF_INET6 else 0xFFFFFFFF
    return WireService(family, proto, addr, port, netmask=netmask, **kw)


def dest(addr="198.51.100.20", port=8080, **kw) -> WireDest:
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    return WireDest(family, addr, port, **kw)


def observed(table):
    """The normalized {service key: (attrs, {dest key: attrs})} of the whole table."""
    out = {}
    for ws in table.services():
        found = state.observed_service(ws)
        assert found is not None
        skey, attrs = found
        out[skey] = (attrs, dict(state.observed_dest(skey, wd) for wd in table.dests(ws)))
    return out


class IPVSContract:
    """Subclasses provide a ``table`` fixture: an empty IPVS table. For the kernel that is
    a namespace with ``lo`` up: with no local routing table at all the kernel refuses
    IPv4 dests with EINVAL (inet_addr_type() answers RTN_BROADCAST)."""

    def test_empty_table_dumps_nothing(self, table):
        assert table.services() == []

    @pytest.mark.parametrize("sched", ["rr", "wrr", "lc", "wlc", "sh", "mh", "dh", "sed", "nq"])
    def test_scheduler_reads_back(self, table, sched):
        assert table.execute([Request(CMD_NEW_SERVICE, svc(sched=sched))]) == [0]
        assert observed(table)[("tcp", VIP, 80)][0]["scheduler"] == sched

    def test_service_and_dests_round_trip(self, table):
        s = svc(sched="wrr", flags=0x1, timeout=300)
        results = table.execute([
            Request(CMD_NEW_SERVICE, s),
            Request(CMD_NEW_DEST, s, dest("198.51.100.20", 8080, fwd=0, weight=7)),
            Request(CMD_NEW_DEST, s, dest("198.51.100.21", 80, fwd=3, weight=65535)),
            Request(CMD_NEW_DEST, s, dest("198.51.100.22", 80, fwd=2, weight=0)),
        ])
        assert results == [0, 0, 0, 0]
        attrs, dests = observed(table)[("tcp", VIP, 80)]
        assert attrs == {"scheduler": "wrr", "persistence": 300}
        assert dests == {
            ("tcp", VIP, 80, "198.51.100.20", 8080): {"forward": "nat", "weight": 7},
            ("tcp", VIP, 80, "198.51.100.21", 80): {"forward": "dr", "weight": 65535},
            ("tcp", VIP, 80, "198.51.100.22", 80): {"forward": "tun", "weight": 0},
        }

    def test_udp_sctp_and_ipv6_services(self, table):
        services = [svc(port=53, proto=socket.IPPROTO_UDP), svc(port=9, proto=132),
                    svc(VIP6, 443, sched="rr")]
        assert table.execute([Request(CMD_NEW_SERVICE, s) for s in services]) == [0, 0, 0]
        assert table.execute([Request(CMD_NEW_DEST, services[2],
                                      dest("2001:db8::20", 443, weight=3))]) == [0]
        got = observed(table)
        assert set(got) == {("udp", VIP, 53), ("sctp", VIP, 9), ("tcp", VIP6, 443)}
        assert got[("tcp", VIP6, 443)][1] == {
            ("tcp", VIP6, 443, "2001:db8::20", 443): {"forward": "dr", "weight": 3}}

    def test_set_changes_in_place(self, table):
        s, d = svc(sched="rr"), dest(weight=1, fwd=0)
        table.execute([Request(CMD_NEW_SERVICE, s), Request(CMD_NEW_DEST, s, d)])
        s2 = svc(sched="wlc", flags=0x1, timeout=60)
        d2 = dest(weight=9, fwd=0, u_thresh=100, l_thresh=10)
        assert table.execute([Request(CMD_SET_SERVICE, s2), Request(CMD_SET_DEST, s2, d2)]) \
            == [0, 0]
        attrs, dests = observed(table)[("tcp", VIP, 80)]
        assert attrs == {"scheduler": "wlc", "persistence": 60}
        assert dests[("tcp", VIP, 80, d.addr, d.port)] == {
            "forward": "nat", "weight": 9, "u_thresh": 100, "l_thresh": 10}

    def test_errors_are_per_request_and_the_batch_goes_on(self, table):
        s, d = svc(), dest()
        results = table.execute([
            Request(CMD_NEW_SERVICE, s),
            Request(CMD_NEW_SERVICE, s),                      # exists
            Request(CMD_NEW_DEST, svc(port=81), d),           # no such service
            Request(CMD_SET_DEST, s, d),                      # no such dest
            Request(CMD_DEL_DEST, s, d),                      # no such dest
            Request(CMD_NEW_DEST, s, d),                      # still executed
            Request(CMD_NEW_DEST, s, d),                      # exists
            Request(CMD_SET_SERVICE, svc(port=82)),           # no such service
            Request(CMD_DEL_SERVICE, svc(port=83)),           # no such service
            Request(CMD_NEW_SERVICE, svc(port=84, sched="nosuch")),
            Request(CMD_NEW_DEST, s, dest("198.51.100.30", l_thresh=5, u_thresh=2)),
        ])
        assert results == [0, errno.EEXIST, errno.ESRCH, errno.ENOENT, errno.ENOENT, 0,
                           errno.EEXIST, errno.ESRCH, errno.ESRCH, errno.ENOENT, errno.ERANGE]
        assert list(observed(table)) == [("tcp", VIP, 80)]

    def test_deleting_a_service_removes_its_dests(self, table):
        s = svc()
        table.execute([Request(CMD_NEW_SERVICE, s), Request(CMD_NEW_DEST, s, dest())])
        assert table.execute([Request(CMD_DEL_SERVICE, s)]) == [0]
        assert table.services() == []
        assert table.dests(s) == []                  # an empty dump, not an error
        assert table.execute([Request(CMD_NEW_SERVICE, s)]) == [0]
        assert observed(table)[("tcp", VIP, 80)][1] == {}

    def test_delete_dest_only_needs_its_key(self, table):
        s = svc()
        table.execute([Request(CMD_NEW_SERVICE, s),
                       Request(CMD_NEW_DEST, s, dest(weight=5, fwd=0))])
        assert table.execute([Request(CMD_DEL_DEST, svc(sched="xx"), dest())]) == [0]
        assert observed(table)[("tcp", VIP, 80)][1] == {}

    def test_new_dests_have_no_connections(self, table):
        s = svc()
        table.execute([Request(CMD_NEW_SERVICE, s), Request(CMD_NEW_DEST, s, dest())])
        (d,) = table.dests(s)
        assert (d.active, d.inactive) == (0, 0)

    def test_writes_count_every_request(self, table):
        before = table.writes
        table.execute([Request(CMD_NEW_SERVICE, svc()), Request(CMD_NEW_SERVICE, svc())])
        table.services()
        assert table.writes - before == 2

    def test_large_batch(self, table):
        requests = []
        for i in range(300):
            s = svc(port=1000 + i, sched="wrr")
            requests.append(Request(CMD_NEW_SERVICE, s))
            requests += [Request(CMD_NEW_DEST, s, dest(f"198.51.100.{j}", 80, weight=j))
                         for j in range(1, 4)]
        assert set(table.execute(requests)) == {0}
        got = observed(table)
        assert len(got) == 300
        assert sum(len(d) for _, d in got.values()) == 900
        assert got[("tcp", VIP, 1299)][1][("tcp", VIP, 1299, "198.51.100.3", 80)]["weight"] == 3

    def test_bulk_dest_read_equals_the_dumps_but_for_thresholds(self, table):
        """all_dest_rows (one read of /proc/net/ip_vs) shows what every dest dump shows,
        except thresholds and persistent-connection counters (None)."""
        tcp, udp, v6 = svc(sched="wrr"), svc(port=53, proto=socket.IPPROTO_UDP), svc(VIP6, 443)
        fwmark = WireService(socket.AF_INET, 0, "", 0, fwmark=7, sched="rr")
        empty = svc(port=8081)
        requests = [Request(CMD_NEW_SERVICE, s) for s in (tcp, udp, v6, fwmark, empty)]
        requests += [
            Request(CMD_NEW_DEST, tcp, dest("198.51.100.20", 8080, fwd=0, weight=7)),
            Request(CMD_NEW_DEST, tcp, dest("198.51.100.21", 80, fwd=3, weight=65535,
                                            u_thresh=100, l_thresh=10)),
            Request(CMD_NEW_DEST, tcp, dest("198.51.100.22", 80, fwd=2, weight=0)),
            Request(CMD_NEW_DEST, udp, dest("198.51.100.20", 5353, fwd=0, weight=2)),
            Request(CMD_NEW_DEST, v6, dest("2001:db8::20", 8443, fwd=0, weight=5)),
            Request(CMD_NEW_DEST, v6, dest("2001:db8:0:1::abcd", 443, weight=1)),
            Request(CMD_NEW_DEST, fwmark, dest("198.51.100.50", 0, weight=1)),
        ]
        assert set(table.execute(requests)) == {0}
        bulk = table.all_dest_rows()
        assert bulk is not None
        services = table.services()
        assert set(bulk) == {procfs.service_id(ws) for ws in services}
        for ws in services:
            dumped = [(*r[:5], None, None, r[7], r[8], None) for r in table.dest_rows(ws)]
            assert sorted(bulk[procfs.service_id(ws)]) == sorted(dumped), ws
        assert bulk[procfs.service_id(empty)] == []
        assert len(bulk[procfs.service_id(tcp)]) == 3

    def test_bulk_dest_read_of_an_empty_table(self, table):
        assert table.all_dest_rows() == {}


pytestmark = pytest.mark.unit


class TestFakeIPVS(IPVSContract):
    @pytest.fixture
    def table(self):
        return FakeIPVS()
