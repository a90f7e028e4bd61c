"""The nft target's DR rendering (dcnet.nft.dr): inputs, objects, commands, listing (pure)."""

from __future__ import annotations

import json

import pytest

from dcnet.nft import dr, drio, maglev, ruleset, script, synth
from dcnet.nft.target import NftTarget
from dcnet.plan import Action, Change, diff

pytestmark = pytest.mark.unit

VIP, VIP6 = "198.51.100.11", "2001:db8:10::11"
RIPS = ("10.20.0.11", "10.20.0.12", "10.20.0.13")


def model(weights=None, scheduler="wrr", persistence=0, forward="dr", vip=VIP, port=8081):
    weights = weights or dict.fromkeys(RIPS, 1)
    rs = "".join(f"      - {{address: '{a}', weight: {w}}}\n" for a, w in weights.items())
    carrier = synth.CARRIER46 if ":" in vip else synth.CARRIER
    ranges = "198.51.100.0/26, '2001:db8:10::/64'" if ":" in vip else "198.51.100.0/26"
    extra = "" if forward == "dr" else ", target_port: 8080"
    return synth.model(
        "version: 1\n" + carrier % ranges + "services:\n"
        f"  - job: {synth.job(0)}\n    vips: {{telecom: '{vip}'}}\n"
        f"    ports: [{{port: {port}, scheduler: {scheduler}, forward: {forward}, "
        f"persistence: {persistence}{extra}}}]\n    real_servers:\n{rs}")


def desired(m, devices=None):
    found, notes = ruleset.inputs(m)
    found, notes = dr.extend(found, notes, *dr.inputs(m))
    ingress, rips = dr.needs(found)
    infra = dr.DrInfra(ingress, tuple((r, (devices or {}).get(r, "rs0")) for r in rips))
    return ruleset.build(found.values(), True, notes, (), infra if ingress else None)


def dr_objects(d):
    return {k: v for k, v in d.state.items() if k[0].startswith("dr")}


def test_dr_ports_are_skipped_with_a_note_unless_asked_for():
    found, notes = ruleset.inputs(model())
    assert found == {}
    assert notes == ("1 VIP port(s) skipped: forward dr is rendered only with --nft-dr "
                     "(docs/nft.md)",)
    assert dr.OFF_NOTE in notes[0]
    d = desired(model())
    assert not any(dr.OFF_NOTE in n for n in d.notes)


def test_inputs_map_schedulers_to_maglev_hashes_and_take_the_carrier_uplink():
    (s,) = dr.inputs(model())[0].values()
    assert (s.key3, s.scheduler, s.device) == (("tcp", VIP, 8081), "mh", "ctc0")
    assert [b.key for b in s.backends] == [("tcp", VIP, 8081, r, 8081) for r in RIPS]
    _found, notes = dr.inputs(model())
    assert notes == ("1 DR port(s): scheduler wrr as Maglev flow hashing (stateless "
                     "forwarding, docs/nft.md)",)
    assert next(iter(dr.inputs(model(scheduler="sh"))[0].values())).scheduler == "sh"
    assert dr.inputs(model(scheduler="mh"))[1] == ()
    persistent, notes = dr.inputs(model(scheduler="mh", persistence=300))
    assert next(iter(persistent.values())).scheduler == "sh"
    assert "persistence as source hashing (no timeout)" in notes[0]
    assert dr.inputs(model(forward="nat"))[0] == {}


