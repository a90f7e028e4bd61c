"""Netns tests of dcnet-agent (host-gw routes) and of STATUS, with real kernel routes.

Agents run as real processes in node namespaces; tests change the store, the kernel or
the agents and wait (bounded readiness waits, never timing assertions) for every node's
routes to match: joins, leaves, node IP changes, stale routes from an earlier life,
off-link next hops refused, and STATUS answering 50 with the reason ADD would fail.
"""

from __future__ import annotations

import json
import os

import pytest

from dcnet.cni.nodestate import process_start_time
from dcnet.cni.store import FileStore, Lease
from dcnet.lab.cni_invoke import PluginError
from tests.netns.test_cni_hostgw import Cluster, underlay, wait_until

pytestmark = pytest.mark.netns


@pytest.fixture
def fresh_cluster(lab_factory, tmp_path):
    made = Cluster(lab_factory(underlay()), tmp_path)
    yield made
    made.remove_pods()


def test_join_then_leave_updates_every_node(fresh_cluster):
    cluster = fresh_cluster
    for node in ("n1", "n2"):
        cluster.start_agent(node)
    wait_until(cluster.routes_converged, "n1 and n2 routes")
    assert cluster.routes("n1") == {cluster.subnet("n2"): "192.168.100.2"}
    cluster.start_agent("n3")  # join
    wait_until(cluster.routes_converged, "routes after n3 joined")
    n3_subnet = cluster.subnet("n3")
    assert cluster.routes("n1")[n3_subnet] == "192.168.100.3"
    cluster.runtime("n1").status()
    cluster.stop_agent("n3")
    left = cluster.agent_cli("n3", "leave")
    assert left.returncode == 0 and n3_subnet in left.stdout
    for node in ("n1", "n2"):
        wait_until(lambda n=node: n3_subnet not in cluster.routes(n), f"{node} drops n3")
    assert cluster.routes("n3") == {}  # the leaver removed its own routes too
    assert n3_subnet not in [le.subnet for le in FileStore(str(cluster.root / "store")).leases()]


def test_node_ip_change_moves_routes_everywhere(fresh_cluster):
    cluster = fresh_cluster
    for node in ("n1", "n2", "n3"):
        cluster.start_agent(node)
    wait_until(cluster.routes_converged, "initial routes")
    n2_subnet = cluster.subnet("n2")
    # (deleting a primary address drops its secondaries: delete first, then add)
    cluster.lab.run("n2", ["ip", "addr", "del", "192.168.100.2/24", "dev", "eth0"])
    cluster.lab.run("n2", ["ip", "addr", "add", "192.168.100.12/24", "dev", "eth0"])
    for node in ("n1", "n3"):
        wait_until(lambda n=node: cluster.routes(n).get(n2_subnet) == "192.168.100.12",
                   f"{node} follows n2's new IP")
    assert json.loads(cluster.node_file("n2").read_text())["nodeIP"] == "192.168.100.12"


def test_stale_routes_are_removed_at_start_and_after_restart(fresh_cluster):
    cluster = fresh_cluster
    cluster.lab.run("n1", ["ip", "route", "add", "10.244.200.0/24", "via", "192.168.100.3",
                           "proto", "217"])
    cluster.lab.run("n1", ["ip", "route", "add", "10.99.0.0/24", "via", "192.168.100.3",
                           "proto", "static"])
    for node in ("n1", "n2", "n3"):
        cluster.start_agent(node)
    wait_until(cluster.routes_converged, "initial routes")
    assert "10.244.200.0/24" not in cluster.routes("n1")  # ours, stale: removed
    assert "10.99.0.0/24" in cluster.routes("n1", 4)  # not ours: untouched
    n3_subnet = cluster.subnet("n3")
    cluster.stop_agent("n1")
    cluster.stop_agent("n3")
    assert cluster.agent_cli("n3", "leave").returncode == 0
    wait_until(lambda: n3_subnet not in cluster.routes("n2"), "n2 drops n3")
    assert n3_subnet in cluster.routes("n1")  # n1's agent is down: its route went stale
    cluster.start_agent("n1")
    wait_until(lambda: n3_subnet not in cluster.routes("n1"), "restarted n1 cleans up")
    assert cluster.routes("n1") == {cluster.subnet("n2"): "192.168.100.2"}


