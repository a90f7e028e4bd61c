"""Carrier policy routing for IPv6 on this kernel (no IPVS needed): a dual-stack model's
tables (a default route per family), ``ip -6 rule``s and IPv6 VIPs in a director
namespace, and real traffic: a client of each carrier pings its line's IPv4 and IPv6
VIPs and the replies reach that carrier's router only (nftables counters in the router
namespaces). Without the VIP's rule the reply takes the main table's default (the other
carrier) and the ping fails, so the counters can tell."""

from __future__ import annotations

import pytest

from dcnet.lab import lvs_lab as lvslab
from dcnet.lvs import state
from dcnet.lvs.routing import Routing
from dcnet.lvs.verify import verify
from dcnet.plan import Action, Change, Plan, diff

pytestmark = pytest.mark.netns

ROUTING_KINDS = ("link", "route", "rule", "vip")
CARRIERS = tuple(lvslab.UPLINKS)


def topology() -> dict:
    """The LVS lab's dual-stack hosts and links without its HTTP servers, and a port-less
    bridge standing in for elbctl's elb0 (no dummy devices on this kernel)."""
    topo = lvslab.topology("busybox", "/nonexistent", ipv6=True)
    topo["processes"] = []
    topo["bridges"].append({"name": "elb0", "host": "director"})
    return topo


def plan_of(routing: Routing, model) -> Plan:
    found = routing.read([c.table for c in model.carriers],
                         [str(v) for s in model.services for _, v in s.vips])
    current = {k: v for k, v in found.state.items() if k[0] in ROUTING_KINDS}
    return Plan.build("lvs", diff(current, state.desired_routing(model)), state.KIND_ORDER,
                      tuple(found.notes), payload=found.rule_specs)


@pytest.fixture
def lab(lab_factory):
    lab = lab_factory(topology())
    model = lvslab.model(ipv6=True)
    routing = Routing(model.lvs, netns=lab.netns("director"))
    plan = plan_of(routing, model)
    for change in plan.changes:
        routing.apply(change, plan.payload)
    vips = [v for c in CARRIERS for v in (*lvslab.VIPS[c], *lvslab.VIPS6[c])]
    for carrier in CARRIERS:
        lab.run(f"isp-{carrier}", ["nft", "-f", "-"],
                input=lvslab.observe_script(vips, family="inet"))
    yield lab, model, routing
    routing.close()


def ping(lab, carrier: str, vip: str, count: int = 3) -> bool:
    argv = ["ping", "-6" if ":" in vip else "-4", "-n", "-q", "-c", str(count), "-i", "0.2",
            "-W", "2", vip]
    return lab.run(f"cli-{carrier}", argv, check=False, timeout=60).returncode == 0


def seen(lab) -> dict[str, dict[str, int]]:
    """Packets from each VIP counted at each carrier's router."""
    return {c: lvslab.counters(lab.run(f"isp-{c}", ["nft", "list", "table", "inet",
                                                     "obs"]).stdout) for c in CARRIERS}


def test_dual_stack_routing_applies_once_and_verifies(lab):
    lab, model, routing = lab
    assert plan_of(routing, model).empty
    rules = lab.run("director", ["ip", "-6", "rule", "show"]).stdout
    for carrier, table in (("telecom", 101), ("unicom", 102)):
        for vip in lvslab.VIPS6[carrier]:
            assert f"20000:\tfrom {vip} lookup {table}" in rules, rules
        routes = lab.run("director", ["ip", "-6", "route", "show", "table", str(table)]).stdout
        assert (f"default via {lvslab.GATEWAYS6[carrier]} dev {lvslab.UPLINKS[carrier]} "
                "proto 180") in routes, routes
    checks = verify(model, routing)
    assert len(checks) == 8 and all(c.ok for c in checks), [c.describe() for c in checks]
    assert {c.probe for c in checks if ":" in c.vip} == {"2001:db8:c1::1", "2001:db8:c2::1"}


def test_replies_of_each_vip_leave_by_its_carrier(lab):
    lab, _model, _routing = lab
    for carrier in CARRIERS:
        for vip in (lvslab.VIPS[carrier][0], lvslab.VIPS6[carrier][0]):
            assert ping(lab, carrier, vip), f"cli-{carrier} got no reply from {vip}"
    counts = seen(lab)
    for carrier in CARRIERS:
        other = next(c for c in CARRIERS if c != carrier)
        for vip in (lvslab.VIPS[carrier][0], lvslab.VIPS6[carrier][0]):
            assert counts[carrier][vip] >= 3, (vip, counts)   # every reply by its line
            assert counts[other][vip] == 0, (vip, counts)     # none by the other line


def test_without_its_rule_an_ipv6_vip_answers_by_the_main_table(lab):
    """The control: the telecom IPv6 VIP's rule removed, its replies follow the main
    table's default (unicom), whose router has no route to telecom's clients."""
    lab, model, routing = lab
    vip6 = lvslab.VIPS6["telecom"][0]
    routing.apply(Change(Action.DELETE, "rule", (vip6,), old={"table": 101,
                                                               "priority": 20000}), {})
    assert not ping(lab, "telecom", vip6, count=2)
    counts = seen(lab)
    assert counts["unicom"][vip6] >= 1 and counts["telecom"][vip6] == 0, counts
    bad = [c for c in verify(model, routing) if not c.ok]
    assert [(c.vip, c.got_dev) for c in bad] == [(vip6, "cuc0")]
    plan = plan_of(routing, model)              # apply repairs it
    assert [(c.action, c.key) for c in plan.changes] == [(Action.CREATE, (vip6,))]
    for change in plan.changes:
        routing.apply(change, plan.payload)
    assert ping(lab, "telecom", vip6)
