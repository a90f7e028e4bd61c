"""The model's ``agent.drift`` (issue #20): ``repair`` by default, ``alert`` when set,
anything else refused at load with file, line and field; and the agent's drift
bookkeeping (:mod:`dcnet.elbstore.driftwatch`), pure parts: what counts as the same
desired state and the same drift."""

from __future__ import annotations

import pytest
import yaml

from dcnet.lab import haproxy_lab as hlab
from dcnet.model import ModelError, parse_model

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