def test_the_table_shared_objects_and_a_service():
    objs = dr_objects(desired(model(scheduler="mh")))
    kinds = sorted({k for k, _ in objs})
    assert kinds == sorted(dr.KINDS)
    assert objs[("drhook", ("ctc0",))]["hook"] == "ingress"
    assert ("drserver", ("10.20.0.12",)) in objs
    assert objs[("drelement", ("tcp", VIP, 8081))] == {"chain": f"svc-tcp-{VIP}-8081"}
    (key4,) = [k for kind, k in objs if kind == "drmaglev"]
    assert objs[("drmaglev", key4)] == {"size": maglev.DEFAULT_SIZE}
    d = desired(model(scheduler="mh"), {"10.20.0.12": "eth7"})
    body = d.bodies[("drservice", ("tcp", VIP, 8081))]
    assert f"jhash ip saddr . th sport mod 65537 seed 0x6463 vmap @{dr.maglev_name(key4)}" \
        in body[0]
    assert 'fwd ip to 10.20.0.12 device "eth7"' in d.bodies[("drserver", ("10.20.0.12",))][0]
    sh = desired(model(scheduler="sh")).bodies[("drservice", ("tcp", VIP, 8081))]
    assert "jhash ip saddr mod 65537 seed 0x6463 vmap @mh-" in sh[0]


def test_the_maglev_table_is_the_nat_one_of_the_same_servers():
    """Same servers, same weights: DR slot i goes to the server NAT's slot i goes to."""
    weights = {RIPS[0]: 3, RIPS[1]: 2, RIPS[2]: 1}

    def slots(d, kind, prefix):
        (key,) = [k for kk, k in d.state if kk == kind]
        out = []
        for line in d.bodies[(kind, key)]:
            for elem in line.split("{ ", 1)[1].rstrip(" }").split(", "):
                target = elem.split("goto ")[1]
                out.append(target.rsplit("-", 2)[-2] if prefix == "be" else target[3:])
        return out

    nat = ruleset.desired(model(weights, "mh", forward="nat", port=80))
    assert slots(desired(model(weights, "mh")), "drmaglev", "rs") == slots(nat, "maglev", "be")


def test_drain_single_server_and_all_drained():
    one = desired(model({RIPS[0]: 1, RIPS[1]: 0, RIPS[2]: 0}))
    assert not any(k[0] == "drmaglev" for k in one.state)
    assert one.bodies[("drservice", ("tcp", VIP, 8081))][0].startswith(
        f"add rule netdev dcnet svc-tcp-{VIP}-8081 goto rs-{RIPS[0]} ")
    none = desired(model(dict.fromkeys(RIPS, 0)))
    assert " drop comment" in none.bodies[("drservice", ("tcp", VIP, 8081))][0]
    full = desired(model())
    drained = desired(model({**dict.fromkeys(RIPS, 1), RIPS[2]: 0}))
    changed = {(c.kind, c.action) for c in diff(full.state, drained.state)}
    assert changed == {("drmaglev", Action.CREATE), ("drmaglev", Action.DELETE),
                       ("drservice", Action.UPDATE)}
    assert not any(RIPS[2] in line for k, lines in drained.bodies.items()
                   if k[0] == "drmaglev" for line in lines)


def test_ipv6_and_dual_stack():
    m = synth.model(
        "version: 1\n" + synth.CARRIER46 % "198.51.100.0/26, '2001:db8:10::/64'"
        + f"services:\n  - job: {synth.job(0)}\n    vips: {{telecom: ['{VIP}', '{VIP6}']}}\n"
        "    ports: [{port: 8081, scheduler: mh, forward: dr}]\n    real_servers:\n"
        + "".join(f"      - {{address: '{a}'}}\n" for a in ("fd00:20::11", "fd00:20::12",
                                                             RIPS[0])))
    found, notes = dr.inputs(m)
    assert [b.key[3] for b in found[("tcp", VIP6, 8081)].backends] == ["fd00:20::11",
                                                                       "fd00:20::12"]
    assert [b.key[3] for b in found[("tcp", VIP, 8081)].backends] == [RIPS[0]]
    assert "3 real server(s) left out of DR ports of the other address family" in notes
    d = desired(m)
    assert ("drelement", ("tcp", VIP6, 8081)) in d.state
    assert 'fwd ip6 to fd00:20::11 device "rs0"' in d.bodies[("drserver", ("fd00:20::11",))][0]
    assert "jhash ip6 saddr . th sport" in d.bodies[("drservice", ("tcp", VIP6, 8081))][0]
    lines = script.commands(Change(Action.CREATE, "drelement", ("tcp", VIP6, 8081),
                                   new={"chain": "svc-tcp-2001_db8_10__11-8081"}), {})
    assert lines == ["add element netdev dcnet dr6 { 2001:db8:10::11 . tcp . 8081 : goto "
                     "svc-tcp-2001_db8_10__11-8081 }"]


