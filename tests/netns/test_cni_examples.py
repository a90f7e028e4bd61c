"""Netns test: the example conflists shipped in deploy/cni work with the reference
plugins actually installed (Debian's containernetworking-plugins in /usr/lib/cni), run
libcni-style (``dcnet.lab.cni_invoke``) through the installed shim with an agent.

Each example is used as shipped except its paths (runDir, dataDir, store), which point
into the test's directory. ADD, CHECK and DEL for every example; STATUS and GC where the
conflist's version has them (1.1.0: libcni sends neither to an older list). Issue 13:
the docs' old example chained ``portmap`` under 1.1.0, which Debian's plugins (1.1.1,
spec up to 1.0.0) refuse; under 1.0.0 its CHECK still fails (it looks for an ipv6 chain
it never made for an ipv4 pod), so no shipped example chains it (docs/cni.md).
"""

from __future__ import annotations

import json
import os

import pytest

from dcnet.lab.cni_invoke import CniRuntime
from dcnet.sysio import netns
from tests.netns.test_cni_hostgw import REF_DIR, Cluster, address_of, underlay

pytestmark = pytest.mark.netns

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLES = os.path.join(ROOT, "deploy", "cni")


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("netns test: needs root")
    from dcnet.lab.builder import Lab

    root = tmp_path_factory.mktemp("dcnet-examples")
    with Lab(underlay(("n1",))) as lab:
        made = Cluster(lab, root, nodes=("n1",))
        try:
            made.start_agent("n1")
            yield made
        finally:
            made.remove_pods()


def pod_sysctl(path: str, key: str) -> str:
    return netns.sysctl_get(path.rsplit("/", 1)[1], key)


def shipped(node: Cluster, name: str) -> dict:
    with open(os.path.join(EXAMPLES, name)) as handle:
        conf = json.load(handle)
    ours = node.plugin("n1")
    first = conf["plugins"][0]
    assert first["type"] == "dcnet"
    for key in ("runDir", "dataDir", "store"):
        first[key] = ours[key]  # the lab's paths; everything else as shipped
    conf["name"] = "podnet"  # the agent's network
    return conf


@pytest.mark.parametrize("name", sorted(os.listdir(EXAMPLES)))
def test_example_conflist_with_the_installed_reference_plugins(node, name):
    conf = shipped(node, name)
    assert conf["plugins"][0]["clusterCIDR"] == node.plugin("n1")["clusterCIDR"]
    for plugin in conf["plugins"][1:]:
        assert os.path.exists(os.path.join(REF_DIR, plugin["type"]))
    runtime = CniRuntime(conf, [node.bin_dir, REF_DIR], node.lab.netns("n1"))
    pod = name.split(".")[0]
    path = node.pod(pod)
    extra = {"bandwidth": {"ingressRate": 10_000_000, "ingressBurst": 1_000_000,
                           "egressRate": 10_000_000, "egressBurst": 1_000_000}}
    result = runtime.add(pod, path, runtime=extra)
    assert result["cniVersion"] == conf["cniVersion"]
    assert address_of(result).startswith(node.subnet("n1").rsplit(".", 1)[0])
    if "tuning" in [p["type"] for p in conf["plugins"]]:
        assert pod_sysctl(path, "net.ipv4.conf.eth0.arp_notify") == "1"
    runtime.check(pod, path, runtime=extra)
    if conf["cniVersion"] == "1.1.0":
        runtime.status()
        assert runtime.gc([(pod, "eth0")]) is not None
        assert node.reservations("n1")  # GC kept the valid attachment
    runtime.delete(pod, path, runtime=extra)
    runtime.delete(pod, path, runtime=extra)
    assert node.reservations("n1") == {}
