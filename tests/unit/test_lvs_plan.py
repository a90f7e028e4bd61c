"""Pure diff/plan of the LVS back end: golden cases (current state, model, expected plan),
the no-op case, drain-first removal, the dynamic registry, and the target over the
fake IPVS (ownership, stop-and-report, zero writes on re-apply)."""

from __future__ import annotations

import errno
import textwrap

import pytest

from dcnet.lvs import state
from dcnet.lvs.backend import LVSTarget, plan_states
from dcnet.lvs.fake import FakeIPVS
from dcnet.lvs.ipvs import CMD_NEW_DEST, CMD_NEW_SERVICE, Request, WireService
from dcnet.lvs.layout import ServerLayout, effective_servers, layouts, parse_server
from dcnet.lvs.store import Store
from dcnet.model import parse_model
from dcnet.target import apply_plan

pytestmark = pytest.mark.unit

JOB = "job.web_service.shop_cluster.prod_pdl.retail_owt.sre_cop.example"
TEXT = f"""version: 1
carriers:
  - {{name: telecom, uplink: ctc0, gateway: 198.51.100.1, table: 101,
     vip_ranges: [198.51.100.0/26]}}
  - {{name: bgp, uplink: bgp0, gateway: 203.0.113.1, table: 104, vip_ranges: [203.0.113.0/24],
     default: true}}
services:
  - job: {JOB}
    vips: {{telecom: 198.51.100.10, bgp: 203.0.113.10}}
    ports: [{{port: 80, scheduler: wrr, forward: nat, target_port: 8080}}]
    real_servers: [{{address: 10.0.0.1, weight: 10}}, {{address: 10.0.0.2}}]
"""
MODEL = parse_model(TEXT, source="m.yaml")
NOW = 1_000_000.0


def desired(model=MODEL, registry=None):
    out = state.desired_ipvs(layouts(model), registry)
    out.update(state.desired_routing(model))
    out.update(state.desired_sysctls())
    return out


def plan_text(current, model=MODEL, *, conns=None, draining=None, registry=None,
              drain_seconds=300):
    the_plan, drained = plan_states(current, desired(model, registry), conns or {},
                                    draining or {}, NOW, drain_seconds)
    return the_plan.to_text(), drained.draining


def golden(text: str) -> str:
    return textwrap.dedent(text).strip("\n")


FROM_EMPTY = golden("""
    lvs: 18 to create, 0 to update, 0 to delete
      + sysctl net.ipv4.ip_forward (value=1)
      + sysctl net.ipv4.vs.conn_reuse_mode (value=1)
      + sysctl net.ipv4.vs.expire_nodest_conn (value=1)
      + sysctl net.ipv4.vs.expire_quiescent_template (value=1)
      + sysctl net.ipv4.vs.snat_reroute (value=1)
      + link elb0 (state=up)
      + route 101 0.0.0.0/0 (dev=ctc0, gateway=198.51.100.1)
      + route 104 0.0.0.0/0 (dev=bgp0, gateway=203.0.113.1)
      + rule 198.51.100.10 (priority=20000, table=101)
      + rule 203.0.113.10 (priority=20000, table=104)
      + vip 198.51.100.10 (prefixlen=32)
      + vip 203.0.113.10 (prefixlen=32)
      + service tcp 198.51.100.10 80 (persistence=0, scheduler=wrr)
      + service tcp 203.0.113.10 80 (persistence=0, scheduler=wrr)
      + dest tcp 198.51.100.10 80 10.0.0.1 8080 (forward=nat, weight=10)
      + dest tcp 198.51.100.10 80 10.0.0.2 8080 (forward=nat, weight=1)
      + dest tcp 203.0.113.10 80 10.0.0.1 8080 (forward=nat, weight=10)
      + dest tcp 203.0.113.10 80 10.0.0.2 8080 (forward=nat, weight=1)
""")


def test_golden_from_empty():
    assert plan_text({})[0] == FROM_EMPTY


def test_golden_no_op():
    assert plan_text(desired())[0] == "lvs: no changes"


