"""The plan core: pure diff, deterministic order, text/JSON output, apply and undo."""

from __future__ import annotations

import json

import pytest

from dcnet.model import parse_model
from dcnet.plan import Action, Change, Plan, diff
from dcnet.target import StalePlan, TargetUnavailable, TooMuchChange, apply_plan, make_plan
from dcnet.target.apply import GUARD_MIN_OBJECTS, check_change_size
from tests.unit.memory_backend import MemoryTarget, MemoryWorld
from tests.unit.model_fixtures import model_text, read_file

pytestmark = pytest.mark.unit

ORDER = ("route", "rule", "address", "service", "dest")


def model(mutate=None):
    return parse_model(model_text(mutate), read_text=read_file())


def test_diff_creates_updates_deletes():
    current = {("service", ("a",)): {"w": 1}, ("service", ("b",)): {"w": 1}}
    desired = {("service", ("a",)): {"w": 2}, ("service", ("c",)): {"w": 1}}
    got = {(c.action, c.key) for c in diff(current, desired)}
    assert got == {(Action.UPDATE, ("a",)), (Action.DELETE, ("b",)), (Action.CREATE, ("c",))}


def test_diff_of_equal_states_is_empty():
    state = {("dest", ("x", 1)): {"weight": 3}}
    assert diff(state, dict(state)) == []


def test_plan_orders_creates_by_kind_then_deletes_in_reverse():
    changes = [
        Change(Action.DELETE, "rule", ("r1",), old={}),
        Change(Action.CREATE, "dest", ("d1",), new={}),
        Change(Action.DELETE, "dest", ("d0",), old={}),
        Change(Action.CREATE, "route", ("t1",), new={}),
        Change(Action.UPDATE, "service", ("s1",), old={"a": 1}, new={"a": 2}),
    ]
    plan = Plan.build("lvs", changes, ORDER)
    assert [(c.action.value, c.kind) for c in plan.changes] == [
        ("create", "route"), ("update", "service"), ("create", "dest"),
        ("delete", "dest"), ("delete", "rule")]


def test_plan_order_is_deterministic_whatever_the_input_order():
    changes = [Change(Action.CREATE, "dest", (f"10.0.0.{i}", 80), new={"w": i}) for i in range(9)]
    a = Plan.build("lvs", changes, ORDER)
    b = Plan.build("lvs", list(reversed(changes)), ORDER)
    assert a == b and a.to_json() == b.to_json()


def test_numeric_key_parts_sort_numerically():
    changes = [Change(Action.CREATE, "service", ("tcp", port), new={}) for port in (443, 80, 8080)]
    assert [c.key[1] for c in Plan.build("lvs", changes, ORDER).changes] == [80, 443, 8080]


def test_unknown_kind_is_a_programming_error():
    with pytest.raises(ValueError, match="not in the kind order"):
        Plan.build("lvs", [Change(Action.CREATE, "bogus", ("x",), new={})], ORDER)


def test_plan_text_and_json():
    changes = [Change(Action.UPDATE, "dest", ("10.0.0.1", 80), old={"weight": 1},
                      new={"weight": 5}),
               Change(Action.CREATE, "service", ("tcp", "192.0.2.1", 80), new={"sched": "rr"})]
    plan = Plan.build("lvs", changes, ORDER, notes=("rule 100 is not ours; left alone",))
    text = plan.to_text()
    assert text.splitlines()[0] == "lvs: 1 to create, 1 to update, 0 to delete"
    assert "  + service tcp 192.0.2.1 80 (sched=rr)" in text
    assert "  ~ dest 10.0.0.1 80 (weight 1 -> 5)" in text
    assert "note: rule 100 is not ours" in text
    data = json.loads(plan.to_json())
    assert data["summary"] == {"create": 1, "update": 1, "delete": 0}
    assert data["changes"][0]["key"] == ["tcp", "192.0.2.1", 80]


def test_inverse_undoes():
    c = Change(Action.UPDATE, "dest", ("x",), old={"w": 1}, new={"w": 2})
    assert c.inverse().new == {"w": 1} and c.inverse().inverse() == c
    assert Change(Action.CREATE, "d", ("x",), new={}).inverse().action is Action.DELETE


def test_apply_then_second_apply_changes_nothing():
    target = MemoryTarget()
    first = apply_plan(target, target.plan(model()))
    assert first.ok and target.w.writes == len(first.applied) > 0
    assert first.writes == {"memory": len(first.applied)}
    writes = target.w.writes
    second = target.plan(model())
    assert second.empty
    assert apply_plan(target, second).writes == {"memory": 0}
    assert target.w.writes == writes


def test_apply_converges_after_model_change():
    target = MemoryTarget()
    apply_plan(target, target.plan(model()))

    def mutate(d):
        d["services"][0]["real_servers"][0]["weight"] = 77
        d["services"][1]["real_servers"] = []
    plan = target.plan(model(mutate))
    kinds = {(c.action, c.kind) for c in plan.changes}
    assert kinds == {(Action.UPDATE, "dest"), (Action.DELETE, "dest")}
    assert apply_plan(target, plan, force=True).ok
    assert target.plan(model(mutate)).empty


