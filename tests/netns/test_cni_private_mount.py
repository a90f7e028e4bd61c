"""Netns tests: an agent in its own mount namespace serves pods made after it started
(issue 13, defect 1).

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

from tests.netns.test_cni_hostgw import AGENT, Cluster, underlay

pytestmark = pytest.mark.netns


@pytest.fixture
def node(lab_factory, tmp_path):
    made = Cluster(lab_factory(underlay(("n1",))), tmp_path, nodes=("n1",))
    yield made
    made.remove_pods()


def _record_fallbacks(cluster: Cluster) -> str:
    """Wrap the installed fallback so each in-process run leaves a line in a file."""
    marker = os.path.join(cluster.bin_dir, "fallbacks")
    real = os.path.join(cluster.bin_dir, "dcnet-python.real")
    wrapper = os.path.join(cluster.bin_dir, "dcnet-python")
    os.replace(wrapper, real)
    with open(wrapper, "w") as handle:
        handle.write(f"#!/bin/sh\necho \"$CNI_COMMAND\" >> {marker}\nexec {real}\n")
    os.chmod(wrapper, 0o755)
    open(marker, "w").close()
    return marker


def test_hostgw_pod_made_after_a_private_mount_agent_started(node):
    marker = _record_fallbacks(node)
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