def _tampered():
    current = desired()
    current[("service", ("tcp", "198.51.100.10", 80))] = {"scheduler": "rr", "persistence": 60}
    current[("dest", ("tcp", "198.51.100.10", 80, "10.0.0.1", 8080))] = {
        "forward": "dr", "weight": 10}
    current[("dest", ("tcp", "203.0.113.10", 80, "10.0.0.9", 8080))] = {
        "forward": "nat", "weight": 5}
    current[("rule", ("203.0.113.99",))] = {"table": 104, "priority": 20000}
    current[("vip", ("203.0.113.99",))] = {"prefixlen": 32}
    current[("route", (101, "0.0.0.0/0"))] = {"dev": "ctc0", "gateway": "198.51.100.2"}
    del current[("dest", ("tcp", "203.0.113.10", 80, "10.0.0.2", 8080))]
    current[("sysctl", ("net.ipv4.vs.snat_reroute",))] = {"value": "0"}
    return current


def test_golden_drift_is_repaired_in_order():
    text, draining = plan_text(_tampered())
    assert text == golden("""
        lvs: 1 to create, 4 to update, 3 to delete
          ~ sysctl net.ipv4.vs.snat_reroute (value 0 -> 1)
          ~ route 101 0.0.0.0/0 (gateway 198.51.100.2 -> 198.51.100.1)
          ~ service tcp 198.51.100.10 80 (persistence 60 -> 0, scheduler rr -> wrr)
          ~ dest tcp 198.51.100.10 80 10.0.0.1 8080 (forward dr -> nat)
          + dest tcp 203.0.113.10 80 10.0.0.2 8080 (forward=nat, weight=1)
          - dest tcp 203.0.113.10 80 10.0.0.9 8080 (forward=nat, weight=5)
          - vip 203.0.113.99 (prefixlen=32)
          - rule 203.0.113.99 (priority=20000, table=104)
    """)
    assert draining == {}


def test_golden_removed_server_with_connections_drains_first():
    current = desired()
    gone = ("tcp", "198.51.100.10", 80, "10.0.0.9", 8080)
    current[("dest", gone)] = {"forward": "nat", "weight": 5}
    text, draining = plan_text(current, conns={gone: 7})
    assert text == golden("""
        lvs: 0 to create, 1 to update, 0 to delete
          ~ dest tcp 198.51.100.10 80 10.0.0.9 8080 (weight 5 -> 0)
          note: draining dest tcp 198.51.100.10 80 10.0.0.9 8080: 7 connection(s), \
deleted at the latest in 300s
    """)
    assert draining == {gone: NOW + 300}
    # next time: still connected, deadline kept from the persisted drain set
    current[("dest", gone)] = {"forward": "nat", "weight": 0}
    text, draining = plan_text(current, conns={gone: 2}, draining={gone: NOW + 10})
    assert text.splitlines()[0] == "lvs: no changes" and draining == {gone: NOW + 10}
    # idle: deleted
    text, draining = plan_text(current, conns={gone: 0}, draining={gone: NOW + 10})
    assert "- dest tcp 198.51.100.10 80 10.0.0.9 8080" in text and draining == {}
    # deadline passed: deleted even with connections, and said so
    text, draining = plan_text(current, conns={gone: 3}, draining={gone: NOW - 1})
    assert "- dest tcp 198.51.100.10 80 10.0.0.9 8080" in text
    assert "drain deadline passed" in text and draining == {}


def test_golden_removed_service_keeps_service_vip_and_rule_while_draining():
    current = desired()
    skey = ("tcp", "198.51.100.20", 443)
    dkey = (*skey, "10.0.0.5", 443)
    current[("service", skey)] = {"scheduler": "rr", "persistence": 0}
    current[("dest", dkey)] = {"forward": "dr", "weight": 1}
    current[("vip", ("198.51.100.20",))] = {"prefixlen": 32}
    current[("rule", ("198.51.100.20",))] = {"table": 101, "priority": 20000}
    text, _ = plan_text(current, conns={dkey: 1})
    assert text.splitlines()[:2] == ["lvs: 0 to create, 1 to update, 0 to delete",
                                     "  ~ dest tcp 198.51.100.20 443 10.0.0.5 443 (weight 1 -> 0)"]
    text, _ = plan_text(current, conns={dkey: 0})
    assert text == golden("""
        lvs: 0 to create, 0 to update, 4 to delete
          - dest tcp 198.51.100.20 443 10.0.0.5 443 (forward=dr, weight=1)
          - service tcp 198.51.100.20 443 (persistence=0, scheduler=rr)
          - vip 198.51.100.20 (prefixlen=32)
          - rule 198.51.100.20 (priority=20000, table=101)
    """)


