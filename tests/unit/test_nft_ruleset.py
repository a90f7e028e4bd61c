"""The nft target's pure parts: the desired ruleset of a model, the script of a plan
(order, atomic deletes) and the parse of nft's JSON listing (golden output of nft 1.0.6)."""

from __future__ import annotations

import json
import os

import pytest

from dcnet.lab import lvs_lab as lvslab
from dcnet.nft import ruleset, script, synth
from dcnet.nft.nftio import parse_listing
from dcnet.plan import Action, Change, Plan, diff

pytestmark = pytest.mark.unit

VIP = "198.51.100.10"
KEY3 = ("tcp", VIP, 80)

# `nft -j -t list table inet dcnet` and `nft -j list map inet dcnet services` /
# `services6` / `cin` / `cout` after applying lab_model_text(VIP, {"10.20.0.11": 1})
# (handles as nft 1.0.6 printed them; rule expressions left out: the parse reads only the comments)
TABLE_JSON = """{"nftables": [{"metainfo": {"version": "1.0.6", "json_schema_version": 1}},
{"table": {"family": "inet", "name": "dcnet", "handle": 2}},
{"counter": {"family": "inet", "name": "cn-tcp-198.51.100.10-80", "table": "dcnet", "handle": 7,
 "packets": 0, "bytes": 0}},
{"counter": {"family": "inet", "name": "ci-tcp-198.51.100.10-80", "table": "dcnet", "handle": 8,
 "packets": 0, "bytes": 0}},
{"counter": {"family": "inet", "name": "co-tcp-198.51.100.10-80", "table": "dcnet", "handle": 9,
 "packets": 0, "bytes": 0}},
{"map": {"family": "inet", "name": "cin", "table": "dcnet", "type": ["ipv4_addr", "inet_proto",
 "inet_service"], "handle": 1, "map": "counter"}},
{"map": {"family": "inet", "name": "cin6", "table": "dcnet", "type": ["ipv6_addr", "inet_proto",
 "inet_service"], "handle": 2, "map": "counter"}},
{"map": {"family": "inet", "name": "cout", "table": "dcnet", "type": ["ipv4_addr", "inet_proto",
 "inet_service"], "handle": 3, "map": "counter"}},
{"map": {"family": "inet", "name": "cout6", "table": "dcnet", "type": ["ipv6_addr", "inet_proto",
 "inet_service"], "handle": 4, "map": "counter"}},
{"map": {"family": "inet", "name": "services", "table": "dcnet", "type": ["ipv4_addr",
 "inet_proto", "inet_service"], "handle": 5, "map": "verdict"}},
{"map": {"family": "inet", "name": "services6", "table": "dcnet", "type": ["ipv6_addr",
 "inet_proto", "inet_service"], "handle": 6, "map": "verdict"}},
{"chain": {"family": "inet", "table": "dcnet", "name": "be-tcp-198.51.100.10-80-10.20.0.11-8080",
 "handle": 10}},
{"chain": {"family": "inet", "table": "dcnet", "name": "svc-tcp-198.51.100.10-80", "handle": 12}},
{"chain": {"family": "inet", "table": "dcnet", "name": "output", "handle": 15, "type": "nat",
 "hook": "output", "prio": -100, "policy": "accept"}},
{"chain": {"family": "inet", "table": "dcnet", "name": "prerouting", "handle": 18, "type": "nat",
 "hook": "prerouting", "prio": -100, "policy": "accept"}},
{"chain": {"family": "inet", "table": "dcnet", "name": "traffic-in", "handle": 21, "type":
 "filter", "hook": "prerouting", "prio": -150, "policy": "accept"}},
{"chain": {"family": "inet", "table": "dcnet", "name": "traffic-out", "handle": 24, "type":
 "filter", "hook": "postrouting", "prio": 200, "policy": "accept"}},
{"rule": {"family": "inet", "table": "dcnet", "chain": "be-tcp-198.51.100.10-80-10.20.0.11-8080",
 "handle": 11, "comment": "dcnet:b5ffabd4e7388ee4", "expr": []}},
{"rule": {"family": "inet", "table": "dcnet", "chain": "svc-tcp-198.51.100.10-80", "handle": 13,
 "comment": "dcnet:2109b714d91cc828", "expr": []}},
{"rule": {"family": "inet", "table": "dcnet", "chain": "svc-tcp-198.51.100.10-80", "handle": 14,
 "comment": "dcnet:b5770ec81e9f7a62", "expr": []}},
{"rule": {"family": "inet", "table": "dcnet", "chain": "output", "handle": 16, "comment":
 "dcnet:7888906fd3159c47", "expr": []}},
{"rule": {"family": "inet", "table": "dcnet", "chain": "output", "handle": 17, "comment":
 "dcnet:04f69d099f0821c9", "expr": []}},
{"rule": {"family": "inet", "table": "dcnet", "chain": "prerouting", "handle": 19, "comment":
 "dcnet:7888906fd3159c47", "expr": []}},
{"rule": {"family": "inet", "table": "dcnet", "chain": "prerouting", "handle": 20, "comment":
 "dcnet:04f69d099f0821c9", "expr": []}},
{"rule": {"family": "inet", "table": "dcnet", "chain": "traffic-in", "handle": 22, "comment":
 "dcnet:0f73f9c459533f1a", "expr": []}},
{"rule": {"family": "inet", "table": "dcnet", "chain": "traffic-in", "handle": 23, "comment":
 "dcnet:d43a81af7548e063", "expr": []}},
{"rule": {"family": "inet", "table": "dcnet", "chain": "traffic-out", "handle": 25, "comment":
 "dcnet:7c245b17c3cb7a98", "expr": []}},
{"rule": {"family": "inet", "table": "dcnet", "chain": "traffic-out", "handle": 26, "comment":
 "dcnet:1ca394cc850e510c", "expr": []}}]}"""
