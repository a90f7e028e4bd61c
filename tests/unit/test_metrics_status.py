"""The status file of target runs: counting plans and applies, successes and failures."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pytest

from dcnet.metrics import status
from dcnet.metrics.elb import ELBCollector
from dcnet.metrics.server import parse_address
from tests.unit.metrics_text import scrape, value

pytestmark = pytest.mark.unit


@dataclass
class FakePlan:
    changes: list = field(default_factory=list)


@dataclass
class FakeResult:
    ok: bool
    applied: list
    writes: dict


def test_runs_are_counted_and_failures_keep_the_last_success(tmp_path):
    lock = str(tmp_path / "t.lock")
    with status.recording("t", lock, apply=True) as run:
        run.plan = FakePlan([1, 2])
        run.result = FakeResult(True, [1, 2], {"commands": 2})
    first = status.read(status.status_path(lock))
    assert first["applies"] == {"ok": 1} and first["writes"] == {"commands": 2}
    with pytest.raises(RuntimeError), status.recording("t", lock, apply=True):
        raise RuntimeError("refused")
    with status.recording("t", lock, apply=True) as run:
        run.plan = FakePlan([1])
        run.result = FakeResult(False, [], {"commands": 1})
    with status.recording("t", lock, apply=False) as run:
        run.plan = FakePlan([])
    data = status.read(status.status_path(lock))
    assert data["applies"] == {"ok": 1, "error": 1, "failed": 1}
    assert data["plans"] == 1 and data["changes_applied"] == 2
    assert data["writes"] == {"commands": 3}
    assert data["last_success"] == first["last_success"]
    assert data["duration_count"] == 3


def test_collector_exposes_the_status_and_time_since_success(tmp_path):
    path = tmp_path / "x.status.json"
    path.write_text(json.dumps({"version": 1, "applies": {"ok": 4, "failed": 1},
                                "last_success": 1000.0, "last_duration": 0.5,
                                "duration_sum": 2.0, "writes": {"reloads": 1}}))
    text = scrape(ELBCollector(status_paths={"haproxy": str(path)},
                               drift=lambda: {"haproxy": True}, clock=lambda: 1060.0))
    assert value(text, "dcnet_elb_applies_total", result="ok", target="haproxy") == 4
    assert value(text, "dcnet_elb_seconds_since_last_successful_sync", target="haproxy") == 60
    assert value(text, "dcnet_elb_writes_total", kind="reloads", target="haproxy") == 1
    assert value(text, "dcnet_elb_drift", target="haproxy") == 1


def test_never_synced_is_infinitely_long_ago(tmp_path):
    text = scrape(ELBCollector(status_paths={"lvs": str(tmp_path / "none")}))
    assert value(text, "dcnet_elb_seconds_since_last_successful_sync",
                 target="lvs") == float("inf")


@pytest.mark.parametrize("text,expected", [
    (":9108", ("0.0.0.0", 9108)), ("127.0.0.1:1", ("127.0.0.1", 1)),
    ("[::1]:9", ("::1", 9)), ("::1", ("::1", 9108)), ("10.0.0.1", ("10.0.0.1", 9108))])
def test_parse_address(text, expected):
    assert parse_address(text) == expected


def test_parse_address_refuses_a_bad_port():
    with pytest.raises(ValueError):
        parse_address("1.2.3.4:http")
