"""The plan core: pure diff, deterministic order, text/JSON output, apply and undo."""

from __future__ import annotations

import json

import pytest

from dcnet.model import parse_model
from dcnet.plan import Action, Change, Plan, apply_plan, diff
from tests.unit.memory_backend import MemoryBackend
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
    backend = MemoryBackend()
    first = apply_plan(backend, backend.plan(model()))
    assert first.ok and backend.writes == len(first.applied) > 0
    writes = backend.writes
    second = backend.plan(model())
    assert second.empty
    apply_plan(backend, second)
    assert backend.writes == writes


def test_apply_converges_after_model_change():
    backend = MemoryBackend()
    apply_plan(backend, backend.plan(model()))

    def mutate(d):
        d["services"][0]["real_servers"][0]["weight"] = 77
        d["services"][1]["real_servers"] = []
    plan = backend.plan(model(mutate))
    kinds = {(c.action, c.kind) for c in plan.changes}
    assert kinds == {(Action.UPDATE, "dest"), (Action.DELETE, "dest")}
    assert apply_plan(backend, plan).ok
    assert backend.plan(model(mutate)).empty


def test_failure_stops_and_undoes_in_reverse():
    backend = MemoryBackend()
    backend.fail_on = ("dest",)
    plan = backend.plan(model())
    result = apply_plan(backend, plan)
    assert not result.ok and result.failed.kind == "dest"
    assert [c.kind for c in result.applied] == [c.kind for c in plan.changes][:len(result.applied)]
    assert result.undone == list(reversed(result.applied))
    assert backend.state == {}
    assert "FAILED + dest" in result.to_text()


def test_failure_without_rollback_keeps_applied_steps_and_next_apply_converges():
    backend = MemoryBackend()
    backend.fail_on = ("dest",)
    result = apply_plan(backend, backend.plan(model()), rollback=False)
    assert not result.ok and result.undone == [] and backend.state
    backend.fail_on = ()
    assert apply_plan(backend, backend.plan(model())).ok
    assert backend.plan(model()).empty
