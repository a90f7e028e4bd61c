"""Netns tests: an agent in its own mount namespace serves pods made after it started
(issue 13, defect 1), in host-gw mode and in MACVLAN mode (whose DHCP agent gets the
descriptor over its own socket too, and keeps the pod although its path shows an empty
file).

The agent runs under ``unshare --mount --propagation private`` (as in a DaemonSet
without ``mountPropagation: HostToContainer``): a pod namespace the runtime mounts
later under /run/netns is an empty file there. The installed C shim opens CNI_NETNS in
the runtime's mount namespace and passes the descriptor (SCM_RIGHTS); the agent never
opens the path. ADD, CHECK and DEL through the shim must work, and the shim must not
have fallen back to the in-process plugin (which would hide the defect).
"""

from __future__ import annotations

import os

import pytest

from dcnet.lab.cni_dhcp import DhcpLab, pod_ip, pod_link, wait_until
from dcnet.lab.cni_dhcp import topology as dhcp_topology
from tests.netns.test_cni_hostgw import AGENT, Cluster, underlay

pytestmark = pytest.mark.netns

POD_ARGS = "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=latemv"


@pytest.fixture
def node(lab_factory, tmp_path):
    made = Cluster(lab_factory(underlay(("n1",))), tmp_path, nodes=("n1",))
    yield made
    made.remove_pods()


def _record_fallbacks(bin_dir: str) -> str:
    """Wrap the installed fallback so each in-process run leaves a line in a file."""
    marker = os.path.join(bin_dir, "fallbacks")
    real = os.path.join(bin_dir, "dcnet-python.real")
    wrapper = os.path.join(bin_dir, "dcnet-python")
    os.replace(wrapper, real)
    with open(wrapper, "w") as handle:
        handle.write(f"#!/bin/sh\necho \"$CNI_COMMAND\" >> {marker}\nexec {real}\n")
    os.chmod(wrapper, 0o755)
    open(marker, "w").close()
    return marker


def test_hostgw_pod_made_after_a_private_mount_agent_started(node):
    marker = _record_fallbacks(node.bin_dir)
    node.agents["n1"] = node.lab.start(
        "n1", ["unshare", "--mount", "--propagation", "private", AGENT, "run", "--conf",
               node.conf_path("n1"), "--node", "n1", "--iface", "eth0"], name="agent-n1-1")
    node.wait_agent("n1")
    path = node.pod("late")  # mounted after the agent started: it cannot see it
    runtime = node.runtime("n1")
    result = runtime.add("late-1", path)
    assert result["interfaces"][-1]["sandbox"] == path  # the runtime's name for the pod
    runtime.check("late-1", path)
    runtime.delete("late-1", path)
    with open(marker) as handle:
        assert handle.read() == ""  # all served by the agent, none by the fallback


def test_macvlan_pod_made_after_a_private_mount_agent_started(lab_factory, tmp_path):
    lab = DhcpLab(lab_factory(dhcp_topology(("n1",))), tmp_path, nodes=("n1",))
    try:
        lab.start_dnsmasq()
        marker = _record_fallbacks(lab.bin_dir)
        lab.starts += 1
        lab.agents["n1"] = lab.lab.start(
            "n1", ["unshare", "--mount", "--propagation", "private", AGENT, "run", "--conf",
                   lab.conf_path("n1"), "--sweep", "0.5"], name=f"agent-n1-{lab.starts}")
        wait_until(lambda: f"serving {lab.socket_path('n1')}" in lab.agent_log("n1"),
                   "the macvlan agent")
        path = lab.pod("latemv")  # mounted after the agent started: it cannot see it
        runtime = lab.runtime("n1")
        result = runtime.add("latemv-1", path, args=POD_ARGS)
        address = result["ips"][0]["address"]
        assert pod_ip(path) == [address]
        ip = address.split("/")[0]
        first = lab.server_leases()[ip]["expiry"]
        # a renewal at T1 (6 s, a dozen housekeeping sweeps): the agent kept the pod
        wait_until(lambda: lab.server_leases().get(ip, {}).get("expiry", 0) > first,
                   "a renewal")
        runtime.check("latemv-1", path)
        runtime.delete("latemv-1", path)
        wait_until(lambda: ip not in lab.server_leases(), "the release")
        assert pod_link(path) is None
        with open(marker) as handle:
            assert handle.read() == ""  # all served by the agent, none by the fallback
    finally:
        lab.close()
