"""``elbctl chaos unused --cni-conf``: on a host-gw node (a namespace with dcnet
installed and its agent, as tests/netns/test_cni_hostgw.py builds), a reservation whose
pod is gone and a host veth whose reservation is gone are listed, left alone while
younger than --min-age, and removed with --apply through host-gw's own GC; the healthy
pod keeps its address and veth and passes CHECK. The same for both reservations
(IPv4 and IPv6) of a dual-stack pod, and the agent's routes no node lease explains
(removed through the agent, never while one serves the node)."""

from __future__ import annotations

import json
import os

import pytest
from click.testing import CliRunner

from dcnet.cli.elbctl import cli
from dcnet.cni.agentlock import network_lock
from dcnet.cni.hostgw import host_veth_name
from dcnet.cni.store import Lease, open_store
from dcnet.sysio import netns
from tests.netns.test_cni_hostgw import Cluster, underlay, wait_until
from tests.netns.test_cni_hostgw_v6 import DualCluster, ips_of
from tests.netns.test_cni_hostgw_v6 import underlay as underlay_v6

pytestmark = pytest.mark.netns


@pytest.fixture
def node(lab_factory, tmp_path):
    made = Cluster(lab_factory(underlay(("n1",))), tmp_path, nodes=("n1",))
    made.start_agent("n1")
    yield made
    made.remove_pods()


def test_janitor_finds_and_removes_cni_leftovers_through_host_gw_gc(node):
    runtime = node.runtime("n1")
    paths = [node.pod(f"jan{i}") for i in range(3)]
    for index, path in enumerate(paths):
        runtime.add(f"jan-{index}", path)
    veths = [host_veth_name(f"jan-{i}", "eth0") for i in range(3)]
    assert set(veths) <= node.pod_veths("n1")
    # the pod of jan-0 disappears without a DEL: its veth goes with its namespace
    gone = paths[0].rsplit("/", 1)[1]
    netns.remove(gone)
    node.pods.remove(gone)
    wait_until(lambda: veths[0] not in node.pod_veths("n1"), "jan-0's veth to go")
    # jan-1's reservation is lost (its veth stays)
    reservations = node.reservations("n1")
    [(address1, _)] = [(a, t) for a, t in reservations.items() if t.startswith("jan-1\n")]
    os.unlink(node.ipam_dir("n1") / address1)
    [address0] = [a for a, t in reservations.items() if t.startswith("jan-0\n")]

    args = ["chaos", "unused", "--cni-conf", node.conf_path("n1"), "--cni-netns",
            node.lab.netns("n1"), "-o", "json"]
    runner = CliRunner()
    young = runner.invoke(cli, args)                       # default --min-age 60
    assert young.exit_code == 2, young.output
    assert json.loads(young.output)["reservations"] == []
    assert json.loads(young.output)["veths"] == [veths[1]]

    listed = runner.invoke(cli, [*args, "--min-age", "0"])
    assert listed.exit_code == 2, listed.output
    report = json.loads(listed.output)
    assert report["reservations"] == [{"address": address0, "containerID": "jan-0",
                                       "ifname": "eth0"}]
    assert report["veths"] == [veths[1]] and report["applied"] is None
    assert address0 in node.reservations("n1")            # a plan only

    removed = runner.invoke(cli, [*args, "--min-age", "0", "--apply"])
    assert removed.exit_code == 0, removed.output
    applied = json.loads(removed.output)["applied"]
    assert [r["containerID"] for r in applied["releasedAddresses"]] == ["jan-0"]
    assert applied["removedLinks"] == [veths[1]] and applied["errors"] == []
    assert [t.splitlines()[0] for t in node.reservations("n1").values()] == ["jan-2"]
    assert node.pod_veths("n1") == {veths[2]}
    runtime.check("jan-2", paths[2])
    again = runner.invoke(cli, [*args, "--min-age", "0"])
    assert again.exit_code == 0, again.output
    runtime.delete("jan-2", paths[2])


@pytest.fixture
def dual_node(lab_factory, tmp_path):
    made = DualCluster(lab_factory(underlay_v6(("n1",))), tmp_path, nodes=("n1",))
    made.start_agent("n1")
    yield made
    made.remove_pods()


