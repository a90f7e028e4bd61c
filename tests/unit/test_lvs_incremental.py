"""The LVS target's incremental sync (dcnet.lvs.incremental): the pure selection of the
services a plan reads, and, over the fake IPVS behind a counting wrapper of the narrow
interface, that a one-service change among many reads and writes only that service,
agrees with a full read, a second apply writes nothing, a fresh instance applies the
plan, a failed apply leaves no record, and where drift forces a full read."""

from __future__ import annotations

import dataclasses
import errno
import ipaddress
import os
from collections import Counter

import pytest

from dcnet.lvs import incremental
from dcnet.lvs.backend import LVSTarget
from dcnet.lvs.fake import FakeIPVS
from dcnet.lvs.ipvs import CMD_NEW_DEST, CMD_SET_DEST, Request, WireDest, WireService
from dcnet.lvs.layout import layouts
from dcnet.model.jobname import JobName
from dcnet.model.types import Carrier, Forwarding, Model, Port, Protocol, RealServer, Service
from dcnet.plan import Action
from dcnet.target import StalePlan, apply_plan, make_plan

pytestmark = pytest.mark.unit

NOW = 1_000_000.0
A, B, C, D = "tcp 10.0.0.1 80", "tcp 10.0.0.1 443", "udp 10.0.0.1 53", "tcp 10.0.0.2 80"
GROUP = {A: "1", B: "2", C: "3"}
VIPS = incremental.vips_digest(["10.0.0.1"])


def record(services=None, applies=0, verified_at=NOW, vips=VIPS):
    return incremental.Record(dict(GROUP if services is None else services), vips,
                              verified_at, applies)


# ------------------------------------------------------------------ pure selection


def test_select_reads_only_changed_new_and_removed_services():
    got = incremental.select(record(), {D: "9", B: "2", C: "4"}, VIPS, NOW)
    # A removed, C changed, D new; B unchanged is not read
    assert got.read == {("tcp", "10.0.0.1", 80), ("udp", "10.0.0.1", 53),
                        ("tcp", "10.0.0.2", 80)}
    assert got.changed == 3 and got.total == 3 and got.reason == "incremental"


def test_select_keys_round_trip():
    skey = ("udp", "2001:db8::1", 53)
    assert incremental.text_key(incremental.key_text(skey)) == skey


@pytest.mark.parametrize(("rec", "now", "why"), [
    (None, NOW, "no record"),
    (record(vips="other"), NOW, "owned VIPs changed"),
    (record(applies=incremental.FULL_READ_EVERY), NOW, "incremental applies"),
    (record(applies=1), NOW + incremental.FULL_READ_AGE + 1, "old"),
    (record(applies=1), NOW - 5, "old"),                   # a clock that went back
    (record(), NOW, "nothing changed"),
])
def test_select_asks_for_a_full_read(rec, now, why):
    got = incremental.select(rec, dict(GROUP), VIPS, now)
    assert got.read is None and why in got.reason


def test_a_record_of_a_full_read_never_expires():
    assert incremental.full_read_due(record(applies=0), NOW + 10**9) is None
    assert incremental.full_read_due(record(applies=1), NOW + 1) is None


def test_too_many_changed_services_make_a_full_read():
    many = {f"tcp 10.0.0.1 {i}": "x" for i in range(2000)}
    changed = {k: ("y" if int(k.split()[2]) < 600 else "x") for k in many}
    assert incremental.select(record(many), changed, VIPS, NOW).read is None
    few = {k: ("y" if int(k.split()[2]) < 200 else "x") for k in many}
    assert len(incremental.select(record(many), few, VIPS, NOW).read) == 200


