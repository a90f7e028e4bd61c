"""Netns tests: DEL retires the host veth and the agent deletes it afterwards
(``dcnet.cni.reaper``, issue 13, speed).

At DEL's return the pod's resources are gone or unusable: its address reservation is
released, no link carries the pod's host name, and the pod's end has no carrier (or is
gone already); shortly after, no retired (``dcx``) link is left. Without an agent (the
fallback) DEL deletes the link itself. A retired link an agent left behind is collected
when the next one starts, and CNI GC deletes retired links too.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from dcnet.cni.hostgw import host_veth_name
from dcnet.cni.reaper import DYING_PREFIX, dying_name
from tests.netns.test_cni_hostgw import Cluster, pod_ns, underlay, wait_until

pytestmark = pytest.mark.netns


@pytest.fixture
def node(lab_factory, tmp_path):
    made = Cluster(lab_factory(underlay(("n1",))), tmp_path, nodes=("n1",))
    yield made
    made.remove_pods()


def links(node: Cluster) -> dict[str, dict]:
    out = node.lab.run("n1", ["ip", "-j", "link", "show"]).stdout
    return {link["ifname"]: link for link in json.loads(out)}


def dying(node: Cluster) -> dict[str, dict]:
    return {n: link for n, link in links(node).items() if n.startswith(DYING_PREFIX)}


def pod_end(path: str) -> dict | None:
    done = subprocess.run(["ip", "-n", pod_ns(path), "-j", "link", "show", "eth0"],
                          capture_output=True, text=True)
    return json.loads(done.stdout)[0] if done.returncode == 0 else None


def test_del_leaves_nothing_usable_and_the_agent_finishes_the_job(node):
    node.start_agent("n1")
    runtime = node.runtime("n1")
    for round_ in range(3):
        path = node.pod(f"rp{round_}")
        runtime.add("reap-1", path)  # the same container id each round
        host = host_veth_name("reap-1", "eth0")
        assert host in links(node)
        runtime.delete("reap-1", path)
        now = links(node)
        assert host not in now and node.reservations("n1") == {}
        if dying_name(host) in now:  # not reaped yet: down, and the pod end dead
            assert "UP" not in now[dying_name(host)]["flags"]
            end = pod_end(path)
            assert end is None or "NO-CARRIER" in end["flags"]
        wait_until(lambda: not dying(node), "the retired link deleted")


def test_fallback_deletes_at_once_and_leftovers_are_collected(node):
    runtime = node.runtime("n1")
    node.start_agent("n1")
    path = node.pod("fb")
    runtime.add("fb-1", path)
    node.stop_agent("n1")
    runtime.delete("fb-1", path)  # through dcnet-python: no reaper in that process
    assert not dying(node) and host_veth_name("fb-1", "eth0") not in links(node)
    # a retired link left behind (an agent killed with it queued), then an agent starts
    node.lab.run("n1", ["ip", "link", "add", "dcx000000000001", "type", "veth",
                        "peer", "name", "dcxpeer"])
    assert len(dying(node)) == 2
    node.start_agent("n1")
    wait_until(lambda: not dying(node), "the leftovers collected")


def test_gc_deletes_retired_links(node):
    node.start_agent("n1")
    node.stop_agent("n1")  # no reaper: GC alone must do it (through the fallback)
    node.lab.run("n1", ["ip", "link", "add", "dcx000000000002", "type", "veth",
                        "peer", "name", "dcx000000000003"])
    node.runtime("n1").gc([])
    assert not dying(node)
