"""The metrics of ``dcnet-agent`` (``dcnet-agent run --metrics-address``).

Events are counted where they happen, by one-line calls from :mod:`dcnet.cni` that cost
nothing until :func:`enable` ran (the CNI plugin process never enables them, so it does
not even import ``prometheus_client``):

- :func:`operation`: a CNI invocation served by the agent (command, result, latency);
- :func:`reconcile`: a host-gw reconcile pass (ok, degraded, failed) and its changes;
- :func:`dhcp`: a DHCP lease event (bound, renewed, rebound, expired, nak).

Gauges are read at scrape time from the running agent (duck-typed: nothing here imports
:mod:`dcnet.cni`, which imports this module): host-gw routes owned, the node subnet's
IPAM pool size and use, store health and how long it has been degraded; macvlan leases
held and the release queue.
"""

from __future__ import annotations

import ipaddress
import os
import threading
import time
from typing import Any

_lock = threading.Lock()
_metrics: dict[str, Any] | None = None
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
RENEWAL_RESULTS = {"renewed": "ok", "rebound": "ok", "expired": "failed", "nak": "failed"}


def enable():
    """Create the agent's metrics (once) and return their registry."""
    global _metrics
    from prometheus_client import CollectorRegistry, Counter, Histogram

    with _lock:
        if _metrics is not None:
            return _metrics["registry"]
        registry = CollectorRegistry(auto_describe=True)
        _metrics = {
            "registry": registry,
            "operations": Counter("dcnet_agent_cni_operations", "CNI invocations served by "
                                  "the agent", ["command", "result"], registry=registry),
            "latency": Histogram("dcnet_agent_cni_operation_duration_seconds", "Latency "
                                 "of CNI invocations served by the agent", ["command"],
                                 buckets=BUCKETS, registry=registry),
            "passes": Counter("dcnet_agent_reconcile_passes", "host-gw reconcile passes "
                              "by result (ok, degraded, failed)", ["result"],
                              registry=registry),
            "changes": Counter("dcnet_agent_reconcile_route_changes", "Routes added, "
                               "replaced or deleted by reconcile passes", registry=registry),
            "leases": Counter("dcnet_agent_dhcp_lease_events", "DHCP lease events "
                              "(bound, renewed, rebound, expired, nak)", ["event"],
                              registry=registry),
            "renewals": Counter("dcnet_agent_dhcp_renewals", "DHCP lease renewals by "
                                "result (failed: expired or refused)", ["result"],
                                registry=registry),
        }
        for command in ("ADD", "DEL", "CHECK", "STATUS", "GC", "VERSION"):
            for result in ("ok", "error"):
                _metrics["operations"].labels(command, result)
        for result in ("ok", "degraded", "failed"):
            _metrics["passes"].labels(result)
        for result in ("ok", "failed"):
            _metrics["renewals"].labels(result)
        return registry


def disable() -> None:
    """Forget the metrics (tests)."""
    global _metrics
    with _lock:
        _metrics = None


def operation(command: str, code: int, seconds: float) -> None:
    if _metrics is None:
        return
    command = command if command in ("ADD", "DEL", "CHECK", "STATUS", "GC", "VERSION") \
        else "other"                     # the environment is the caller's: bound it
    _metrics["operations"].labels(command, "ok" if code == 0 else "error").inc()
    _metrics["latency"].labels(command).observe(seconds)


def reconcile(result: dict | None) -> None:
    """A reconcile pass: its result dict, or None when it raised."""
    if _metrics is None:
        return
    if result is None:
        _metrics["passes"].labels("failed").inc()
        return
    _metrics["passes"].labels("degraded" if result.get("degraded") else "ok").inc()
    _metrics["changes"].inc(len(result.get("changes") or ()))


def dhcp(event: str) -> None:
    if _metrics is None:
        return
    _metrics["leases"].labels(event).inc()
    if event in RENEWAL_RESULTS:
        _metrics["renewals"].labels(RENEWAL_RESULTS[event]).inc()


def _pool_size(subnet: str) -> int:
    """Pod addresses of a node subnet: all but network, bridge (.1) and broadcast."""
    return max(0, ipaddress.ip_network(subnet).num_addresses - 3)


def _reserved(directory: str) -> int:
    try:
        names = os.listdir(directory)
    except OSError:
        return 0
    count = 0
    for name in names:
        try:
            ipaddress.IPv4Address(name)
        except ValueError:
            continue
        count += 1
    return count


class AgentCollector:
    """Scrape-time gauges of a running agent (host-gw ``Agent`` or ``MacvlanAgent``)."""

    def __init__(self, agent, clock=time.time):
        self.agent, self.clock = agent, clock

    def describe(self) -> list:
        return []

    def collect(self):
        from prometheus_client.core import GaugeMetricFamily

        agent = self.agent
        if hasattr(agent, "runners"):                      # macvlan / DHCP
            held = GaugeMetricFamily("dcnet_agent_dhcp_leases_held", "Pod DHCP leases the "
                                     "agent holds and renews")
            held.add_metric([], len(agent.runners))
            queue = GaugeMetricFamily("dcnet_agent_release_queue_length", "Releases queued "
                                      "while the agent was away, not yet sent")
            try:
                queue.add_metric([], len(agent.queue.items()))
            except (OSError, ValueError):
                queue.add_metric([], float("nan"))
            yield held
            yield queue
            return
        degraded = GaugeMetricFamily("dcnet_agent_store_degraded", "1 while the store is "
                                     "out of reach and the agent runs on what it knew")
        degraded.add_metric([], int(agent.degraded is not None))
        since = GaugeMetricFamily("dcnet_agent_store_degraded_seconds", "How long the "
                                  "store has been out of reach (0: reachable)")
        started = getattr(agent, "degraded_since", None)
        since.add_metric([], 0 if started is None else max(0.0, self.clock() - started))
        yield degraded
        yield since
        routes = GaugeMetricFamily("dcnet_agent_hostgw_routes", "host-gw routes to other "
                                   "nodes' subnets owned by the agent")
        try:
            routes.add_metric([], len(agent.current_routes()))
        except Exception:          # netlink failed at this scrape
            routes.add_metric([], float("nan"))
        yield routes
        lease = getattr(agent, "lease", None)
        if lease is not None:
            pool = GaugeMetricFamily("dcnet_agent_ipam_pool_addresses", "Pod addresses of "
                                     "this node's subnet by state", labels=["state"])
            size = _pool_size(lease.subnet)
            used = _reserved(agent.conf.ipam_dir)
            pool.add_metric(["size"], size)
            pool.add_metric(["used"], used)
            yield pool


def serve_agent(address: str | None, agent, netns_path: str | None = None):
    """Enable the agent metrics and serve them on ``address`` (None: do nothing)."""
    if not address:
        return None
    from dcnet.metrics.server import serve

    registry = enable()
    registry.register(AgentCollector(agent))
    return serve(registry, address, netns_path)
