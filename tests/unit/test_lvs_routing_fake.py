"""The lvs target with routing and sysctls managed, over the fake IPVS and the fake
routing (:class:`dcnet.lvs.fake_routing.FakeRouting`, kept honest by
tests/netns/test_lvs_routing_contract.py): the first apply creates the carrier routes,
rules, VIPs and sysctls, a second apply writes nothing, and a failed routing write is
undone back to what was there."""

from __future__ import annotations

import copy

import pytest

from dcnet.lab import lvs_lab as lvslab
from dcnet.lvs import state
from dcnet.lvs.backend import LVSTarget
from dcnet.lvs.fake import FakeIPVS
from dcnet.lvs.fake_routing import FakeRouting
from dcnet.target import apply_plan

pytestmark = pytest.mark.unit

NOW = 1_700_000_000.0


def director() -> FakeRouting:
    """A director as the operator leaves it: the uplinks and elb0 (down), ip_vs loaded
    with every sysctl elbctl sets at 0."""
    routing = FakeRouting(links=(*lvslab.UPLINKS.values(), "elb0"),
                          sysctls=dict.fromkeys(state.SYSCTLS, "0"))
    routing.link_down("elb0")
    return routing


def target(ipvs, routing, directory) -> LVSTarget:
    return LVSTarget(state_dir=str(directory), ipvs=ipvs, routing=routing,
                     clock=lambda: NOW)


def routing_state(routing: FakeRouting) -> tuple:
    return (copy.deepcopy(routing.links), copy.deepcopy(routing.rules),
            copy.deepcopy(routing.routes), dict(routing.sysctls))


def test_apply_creates_routing_and_a_second_apply_writes_nothing(tmp_path):
    ipvs, routing, model = FakeIPVS(), director(), lvslab.model()
    plan = target(ipvs, routing, tmp_path).plan(model)
    kinds = {c.kind for c in plan.changes}
    assert {"sysctl", "link", "route", "rule", "vip", "service", "dest"} == kinds
    result = apply_plan(target(ipvs, routing, tmp_path), plan)
    assert result.ok, result.to_text()
    # elb0 up, 2 carrier routes, a rule and an address per VIP (4); 5 sysctls
    assert result.writes["rtnetlink"] == 11 and result.writes["sysctl"] == 5
    assert routing.sysctls == state.SYSCTLS
    assert routing.links["elb0"].up
    assert routing.links["elb0"].addresses == dict.fromkeys(
        (v for vips in lvslab.VIPS.values() for v in vips), 32)
    assert {(r["src"], r["table"], r["priority"]) for r in routing.rules} == {
        (vip, carrier.table, model.lvs.rule_priority_min)
        for carrier in model.carriers for vip in lvslab.VIPS[carrier.name]}
    assert {key: (r["gateway"], r["dev"]) for key, r in routing.routes.items()} == {
        (c.table, "0.0.0.0/0"): (str(c.gateway), c.uplink) for c in model.carriers}
    again = target(ipvs, routing, tmp_path).plan(model)
    assert again.empty, again.to_text()
    result = apply_plan(target(ipvs, routing, tmp_path), again)
    assert result.ok and not any(result.writes.values()), result.writes


def test_a_failed_routing_write_is_undone(tmp_path):
    ipvs, routing, model = FakeIPVS(), director(), lvslab.model()
    before = routing_state(routing)
    plan = target(ipvs, routing, tmp_path).plan(model)
    routing.fail_at = 5         # elb0 up, 2 routes, 2 rules written; the third rule fails
    result = apply_plan(target(ipvs, routing, tmp_path), plan)
    assert not result.ok and result.failed.kind == "rule"
    assert "Input/output error" in str(result.error)
    assert [c.kind for c in result.undone] == ["rule"] * 2 + ["route"] * 2 + ["link"] + \
        ["sysctl"] * 5
    assert not result.undo_errors, result.undo_errors
    # every write but the link's is undone; elbctl never takes its VIP interface down
    links, *rest = routing_state(routing)
    assert rest == list(before[1:]) and links["elb0"].up and not links["elb0"].addresses
    assert ipvs.services() == []                     # IPVS comes after: never touched
    retry = apply_plan(target(ipvs, routing, tmp_path), target(ipvs, routing, tmp_path)
                       .plan(model))
    assert retry.ok and target(ipvs, routing, tmp_path).plan(model).empty


def test_ipv6_forwarding_is_set_only_for_a_model_with_an_ipv6_nat_vip(tmp_path):
    """IPv6 NAT replies pass the director: net.ipv6.conf.all.forwarding=1 joins the
    managed sysctls when the model has an IPv6 VIP on a NAT port, not otherwise (it
    also stops router advertisements being accepted); a second plan is empty."""
    dual, plain = lvslab.model(ipv6=True), lvslab.model()
    assert state.needs_ipv6_forwarding(dual) and not state.needs_ipv6_forwarding(plain)
    for model, wanted in ((plain, None), (dual, "1")):
        routing = director()
        routing.sysctls[state.IPV6_FORWARDING] = "0"
        ipvs, directory = FakeIPVS(), tmp_path / ("dual" if wanted else "plain")
        result = apply_plan(target(ipvs, routing, directory),
                            target(ipvs, routing, directory).plan(model))
        assert result.ok, result.to_text()
        assert routing.sysctls[state.IPV6_FORWARDING] == (wanted or "0")
        assert target(ipvs, routing, directory).plan(model).empty