SERVICES_JSON = """{"nftables": [{"metainfo": {"version": "1.0.6"}}, {"map": {"family":
"inet", "name": "services", "table": "dcnet", "type": ["ipv4_addr", "inet_proto",
"inet_service"], "handle": 1, "map": "verdict", "elem": [[{"concat": ["198.51.100.10",
"tcp", 80]}, {"goto": {"target": "svc-tcp-198.51.100.10-80"}}]]}}]}"""
SERVICES6_JSON = """{"nftables": [{"metainfo": {"version": "1.0.6"}}, {"map": {"family":
"inet", "name": "services6", "table": "dcnet", "type": ["ipv6_addr", "inet_proto",
"inet_service"], "handle": 2, "map": "verdict"}}]}"""
COUNTERS_JSON = tuple(
    f"""{{"nftables": [{{"metainfo": {{"version": "1.0.6"}}}}, {{"map": {{"family": "inet",
 "name": "c{d}", "table": "dcnet", "type": ["ipv4_addr", "inet_proto", "inet_service"],
 "handle": {h}, "map": "counter", "elem": [[{{"concat": ["198.51.100.10", "tcp", 80]}},
 "c{d[0]}-tcp-198.51.100.10-80"]]}}}}]}}""" for d, h in (("in", 1), ("out", 3)))


def desired(servers, **kw):
    return ruleset.desired(synth.model(synth.lab_model_text(VIP, servers, **kw)))


GOLDEN = os.path.join(os.path.dirname(__file__), "data", "nft_listing_flat.json")


def test_the_listing_of_an_applied_model_reads_back_as_its_desired_state():
    # `nft -j -t list table inet dcnet` and `nft -j list map ...` of every map the target
    # reads, after applying lab_model_text(VIP, {"10.20.0.11": 1}) (a flat VIP:port) with
    # nft 1.0.6, kernel 6.18 (rule expressions left out: the parse reads the comments)
    with open(GOLDEN) as fh:
        golden = json.load(fh)
    table, maps = json.dumps(golden["table"]), [json.dumps(m) for m in golden["maps"]]
    state, notes = parse_listing(table, maps)
    assert notes == ()
    assert diff(state, desired({"10.20.0.11": 1}).state) == []
    assert state[("flat", KEY3)] == {"w": 1, "slots": ("0 10.20.0.11 . 8080",), "mark": 0}
    # the chain layout's listing of before (no flat objects) reads as that layout
    old, notes = parse_listing(TABLE_JSON, (SERVICES_JSON, SERVICES6_JSON, *COUNTERS_JSON))
    assert notes == () and ("element", KEY3) in old and ("flat", KEY3) not in old


