"""The lvs target under the target contract, over the fake IPVS: a plan applied by a
fresh instance, a stale plan refused, the change guard, the lock shared with
``elbctl backend``, option resolution and the state directory's permissions."""

from __future__ import annotations

import os
import stat

import pytest

from dcnet.lab import lvs_lab as lvslab
from dcnet.lvs.backend import LVSPayload, LVSTarget
from dcnet.lvs.dynamic import change_backend
from dcnet.lvs.fake import FakeIPVS
from dcnet.lvs.ipvs import CMD_NEW_DEST, CMD_SET_DEST, Request, WireDest, WireService
from dcnet.lvs.store import Store
from dcnet.model import parse_model
from dcnet.sysio.flock import LockTimeout
from dcnet.target import (
    StalePlan,
    TargetUnavailable,
    TooMuchChange,
    apply_plan,
    make_plan,
    registry,
)
from tests.unit.test_lvs_contract import observed
from tests.unit.test_lvs_plan import MODEL, NOW, target

pytestmark = pytest.mark.unit

SERVICE = WireService(2, 6, "198.51.100.10", 80, sched="wrr")
NAT_VIP = lvslab.VIPS["telecom"][0]


def one_server_model():
    """The lab model with one real server per service: 8 of its 12 dests deleted."""
    lines = [line for line in lvslab.model_text().splitlines()
             if "10.20.0.11" not in line and "10.20.0.12" not in line]
    return parse_model("\n".join(lines) + "\n", source="lvs-lab.yaml",
                       read_text=lvslab.CIDR_FILES.__getitem__)


def snapshot(ipvs, directory) -> tuple:
    """What a refused apply must leave as it was: the table and the state files."""
    files = {}
    for name in sorted(os.listdir(directory)):
        if name.endswith(".json"):
            with open(os.path.join(directory, name)) as fh:
                files[name] = fh.read()
    return observed(ipvs), ipvs.writes, files


# ------------------------------------------------------------------ (a) fresh instance


def test_a_fresh_instance_applies_a_plan_made_by_another(tmp_path):
    ipvs = FakeIPVS()
    planner = target(ipvs, tmp_path)
    plan = planner.plan(MODEL)
    assert isinstance(plan.payload, LVSPayload) and plan.read_digest
    applier = target(ipvs, tmp_path)                 # another process, say
    result = apply_plan(applier, plan)
    assert result.ok and result.writes["ipvs"] == 6, result.to_text()
    assert Store(str(tmp_path)).layouts() is not None           # from the payload
    assert Store(str(tmp_path)).fingerprint() is not None       # recorded after it
    again = target(ipvs, tmp_path).plan(MODEL)
    assert again.empty and again.payload.fast_path


def test_a_drain_planned_by_one_instance_is_recorded_by_another(tmp_path):
    ipvs = FakeIPVS()
    assert apply_plan(target(ipvs, tmp_path), target(ipvs, tmp_path).plan(MODEL)).ok
    ipvs.set_conns(SERVICE, "10.0.0.2", 8080, 3)
    smaller = parse_model(lvslab_free_text(), source="m.yaml")
    plan = target(ipvs, tmp_path).plan(smaller)
    key = ("tcp", "198.51.100.10", 80, "10.0.0.2", 8080)
    assert dict(plan.payload.draining) == {key: NOW + 300}
    result = apply_plan(target(ipvs, tmp_path), plan)
    assert result.ok and Store(str(tmp_path)).drain_set() == {key: NOW + 300}
    assert Store(str(tmp_path)).fingerprint() is None           # a drain is pending


def lvslab_free_text() -> str:
    from tests.unit.test_lvs_plan import TEXT

    return TEXT.replace(", {address: 10.0.0.2}", "")


# ------------------------------------------------------------------ (b) stale plan


def test_b_a_stale_plan_is_refused_and_changes_nothing(tmp_path):
    ipvs = FakeIPVS()
    assert apply_plan(target(ipvs, tmp_path), target(ipvs, tmp_path).plan(MODEL)).ok
    changed = parse_model(lvslab_free_text().replace("weight: 10", "weight: 4"),
                          source="m.yaml")
    plan = target(ipvs, tmp_path).plan(changed)
    assert not plan.empty
    # someone else changes IPVS after the plan, outside any lock
    assert ipvs.execute([Request(CMD_SET_DEST, SERVICE, WireDest(2, "10.0.0.1", 8080,
                                                                   fwd=0, weight=7))]) == [0]
    before = snapshot(ipvs, tmp_path)
    with pytest.raises(StalePlan, match="changed since the plan"):
        apply_plan(target(ipvs, tmp_path), plan)
    assert snapshot(ipvs, tmp_path) == before


def test_b_a_registry_change_makes_a_plan_stale(tmp_path):
    ipvs = FakeIPVS()
    store = Store(str(tmp_path))
    assert apply_plan(target(ipvs, tmp_path), target(ipvs, tmp_path).plan(MODEL)).ok
    plan = target(ipvs, tmp_path).plan(MODEL)
    from tests.unit.test_lvs_plan import JOB

    change_backend(store, ipvs, "add", JOB, "10.0.0.7", weight=2)   # elbctl backend add
    before = snapshot(ipvs, tmp_path)
    with pytest.raises(StalePlan):
        apply_plan(target(ipvs, tmp_path), plan)
    assert snapshot(ipvs, tmp_path) == before


