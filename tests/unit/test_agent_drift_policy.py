"""The model's ``agent.drift`` (issue #20): ``repair`` by default, ``alert`` when set,
anything else refused at load with file, line and field; and the agent's drift
bookkeeping (:mod:`dcnet.elbstore.driftwatch`), pure parts: what counts as the same
desired state and the same drift."""

from __future__ import annotations

import json
from dataclasses import replace
from types import SimpleNamespace

import pytest
import yaml

from dcnet.elbstore.driftwatch import (
    RECORDED_CHANGES,
    desired_key,
    plan_key,
    record_of,
    settles,
    stamp,
)
from dcnet.lab import haproxy_lab as hlab
from dcnet.model import ModelError, parse_model
from dcnet.plan import Action, Change, Plan

RS1 = hlab.server_address(1)


def load(agent: object = None):
    data = hlab.model_data({RS1: 10})
    if agent is not None:
        data["agent"] = agent
    return parse_model(yaml.safe_dump(data, sort_keys=False), source="m.yaml")


def problems(agent: object) -> list:
    with pytest.raises(ModelError) as caught:
        load(agent)
    found = caught.value.problems
    assert all(isinstance(p.line, int) and p.line > 0 for p in found)   # file:line
    return [(p.source, p.path, p.message) for p in found]


def test_drift_policy_defaults_to_repair_and_takes_alert():
    assert load().agent.drift == "repair"
    assert load({}).agent.drift == "repair"
    assert load({"drift": "alert"}).agent.drift == "alert"
    assert load({"drift": "repair"}).agent.drift == "repair"


def test_a_bad_drift_policy_or_key_is_refused_with_file_line_and_field():
    [(source, path, message)] = problems({"drift": "ignore"})
    assert (source, path) == ("m.yaml", "agent.drift")
    assert "unknown drift policy 'ignore'" in message and "alert, repair" in message
    [(source, path, message)] = problems({"drift": "alert", "drfit": 1})
    assert path == "agent.drfit" and "unknown field" in message
    [(_, path, _)] = problems(["alert"])
    assert path == "agent"


def test_the_same_desired_state_and_the_same_drift_have_the_same_key():
    registry = {"job.a": {"10.0.0.1": {"weight": 1, "state": "active"}}}
    same = {"job.a": {"10.0.0.1": {"state": "active", "weight": 1}}}
    assert desired_key(3, registry) == desired_key(3, same)
    assert desired_key(3, registry) != desired_key(4, registry)
    assert desired_key(3, registry) != desired_key(3, {})
    one, other = plan_of(3), plan_of(4)
    assert plan_key(one) == plan_key(plan_of(3)) and plan_key(one) != plan_key(other)


def test_a_plan_leaving_lvs_drains_pending_does_not_settle_the_target():
    """A later pass deletes the drained dests: that pass is not judged as drift."""
    key = ("tcp", "203.0.113.10", 80, "10.0.0.1", 80)
    assert settles(plan_of(3))                                        # no payload
    assert settles(replace(plan_of(3), payload=SimpleNamespace(draining={})))
    assert not settles(replace(plan_of(3), payload=SimpleNamespace(draining={key: 1.0})))


def test_an_etcd_record_is_bounded_and_its_key_sorts_by_time():
    assert stamp("2026-12-04T23:10:00.123+00:00") == "20261204T231000.123Z"
    assert stamp("2026-12-04T23:10:00.123+00:00") < stamp("2026-12-04T23:10:01.000+00:00")
    event = {"time": "t", "changes": [{"n": i} for i in range(RECORDED_CHANGES + 5)],
             "described": [str(i) for i in range(RECORDED_CHANGES + 5)],
             "repair": {"time": "t2", "ok": True, "applied": ["big"], "result": {}}}
    record = json.loads(record_of(event))
    assert len(record["changes"]) == len(record["described"]) == RECORDED_CHANGES
    assert record["changes_not_recorded"] == 5
    assert record["repair"] == {"time": "t2", "ok": True}
    assert len(event["changes"]) == RECORDED_CHANGES + 5           # the event untouched


def plan_of(weight: int) -> Plan:
    key = ("job.a:80", "10.0.0.1:80")
    return Plan("haproxy", (Change(Action.UPDATE, "server", key, {"weight": weight},
                                   {"weight": 10}),))
