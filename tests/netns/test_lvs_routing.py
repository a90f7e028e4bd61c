"""Carrier routing on this kernel (no IPVS needed): elbctl's tables, rules and VIPs in a
director namespace, read back, re-applied with zero writes, verified by route lookups,
and repaired after tampering while foreign objects are left alone and reported."""

from __future__ import annotations

import pytest

from dcnet.lab import lvs_lab as lvslab
from dcnet.lvs import state
from dcnet.lvs.routing import Routing
from dcnet.lvs.verify import verify
from dcnet.plan import Plan, diff

pytestmark = pytest.mark.netns

ROUTING_KINDS = ("link", "route", "rule", "vip")


def director_topology() -> dict:
    hosts = [{"name": "director"}]
    links = []
    for carrier, uplink in lvslab.UPLINKS.items():
        hosts.append({"name": f"isp-{carrier}"})
        links.append({"a": {"host": "director", "ifname": uplink,
                            "addresses": [lvslab.DIRECTOR_UPLINK[carrier]]},
                      "b": {"host": f"isp-{carrier}", "ifname": "down0",
                            "addresses": [f"{lvslab.GATEWAYS[carrier]}/26"]}})
    # no dummy devices on this kernel: a port-less bridge stands in for elbctl's elb0
    return {"hosts": hosts, "links": links,
            "bridges": [{"name": "elb0", "host": "director"}]}


def plan_of(routing: Routing, model) -> Plan:
    found = routing.read([c.table for c in model.carriers],
                         [str(v) for s in model.services for _, v in s.vips])
    current = {k: v for k, v in found.state.items() if k[0] in ROUTING_KINDS}
    return Plan.build("lvs", diff(current, state.desired_routing(model)), state.KIND_ORDER,
                      tuple(found.notes), payload=found.rule_specs)


def apply(routing: Routing, plan: Plan) -> int:
    before = routing.writes
    for change in plan.changes:
        routing.apply(change, plan.payload)
    return routing.writes - before


@pytest.fixture
def director(lab_factory):
    lab = lab_factory(director_topology())
    model = lvslab.model()
    routing = Routing(model.lvs, netns=lab.netns("director"))
    yield lab, model, routing
    routing.close()


def test_tables_rules_and_vips_apply_once_and_verify(director):
    lab, model, routing = director
    first = plan_of(routing, model)
    assert {c.kind for c in first.changes} == {"route", "rule", "vip"}  # elb0 is up
    assert apply(routing, first) > 0
    again = plan_of(routing, model)
    assert again.empty, again.to_text()
    assert apply(routing, again) == 0
    rules = lab.run("director", ["ip", "rule", "show"]).stdout
    assert "20000:\tfrom 198.51.100.10 lookup 101" in rules
    routes = lab.run("director", ["ip", "route", "show", "table", "101"]).stdout
    assert "default via 198.51.100.1 dev ctc0 proto 180" in routes
    checks = verify(model, routing)
    assert len(checks) == 4 and all(c.ok for c in checks), [c.describe() for c in checks]


def test_verify_reports_a_missing_rule(director):
    lab, model, routing = director
    apply(routing, plan_of(routing, model))
    lab.run("director", ["ip", "rule", "del", "from", "198.51.100.74", "lookup", "102",
                         "priority", "20000"])
    bad = [c for c in verify(model, routing) if not c.ok]
    assert [c.vip for c in bad] == ["198.51.100.74"]
    assert "unreachable" in bad[0].describe()          # no route at all
    lab.run("director", ["ip", "route", "add", "default", "via", "198.51.100.1"])
    bad = [c for c in verify(model, routing) if not c.ok]   # the main table's carrier
    assert [(c.vip, c.got_dev) for c in bad] == [("198.51.100.74", "ctc0")]
    assert "expected via 198.51.100.65 dev cuc0" in bad[0].describe()


def test_tampering_is_repaired_and_foreign_objects_left_alone(director):
    lab, model, routing = director
    apply(routing, plan_of(routing, model))
    run = lambda *a: lab.run("director", ["ip", *a])  # noqa: E731
    run("rule", "del", "from", "198.51.100.10", "lookup", "101", "priority", "20000")
    run("rule", "add", "fwmark", "7", "lookup", "101", "priority", "20500")      # in our range
    run("rule", "add", "from", "198.51.100.11", "lookup", "101", "priority", "100")  # foreign
    run("route", "add", "10.9.9.0/24", "via", "198.51.100.1", "table", "101")   # foreign proto
    run("route", "replace", "default", "via", "198.51.100.3", "dev", "ctc0", "table", "101",
        "proto", "180")                                                         # ours, changed
    run("addr", "add", "198.51.100.20/32", "dev", "elb0")                       # stray VIP
    plan = plan_of(routing, model)
    summary = sorted((c.action.value, c.kind, c.key) for c in plan.changes)
    assert summary == [
        ("create", "rule", ("198.51.100.10",)),
        ("delete", "rule", ("other", 20500, "fwmark 7")),
        ("delete", "vip", ("198.51.100.20",)),
        ("update", "route", (101, "0.0.0.0/0")),
    ], plan.to_text()
    notes = "\n".join(plan.notes)
    assert "rule priority 100 from 198.51.100.11 lookup 101" in notes
    assert "route 10.9.9.0/24 in carrier table 101" in notes
    apply(routing, plan)
    assert plan_of(routing, model).empty
    assert "10.9.9.0/24" in run("route", "show", "table", "101").stdout
    assert "100:\tfrom 198.51.100.11 lookup 101" in run("rule", "show").stdout
    assert all(c.ok for c in verify(model, routing))
