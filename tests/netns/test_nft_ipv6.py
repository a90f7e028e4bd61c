"""The nft target over IPv6 with real traffic, in namespaces: a client reaches an IPv6 VIP
through the director (``table inet dcnet``, DNAT to IPv6 real servers) and gets replies;
an IPv4 VIP in the same model keeps working; a second apply writes nothing and a full
read agrees with the record; Maglev and persistence over IPv6; the old ``table ip
dcnet`` is deleted by the first apply.

Lab: ``client`` (fd00:1::2, 10.1.0.2) -- ``director`` (fd00:1::1, 10.1.0.1; the VIPs on
``lo``; forwarding on) -- bridge -- ``rs1..rs3`` (fd00:2::11.., 10.2.0.11..), whose
default routes are the director (NAT replies come back through it). Each real server runs
:func:`dcnet.lab.haproxy6_lab.serve` (dual stack; the body names the address asked).
"""

from __future__ import annotations

import collections
import os
import sys

import pytest

from dcnet.lab import haproxy6_lab as h6
from dcnet.lab import nft6_lab as n6
from dcnet.nft import synth
from dcnet.nft.nftio import Nft
from dcnet.target import session

pytestmark = pytest.mark.netns

VIP6, VIP4, RS6, RS4, PORT = n6.VIP6, n6.VIP4, n6.RS6, n6.RS4, n6.PORT
topology = n6.topology


@pytest.fixture
def lab6(lab_factory, tmp_path):
    lab = lab_factory(topology())
    lab.run("director", ["ip", "-6", "addr", "add", f"{VIP6}/128", "dev", "lo", "nodad"])
    lab.run("director", ["ip", "addr", "add", f"{VIP4}/32", "dev", "lo"])
    return lab, {"netns": lab.netns("director"), "state_dir": str(tmp_path / "state")}


def model(servers6: list[str], servers4: list[str] | None = None, **kw):
    more = ((VIP4, dict.fromkeys(servers4, 1)),) if servers4 else ()
    return synth.model(synth.lab_model_text(VIP6, dict.fromkeys(servers6, 1), more=more,
                                            port=80, target_port=PORT, **kw))


def apply(options, m, **kw):
    outcome = session.run("nft", m, options, apply=True, **kw)
    assert outcome.ok, outcome.result.to_text()
    return outcome


def hits(lab, vip: str, count: int) -> collections.Counter:
    """Which real server answered each of ``count`` requests from the client."""
    return collections.Counter(lab.call("client", h6.get, vip, 80).split()[1]
                               for _ in range(count))


def test_a_client_reaches_an_ipv6_vip_beside_an_ipv4_one_and_a_second_apply_writes_nothing(
        lab6):
    lab, options = lab6
    m = model(RS6, RS4)
    first = apply(options, m)
    assert first.result.writes["nft_transactions"] == 1
    assert set(hits(lab, VIP6, 45)) == set(RS6)         # balanced over the IPv6 servers
    assert set(hits(lab, VIP4, 45)) == set(RS4)         # the IPv4 VIP beside it
    again = apply(options, m)
    assert again.plan.empty, again.plan.to_text()
    assert not any(again.result.writes.values()), again.result.writes
    # a full read (no record) of the IPv6 objects agrees with the model too
    os.unlink(os.path.join(options["state_dir"], f"fingerprint-{options['netns']}"))
    full = apply(options, m)
    assert full.plan.empty and not full.plan.read_digest.startswith("gen:"), \
        full.plan.to_text()
    # draining one IPv6 server (weight 0) takes it out of new flows, nothing else changes
    drained = apply(options, synth.model(synth.lab_model_text(
        VIP6, {RS6[0]: 0, RS6[1]: 1, RS6[2]: 1}, more=((VIP4, dict.fromkeys(RS4, 1)),),
        port=80, target_port=PORT)))
    assert {c.kind for c in drained.plan.changes} == {"flat"}     # elements only
    assert set(hits(lab, VIP6, 30)) == set(RS6[1:])