def test_names_parse_back():
    d = desired(model({"fd00:20::11": 1, "fd00:20::12": 2}, "mh", vip=VIP6))
    names = {"drmap": lambda k: k[0], "drserver": lambda k: dr.server_name(k[0]),
             "drservice": dr.svc_name, "drmaglev": dr.maglev_name,
             "drhook": lambda k: dr.hook_name(k[0])}
    for kind, key in dr_objects(d):
        if kind in names:
            assert dr.parse_name(names[kind](key)) == (kind, key)
    assert dr.parse_name("foo") is None and dr.parse_name("svc-x") is None


def test_script_creates_in_order_and_deletes_the_table_last():
    d = desired(model(scheduler="mh"))
    changes = diff({}, dr_objects(d))
    from dcnet.plan import Plan

    plan = Plan.build("nft", changes, ruleset.KIND_ORDER)
    text = script.script(plan.changes, d.bodies)
    lines = text.splitlines()
    assert lines[:2] == ["add table inet dcnet", "add table netdev dcnet"]
    order = [next(i for i, ln in enumerate(lines) if ln.startswith(p)) for p in (
        "add map netdev dcnet dr4", "add chain netdev dcnet rs-", "add map netdev dcnet mh-",
        "add chain netdev dcnet svc-", "add element netdev dcnet dr4",
        "add chain netdev dcnet in-ctc0 { type filter hook ingress device \"ctc0\"")]
    assert order == sorted(order)
    gone = Plan.build("nft", diff(dr_objects(d), {}), ruleset.KIND_ORDER)
    text = script.script(gone.changes, d.bodies)
    assert text.splitlines()[-1] == "delete table netdev dcnet"
    assert text.index("delete chain netdev dcnet in-ctc0") < text.index(
        "delete chain netdev dcnet svc-") < text.index("delete chain netdev dcnet rs-")
    upd = script.commands(Change(Action.UPDATE, "drserver", ("10.20.0.11",), old={},
                                 new={"rules": ("x",)}), {("drserver", ("10.20.0.11",)):
                                                          ("add rule …",)})
    assert upd == ["add chain netdev dcnet rs-10.20.0.11", "flush chain netdev dcnet "
                   "rs-10.20.0.11", "add rule …"]


def test_dr_objects_group_by_vip_port_and_the_shared_ones_are_infrastructure():
    for kind in ("drtable", "drmap", "drserver", "drhook"):
        assert ruleset.group_of((kind, ("x",))) == ()
    for kind in ("drmaglev", "drservice", "drelement"):
        assert ruleset.group_of((kind, ("tcp", VIP, 8081, "d"))) == ("tcp", VIP, 8081)


# what nft 1.0.6 printed for a table netdev dcnet (nft -j -t list table; list map dr4)
LISTING = {"nftables": [
    {"metainfo": {"version": "1.0.6"}},
    {"table": {"family": "netdev", "name": "dcnet", "handle": 1}},
    {"map": {"family": "netdev", "name": "dr4", "table": "dcnet",
             "type": ["ipv4_addr", "inet_proto", "inet_service"], "handle": 1, "map": "verdict"}},
    {"map": {"family": "netdev", "name": "mh-tcp-1.2.3.4-80-abc", "table": "dcnet",
             "type": "integer", "handle": 7, "comment": "dcnet:size=7", "map": "verdict"}},
    {"map": {"family": "netdev", "name": "mine", "table": "dcnet", "type": "integer",
             "map": "verdict"}},
    {"chain": {"family": "netdev", "table": "dcnet", "name": "rs-10.0.0.5", "handle": 3}},
    {"chain": {"family": "netdev", "table": "dcnet", "name": "in-d0", "handle": 10,
               "type": "filter", "hook": "ingress", "prio": 0, "policy": "accept"}},
    {"rule": {"family": "netdev", "table": "dcnet", "chain": "rs-10.0.0.5", "handle": 4,
              "comment": "dcnet:x", "expr": []}},
    {"rule": {"family": "netdev", "table": "dcnet", "chain": "in-d0", "handle": 11,
              "expr": []}}]}
