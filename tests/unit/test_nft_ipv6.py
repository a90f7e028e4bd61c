"""The nft target's IPv6 (pure): one ``table inet dcnet`` with a services map per family,
IPv6 names (``:`` written ``_``), ``dnat ip6 to [A]:P``, ``ip6 saddr`` affinity and
Maglev hashing, a mixed model, NAT never crossing families, the old ``table ip dcnet``
deleted, and records of that old table ignored."""

from __future__ import annotations

import json
import socket

import pytest

from dcnet.nft import carriers, fingerprint, patterns, ruleset, script, synth
from dcnet.nft.nftio import parse_listing
from dcnet.plan import Action, Change, Plan, diff

pytestmark = pytest.mark.unit

VIP6, VIP4 = "2001:db8::10", "198.51.100.10"
KEY6 = ("tcp", VIP6, 80)
RS6 = {"fd00::11": 1, "fd00::12": 2}


def desired(vip=VIP6, servers=None, more=(), **kw):
    text = synth.lab_model_text(vip, RS6 if servers is None else servers, more=more, **kw)
    return ruleset.desired(synth.model(text))


def test_an_ipv6_vip_is_rendered_with_ip6_expressions_and_underscored_names():
    want = desired(persistence=30)
    assert want.notes == ()
    assert ruleset.svc_name(KEY6) == "svc-tcp-2001_db8__10-80"
    be = ruleset.backend_name((*KEY6, "fd00::11", 8080))
    assert be == "be-tcp-2001_db8__10-80-fd00__11-8080"
    body = want.bodies[("backend", (*KEY6, "fd00::11", 8080))][0]
    assert "update @aff-tcp-2001_db8__10-80-fd00__11-8080-30 { ip6 saddr }" in body
    assert "meta l4proto tcp dnat ip6 to [fd00::11]:8080" in body
    rules = want.bodies[("service", KEY6)]
    assert rules[0].startswith("add rule inet dcnet svc-tcp-2001_db8__10-80 counter name "
                               "cn-tcp-2001_db8__10-80 ")
    assert rules[1].startswith("add rule inet dcnet svc-tcp-2001_db8__10-80 ip6 saddr @aff-")
    assert want.state[("element", KEY6)] == {"chain": "svc-tcp-2001_db8__10-80"}
    mh = desired(scheduler="mh").bodies[("service", KEY6)][1]
    assert "jhash ip6 saddr . th sport mod 65537 seed" in mh
    sh = desired(scheduler="sh").bodies[("service", KEY6)][1]
    assert "jhash ip6 saddr mod 65537" in sh


def test_ipv6_names_parse_back_to_their_keys():
    for kind, key, name in [
            ("service", KEY6, ruleset.svc_name(KEY6)),
            ("backend", (*KEY6, "fd00::11", 8080), ruleset.backend_name((*KEY6, "fd00::11", 8080))),
            ("affinity", (*KEY6, "fd00::11", 8080, 30),
             ruleset.affinity_name((*KEY6, "fd00::11", 8080, 30))),
            ("maglev", (*KEY6, "abc"), ruleset.maglev_name((*KEY6, "abc")))]:
        assert ruleset.parse_name(name) == (kind, key)
    assert ruleset.parse_name("services6") == ("table", ("services6",))


def test_the_script_puts_ipv6_elements_in_services6_and_ipv6_affinity_sets():
    want = desired(persistence=30)
    plan = Plan.build("nft", diff({}, want.state), ruleset.KIND_ORDER)
    lines = script.script(plan.changes, want.bodies).splitlines()
    assert "add map inet dcnet services6 { type ipv6_addr . inet_proto . inet_service : " \
           "verdict; }" in lines
    assert "add element inet dcnet services6 { 2001:db8::10 . tcp . 80 : goto " \
           "svc-tcp-2001_db8__10-80 }" in lines
    assert any(ln.startswith("add set inet dcnet aff-tcp-2001_db8__10-80-fd00__11-8080-30 "
                             "{ type ipv6_addr;") for ln in lines)
    hooks = [ln for ln in lines if ln.startswith("add rule inet dcnet prerouting ")]
    assert [h.split()[5] for h in hooks] == ["ip", "ip6", "ip", "ip6"]   # vmap, then flat
    assert hooks[3].split(" comment")[0].endswith(
        "ip6 daddr . meta l4proto . th dport @flat6 goto lb6")