def test_layout_digests_change_only_for_the_changed_service():
    one = incremental.layout_digests(layouts(model_for(5, extra_port=1)), {})
    assert set(one) == {f"tcp {vip_of(i)} 80" for i in range(5)} | {f"tcp {vip_of(1)} 443"}
    two = incremental.layout_digests(layouts(model_for(5, changed=(2,), extra_port=1)), {})
    assert {k for k in one if one[k] != two[k]} == {f"tcp {vip_of(2)} 80"}
    # the registry is an input: a server added by ``elbctl backend`` changes its service
    name = layouts(model_for(5))[3].name
    three = incremental.layout_digests(layouts(model_for(5, extra_port=1)),
                                       {name: {"10.9.9.9": {"weight": 1, "state": "active"}}})
    assert {k for k in one if one[k] != three[k]} == {f"tcp {vip_of(3)} 80"}
    # and the order the model lists real servers in is not
    model = model_for(5, extra_port=1)
    svc = model.services[4]
    reordered = dataclasses.replace(model, services=(*model.services[:4], dataclasses.replace(
        svc, real_servers=svc.real_servers[::-1])))
    assert incremental.layout_digests(layouts(reordered), {}) == one


def test_record_file_round_trip_and_corrupt(tmp_path):
    path = str(tmp_path / incremental.FILE)
    assert incremental.load(path) is None
    rec = incremental.Record({"tcp 10.0.0.1 80": "d"}, VIPS, NOW, 2, ("note",), 7)
    incremental.save(path, rec)
    assert incremental.load(path) == rec
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"
    with open(path, "w") as fh:
        fh.write('{"version": 1, "services": []}')
    assert incremental.load(path) is None
    incremental.remove(path)
    incremental.remove(path)
    assert not os.path.exists(path)


# ------------------------------------------------------------------ over the fake


def model_for(services: int, servers: int = 3, changed: tuple[int, ...] = (),
              dropped: int | None = None, extra_port: int | None = None) -> Model:
    """``services`` services (one VIP each, tcp/80 -> 8080 NAT, ``servers`` weighted real
    servers); services in ``changed`` have another first weight; ``dropped`` is left out;
    ``extra_port`` also listens on tcp/443."""
    carrier = Carrier("lab", "up0", ipaddress.ip_address("192.0.2.1"), 101,
                      (ipaddress.ip_network("10.0.0.0/8"),), default=True)
    out = []
    for i in range(services):
        if i == dropped:
            continue
        vip = ipaddress.ip_address(f"10.{i // 250 % 250}.{i % 250}.1")
        reals = tuple(RealServer(ipaddress.ip_address(
            f"172.16.{(i * servers + j) // 250 % 250}.{(i * servers + j) % 250 + 1}"),
            7 if i in changed and j == 0 else j + 1) for j in range(servers))
        job = JobName(f"j{i}", f"s{i}", "c", "p", "o", "bench")
        ports = (Port(80, Protocol.TCP, "wrr", Forwarding.NAT, 0, 8080),)
        if i == extra_port:
            ports += (Port(443, Protocol.TCP, "wrr", Forwarding.NAT, 0, 8443),)
        out.append(Service(job, (("lab", vip),), ports, reals))
    return Model("bench", (carrier,), tuple(out))


def vip_of(i: int) -> str:
    return f"10.{i // 250 % 250}.{i % 250}.1"


class Counting:
    """The narrow IPVS interface of ``table``, counting every read and write call."""

    def __init__(self, table):
        self.table = table
        self.calls: Counter = Counter()
        self.services_read: list = []

    @property
    def writes(self):
        return self.table.writes

    def services(self):
        self.calls["services"] += 1
        return self.table.services()

    def service(self, service):
        self.calls["service"] += 1
        self.services_read.append((service.addr, service.port))
        return self.table.service(service)

    def dests(self, service):
        self.calls["dests"] += 1
        return self.table.dests(service)

    def dest_rows(self, service):
        self.calls["dest_rows"] += 1
        self.services_read.append((service.addr, service.port))
        return self.table.dest_rows(service)

    def all_dest_rows(self):
        self.calls["all_dest_rows"] += 1
        return self.table.all_dest_rows()

    def proc_text(self):
        self.calls["proc_text"] += 1
        return self.table.proc_text()

    def execute(self, requests):
        self.calls["execute"] += 1
        self.calls["requests"] += len(requests)
        for r in requests:
            self.services_read.append((r.service.addr, r.service.port))
        return self.table.execute(requests)

    def close(self):
        pass

    def reset(self):
        self.calls.clear()
        self.services_read.clear()