def test_a_rule_without_dcnet_comment_and_a_foreign_chain_are_seen():
    tampered = TABLE_JSON.replace('"comment": "dcnet:b5770ec81e9f7a62", ', "")
    tampered = tampered.replace('"name": "output", "handle": 15', '"name": "mine", "handle": 15')
    state, notes = parse_listing(tampered, SERVICES_JSON)
    assert state[("service", KEY3)] == {"rules": ("2109b714d91cc828", "?")}
    assert any("foreign chain 'mine'" in n for n in notes)
    assert parse_listing(None, None) == ({}, ())


def test_weighted_ranges_follow_the_weights_and_drain_leaves_a_backend_out():
    want = desired({"10.20.0.11": 3, "10.20.0.12": 2, "10.20.0.13": 0}, persistence=60)
    rules = want.bodies[("service", KEY3)][1:]     # [0]: the new-connection counter
    be = "be-tcp-198.51.100.10-80-10.20.0.1"
    assert f"numgen random mod 5 < 3 goto {be}1-8080 comment" in rules[-2]
    assert f"goto {be}2-8080 comment" in rules[-1]
    # affinity lookups for the two active backends only, before the scheduler
    assert [r.split()[7] for r in rules[:-2]] == ["@aff-tcp-198.51.100.10-80-10.20.0.11-8080-60",
                                                  "@aff-tcp-198.51.100.10-80-10.20.0.12-8080-60"]
    # the drained backend keeps its chain (and its affinity set): established flows
    assert ("backend", (*KEY3, "10.20.0.13", 8080)) in want.state
    assert ("affinity", (*KEY3, "10.20.0.13", 8080, 60)) in want.state
    body = want.bodies[("backend", (*KEY3, "10.20.0.13", 8080))][0]
    assert "update @aff-tcp-198.51.100.10-80-10.20.0.13-8080-60 { ip saddr }" in body
    assert "meta l4proto tcp dnat ip to 10.20.0.13:8080" in body


def test_weighted_rules_choose_each_backend_with_its_share():
    b = [ruleset.Backend(("tcp", VIP, 80, f"10.0.0.{i}", 80), w)
         for i, w in enumerate((4, 2, 6, 2), start=1)]
    rules = ruleset.weighted_rules(b)
    assert [r.split("goto ")[0].strip() for r in rules] == [
        "numgen random mod 7 < 2", "numgen random mod 5 < 1", "numgen random mod 4 < 3", ""]
    # exact probabilities: each rule is reached when all earlier ones missed
    left, shares = 1.0, []
    for r in rules[:-1]:
        mod, below = (int(x) for x in r.split(" goto ")[0].split()[3::2])
        shares.append(left * below / mod)
        left *= 1 - below / mod
    shares.append(left)
    assert [round(x * 7, 9) for x in shares] == [2, 1, 3, 1]


def test_weights_are_reduced_and_large_totals_use_ranges():
    b = [ruleset.Backend(("tcp", VIP, 80, f"10.0.0.{i}", 80), w)
         for i, w in enumerate((200, 100), start=1)]
    assert ruleset.weighted_vmap(b).startswith("numgen random mod 3 vmap { 0 : goto ")
    b = [ruleset.Backend(("tcp", VIP, 80, f"10.0.0.{i}", 80), w)
         for i, w in enumerate((100, 1), start=1)]
    text = ruleset.weighted_vmap(b)
    assert text.startswith("numgen random mod 101 vmap { 0-99 : goto ")
    assert text.endswith("-10.0.0.2-80 }") and " 100 : goto " in text


def test_all_drained_drops_and_dr_ports_are_skipped_with_a_note():
    chained = desired({"10.20.0.11": 0}, persistence=60)
    assert chained.bodies[("service", KEY3)][1].split(" comment ")[0].endswith(" drop")
    want = desired({"10.20.0.11": 0})                 # flat: W 0, in no class set: lb4 drops
    assert want.state[("flat", KEY3)] == {"w": 0, "slots": (), "mark": 0}
    assert want.bodies[("lb", ("lb4",))][-1].split(" comment ")[0].endswith(" drop")
    assert want.notes == ()
    notes = ruleset.desired(lvslab.model()).notes
    assert notes and "forward dr" in notes[0]