def test_a_mixed_model_renders_both_families_and_nat_never_crosses_them():
    want = desired(more=((VIP4, {"10.20.0.11": 1}),))
    flats = {k: v for (kind, k), v in want.state.items() if kind == "flat"}
    # weights 1 and 2: the pattern layout, the heavier backend first (index 0)
    assert flats == {KEY6: {"w": 3, "slots": ("0 fd00::12 . 8080", "1 fd00::11 . 8080"),
                            "mark": 0, "pattern": patterns.pattern_id([2, 1])},
                     ("tcp", VIP4, 80): {"w": 1, "slots": ("0 10.20.0.11 . 8080",),
                                         "mark": 0}}
    elements = {k: v for (kind, k), v in want.state.items() if kind == "element"}
    assert not elements
    # a registry addition of the other family (elbctl backend add) is left out, with a note
    registry = {synth.job(0): {"10.20.0.99": {"weight": 1, "state": "active"}}}
    model = synth.model(synth.lab_model_text(VIP6, RS6))
    found, notes = ruleset.inputs(model, registry)
    assert [b.key[3] for b in found[KEY6].backends] == ["fd00::11", "fd00::12"]
    assert notes == ("1 real server(s) left out of VIP ports of the other address family "
                     "(NAT cannot cross IPv4/IPv6)",)


def test_ipv6_elements_read_back_normalized():
    listing = json.dumps({"nftables": [{"map": {"name": "services6", "elem": [[
        {"concat": ["2001:db8:0:0::10", "tcp", 80]},
        {"goto": {"target": "svc-tcp-2001_db8__10-80"}}]]}}]})
    state, _ = parse_listing('{"nftables": []}', (listing,))
    assert state == {("element", KEY6): {"chain": "svc-tcp-2001_db8__10-80"}}


def test_the_old_ipv4_only_table_is_deleted_in_the_same_transaction():
    want = desired()
    current = {("legacy", ruleset.LEGACY): {}}
    plan = Plan.build("nft", diff(current, want.state), ruleset.KIND_ORDER)
    lines = script.script(plan.changes, want.bodies).splitlines()
    assert lines[0] == "add table inet dcnet"
    assert "delete table ip dcnet" in lines
    with pytest.raises(ValueError, match="only ever deleted"):
        script.commands(Change(Action.CREATE, "legacy", ruleset.LEGACY, new={}), {})


def test_a_record_of_the_old_table_layout_is_ignored(tmp_path):
    path = str(tmp_path / "fingerprint-host")
    record = fingerprint.Record(7, "1:2", 0, {})
    fingerprint.save(path, record)
    assert fingerprint.load(path) == record
    with open(path, "w") as fh:                  # written by the IPv4-only version
        fh.write(json.dumps({"genid": 7, "identity": "1:2", "objects": 0}) + "\n")
    assert fingerprint.load(path) is None


def test_carrier_routing_has_a_rule_and_a_route_per_family_of_the_carriers_gateways():
    model = synth.model(synth.lab_model_text(VIP6, RS6))          # gateway and gateway6
    want = carriers.desired(model)
    lvs = model.lvs
    assert want == {
        ("route", (101, "0.0.0.0/0")): {"gateway": "198.51.100.1", "dev": "ctc0"},
        ("rule", (101,)): {"table": 101, "priority": lvs.rule_priority_min},
        ("route", (101, "::/0")): {"gateway": "2001:db8:ff::1", "dev": "ctc0"},
        ("rule", (101, 6)): {"table": 101, "priority": lvs.rule_priority_min}}
    assert carriers.marks(model) == {"telecom": 101}
    v4only = carriers.desired(synth.model(synth.lab_model_text(VIP4, {"10.20.0.11": 1})))
    assert set(v4only) == {("route", (101, "0.0.0.0/0")), ("rule", (101,))}
    families = {c: carriers.family_of(Change(Action.CREATE, c[0], c[1], new={}))
                for c in want}
    assert families == {("route", (101, "0.0.0.0/0")): socket.AF_INET,
                        ("rule", (101,)): socket.AF_INET,
                        ("route", (101, "::/0")): socket.AF_INET6,
                        ("rule", (101, 6)): socket.AF_INET6}