MAP4 = {"nftables": [{"map": {"family": "netdev", "name": "dr4", "table": "dcnet",
                              "elem": [[{"concat": ["1.2.3.4", "tcp", 80]},
                                        {"goto": {"target": "svc-tcp-1.2.3.4-80"}}]]}}]}


def test_parse_listing():
    state, notes = dr.parse_listing(json.dumps(LISTING), (json.dumps(MAP4),))
    assert state == {
        ("drtable", ("netdev", "dcnet")): {},
        ("drmap", ("dr4",)): {"type": "ipv4_addr . inet_proto . inet_service"},
        ("drmaglev", ("tcp", "1.2.3.4", 80, "abc")): {"size": 7},
        ("drserver", ("10.0.0.5",)): {"rules": ("x",)},
        ("drhook", ("d0",)): {"hook": "ingress", "priority": 0, "rules": ("?",)},
        ("drelement", ("tcp", "1.2.3.4", 80)): {"chain": "svc-tcp-1.2.3.4-80"}}
    assert notes == ("foreign set/map 'mine' in table netdev dcnet left alone",)
    assert dr.parse_listing(None) == ({}, ())
    assert drio.digest_suffix(None, ()) == ""
    assert drio.digest_suffix(json.dumps(LISTING), ()).startswith("+dr:")


def test_the_target_option(monkeypatch, tmp_path):
    monkeypatch.setattr(drio, "resolve", lambda netns, rips, devices=(): dict.fromkeys(rips,
                                                                                     "rs0"))
    on = NftTarget(state_dir=str(tmp_path), dr=True).desired(model(), None)
    assert ("drhook", ("ctc0",)) in on and ("drserver", (RIPS[0],)) in on
    off = NftTarget(state_dir=str(tmp_path)).desired(model(), None)
    assert not any(k[0].startswith("dr") for k in off)
    assert any(o.name == "dr" and o.flag == "nft-dr" for o in NftTarget.options)


def test_jhash_is_lookup3_and_lookup_follows_the_table():
    from dcnet.nft import drhash

    assert drhash.jhash(b"", 0) == 0xDEADBEEF                 # lookup3.c's driver values
    assert drhash.jhash(b"Four score and seven years ago", 0) == 0x17770551
    assert drhash.jhash(b"Four score and seven years ago", 1) == 0xCD628161
    assert 0 <= drhash.slot("192.0.2.2", 41000, 65537, 0x6463) < 65537
    (s,) = dr.inputs(model(scheduler="mh"))[0].values()
    got = {drhash.lookup(s, "192.0.2.2", p) for p in range(40000, 40060)}
    assert got == set(RIPS)                       # flows spread
    (sh,) = dr.inputs(model(scheduler="sh"))[0].values()
    assert len({drhash.lookup(sh, "192.0.2.2", p) for p in range(40000, 40020)}) == 1
    drained = dr.inputs(model({**dict.fromkeys(RIPS, 1), RIPS[2]: 0}, "mh"))[0]
    (d,) = drained.values()
    assert RIPS[2] not in {drhash.lookup(d, "192.0.2.2", p) for p in range(40000, 40060)}


def test_inputs_are_reused_for_the_same_model_object_only():
    m = model()
    first = dr.inputs(m)
    assert dr.inputs(m) is first
    assert dr.inputs(m, maglev_size=100003) is not first
    assert dr.inputs(model()) == first and dr.inputs(model()) is not first