def test_maglev_map_holds_every_slot_and_its_name_carries_the_table_digest():
    want = desired({"10.20.0.11": 1, "10.20.0.12": 1}, scheduler="mh")
    (key4,) = [k for kind, k in want.state if kind == "maglev"]
    body = want.bodies[("maglev", key4)]
    assert sum(line.count(" : goto ") for line in body) == 65537
    rule = want.bodies[("service", KEY3)][1]
    assert f"jhash ip saddr . th sport mod 65537 seed {ruleset.JHASH_SEED} vmap " \
           f"@{ruleset.maglev_name(key4)}" in rule
    again = desired({"10.20.0.12": 1, "10.20.0.11": 1}, scheduler="mh")
    assert again.bodies == want.bodies               # deterministic
    sh = desired({"10.20.0.11": 1, "10.20.0.12": 1}, scheduler="sh")
    assert "jhash ip saddr mod 65537" in sh.bodies[("service", KEY3)][1]


def test_names_parse_back_to_their_keys():
    for kind, key, name in [("service", KEY3, ruleset.svc_name(KEY3)),
                            ("backend", (*KEY3, "10.0.0.1", 8080),
                             ruleset.backend_name((*KEY3, "10.0.0.1", 8080))),
                            ("affinity", (*KEY3, "10.0.0.1", 8080, 30),
                             ruleset.affinity_name((*KEY3, "10.0.0.1", 8080, 30))),
                            ("maglev", (*KEY3, "abc"), ruleset.maglev_name((*KEY3, "abc")))]:
        assert ruleset.parse_name(name) == (kind, key)
    assert ruleset.parse_name("svc-tcp-x-notaport") is None
    assert ruleset.parse_name("whatever") is None


def test_one_script_creates_before_referencing_and_deletes_after_unreferencing():
    old = desired({"10.20.0.11": 1, "10.20.0.12": 1}, persistence=60)
    new = desired({"10.20.0.11": 1}, persistence=60)
    changes = diff(old.state, new.state)
    plan = Plan.build("nft", changes, ruleset.KIND_ORDER)
    text = script.script(plan.changes, new.bodies)
    lines = text.splitlines()
    assert lines[0] == "add table inet dcnet"
    flush_svc = lines.index("flush chain inet dcnet svc-tcp-198.51.100.10-80")
    delete_be = lines.index("delete chain inet dcnet be-tcp-198.51.100.10-80-10.20.0.12-8080")
    assert flush_svc < delete_be
    assert lines[delete_be - 1] == \
        "flush chain inet dcnet be-tcp-198.51.100.10-80-10.20.0.12-8080"


def test_a_change_whose_body_is_missing_is_refused():
    change = Change(Action.CREATE, "service", KEY3, new={"rules": ("x",)})
    with pytest.raises(script.MissingBody):
        script.commands(change, {})
    delete = Change(Action.DELETE, "element", KEY3, old={"chain": "svc"})
    assert script.commands(delete, {}) == [
        "delete element inet dcnet services { 198.51.100.10 . tcp . 80 }"]


def test_the_replies_chain_holds_a_rule_per_carrier_mark_and_no_anonymous_set():
    want = ruleset.build([], True, (), (102, 101, 101))
    assert "replies" not in {k[0] for kind, k in ruleset.build([], True).state if kind == "hook"}
    (body,) = [want.bodies[i] for i in want.state if i == ("hook", ("replies",))]
    texts = [line for line in body if "ct direction reply" in line]
    assert len(texts) == 2 and all("{" not in t.split("comment")[0] for t in texts)
    assert ["ct mark 101 " in texts[0], "ct mark 102 " in texts[1]] == [True, True]


def test_a_rerender_deletes_the_table_before_creating_everything_in_one_script():
    want = desired({"10.20.0.11": 3, "10.20.0.12": 1})
    current = {("rerender", ("inet", "dcnet")): {"objects": 9}}
    plan = Plan.build("nft", diff(current, want.state), ruleset.KIND_ORDER)
    lines = script.script(plan.changes, want.bodies).splitlines()
    assert lines[:3] == ["add table inet dcnet", "delete table inet dcnet",
                         "add table inet dcnet"]
    assert lines.count("delete table inet dcnet") == 1
    assert any(line.startswith("add map inet dcnet wr4 ") for line in lines[3:])
