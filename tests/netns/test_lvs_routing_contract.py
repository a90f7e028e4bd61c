"""The routing contract: :class:`dcnet.lvs.fake_routing.FakeRouting` and
:class:`dcnet.lvs.routing.Routing` (in a director namespace this test makes) read and
write rules, routes, VIPs and sysctls alike. Each test asserts on the state read back
through the interface, the notes, the write counters and the errors, on both sides."""

from __future__ import annotations

import errno
import os

import pytest

from dcnet.lab import lvs_lab as lvslab
from dcnet.lvs import state
from dcnet.lvs.fake_routing import FakeRouting
from dcnet.lvs.routing import Routing
from dcnet.plan import Action, Change, Plan, diff

ROUTING_KINDS = ("link", "route", "rule", "vip")
SYSCTL = "net.ipv4.ip_forward"
TOPOLOGY = {
    "hosts": [{"name": "director"}, *({"name": f"isp-{c}"} for c in lvslab.UPLINKS)],
    "links": [{"a": {"host": "director", "ifname": uplink,
                     "addresses": [lvslab.DIRECTOR_UPLINK[carrier],
                                   lvslab.DIRECTOR_UPLINK6[carrier]]},
               "b": {"host": f"isp-{carrier}", "ifname": "down0",
                     "addresses": [f"{lvslab.GATEWAYS[carrier]}/26",
                                   f"{lvslab.GATEWAYS6[carrier]}/64"]}}
              for carrier, uplink in lvslab.UPLINKS.items()],
    # no dummy devices on this kernel: a port-less bridge stands in for elbctl's elb0
    "bridges": [{"name": "elb0", "host": "director"}],
}


class Side:
    """One side of the contract: the routing object and the operator's ``ip`` commands
    (what someone else does to the namespace)."""

    def __init__(self, routing, ip):
        self.routing = routing
        self.ip = ip


def fake_side() -> Side:
    fake = FakeRouting(links=(*lvslab.UPLINKS.values(), "elb0"), sysctls={SYSCTL: "0"})

    def ip(*args):
        words = [w for w in args if w != "-6"]      # the fake tells families by address
        if words[:2] == ["rule", "add"]:
            spec = dict(zip(words[2::2], words[3::2], strict=True))
            fake.add_rule(priority=int(spec["priority"]), table=int(spec["lookup"]),
                          **({"fwmark": int(spec["fwmark"])} if "fwmark" in spec else {}),
                          **({"src": spec["from"]} if "from" in spec else {}))
        elif words[:2] == ["route", "add"]:
            spec = dict(zip(words[3::2], words[4::2], strict=True))
            fake.add_route(int(spec["table"]), words[2], spec["via"], spec.get("dev"))
        elif words[:2] == ["addr", "add"]:
            address, length = words[2].split("/")
            fake.add_address(words[4], address, int(length))
        else:
            raise AssertionError(f"the fake side has no 'ip {' '.join(words)}'")
    return Side(fake, ip)


@pytest.fixture(params=["fake", pytest.param("real", marks=pytest.mark.netns)])
def side(request):
    if request.param == "fake":
        yield fake_side()
        return
    if os.geteuid() != 0:
        pytest.skip("the real side needs root (network namespaces)")
    lab = request.getfixturevalue("lab_factory")(TOPOLOGY)
    routing = Routing(netns=lab.netns("director"))
    yield Side(routing, lambda *args: lab.run("director", ["ip", *args]))
    routing.close()


def current(routing, model, sysctls=(SYSCTL,)) -> tuple[dict, list, dict]:
    routing.settings = model.lvs
    found = routing.read([c.table for c in model.carriers],
                         [str(v) for s in model.services for _, v in s.vips], sysctls)
    kept = {k: v for k, v in found.state.items() if k[0] in (*ROUTING_KINDS, "sysctl")}
    return kept, found.notes, found.rule_specs


def desired(model) -> dict:
    return {**state.desired_routing(model), ("sysctl", (SYSCTL,)): {"value": "1"}}


def plan_of(routing, model) -> Plan:
    now, notes, specs = current(routing, model)
    return Plan.build("lvs", diff(now, desired(model)), state.KIND_ORDER, tuple(notes),
                      payload=specs)


def apply(routing, plan: Plan) -> tuple[int, int]:
    before = routing.writes, routing.sysctl_writes
    for change in plan.changes:
        routing.apply(change, plan.payload)
    return routing.writes - before[0], routing.sysctl_writes - before[1]


def test_a_model_applies_once_and_reads_back_as_desired(side):
    model = lvslab.model()
    routing = side.routing
    first = plan_of(routing, model)
    assert {c.kind for c in first.changes} == {"route", "rule", "vip", "sysctl"}
    writes, sysctl_writes = apply(routing, first)
    # 2 routes, 4 rules, 4 addresses: one request each; one sysctl
    assert (writes, sysctl_writes) == (10, 1)
    assert current(routing, model)[0] == desired(model)
    again = plan_of(routing, model)
    assert again.empty, again.to_text()
    assert apply(routing, again) == (0, 0)


def test_duplicate_rule_and_address_are_refused_with_eexist(side):
    model = lvslab.model()
    routing = side.routing
    apply(routing, plan_of(routing, model))
    vip = lvslab.VIPS["telecom"][0]
    rule = Change(Action.CREATE, "rule", (vip,), new={"table": 101, "priority": 20000})
    address = Change(Action.CREATE, "vip", (vip,), new={"prefixlen": 32})
    before = routing.writes
    for change in (rule, address):
        with pytest.raises(Exception) as refused:
            routing.apply(change, {})
        assert getattr(refused.value, "code", None) == errno.EEXIST, refused.value
    assert routing.writes == before                 # a refused request is not counted
    assert current(routing, model)[0] == desired(model)