def test_zero_drain_seconds_deletes_at_once():
    current = desired()
    gone = ("tcp", "198.51.100.10", 80, "10.0.0.9", 8080)
    current[("dest", gone)] = {"forward": "nat", "weight": 5}
    text, draining = plan_text(current, conns={gone: 4}, drain_seconds=0)
    assert "- dest tcp 198.51.100.10 80 10.0.0.9 8080" in text and draining == {}


def test_registry_adds_reweights_drains_and_removes():
    registry = {JOB: {"10.0.0.7": {"weight": 4, "state": "active"},
                      "10.0.0.1": {"weight": 10, "state": "draining"},
                      "10.0.0.2": {"weight": 1, "state": "removed"}}}
    text, _ = plan_text(desired(), registry=registry)
    assert text == golden("""
        lvs: 2 to create, 2 to update, 2 to delete
          ~ dest tcp 198.51.100.10 80 10.0.0.1 8080 (weight 10 -> 0)
          + dest tcp 198.51.100.10 80 10.0.0.7 8080 (forward=nat, weight=4)
          ~ dest tcp 203.0.113.10 80 10.0.0.1 8080 (weight 10 -> 0)
          + dest tcp 203.0.113.10 80 10.0.0.7 8080 (forward=nat, weight=4)
          - dest tcp 198.51.100.10 80 10.0.0.2 8080 (forward=nat, weight=1)
          - dest tcp 203.0.113.10 80 10.0.0.2 8080 (forward=nat, weight=1)
    """)


def test_effective_servers_and_parse_server():
    layout = layouts(MODEL)[0]
    entries = {"10.0.0.2": {"weight": 0, "state": "removed"},
               "10.0.0.3": {"weight": 2, "state": "active"}}
    assert effective_servers(layout, entries) == (ServerLayout("10.0.0.1", None, 10),
                                                   ServerLayout("10.0.0.3", None, 2))
    assert parse_server("10.0.0.1:80") == ("10.0.0.1", 80)
    assert parse_server("[2001:db8::0001]:443") == ("2001:db8::1", 443)
    assert parse_server("2001:db8::1") == ("2001:db8::1", None)
    for bad in ("10.0.0.1:0", "nohost:80", "[2001:db8::1]x"):
        with pytest.raises(ValueError):
            parse_server(bad)


# ------------------------------------------------------------------ over the fake IPVS


def target(ipvs, directory, clock=lambda: NOW, **kw) -> LVSTarget:
    """The lvs target over ``ipvs`` (a fake), IPVS only, state in ``directory``."""
    return LVSTarget(state_dir=str(directory), ipvs=ipvs, routing=None, clock=clock, **kw)


def apply(target, plan, rollback=False, **kw):
    """``apply_plan`` as the tests here used it before the contract: no undo unless
    asked."""
    return apply_plan(target, plan, rollback=rollback, **kw)


@pytest.fixture
def backend(tmp_path):
    return target(FakeIPVS(), tmp_path)


def test_apply_then_reapply_issues_zero_writes(backend):
    first = apply(backend, backend.plan(MODEL))
    assert first.ok and first.writes["ipvs"] == 6
    second_plan = backend.plan(MODEL)
    second = apply(backend, second_plan)
    assert second_plan.empty and second.writes["netlink"] == 0
    assert "writes: netlink 0, ipvs 0" in second.to_text()


