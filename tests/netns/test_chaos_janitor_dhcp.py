"""``elbctl chaos unused --cni-conf`` on a macvlan node (real dnsmasq, real dcnet-agent
with the host shim): a lease whose pod lost its link and one whose namespace is gone are
listed with the shim routes no lease explains; ``--apply`` releases them through the
agent (a DEL per attachment while it serves: dnsmasq's lease goes; the plugin's DEL
fallback, the release queue, while it is down: sent when it is back), and removes a
stray shim route with the agent's own sweep under its lock, never while an agent serves
the node."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from dcnet.cli.elbctl import cli
from dcnet.lab.cni_dhcp import DhcpLab, topology, wait_until

pytestmark = pytest.mark.netns

POD_ARGS = "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={}"
STRAY = "192.168.77.233"


@pytest.fixture
def node(lab_factory, tmp_path):
    made = DhcpLab(lab_factory(topology(("n1",))), tmp_path, nodes=("n1",))
    yield made
    made.close()


def shim_routes(lab: DhcpLab) -> set[str]:
    out = lab.lab.run("n1", ["ip", "-j", "route", "show", "dev", "dcnshim0", "proto",
                             "217"]).stdout
    return {r["dst"] for r in json.loads(out or "[]")}


def test_janitor_releases_leases_of_gone_pods_through_the_agent(node):
    node.start_dnsmasq(t1=None, t2=None)              # no renewal within the test
    node.start_agent("n1", hostShim=True)
    runtime = node.runtime("n1")
    paths = {name: node.pod(name) for name in ("keep", "nolink", "gone")}
    ips = {name: runtime.add(f"{name}-1", path, args=POD_ARGS.format(name))["ips"][-1]
           ["address"].split("/")[0] for name, path in paths.items()}
    assert set(ips.values()) <= set(node.server_leases())
    assert set(ips.values()) == shim_routes(node)
    # the pod "nolink" loses its link (deleted inside the pod, no DEL); a stray shim route
    node.lab.run("n1", ["ip", "netns", "exec", paths["nolink"].rsplit("/", 1)[1], "ip",
                        "link", "del", "eth0"])
    node.lab.run("n1", ["ip", "route", "add", f"{STRAY}/32", "dev", "dcnshim0", "proto",
                        "217"])
    args = ["chaos", "unused", "--cni-conf", node.conf_path("n1", hostShim=True),
            "--cni-netns", node.lab.netns("n1"), "-o", "json"]
    runner = CliRunner()
    listed = runner.invoke(cli, args)
    assert listed.exit_code == 2, listed.output
    report = json.loads(listed.stdout)
    assert [(u["containerID"], u["address"].split("/")[0]) for u in report["leases"]] == [
        ("nolink-1", ips["nolink"])]
    assert "no link" in report["leases"][0]["reason"] and report["kept"] == 2
    assert {(r["dst"], r["with_lease"]) for r in report["shim_routes"]} == {
        (ips["nolink"], True), (STRAY, False)}
    assert ips["nolink"] in node.server_leases()                      # a plan only

    # the agent serves: the lease goes through its DEL, the stray route is left to it
    served = runner.invoke(cli, [*args, "--apply"])
    assert served.exit_code == 2, served.output
    report = json.loads(served.stdout)
    assert report["released"] == [{"containerID": "nolink-1", "ifname": "eth0"}]
    assert report["shim_routes_removed"] is None
    assert any("serves this node" in note for note in report["notes"])
    assert ips["nolink"] not in node.server_leases()
    assert "nolink-1+eth0" not in node.journal("n1")
    assert shim_routes(node) == {ips["keep"], ips["gone"], STRAY}

    # the agent is down (its leases stay) and the pod "gone" loses its namespace
    node.stop_agent("n1")
    node.remove_pod(paths["gone"])
    stopped = runner.invoke(cli, [*args, "--apply"])
    assert stopped.exit_code == 0, stopped.output
    report = json.loads(stopped.stdout)
    assert [(u["containerID"], u["reason"]) for u in report["leases"]] == [
        ("gone-1", "the pod's network namespace is gone (no DEL reached the agent)")]
    assert report["queued"] == ["gone-1+eth0"] and report["released"] is None
    assert [p.name for p in node.queue_dir("n1").iterdir()] == ["gone-1+eth0.json"]
    assert report["shim_routes_removed"] == [STRAY]
    assert shim_routes(node) == {ips["keep"], ips["gone"]}   # the lease's goes with it
    assert ips["gone"] in node.server_leases()

    node.start_agent("n1", hostShim=True)                    # it sends the queued release
    wait_until(lambda: ips["gone"] not in node.server_leases(), "the queued release", 15)
    wait_until(lambda: shim_routes(node) == {ips["keep"]}, "the gone pod's shim route", 5)
    again = runner.invoke(cli, args)
    assert again.exit_code == 0, again.output
    assert ips["keep"] in node.server_leases()
    runtime.check("keep-1", paths["keep"])
    runtime.delete("keep-1", paths["keep"])