def test_deleting_what_is_gone_is_not_an_error(side):
    model = lvslab.model()
    routing = side.routing
    routing.settings = model.lvs
    gone = [Change(Action.DELETE, "rule", ("198.51.100.99",),
                   old={"table": 101, "priority": 20000}),
            Change(Action.DELETE, "vip", ("198.51.100.99",), old={"prefixlen": 32}),
            Change(Action.DELETE, "route", (101, "10.99.0.0/24"),
                   old={"gateway": "198.51.100.1", "dev": "ctc0"})]
    before = current(routing, model)[0]
    for change in gone:
        routing.apply(change, {})
    assert routing.writes == 3
    assert current(routing, model)[0] == before


def test_missing_interface_and_sysctl_are_refused(side):
    model = lvslab.model()
    routing = side.routing
    routing.settings = model.lvs
    with pytest.raises(RuntimeError, match="uplink nosuch0 does not exist"):
        routing.apply(Change(Action.CREATE, "route", (101, "0.0.0.0/0"),
                             new={"gateway": "198.51.100.1", "dev": "nosuch0"}), {})
    with pytest.raises(RuntimeError, match=r"sysctl net\.ipv4\.nosuch does not exist"):
        routing.apply(Change(Action.CREATE, "sysctl", ("net.ipv4.nosuch",),
                             new={"value": "1"}), {})
    assert (routing.writes, routing.sysctl_writes) == (0, 0)
    assert current(routing, model, ("net.ipv4.nosuch",))[0].get(
        ("sysctl", ("net.ipv4.nosuch",))) is None


def test_tampering_is_repaired_and_foreign_objects_left_alone(side):
    model = lvslab.model()
    routing, ip = side.routing, side.ip
    apply(routing, plan_of(routing, model))
    ip("rule", "add", "fwmark", "7", "lookup", "101", "priority", "20500")      # in our range
    ip("rule", "add", "from", "198.51.100.11", "lookup", "101", "priority", "100")  # foreign
    ip("route", "add", "10.9.9.0/24", "table", "101", "via", "198.51.100.1")  # foreign proto
    ip("addr", "add", "198.51.100.20/32", "dev", "elb0")                       # stray VIP
    plan = plan_of(routing, model)
    summary = sorted((c.action.value, c.kind, c.key) for c in plan.changes)
    assert summary == [("delete", "rule", ("other", 20500, "fwmark 7")),
                       ("delete", "vip", ("198.51.100.20",))], plan.to_text()
    assert sorted(plan.notes) == [
        "left alone: route 10.9.9.0/24 in carrier table 101 (protocol 3, not elbctl's 180)",
        "left alone: rule priority 100 from 198.51.100.11 lookup 101 (outside elbctl's range "
        "20000-20999)"], plan.notes
    assert apply(routing, plan) == (2, 0)
    assert current(routing, model)[0] == desired(model)
    assert plan_of(routing, model).notes == plan.notes     # foreign objects still there


def test_a_dual_stack_model_applies_once_and_reads_back_as_desired(side):
    model = lvslab.model(ipv6=True)
    routing = side.routing
    first = plan_of(routing, model)
    created = {(c.kind, c.key) for c in first.changes}
    assert ("route", (101, "::/0")) in created and ("route", (102, "::/0")) in created
    assert ("rule", (lvslab.VIPS6["telecom"][0],)) in created
    # 4 routes (a default per family and line), 8 rules, 8 addresses; one sysctl
    assert apply(routing, first) == (20, 1)
    assert current(routing, model)[0] == desired(model)
    assert plan_of(routing, model).empty
    assert desired(model)[("route", (101, "::/0"))] == {"gateway": lvslab.GATEWAYS6["telecom"],
                                                        "dev": "ctc0"}


def test_ipv6_tampering_is_repaired_and_foreign_objects_left_alone(side):
    model = lvslab.model(ipv6=True)
    routing, ip = side.routing, side.ip
    apply(routing, plan_of(routing, model))
    vip6 = lvslab.VIPS6["unicom"][1]
    # foreign rule and route, a stray VIP
    ip("-6", "rule", "add", "from", "2001:db8:10::99", "lookup", "101", "priority", "100")
    ip("route", "add", "2001:db8:99::/64", "table", "101", "via", "2001:db8:1::1")
    ip("addr", "add", "2001:db8:10::20/128", "dev", "elb0")
    routing.apply(Change(Action.DELETE, "rule", (vip6,), old={"table": 102,
                                                               "priority": 20000}), {})
    plan = plan_of(routing, model)
    summary = sorted((c.action.value, c.kind, c.key) for c in plan.changes)
    assert summary == [("create", "rule", (vip6,)),
                       ("delete", "vip", ("2001:db8:10::20",))], plan.to_text()
    assert sorted(plan.notes) == [
        "left alone: route 2001:db8:99::/64 in carrier table 101 (protocol 3, not elbctl's "
        "180)",
        "left alone: rule priority 100 from 2001:db8:10::99 lookup 101 (outside elbctl's "
        "range 20000-20999)"], plan.notes
    assert apply(routing, plan) == (2, 0)
    assert current(routing, model)[0] == desired(model)
