"""The LVS target's incremental sync against the real IPVS, in the kernel lab, in-process
(no elbctl process): one changed service among N is read with one IPVS_CMD_GET_SERVICE
and one dest dump and written with one request, counted through the narrow IPVS
interface; the per-service read agrees with the full read; a second apply writes
nothing; drift in a service the plan does not read is repaired by the full read once the
record expires, and drift after an apply is seen by the next no-op (the fingerprint)."""

from __future__ import annotations

from collections import Counter

import pytest

from dcnet.lvs import incremental
from dcnet.lvs.backend import LVSTarget
from dcnet.lvs.ipvs import CMD_NEW_DEST, CMD_SET_DEST, KernelIPVS, Request, WireDest, WireService
from dcnet.lvs.state import wire_service
from dcnet.target import apply_plan, make_plan
from tests.kernel.test_lvs import drop_netns, scratch_netns
from tests.unit.test_lvs_incremental import Clock, Counting, model_for, vip_of

pytestmark = [pytest.mark.kernel, pytest.mark.filterwarnings("ignore::ResourceWarning"),
              pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")]

N = 200                 # services x 3 real servers: 800 IPVS objects


def test_incremental_sync_reads_and_writes_only_the_changed_service(tmp_path):
    ns = scratch_netns("inc")
    kernel = KernelIPVS(ns)
    table, clock = Counting(kernel), Clock()

    def sync(model, **kw):
        target = LVSTarget(netns=ns, state_dir=str(tmp_path), ipvs=table, routing=None,
                           clock=clock, **kw)
        with target.lock(600):
            plan = make_plan(target, model)
            return plan, apply_plan(target, plan)

    try:
        plan, result = sync(model_for(N))
        assert result.ok and result.writes["ipvs"] == N * 4 and plan.payload.incremental is None

        # one service changed: one GET, one dest dump, one write, one /proc read after
        # the write (hashed for the no-op fingerprint, not parsed); no service dump
        table.reset()
        plan, result = sync(model_for(N, changed=(7,)))
        assert plan.payload.incremental == {("tcp", vip_of(7), 80)}, plan.notes
        assert result.ok and result.writes["ipvs"] == 1
        assert table.calls == Counter(service=1, dest_rows=1, execute=1, requests=1,
                                      proc_text=1), table.calls
        assert set(table.services_read) == {(vip_of(7), 80)}

        # the per-service read agrees with the full read, service by service
        target = LVSTarget(netns=ns, state_dir=str(tmp_path), ipvs=kernel, routing=None)
        full = {k: v for k, v in target.read(model_for(N, changed=(7,))).state.items()
                if k[0] in ("service", "dest")}
        keys = {k[1] for k in full if k[0] == "service"}
        assert len(keys) == N
        assert incremental.read_services(kernel, keys).state == full
        assert kernel.service(wire_service(("tcp", "10.250.0.1", 80))) is None   # ESRCH

        # a second apply writes nothing (the fingerprint fast path) and a full read agrees
        table.reset()
        plan, result = sync(model_for(N, changed=(7,)))
        assert plan.empty and plan.payload.fast_path and result.writes["ipvs"] == 0
        assert table.calls == Counter(proc_text=1)
        assert sync(model_for(N, changed=(7,)), full_read=True)[0].empty

        # drift in a service an incremental plan does not read: not seen by it ...
        tamper = [Request(CMD_SET_DEST, WireService(2, 6, vip_of(2), 80),
                          WireDest(2, "172.16.0.7", 8080, fwd=0, weight=9))]
        assert kernel.execute(tamper) == [0]
        plan, result = sync(model_for(N, changed=(7, 8)))
        assert plan.payload.incremental == {("tcp", vip_of(8), 80)} and result.ok
        # ... until the record expires: the next plan reads everything and repairs it
        clock.now += incremental.FULL_READ_AGE + 1
        table.reset()
        plan, result = sync(model_for(N, changed=(7, 8)))
        assert plan.payload.incremental is None and table.calls["services"] == 1
        assert [c.key for c in plan.changes] == [("tcp", vip_of(2), 80, "172.16.0.7", 8080)]
        assert result.ok

        # drift after an apply is seen by the next no-op (the fingerprint: full read)
        extra = [Request(CMD_NEW_DEST, WireService(2, 6, vip_of(3), 80),
                         WireDest(2, "192.0.2.99", 8080, fwd=0, weight=1))]
        assert kernel.execute(extra) == [0]
        table.reset()
        plan, result = sync(model_for(N, changed=(7, 8)))
        assert not plan.payload.fast_path and table.calls["services"] == 1
        assert plan.counts()["delete"] == 1 and result.ok
        assert sync(model_for(N, changed=(7, 8)))[0].payload.fast_path
    finally:
        kernel.close()
        drop_netns(ns)