def test_b_traffic_alone_does_not_make_a_plan_stale(tmp_path):
    ipvs = FakeIPVS()
    assert apply_plan(target(ipvs, tmp_path), target(ipvs, tmp_path).plan(MODEL)).ok
    plan = target(ipvs, tmp_path).plan(MODEL)
    ipvs.set_conns(SERVICE, "10.0.0.1", 8080, 42, inactive=5)       # counters are masked
    assert apply_plan(target(ipvs, tmp_path), plan).ok


def test_b_a_plan_made_under_the_lock_is_trusted_by_its_holder(tmp_path, monkeypatch):
    ipvs = FakeIPVS()
    lvs = target(ipvs, tmp_path)
    with lvs.lock(5):
        plan = make_plan(lvs, MODEL)
        monkeypatch.setattr(lvs, "current_digest", _forbidden)
        assert apply_plan(lvs, plan).ok


def _forbidden(plan):
    raise AssertionError("a plan made under the held lock needs no staleness read")


# ------------------------------------------------------------------ (c) change guard


def test_c_the_change_guard_refuses_a_big_delete_without_force(tmp_path):
    ipvs = FakeIPVS()
    assert apply_plan(target(ipvs, tmp_path), target(ipvs, tmp_path).plan(lvslab.model())).ok
    noop = target(ipvs, tmp_path).plan(lvslab.model())
    assert noop.payload.fast_path and noop.objects == 16     # 4 services, 12 dests
    plan = target(ipvs, tmp_path).plan(one_server_model())
    assert plan.objects == 16 and plan.counts()["delete"] == 8
    before = snapshot(ipvs, tmp_path)
    with pytest.raises(TooMuchChange, match="delete 8 of 16 objects"):
        apply_plan(target(ipvs, tmp_path), plan)
    assert snapshot(ipvs, tmp_path) == before
    result = apply_plan(target(ipvs, tmp_path), plan, force=True)
    assert result.ok and sum(len(dests) for _, dests in observed(ipvs).values()) == 4


# ------------------------------------------------------------------ batches


def test_ipvs_changes_go_in_batches_and_a_failed_batch_is_undone(tmp_path):
    ipvs = FakeIPVS()
    calls = []
    execute = ipvs.execute
    ipvs.execute = lambda requests: calls.append(len(requests)) or execute(requests)
    ipvs.fail_on = {CMD_NEW_DEST: 12}
    result = apply_plan(target(ipvs, tmp_path), target(ipvs, tmp_path).plan(MODEL))
    assert calls[0] == 6                        # one batch: 2 services and 4 dests
    assert not result.ok and len(result.more_failures) == 3 and len(result.undone) == 2
    assert ipvs.services() == [] and Store(str(tmp_path)).fingerprint() is None


# ------------------------------------------------------------------ lock, options, modes


def test_backend_commands_and_apply_share_one_lock(tmp_path):
    lvs = target(FakeIPVS(), tmp_path)
    store = Store(str(tmp_path))
    assert lvs.lock_path() == store.lock_path() == str(tmp_path / "lock")
    with lvs.lock(5), pytest.raises(LockTimeout, match="held by"), store.locked(0.2):
        pass
    other = target(FakeIPVS(), tmp_path)
    with store.locked(5), pytest.raises(TargetUnavailable, match=r"lvs: .*held by"), \
            other.lock(0.2):
        pass


def test_options_resolve_from_flags_then_environment(monkeypatch):
    monkeypatch.setenv("DCNET_LVS_NETNS", "dir1")
    monkeypatch.setenv("DCNET_LVS_STATE_DIR", "/tmp/lvs-x")
    got = registry.resolve_options(LVSTarget, {"netns": "dir2"})
    assert got == {"netns": "dir2", "state_dir": "/tmp/lvs-x", "exact_read": False}
    assert registry.target_class("lvs") is LVSTarget
    assert {o.flag for o in LVSTarget.options} == {"lvs-netns", "lvs-state-dir", "exact-read"}


def test_state_directory_0700_and_its_files_0600(tmp_path):
    directory = tmp_path / "state"
    ipvs = FakeIPVS()
    lvs = target(ipvs, directory)
    with lvs.lock(5):
        assert apply_plan(lvs, make_plan(lvs, lvslab.model())).ok
    change_backend(Store(str(directory)), ipvs, "add", lvslab.JOB_NAT, "10.20.0.50")
    ipvs.set_conns(WireService(2, 6, NAT_VIP, 80), "10.20.0.50", 8080, 2)
    change_backend(Store(str(directory)), ipvs, "remove", lvslab.JOB_NAT, "10.20.0.50")
    assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700
    names = sorted(os.listdir(directory))
    assert names == ["drain.json", "ipvs_fingerprint.json", "ipvs_services.json",
                     "layouts.json", "lock", "registry.json", "settings.json"]
    for name in names:
        assert stat.S_IMODE(os.stat(directory / name).st_mode) == 0o600, name
    loose = tmp_path / "loose"
    loose.mkdir(mode=0o755)
    os.chmod(loose, 0o755)
    Store(str(loose)).save_registry({})
    assert stat.S_IMODE(os.stat(loose).st_mode) == 0o700