class Clock:
    def __init__(self):
        self.now = NOW

    def __call__(self):
        return self.now


N = 40


@pytest.fixture
def lab(tmp_path):
    """(counting table, clock, target factory) after a clean full apply of N services."""
    table, clock = Counting(FakeIPVS()), Clock()

    def make(**kw):
        return LVSTarget(state_dir=str(tmp_path), ipvs=table, routing=None, clock=clock, **kw)

    first = make()
    with first.lock(5):
        result = apply_plan(first, first.plan(model_for(N)))
    assert result.ok and result.writes["ipvs"] == N * 4
    table.reset()
    return table, clock, make


def sync(make, model, **kw):
    """What ``elbctl apply`` runs: plan and apply under the target's lock."""
    target = make(**kw)
    with target.lock(5):
        plan = make_plan(target, model)
        return plan, apply_plan(target, plan)


def test_one_changed_service_reads_and_writes_only_it(lab):
    table, _clock, make = lab
    plan, result = sync(make, model_for(N, changed=(7,)))
    assert plan.payload.incremental == {("tcp", vip_of(7), 80)}
    assert any("1 of 40 service(s) changed" in n for n in plan.notes), plan.notes
    assert result.ok and result.writes["ipvs"] == 1 and len(plan.changes) == 1
    # one GET and one dest dump of that service; one /proc read after the writes
    # (hashed for the no-op fingerprint, not parsed); no service dump, no bulk read
    assert table.calls == Counter(service=1, dest_rows=1, execute=1, requests=1,
                                  proc_text=1), table.calls
    assert set(table.services_read) == {(vip_of(7), 80)}
    # a second apply writes nothing and reads no IPVS but the fingerprint's text
    table.reset()
    again, result = sync(make, model_for(N, changed=(7,)))
    assert again.empty and again.payload.fast_path and result.writes["ipvs"] == 0
    assert table.calls == Counter(proc_text=1)
    # and a full read agrees: nothing to do
    full, _ = sync(make, model_for(N, changed=(7,)), full_read=True)
    assert full.empty and full.payload.incremental is None and not full.payload.fast_path


def test_an_added_and_a_removed_service(lab):
    table, _clock, make = lab
    plan, result = sync(make, model_for(N, extra_port=3))
    assert plan.payload.incremental == {("tcp", vip_of(3), 443)}
    assert plan.counts()["create"] == 4 and result.ok
    assert incremental.load(make().store.path(incremental.FILE)).applies == 1
    table.reset()
    plan, result = sync(make, model_for(N))
    assert plan.payload.incremental == {("tcp", vip_of(3), 443)}
    assert plan.counts()["delete"] == 4 and result.ok
    assert table.calls["services"] == 0 and table.calls["all_dest_rows"] == 0
    assert incremental.load(make().store.path(incremental.FILE)).applies == 2
    assert sync(make, model_for(N), full_read=True)[0].empty


def test_a_service_whose_vip_leaves_the_model_makes_a_full_read(lab):
    """Its VIP is no longer owned (no VIP interface here): the owned VIPs changed, so the
    plan reads everything and leaves the service alone, as a full read always did."""
    table, _clock, make = lab
    plan, _ = sync(make, model_for(N, dropped=3))
    assert plan.payload.incremental is None and table.calls["services"] == 1
    assert plan.empty and any("left alone: 1 IPVS service" in n for n in plan.notes)


def test_a_fresh_instance_applies_an_incremental_plan_and_a_stale_one_is_refused(lab):
    table, _clock, make = lab
    plan = make().plan(model_for(N, changed=(5,)))
    assert plan.payload.incremental == {("tcp", vip_of(5), 80)}
    result = apply_plan(make(), plan)       # not under the lock: re-reads that service
    assert result.ok and result.writes["ipvs"] == 1
    stale = make().plan(model_for(N, changed=(5, 6)))
    assert stale.payload.incremental is not None
    table.table.execute([Request(CMD_SET_DEST, WireService(2, 6, vip_of(6), 80),
                                 WireDest(2, "172.16.0.19", 8080, fwd=0, weight=9))])
    with pytest.raises(StalePlan):
        apply_plan(make(), stale)