def test_off_link_next_hop_is_refused_with_a_clear_message(fresh_cluster):
    cluster = fresh_cluster
    store = FileStore(str(cluster.root / "store"))
    assert store.claim(Lease("far", "10.55.0.9", "10.244.99.0/24"))
    cluster.lab.run("n1", ["ip", "route", "add", "10.55.0.0/16", "via", "192.168.100.3"])
    for node in ("n1", "n2"):
        cluster.start_agent(node)

    def refused(node: str) -> list[str]:
        return json.loads(cluster.node_file(node).read_text())["refusedRoutes"]
    wait_until(lambda: refused("n1") and refused("n2"), "refusals reported")
    assert "10.244.99.0/24" not in cluster.routes("n1")
    assert "10.244.99.0/24" not in cluster.routes("n2")
    (message,) = refused("n1")
    assert "not on-link" in message and "192.168.100.3" in message
    assert "one L2 segment" in message
    assert "unreachable" in refused("n2")[0]
    assert "refusing route 10.244.99.0/24 via 10.55.0.9" in cluster.agent_log("n1")
    wait_until(lambda: cluster.routes("n1") == {cluster.subnet("n2"): "192.168.100.2"},
               "n1's valid route")
    store.close()


def test_status_follows_the_agent_and_add_waits_for_it(fresh_cluster):
    cluster = fresh_cluster
    runtime = cluster.runtime("n1")
    with pytest.raises(PluginError) as caught:
        runtime.status()
    assert caught.value.code == 50 and "no subnet" in caught.value.msg
    cluster.start_agent("n1")
    runtime.status()
    cluster.stop_agent("n1")
    with pytest.raises(PluginError) as caught:
        runtime.status()
    assert caught.value.code == 50 and "is not running" in caught.value.msg
    path = cluster.pod("waiting")
    before = (cluster.node_links("n1"), cluster.reservations("n1"))
    with pytest.raises(PluginError) as caught:
        runtime.add("wait-1", path)
    assert caught.value.code == 11 and "not running" in caught.value.msg
    assert (cluster.node_links("n1"), cluster.reservations("n1")) == before


# ---------------------------------------------------------------- STATUS without an agent


@pytest.fixture
def bare_node(lab_factory, tmp_path):
    """One node namespace, no agent: the test plays the agent by writing the node file."""
    made = Cluster(lab_factory({"hosts": ["n1"]}), tmp_path, nodes=("n1",))
    yield made
    made.remove_pods()


def write_node_file(cluster: Cluster, subnet: str = "10.244.7.0/24", pid: int | None = None):
    pid = os.getpid() if pid is None else pid
    path = cluster.node_file("n1")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({
        "node": "n1", "nodeIP": "192.168.100.1", "subnet": subnet,
        "gateway": subnet.replace(".0/", ".1/").split("/")[0], "agentPid": pid,
        "agentStart": process_start_time(pid) if pid == os.getpid() else None}))


def dead_pid() -> int:
    pid = 4_000_000
    while os.path.exists(f"/proc/{pid}"):
        pid -= 1
    return pid


def test_status_reasons_one_by_one(bare_node):
    cluster = bare_node
    runtime = cluster.runtime("n1")

    def status_message() -> str | None:
        try:
            runtime.status()
        except PluginError as exc:
            assert exc.code == 50
            return exc.msg
        return None

    assert "no subnet" in status_message()
    write_node_file(cluster, pid=dead_pid())
    assert "is not running" in status_message()
    write_node_file(cluster)
    assert "bridge dcnet0 does not exist" in status_message()
    path = cluster.pod("nobridge")
    with pytest.raises(PluginError) as caught:  # ADD: missing bridge, nothing left behind
        runtime.add("nb-1", path)
    assert caught.value.code == 11 and "dcnet0" in caught.value.msg
    assert cluster.reservations("n1") == {}
    cluster.lab.run("n1", ["ip", "link", "add", "dcnet0", "type", "bridge"])
    assert "is down" in status_message()
    cluster.lab.run("n1", ["ip", "link", "set", "dcnet0", "up"])
    assert "lacks gateway 10.244.7.1" in status_message()
    cluster.lab.run("n1", ["ip", "addr", "add", "10.244.7.1/24", "dev", "dcnet0"])
    assert status_message() is None
    result = runtime.add("nb-1", path)
    assert result["ips"][0]["gateway"] == "10.244.7.1"
    runtime.delete("nb-1", path)


def test_status_reports_an_exhausted_pool(bare_node):
    cluster = bare_node
    write_node_file(cluster, subnet="10.244.8.0/30")  # one pod address: .2
    cluster.lab.run("n1", ["ip", "link", "add", "dcnet0", "type", "bridge"])
    cluster.lab.run("n1", ["ip", "addr", "add", "10.244.8.1/30", "dev", "dcnet0"])
    cluster.lab.run("n1", ["ip", "link", "set", "dcnet0", "up"])
    runtime = cluster.runtime("n1")
    runtime.status()
    path = cluster.pod("only")
    runtime.add("only-1", path)
    with pytest.raises(PluginError) as caught:
        runtime.status()
    assert caught.value.code == 50 and "no free address" in caught.value.msg
    with pytest.raises(PluginError) as caught:
        runtime.add("second", cluster.pod("second"))
    assert caught.value.code == 100
    runtime.delete("only-1", path)
    runtime.status()