def test_maglev_and_persistence_over_ipv6(lab6):
    lab, options = lab6
    apply(options, model(RS6, scheduler="mh"))
    assert set(hits(lab, VIP6, 60)) == set(RS6)          # flow hash: spread
    apply(options, model(RS6, scheduler="sh"), force=True)
    assert len(hits(lab, VIP6, 20)) == 1                 # source hash: one client, one server
    apply(options, model(RS6, persistence=300), force=True)
    assert len(hits(lab, VIP6, 20)) == 1                 # affinity set of ip6 saddr
    apply(options, model(RS6), force=True)
    assert len(hits(lab, VIP6, 40)) > 1                  # without it the loop spreads


def test_the_first_apply_deletes_the_old_ipv4_only_table(lab6):
    lab, options = lab6
    lab.run("director", ["nft", "-f", "-"], input=(
        "add table ip dcnet\nadd chain ip dcnet prerouting { type nat hook prerouting "
        "priority -100; policy accept; }\nadd rule ip dcnet prerouting ip daddr "
        f"{VIP4} tcp dport 80 dnat to 10.2.0.99:{PORT}\n"))
    first = apply(options, model(RS6, RS4))
    assert ("legacy", ("ip", "dcnet")) in {(c.kind, c.key) for c in first.plan.changes}
    assert first.result.writes["nft_transactions"] == 1
    assert Nft(options["netns"]).list_json("table", "ip", "dcnet") is None
    assert set(hits(lab, VIP4, 30)) == set(RS4)          # not the old rule's 10.2.0.99
    assert apply(options, model(RS6, RS4)).plan.empty


# ------------------------------------------------------------------ carriers over IPv6

VIP6_A, VIP6_B = "2001:db8:1::10", "2001:db8:2::10"      # telecom's, unicom's
CARRIER_MODEL = f"""version: 1
carriers:
  - {{name: telecom, uplink: ctc0, gateway: 10.11.0.2, gateway6: 'fd00:1a::2', table: 101,
     vip_ranges: [198.51.100.0/26, '2001:db8:1::/64']}}
  - {{name: unicom, uplink: cuc0, gateway: 10.12.0.2, gateway6: 'fd00:1b::2', table: 102,
     vip_ranges: [198.51.100.64/26, '2001:db8:2::/64'], default: true}}
services:
  - job: {synth.job(0)}
    vips: {{telecom: '{VIP6_A}', unicom: '{VIP6_B}'}}
    ports: [{{port: 80, scheduler: wrr, forward: nat, target_port: {PORT}}}]
    real_servers: [{{address: '{RS6[0]}'}}]
"""


def carrier_topology() -> dict:
    """cli-X -- rtr-X -- director (uplink per carrier) -- rs1. The director's main default
    route is unicom's, and unicom's router has no route to telecom's clients: only
    carrier routing brings telecom's replies back."""
    fwd = {"net.ipv6.conf.all.forwarding": 1, "net.ipv4.ip_forward": 1}
    links, routes = [], []
    for tag, uplink, vip in (("a", "ctc0", VIP6_A), ("b", "cuc0", VIP6_B)):
        n = 11 if tag == "a" else 12
        links += [{"a": {"host": f"cli-{tag}", "ifname": "eth0",
                         "addresses": [f"fd00:{tag}::2/64"]},
                   "b": {"host": f"rtr-{tag}", "ifname": "down",
                         "addresses": [f"fd00:{tag}::1/64"]}},
                  {"a": {"host": f"rtr-{tag}", "ifname": "up",
                         "addresses": [f"fd00:1{tag}::2/64", f"10.{n}.0.2/24"]},
                   "b": {"host": "director", "ifname": uplink,
                         "addresses": [f"fd00:1{tag}::1/64", f"10.{n}.0.1/24"]}}]
        routes += [{"host": f"cli-{tag}", "dst": "default", "via": f"fd00:{tag}::1"},
                   {"host": f"rtr-{tag}", "dst": f"{vip}/128", "via": f"fd00:1{tag}::1"}]
    links.append({"a": {"host": "director", "ifname": "s0", "addresses": ["fd00:2::1/64"]},
                  "b": {"host": "rs1", "ifname": "eth0", "addresses": [f"{RS6[0]}/64"]}})
    routes += [{"host": "director", "dst": "default", "via": "fd00:1b::2"},
               {"host": "rs1", "dst": "default", "via": "fd00:2::1"}]
    return {"hosts": [{"name": "director", "sysctls": fwd}, {"name": "rtr-a", "sysctls": fwd},
                      {"name": "rtr-b", "sysctls": fwd}, "cli-a", "cli-b", "rs1"],
            "links": links, "routes": routes,
            "processes": [{"name": "rs1-http", "host": "rs1", "ready_tcp_port": PORT,
                           "argv": [sys.executable, "-m", "dcnet.lab.haproxy6_lab",
                                    str(PORT)]}]}


