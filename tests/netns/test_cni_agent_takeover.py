"""Netns tests: exactly one serving dcnet-agent per node (issue 13, defect 2).

A second agent on the node (a DaemonSet surge rollout, a manual start beside systemd)
stands by: it leaves ``node.json`` and the sockets to the owner, and takes over when the
owner exits or is SIGKILLed. STATUS tells the truth when nobody serves the shim's
invocations (fallback-only). Pods go through the installed C shim; host-gw nodes and
the macvlan lab with a real dnsmasq.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dcnet.lab.cni_dhcp import DhcpLab
from dcnet.lab.cni_dhcp import topology as dhcp_topology
from tests.netns.test_cni_hostgw import AGENT, Cluster, underlay, wait_until

pytestmark = pytest.mark.netns

STANDBY = "standby: dcnet-agent pid"  # (the word alone is in this test's tmp path)
POD_ARGS = "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=mvto"


@pytest.fixture
def node(lab_factory, tmp_path):
    made = Cluster(lab_factory(underlay(("n1",))), tmp_path, nodes=("n1",))
    yield made
    made.remove_pods()


def _start_second(cluster: Cluster, *extra: str):
    return cluster.lab.start("n1", [AGENT, "run", "--conf", cluster.conf_path("n1"), "--node",
                                    "n1", "--iface", "eth0", *extra], name="second-n1")


def _read_log(cluster: Cluster, name: str) -> str:
    path = Path(cluster.lab.log_dir) / f"{name}.log"
    return path.read_text() if path.exists() else ""


def _owner(cluster: Cluster) -> int:
    return json.loads(cluster.node_file("n1").read_text())["agentPid"]


def _status_stderr(cluster: Cluster) -> str:
    runtime = cluster.runtime("n1")
    plugin = runtime.conflist["plugins"][0]
    return runtime.run(plugin, "STATUS", runtime.env("STATUS"),
                       runtime.plugin_conf(plugin, None, None)).stderr


def _add_and_delete(cluster: Cluster, name: str) -> None:
    runtime = cluster.runtime("n1")
    path = cluster.pod(name)
    result = runtime.add(f"c-{name}", path)
    assert result["ips"]
    runtime.delete(f"c-{name}", path)


def test_a_second_agent_stands_by_and_a_stopped_standby_changes_nothing(node):
    node.start_agent("n1")
    first = node.agents["n1"]
    second = _start_second(node)
    wait_until(lambda: STANDBY in _read_log(node, "second-n1"), "the second agent to stand by")
    assert _owner(node) == first.pid  # node.json is the owner's
    second.terminate()
    second.wait(timeout=10)
    assert _owner(node) == first.pid
    node.runtime("n1").status()  # the owner still serves: STATUS 0, ADD works
    assert "fallback-only" not in _status_stderr(node)
    _add_and_delete(node, "p1")


def test_the_standby_takes_over_when_the_owner_is_killed(node):
    node.start_agent("n1")
    first = node.agents.pop("n1")
    second = _start_second(node)
    try:
        wait_until(lambda: STANDBY in _read_log(node, "second-n1"), "the standby")
        first.kill()  # SIGKILL: no cleanup at all
        first.wait(timeout=10)
        wait_until(lambda: _owner(node) == second.pid, "the standby to own node.json")
        wait_until(lambda: "serving CNI invocations" in _read_log(node, "second-n1"),
                   "the standby to serve the shim")
        node.runtime("n1").status()
        assert "fallback-only" not in _status_stderr(node)
        _add_and_delete(node, "p2")
    finally:
        second.terminate()
        second.wait(timeout=10)


def test_status_reports_fallback_only_operation(node):
    node.agents["n1"] = _start_second(node, "--no-serve-cni")
    node.wait_agent("n1")
    stderr = _status_stderr(node)  # STATUS succeeds: ADD works, through the fallback
    assert "fallback-only" in stderr, stderr
    _add_and_delete(node, "p3")


def test_macvlan_standby_takes_over_the_dhcp_agent(lab_factory, tmp_path):
    lab = DhcpLab(lab_factory(dhcp_topology(("n1",))), tmp_path, nodes=("n1",))
    try:
        lab.start_dnsmasq()
        first = lab.start_agent("n1")
        second = lab.lab.start("n1", [AGENT, "run", "--conf", lab.conf_path("n1"),
                                      "--sweep", "0.5"], name="agent-n1-99")
        wait_until(lambda: STANDBY in lab.agent_log("n1"), "the macvlan standby")
        path = lab.pod("mvto")
        runtime = lab.runtime("n1")
        result = runtime.add("mvto-1", path, args=POD_ARGS)
        ip = result["ips"][0]["address"]
        first.kill()
        first.wait(timeout=10)
        wait_until(lambda: "took over network" in lab.agent_log("n1"), "the takeover")
        wait_until(lambda: "mvto-1+eth0: resumed" in lab.agent_log("n1"), "the lease resumed")
        runtime.check("mvto-1", path)
        runtime.delete("mvto-1", path)
        address = ip.split("/")[0]
        wait_until(lambda: address not in lab.server_leases(), "the release")
        second.terminate()
        second.wait(timeout=10)
    finally:
        lab.close()
