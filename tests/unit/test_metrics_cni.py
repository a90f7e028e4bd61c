"""dcnet-agent counters: free until enabled, bounded labels once enabled."""

from __future__ import annotations

import pytest
from prometheus_client import generate_latest

from dcnet.metrics import cni

pytestmark = pytest.mark.unit


@pytest.fixture
def registry():
    cni.disable()
    yield cni.enable()
    cni.disable()


def value(registry, name, labels=None):
    return registry.get_sample_value(name, labels or {})


def test_disabled_counters_do_nothing():
    cni.disable()
    cni.operation("ADD", 0, 0.1)
    cni.reconcile(None)
    cni.dhcp("renewed")          # no registry, no error


def test_operations_by_command_and_result_with_latency(registry):
    cni.operation("ADD", 0, 0.02)
    cni.operation("ADD", 7, 0.5)
    cni.operation("$(whoami)", 0, 0.1)          # the environment cannot add labels
    assert value(registry, "dcnet_agent_cni_operations_total",
                 {"command": "ADD", "result": "ok"}) == 1
    assert value(registry, "dcnet_agent_cni_operations_total",
                 {"command": "ADD", "result": "error"}) == 1
    assert value(registry, "dcnet_agent_cni_operations_total",
                 {"command": "other", "result": "ok"}) == 1
    assert value(registry, "dcnet_agent_cni_operation_duration_seconds_count",
                 {"command": "ADD"}) == 2
    assert value(registry, "dcnet_agent_cni_operation_duration_seconds_bucket",
                 {"command": "ADD", "le": "0.025"}) == 1


def test_reconcile_and_dhcp_events(registry):
    cni.reconcile({"changes": [1, 2], "degraded": None})
    cni.reconcile({"changes": [], "degraded": "etcd down"})
    cni.reconcile(None)
    for event in ("bound", "renewed", "rebound", "expired", "nak"):
        cni.dhcp(event)
    assert value(registry, "dcnet_agent_reconcile_passes_total", {"result": "ok"}) == 1
    assert value(registry, "dcnet_agent_reconcile_passes_total", {"result": "degraded"}) == 1
    assert value(registry, "dcnet_agent_reconcile_passes_total", {"result": "failed"}) == 1
    assert value(registry, "dcnet_agent_reconcile_route_changes_total") == 2
    assert value(registry, "dcnet_agent_dhcp_renewals_total", {"result": "ok"}) == 2
    assert value(registry, "dcnet_agent_dhcp_renewals_total", {"result": "failed"}) == 2
    assert b"dcnet_agent_dhcp_lease_events_total" in generate_latest(registry)