def test_unowned_services_are_left_alone_and_reported(backend):
    foreign = WireService(2, 6, "192.0.2.99", 80, sched="rr")
    backend.ipvs.execute([Request(CMD_NEW_SERVICE, foreign)])
    backend.ipvs.execute([Request(CMD_NEW_SERVICE, WireService(2, 0, "", 0, fwmark=5))])
    the_plan = backend.plan(MODEL)
    assert not any("192.0.2.99" in str(c.key) for c in the_plan.changes)
    assert any("2 IPVS service(s) not on an elbctl VIP: tcp 192.0.2.99:80, fwmark 5" in n
               for n in the_plan.notes)
    apply(backend, the_plan)
    assert len(backend.ipvs.services()) == 4


def test_failure_stops_reports_exactly_and_next_apply_converges(backend):
    backend.ipvs.fail_on = {CMD_NEW_DEST: errno.ENOMEM}
    result = apply(backend, backend.plan(MODEL))
    assert not result.ok
    assert [c.kind for c in result.applied] == ["service", "service"]
    assert result.failed.kind == "dest" and result.error.errno == errno.ENOMEM
    assert len(result.more_failures) == 3          # the rest of that batch, each reported
    assert "FAILED + dest tcp 198.51.100.10 80 10.0.0.1 8080" in result.to_text()
    backend.ipvs.fail_on = {}
    again = apply(backend, backend.plan(MODEL))
    assert again.ok and [c.kind for c in again.applied] == ["dest"] * 4
    assert backend.plan(MODEL).empty


def test_failure_with_rollback_undoes_applied_steps(backend):
    backend.ipvs.fail_on = {CMD_NEW_DEST: errno.ENOMEM}
    result = apply(backend, backend.plan(MODEL), rollback=True)
    assert not result.ok and len(result.undone) == 2
    assert backend.ipvs.services() == []


def test_drain_set_survives_a_restart(backend, tmp_path):
    apply(backend, backend.plan(MODEL))
    extra = WireService(2, 6, "198.51.100.10", 80, sched="wrr")
    from dcnet.lvs.ipvs import WireDest

    backend.ipvs.execute([Request(CMD_NEW_DEST, extra, WireDest(2, "10.0.0.9", 8080, fwd=0))])
    backend.ipvs.set_conns(extra, "10.0.0.9", 8080, 3)
    apply(backend, backend.plan(MODEL))
    key = ("tcp", "198.51.100.10", 80, "10.0.0.9", 8080)
    assert Store(str(tmp_path)).drain_set() == {key: NOW + 300}
    later = target(backend.ipvs, tmp_path, clock=lambda: NOW + 301)
    the_plan = later.plan(MODEL)
    assert [c.describe() for c in the_plan.changes] == [
        "- dest tcp 198.51.100.10 80 10.0.0.9 8080 (forward=nat, weight=0)"]
    apply(later, the_plan)
    assert Store(str(tmp_path)).drain_set() == {}


# ------------------------------------------------------------------ fast and exact reads


def _set_thresholds(ipvs, vip="198.51.100.10", rip="10.0.0.1"):
    """What ``ipvsadm -e ... -x 100 -y 10`` does: same weight and forwarding, thresholds."""
    from dcnet.lvs.ipvs import CMD_SET_DEST, WireDest

    service = WireService(2, 6, vip, 80, sched="wrr")
    (current,) = [d for d in ipvs.dests(service) if d.addr == rip]
    codes = ipvs.execute([Request(CMD_SET_DEST, service, WireDest(
        2, rip, 8080, fwd=current.fwd, weight=current.weight, u_thresh=100, l_thresh=10))])
    assert codes == [0]