def answered(lab, client: str, vip: str, count: int) -> int:
    ok = 0
    for _ in range(count):
        try:
            lab.call(client, h6.get, vip, 80, 5.0)
            ok += 1
        except OSError:
            pass
    return ok


def test_carrier_routing_returns_ipv6_replies_by_the_carrier_they_came_in_on(
        lab_factory, tmp_path):
    lab = lab_factory(carrier_topology())
    for vip in (VIP6_A, VIP6_B):
        lab.run("director", ["ip", "-6", "addr", "add", f"{vip}/128", "dev", "lo", "nodad"])
    options = {"netns": lab.netns("director"), "state_dir": str(tmp_path / "state")}
    m = synth.model(CARRIER_MODEL)
    apply(options, m)
    assert answered(lab, "cli-b", VIP6_B, 3) == 3
    assert answered(lab, "cli-a", VIP6_A, 2) == 0          # replies lost via unicom
    routed = {**options, "carrier_routing": True}
    first = apply(routed, m, force=True)
    assert first.result.writes["rtnetlink"] == 8     # per carrier: 2 rules, 2 routes
    assert answered(lab, "cli-a", VIP6_A, 10) == 10
    assert answered(lab, "cli-b", VIP6_B, 10) == 10
    rules6 = lab.run("director", ["ip", "-6", "rule", "show"]).stdout
    assert "fwmark 0x65 lookup 101" in rules6 and "fwmark 0x66 lookup 102" in rules6
    table = lab.run("director", ["ip", "-6", "route", "show", "table", "101"]).stdout
    assert "default via fd00:1a::2 dev ctc0" in table
    again = apply(routed, m)
    assert again.plan.empty and not any(again.result.writes.values()), again.plan.to_text()
    lab.run("director", ["ip", "-6", "route", "del", "default", "table", "101"])
    repair = apply(routed, m)
    assert [c.describe() for c in repair.plan.changes] == [
        "+ route 101 ::/0 (dev=ctc0, gateway=fd00:1a::2)"]
    assert answered(lab, "cli-a", VIP6_A, 3) == 3


def test_registry_additions_and_drains_of_ipv6_servers_reach_traffic(lab6, tmp_path):
    """The LVS registry (``elbctl backend add|drain``) merged by --nft-registry-dir, with
    IPv6 identities (``ADDR`` and ``[ADDR]:PORT``)."""
    from dcnet.lvs.store import Store

    lab, options = lab6
    m = model(RS6[:2])
    apply(options, m)
    assert set(hits(lab, VIP6, 30)) == set(RS6[:2])
    registry_dir = str(tmp_path / "lvs")
    Store(registry_dir).save_registry({synth.job(0): {
        f"[{RS6[2]}]:{PORT}": {"state": "active", "weight": 1},
        RS6[0]: {"state": "draining", "weight": 1}}})
    merged = apply({**options, "registry_dir": registry_dir}, m)
    [change] = merged.plan.changes                       # the flat VIP:port's elements
    assert change.kind == "flat" and change.key == ("tcp", VIP6, 80)
    assert f"{RS6[2]} . {PORT}" in " ".join(change.new["slots"])
    assert set(hits(lab, VIP6, 30)) == set(RS6[1:])      # rs3 added, rs1 drained