def test_failure_stops_and_undoes_in_reverse():
    target = MemoryTarget()
    target.w.fail_on = ("service",)
    plan = target.plan(model())
    result = apply_plan(target, plan)
    assert not result.ok and result.failed.kind == "service"
    assert [c.kind for c in result.applied] == [c.kind for c in plan.changes][:len(result.applied)]
    assert result.applied and result.undone == list(reversed(result.applied))
    assert target.w.state == {}
    assert "FAILED + service" in result.to_text()


def test_a_failing_batch_reports_every_failure_and_undoes_the_applied():
    target = MemoryTarget()
    target.w.fail_on = ("dest",)
    plan = target.plan(model())
    result = apply_plan(target, plan)
    dests = [c for c in plan.changes if c.kind == "dest"]
    assert not result.ok and result.failed == dests[0]
    assert [c for c, _ in result.more_failures] == dests[1:min(3, len(dests))]
    assert target.w.state == {}


def test_failure_without_rollback_keeps_applied_steps_and_next_apply_converges():
    target = MemoryTarget()
    target.w.fail_on = ("dest",)
    result = apply_plan(target, target.plan(model()), rollback=False)
    assert not result.ok and result.undone == [] and target.w.state
    target.w.fail_on = ()
    assert apply_plan(target, target.plan(model())).ok
    assert target.plan(model()).empty


def test_consecutive_batch_kinds_go_in_batches_of_batch_size():
    target = MemoryTarget()
    plan = target.plan(model())
    n = sum(1 for c in plan.changes if c.kind == "dest")
    assert n > 3
    apply_plan(target, plan)
    assert sum(target.w.batches) == n and max(target.w.batches) == 3


def test_a_fresh_instance_applies_a_plan_made_by_another():
    world = MemoryWorld()
    plan = MemoryTarget(world=world).plan(model())
    fresh = MemoryTarget(world=world)
    assert apply_plan(fresh, plan).ok
    assert MemoryTarget(world=world).plan(model()).empty


def test_a_stale_plan_is_refused_and_changes_nothing():
    world = MemoryWorld()
    target = MemoryTarget(world=world)
    plan = target.plan(model())
    world.state[("address", ("198.51.100.9",))] = {"carrier": "x"}   # someone else wrote
    before = dict(world.state)
    with pytest.raises(StalePlan, match="changed since the plan"):
        apply_plan(MemoryTarget(world=world), plan)
    assert world.state == before and world.writes == 0


def test_a_plan_made_under_the_held_lock_is_not_read_again(tmp_path):
    world = MemoryWorld(lock_path=str(tmp_path / "lock"))
    target = MemoryTarget(world=world)
    calls = []
    target.current_digest = lambda plan: calls.append(plan) or "x"
    with target.lock(1):
        plan = make_plan(target, model())
        assert apply_plan(target, plan).ok
    assert calls == []
    with pytest.raises(StalePlan):           # outside the lock the digest is checked
        apply_plan(target, plan)


def test_the_change_guard_refuses_a_large_delete_unless_forced():
    target = MemoryTarget()
    apply_plan(target, target.plan(model()))
    before = dict(target.w.state)

    def empty(d):
        for s in d["services"]:
            s["real_servers"] = []
    plan = target.plan(model(empty))
    assert plan.objects == len(before) >= GUARD_MIN_OBJECTS
    with pytest.raises(TooMuchChange, match="--force"):
        apply_plan(target, plan)
    assert target.w.state == before
    assert apply_plan(target, plan, max_change=1.0).ok


def test_the_change_guard_ignores_small_targets():
    plan = Plan.build("memory", [Change(Action.DELETE, "dest", (str(i),), old={})
                                 for i in range(5)], ORDER, objects=5)
    check_change_size(plan)          # under GUARD_MIN_OBJECTS: never refused


def test_the_lock_names_its_holder_and_times_out(tmp_path):
    import subprocess
    import sys

    path = tmp_path / "lock"
    holder = subprocess.Popen([sys.executable, "-c",
                               "import sys, time\n"
                               "from dcnet.sysio import flock\n"
                               f"with flock.exclusive({str(path)!r}, 5):\n"
                               "    print('held', flush=True); time.sleep(30)\n"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        target = MemoryTarget(world=MemoryWorld(lock_path=str(path)))
        with pytest.raises(TargetUnavailable, match=f"held by pid {holder.pid}"), \
                target.lock(0.2):
            pass
        assert oct(path.stat().st_mode & 0o777) == "0o600"
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
    with target.lock(5):                   # released when the holder died
        assert target.locked


def test_the_default_drift_check_answers_as_the_whole_plan():
    """:meth:`Target.drifted`'s default (the model's pieces planned whole) on the
    in-memory target: the drift-check contract (tests/drift_contract.py) for every
    variant of the applied model, given in pieces of one service."""
    from dcnet.target import registry
    from tests.drift_contract import assert_drift_agrees

    world = MemoryWorld()
    registry.register(MemoryTarget.bound(world))
    try:
        applied = model()
        assert apply_plan(MemoryTarget(world=world), MemoryTarget(world=world).plan(applied)).ok
        seen = assert_drift_agrees("memory", {}, applied, per_piece=1)
        assert len(seen) == 6 and not seen["as applied"]
    finally:
        registry.unregister("memory")