def test_janitor_finds_and_removes_both_families_of_a_dual_stack_pod(dual_node):
    """A dual-stack pod gone without DEL leaves an IPv4 and an IPv6 reservation: both
    are listed and released through host-gw GC; the healthy pod keeps both."""
    node = dual_node
    runtime = node.runtime("n1")
    paths = [node.pod(f"jd{i}") for i in range(2)]
    results = [runtime.add(f"jd-{i}", path) for i, path in enumerate(paths)]
    gone_ips, kept_ips = (sorted(ips_of(r).values()) for r in results)
    assert any(":" in a for a in gone_ips) and any("." in a for a in gone_ips)
    gone = paths[0].rsplit("/", 1)[1]
    netns.remove(gone)
    node.pods.remove(gone)
    veth0 = host_veth_name("jd-0", "eth0")
    wait_until(lambda: veth0 not in node.pod_veths("n1"), "jd-0's veth to go")

    args = ["chaos", "unused", "--cni-conf", node.conf_path("n1"), "--cni-netns",
            node.lab.netns("n1"), "--min-age", "0", "-o", "json"]
    runner = CliRunner()
    # only the IPv4 one old enough: GC works per attachment, so neither is listed
    [old_v4] = [a for a in gone_ips if "." in a]
    os.utime(node.ipam_dir("n1") / old_v4, (0, 0))
    half = runner.invoke(cli, [*args[:-4], "--min-age", "3600", "-o", "json"])
    assert half.exit_code == 0, half.output
    assert json.loads(half.stdout)["reservations"] == []
    listed = runner.invoke(cli, args)
    assert listed.exit_code == 2, listed.output
    report = json.loads(listed.stdout)
    assert sorted(r["address"] for r in report["reservations"]) == gone_ips
    assert {r["containerID"] for r in report["reservations"]} == {"jd-0"}
    assert sorted(node.reservations("n1")) == sorted(gone_ips + kept_ips)   # a plan only

    removed = runner.invoke(cli, [*args, "--apply"])
    assert removed.exit_code == 0, removed.output
    applied = json.loads(removed.stdout)["applied"]
    assert sorted(r["address"] for r in applied["releasedAddresses"]) == gone_ips
    assert sorted(node.reservations("n1")) == kept_ips
    runtime.check("jd-1", paths[1])
    again = runner.invoke(cli, args)
    assert again.exit_code == 0, again.output
    runtime.delete("jd-1", paths[1])


def routes_of(node, proto: str) -> set[str]:
    out = node.lab.run("n1", ["ip", "-j", "route", "show", "proto", proto]).stdout
    return {r["dst"] for r in json.loads(out or "[]")}


def test_janitor_lists_agent_routes_no_lease_explains_and_removes_them_through_the_agent(
        node):
    """With the agent stopped (its routes stay), a proto-217 route to a subnet no node
    leases is listed with its reason; one to another node's leased subnet and a route
    of another protocol are not. While an agent holds the node's lock nothing is
    removed; without one, --apply deletes it through the agent's own route delete. With
    the store out of reach nothing is judged or removed, and the exit is 1."""
    node.stop_agent("n1")
    store = open_store({"type": "file", "path": str(node.root / "store")}, "podnet")
    assert store.claim(Lease("n2", "192.168.100.2", "10.244.77.0/24"))
    for dst, via, proto in (("10.244.77.0/24", "192.168.100.2", "217"),
                            ("10.244.99.0/24", "192.168.100.9", "217"),
                            ("10.244.98.0/24", "192.168.100.9", "static")):
        node.lab.run("n1", ["ip", "route", "add", dst, "via", via, "proto", proto])
    args = ["chaos", "unused", "--cni-conf", node.conf_path("n1"), "--cni-netns",
            node.lab.netns("n1"), "-o", "json"]
    runner = CliRunner()
    listed = runner.invoke(cli, args)
    assert listed.exit_code == 2, listed.output
    report = json.loads(listed.stdout)
    assert [(r["dst"], r["via"]) for r in report["routes"]] == [
        ("10.244.99.0/24", "192.168.100.9")]
    assert "no node holds a lease" in report["routes"][0]["reason"]
    assert report["routes_removed"] is None and report["reservations"] == []
    assert "10.244.99.0/24" in routes_of(node, "217")        # a plan only

    held = network_lock(str(node.root / "run-n1"), "podnet")
    assert held.try_acquire()                                  # an agent serving
    try:
        refused = runner.invoke(cli, [*args, "--apply"])
    finally:
        held.release()
    assert refused.exit_code == 2, refused.output
    assert "serves this node" in json.loads(refused.stdout)["routes_note"]
    assert "10.244.99.0/24" in routes_of(node, "217")

    removed = runner.invoke(cli, [*args, "--apply"])
    assert removed.exit_code == 0, removed.output
    assert json.loads(removed.stdout)["routes_removed"] == ["10.244.99.0/24"]
    assert routes_of(node, "217") == {"10.244.77.0/24"}
    assert routes_of(node, "static") == {"10.244.98.0/24"}
    again = runner.invoke(cli, args)
    assert again.exit_code == 0, again.output

    # the store out of reach: nothing judged, and the exit says so (not "nothing unused")
    node.lab.run("n1", ["ip", "route", "add", "10.244.99.0/24", "via", "192.168.100.9",
                        "proto", "217"])
    unreachable = node.root / "unreachable.conflist"
    conflist = node.conflist("n1")
    conflist["plugins"][0]["store"] = {"type": "etcd", "url": "etcd://127.0.0.1:1"}
    unreachable.write_text(json.dumps(conflist))
    blind = runner.invoke(cli, ["chaos", "unused", "--cni-conf", str(unreachable),
                                "--cni-netns", node.lab.netns("n1"), "--apply", "-o", "json"])
    assert blind.exit_code == 1, blind.output
    report = json.loads(blind.stdout)
    assert report["routes"] == [] and report["routes_judged"] is False
    assert "out of reach" in report["routes_note"]
    assert "10.244.99.0/24" in routes_of(node, "217")