def test_fast_read_cannot_see_threshold_drift_exact_read_repairs_it(backend, tmp_path):
    apply(backend, backend.plan(MODEL))
    _set_thresholds(backend.ipvs)
    assert backend.plan(MODEL).empty                  # /proc/net/ip_vs has no thresholds
    exact = target(backend.ipvs, tmp_path, exact_read=True)
    the_plan = exact.plan(MODEL)
    assert [c.describe() for c in the_plan.changes] == [
        "~ dest tcp 198.51.100.10 80 10.0.0.1 8080 (l_thresh 10 -> None, u_thresh 100 -> None)"]
    result = apply(exact, the_plan)
    assert result.ok and result.writes["ipvs"] == 1
    assert exact.plan(MODEL).empty and backend.plan(MODEL).empty
    service = WireService(2, 6, "198.51.100.10", 80)
    assert {(d.u_thresh, d.l_thresh) for d in backend.ipvs.dests(service)} == {(0, 0)}


def test_services_in_exact_for_are_read_by_dest_dumps(backend):
    apply(backend, backend.plan(MODEL))
    _set_thresholds(backend.ipvs, vip="198.51.100.10")
    _set_thresholds(backend.ipvs, vip="203.0.113.10")
    vips = {"198.51.100.10", "203.0.113.10"}
    current, conns, unowned = backend.read_ipvs(vips, {("tcp", "198.51.100.10", 80)})
    assert current[("dest", ("tcp", "198.51.100.10", 80, "10.0.0.1", 8080))] == {
        "forward": "nat", "weight": 10, "u_thresh": 100, "l_thresh": 10}
    assert current[("dest", ("tcp", "203.0.113.10", 80, "10.0.0.1", 8080))] == {
        "forward": "nat", "weight": 10}
    assert len(conns) == 4 and unowned == []
    fast, _, _ = backend.read_ipvs(vips)
    exact, _, _ = target(backend.ipvs, backend.store.directory,
                         exact_read=True).read_ipvs(vips)
    assert {k for k in fast} == {k for k in exact}
    assert {k: v for k, v in exact.items() if "u_thresh" in v} == {
        ("dest", ("tcp", vip, 80, "10.0.0.1", 8080)): {
            "forward": "nat", "weight": 10, "u_thresh": 100, "l_thresh": 10} for vip in vips}


def test_exact_read_services_are_those_whose_dests_need_more_than_proc_shows():
    want = desired()
    assert state.exact_read_services(want) == set()
    key = ("dest", ("tcp", "203.0.113.10", 80, "10.0.0.1", 8080))
    want[key] = {**want[key], "u_thresh": 5, "l_thresh": 1}
    assert state.exact_read_services(want) == {("tcp", "203.0.113.10", 80)}


def test_equal_objects_set_aside_give_the_same_plan_as_a_full_diff():
    """plan_states sets equal objects aside before diff and drain: same plan as diffing all."""
    from dcnet.plan import Plan, diff

    current = desired()
    current.pop(("dest", ("tcp", "203.0.113.10", 80, "10.0.0.2", 8080)))
    current[("dest", ("tcp", "203.0.113.10", 80, "10.0.0.1", 8080))] = {"forward": "dr",
                                                                        "weight": 10}
    current[("dest", ("tcp", "198.51.100.10", 80, "10.0.0.9", 8080))] = {"forward": "nat",
                                                                        "weight": 1}
    current[("service", ("tcp", "198.51.100.99", 80))] = {"scheduler": "rr", "persistence": 0}
    the_plan, _ = plan_states(current, desired(), {}, {}, NOW, 300)
    full = Plan.build("lvs", diff(current, desired()), state.KIND_ORDER)
    assert the_plan.to_text() == full.to_text()
    assert the_plan.counts() == {"create": 1, "update": 1, "delete": 2}


def test_a_proc_text_that_disagrees_with_the_service_dump_is_not_trusted(backend,
                                                                         monkeypatch):
    # e.g. a text read from another namespace, or a table changed mid-read: its services
    # differ from the dump's, so every dest is read by generic netlink instead
    assert apply(backend, backend.plan(MODEL)).ok
    text_method = "proc_text" if hasattr(FakeIPVS, "proc_text") else "procfs_text"
    other = getattr(FakeIPVS(), text_method)()
    monkeypatch.setattr(backend.ipvs, text_method, lambda: other)
    the_plan = backend.plan(MODEL)
    assert the_plan.empty, the_plan.to_text()
    assert backend.bulk_read_rejected == 1