def test_a_failed_apply_leaves_no_record_and_the_next_plan_reads_everything(lab):
    table, _clock, make = lab
    table.table.fail_on[CMD_SET_DEST] = errno.EIO
    plan, result = sync(make, model_for(N, changed=(9,)))
    assert plan.payload.incremental is not None and not result.ok
    path = make().store.path(incremental.FILE)
    assert not os.path.exists(path)
    table.table.fail_on.clear()
    table.reset()
    plan, result = sync(make, model_for(N, changed=(9,)))
    assert plan.payload.incremental is None and table.calls["services"] == 1
    assert result.ok and os.path.exists(path)


def test_drift_in_an_unchanged_service(lab):
    """Drift in a service the plan does not read is not seen by an incremental plan; the
    no-op fingerprint sees drift made after the last apply; drift made before an
    incremental apply is found by the full read once the record expires."""
    table, clock, make = lab
    tamper = [Request(CMD_NEW_DEST, WireService(2, 6, vip_of(2), 80),
                      WireDest(2, "192.0.2.99", 8080, fwd=0, weight=1))]
    table.table.execute(tamper)
    plan, result = sync(make, model_for(N, changed=(1,)))
    assert plan.payload.incremental == {("tcp", vip_of(1), 80)} and result.ok
    assert ("tcp", vip_of(2), 80, "192.0.2.99", 8080) not in {
        c.key for c in plan.changes}
    # the fingerprint re-armed after the apply: a no-op does not see the earlier drift
    assert sync(make, model_for(N, changed=(1,)))[0].payload.fast_path
    # once the record expires, the next plan reads everything and repairs it
    clock.now += incremental.FULL_READ_AGE + 1
    table.reset()
    plan, result = sync(make, model_for(N, changed=(1,)))
    assert not plan.payload.fast_path and plan.payload.incremental is None
    assert table.calls["services"] == 1
    assert [(c.action.value, c.key) for c in plan.changes] == [
        (Action.DELETE.value, ("tcp", vip_of(2), 80, "192.0.2.99", 8080))]
    assert result.ok and incremental.load(make().store.path(incremental.FILE)).applies == 0
    # drift made after an apply is seen by the very next no-op (the fingerprint)
    table.table.execute(tamper)
    plan, _ = sync(make, model_for(N, changed=(1,)))
    assert not plan.payload.fast_path and plan.counts()["delete"] == 1


def test_every_nth_incremental_apply_is_followed_by_a_full_read(lab, monkeypatch):
    table, _clock, make = lab
    monkeypatch.setattr(incremental, "FULL_READ_EVERY", 2)
    for i in (1, 2):
        plan, result = sync(make, model_for(N, changed=tuple(range(1, i + 1))))
        assert plan.payload.incremental is not None and result.ok
    table.reset()
    plan, _ = sync(make, model_for(N, changed=(1, 2, 3)))
    assert plan.payload.incremental is None and table.calls["services"] == 1


def test_exact_read_and_a_drain_make_full_reads(lab):
    table, _clock, make = lab
    plan, _ = sync(make, model_for(N, changed=(4,)), exact_read=True)
    assert plan.payload.incremental is None and table.calls["services"] == 1
    # a dest with connections dropped from the model drains; while it drains, plans
    # read everything (the record is not written)
    table.table.set_conns(WireService(2, 6, vip_of(8), 80), "172.16.0.25", 8080, 3)
    changed = model_for(N, changed=(4,))
    svc = changed.services[8]
    svc = dataclasses.replace(svc, real_servers=svc.real_servers[1:])
    drained = dataclasses.replace(
        changed, services=(*changed.services[:8], svc, *changed.services[9:]))
    plan, result = sync(make, drained)
    assert plan.payload.incremental is not None and plan.payload.draining and result.ok
    assert not os.path.exists(make().store.path(incremental.FILE))
    table.reset()
    plan, _ = sync(make, drained)
    assert plan.payload.incremental is None and table.calls["services"] == 1
