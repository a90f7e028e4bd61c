"""Netns tests of dual-stack and IPv6-only host-gw (issue #21), through the installed binary.

Node namespaces on an underlay bridge, each with an IPv4 and an IPv6 address on eth0, a
dcnet-agent in each (``--iface eth0``: both families' node addresses come from it), pods
made by exec'ing the installed ``dcnet`` the way libcni does. Pods on two nodes talk over
IPv6 (ping -6 and a TCP exchange) and over IPv4; the node routes of both families point at
the other node's address of that family; CHECK, DEL and GC cover each family; an
IPv6-only network works alone; an agent restart keeps both leases.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
from pathlib import Path

import pytest

from dcnet.cni.hostgw import host_veth_name
from dcnet.cni.nodestate import process_start_time
from dcnet.lab.builder import Lab
from dcnet.lab.cni_invoke import PluginError
from dcnet.sysio import netns
from tests.netns.test_cni_hostgw import AGENT, Cluster, pod_ns, wait_until

pytestmark = pytest.mark.netns

NODES = ("n1", "n2")
DUAL = ["10.244.0.0/16", "fd00:10::/48"]


def underlay(nodes=NODES, v4: bool = True) -> dict:
    def addresses(index: int) -> list[str]:
        out = [f"fd00:100::{index + 1}/64"]
        return [f"192.168.100.{index + 1}/24", *out] if v4 else out
    return {
        "hosts": [*nodes, "sw"],
        "bridges": [{"name": "br0", "host": "sw"}],
        "links": [{"a": {"host": node, "ifname": "eth0", "addresses": addresses(index)},
                   "b": {"host": "sw", "ifname": f"p-{node}", "bridge": "br0"}}
                  for index, node in enumerate(nodes)],
    }


class DualCluster(Cluster):
    """The host-gw test cluster with a dual-stack (or IPv6-only) cluster range."""

    def __init__(self, lab: Lab, root: Path, nodes=NODES, cidr=DUAL):
        super().__init__(lab, root, nodes)
        self.cidr = cidr

    def plugin(self, node: str, **extra) -> dict:
        conf = super().plugin(node, **extra)
        conf["clusterCIDR"] = extra.get("clusterCIDR", self.cidr)
        return conf

    def node_data(self, node: str) -> dict:
        return json.loads(self.node_file(node).read_text())

    def routes(self, node: str, proto: int = 217, family: str = "-4") -> dict[str, str]:
        out = self.lab.run(node, ["ip", "-j", family, "route", "show", "proto",
                                  str(proto)]).stdout
        return {r["dst"]: r.get("gateway") for r in json.loads(out or "[]")}

    def routes_converged(self) -> bool:
        data = {n: self.node_data(n) for n in self.agents}
        for node in self.agents:
            for family, suffix in (("-4", ""), ("-6", "6")):
                want = {data[o][f"subnet{suffix}"]: data[o][f"nodeIP{suffix}"]
                        for o in self.agents if o != node and data[o][f"subnet{suffix}"]}
                if self.routes(node, family=family) != want:
                    return False
        return True

    def reservations(self, node: str) -> dict[str, str]:
        directory = self.ipam_dir(node)
        if not directory.exists():
            return {}
        return {p.name: p.read_text() for p in directory.iterdir()
                if p.name != "lock" and not p.name.startswith(("last_", "."))}


def ips_of(result: dict) -> dict[int, str]:
    """{4: address, 6: address} of the result's ips (without the prefix length)."""
    return {6 if ":" in ip["address"] else 4: ip["address"].split("/")[0]
            for ip in result["ips"]}


class Echo:
    """A TCP echo listener of either family in a pod namespace (served by a thread)."""

    def __init__(self, pod_path: str, address: str, port: int = 7777):
        family = socket.AF_INET6 if ":" in address else socket.AF_INET

        def listen() -> socket.socket:
            sock = socket.socket(family)
            sock.bind((address, port))
            sock.listen(16)
            return sock
        self.sock = netns.run_in(pod_ns(pod_path), listen)
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.sendall(conn.recv(100))

    def close(self) -> None:
        self.sock.close()


def tcp_echo(pod_path: str, address: str, port: int = 7777) -> bytes:
    def talk() -> bytes:
        try:
            with socket.create_connection((address, port), timeout=5) as conn:
                conn.sendall(b"hello dcnet")
                return conn.recv(100)
        except OSError as exc:
            return f"error: {exc}".encode()
    return netns.run_in(pod_ns(pod_path), talk)


def ping(pod_path: str, address: str) -> subprocess.CompletedProcess:
    flag = "-6" if ":" in address else "-4"
    return subprocess.run(["ip", "netns", "exec", pod_ns(pod_path), "ping", flag, "-c", "1",
                           "-W", "5", address], capture_output=True, text=True, check=False)


def pod_addresses(path: str, family: str) -> str:
    """The pod's global addresses of ``family`` on eth0, as ``ip addr`` shows them."""
    return subprocess.run(["ip", "-n", pod_ns(path), family, "addr", "show", "dev", "eth0",
                           "scope", "global"], capture_output=True, text=True,
                          check=False).stdout


def talk_both_ways(client: str, server: str, address: str) -> None:
    echo = Echo(server, address)
    try:
        done = ping(client, address)
        assert done.returncode == 0, done.stdout + done.stderr
        assert tcp_echo(client, address) == b"hello dcnet"
    finally:
        echo.close()


def start(made: DualCluster) -> DualCluster:
    for node in made.nodes:
        made.start_agent(node)
    wait_until(made.routes_converged, "routes of both families between the nodes")
    return made


@pytest.fixture(scope="module")
def dual(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("netns test: needs root")
    root = tmp_path_factory.mktemp("dcnet-cni-v6")
    with Lab(underlay()) as lab:
        made = DualCluster(lab, root)
        try:
            yield start(made)
        finally:
            made.remove_pods()


@pytest.fixture
def fresh(lab_factory, tmp_path):
    made = DualCluster(lab_factory(underlay()), tmp_path)
    yield made
    made.remove_pods()


# ---------------------------------------------------------------- dual stack


def test_node_files_routes_and_bridge_carry_both_families(dual):
    for node in NODES:
        data = dual.node_data(node)
        assert data["subnet"].startswith("10.244.") and data["subnet"].endswith("/24")
        assert data["subnet6"].startswith("fd00:10:") and data["subnet6"].endswith("::/64")
        assert data["nodeIP6"] == f"fd00:100::{NODES.index(node) + 1}"
        assert data["gateway6"] == data["subnet6"].split("/")[0] + "1"
        bridge = dual.lab.run(node, ["ip", "-6", "addr", "show", "dev", "dcnet0"]).stdout
        assert f"{data['gateway6']}/64" in bridge
        forwarding = dual.lab.run(node, ["sysctl", "-n", "net.ipv6.conf.all.forwarding"])
        assert forwarding.stdout.strip() == "1"
    other = dual.node_data("n2")
    assert dual.routes("n1", family="-6") == {other["subnet6"]: other["nodeIP6"]}
    assert dual.routes("n1", family="-4") == {other["subnet"]: other["nodeIP"]}


def test_pods_on_two_nodes_talk_over_ipv6_and_ipv4(dual):
    pods = {}
    for node in NODES:
        path = dual.pod(f"ds-{node}")
        result = dual.runtime(node).add(f"ds-{node}", path)
        pods[node] = (path, result)
        data = dual.node_data(node)
        assert [ip["gateway"] for ip in result["ips"]] == [data["gateway"], data["gateway6"]]
        assert result["routes"] == [{"dst": "0.0.0.0/0", "gw": data["gateway"]},
                                    {"dst": "::/0", "gw": data["gateway6"]}]
        assert all(ip["interface"] == 1 for ip in result["ips"])
        shown = pod_addresses(path, "-6")
        assert ips_of(result)[6] in shown and "nodad" in shown
        assert "tentative" not in shown  # usable at once: no DAD
    (path1, result1), (path2, result2) = pods["n1"], pods["n2"]
    talk_both_ways(path1, path2, ips_of(result2)[6])
    talk_both_ways(path2, path1, ips_of(result1)[6])
    talk_both_ways(path1, path2, ips_of(result2)[4])
    for node, (path, _) in pods.items():
        dual.runtime(node).delete(f"ds-{node}", path)
        assert dual.reservations(node) == {}


def test_pod_namespace_with_ipv6_disabled_gets_it_enabled(dual):
    path = dual.pod("noipv6")
    for key in ("all", "default"):
        netns.sysctl_set(pod_ns(path), f"net.ipv6.conf.{key}.disable_ipv6", 1)
    runtime = dual.runtime("n1")
    result = runtime.add("noipv6-1", path)
    assert netns.sysctl_get(pod_ns(path), "net.ipv6.conf.eth0.disable_ipv6") == "0"
    gateway6 = dual.node_data("n1")["gateway6"]
    done = ping(path, gateway6)
    assert done.returncode == 0, done.stdout + done.stderr
    runtime.check("noipv6-1", path)
    assert ips_of(result)[6] in pod_addresses(path, "-6")
    runtime.delete("noipv6-1", path)


def test_requested_addresses_per_family(dual):
    data = dual.node_data("n1")
    want6 = data["subnet6"].split("/")[0] + "77"
    want4 = data["subnet"].rsplit(".", 1)[0] + ".77"
    path = dual.pod("req")
    result = dual.runtime("n1").add("req-1", path, runtime={"ips": [f"{want4}/24",
                                                                    f"{want6}/64"]})
    assert ips_of(result) == {4: want4, 6: want6}
    dual.runtime("n1").delete("req-1", path)
    with pytest.raises(PluginError) as caught:
        dual.runtime("n1").add("req-2", path, runtime={"ips": ["fd00:99::5/64"]})
    assert caught.value.code == 101 and "outside" in caught.value.msg
    assert dual.reservations("n1") == {}


def test_check_detects_a_missing_ipv6_address_or_route_and_del_releases_both(dual):
    runtime = dual.runtime("n2")
    path = dual.pod("chk6")
    result = runtime.add("chk6-1", path)
    addresses = ips_of(result)
    assert sorted(dual.reservations("n2")) == sorted(addresses.values())
    runtime.check("chk6-1", path)
    netns.run_in(pod_ns(path), subprocess.run, ["ip", "-6", "route", "del", "default"],
                 check=True)
    with pytest.raises(PluginError) as no_route:
        runtime.check("chk6-1", path)
    assert no_route.value.code == 103 and "default route via fd00:10:" in no_route.value.msg
    netns.run_in(pod_ns(path), subprocess.run,
                 ["ip", "-6", "addr", "del", f"{addresses[6]}/64", "dev", "eth0"], check=True)
    with pytest.raises(PluginError) as lacks:
        runtime.check("chk6-1", path)
    assert lacks.value.code == 103 and f"lacks {addresses[6]}/64" in lacks.value.msg
    assert addresses[4] in pod_addresses(path, "-4")  # IPv4 left alone
    runtime.delete("chk6-1", path)
    assert dual.reservations("n2") == {}
    runtime.delete("chk6-1", path)  # repeatable


def test_gc_releases_both_families_of_what_is_not_valid(dual):
    runtime = dual.runtime("n1")
    paths = [dual.pod(f"gc6-{i}") for i in range(2)]
    results = [runtime.add(f"gc6-{i}", path) for i, path in enumerate(paths)]
    reports = runtime.gc([("gc6-1", "eth0")])
    report = json.loads(reports[0].strip().splitlines()[-1])
    assert sorted(r["address"] for r in report["releasedAddresses"]) == sorted(
        ips_of(results[0]).values())
    assert report["removedLinks"] == [host_veth_name("gc6-0", "eth0")]
    assert sorted(dual.reservations("n1")) == sorted(ips_of(results[1]).values())
    runtime.check("gc6-1", paths[1])
    runtime.status()
    runtime.delete("gc6-1", paths[1])


# ---------------------------------------------------------------- IPv6 only


def test_ipv6_only_network_pods_talk(lab_factory, tmp_path):
    made = DualCluster(lab_factory(underlay(v4=False)), tmp_path, cidr="fd00:20::/56")
    try:
        start(made)
        data = made.node_data("n1")
        assert data["subnet"] is None and data["subnet6"].startswith("fd00:20:")
        pods, runtimes = {}, {node: made.runtime(node) for node in NODES}
        for node in NODES:
            path = made.pod(f"v6o-{node}")
            result = runtimes[node].add(f"v6o-{node}", path)
            assert [ip["address"].count(":") > 0 for ip in result["ips"]] == [True]
            assert result["routes"] == [{"dst": "::/0",
                                         "gw": made.node_data(node)["gateway6"]}]
            pods[node] = (path, ips_of(result)[6])
        talk_both_ways(pods["n1"][0], pods["n2"][0], pods["n2"][1])
        assert "inet " not in pod_addresses(pods["n1"][0], "-4")
        runtimes["n1"].check("v6o-n1", pods["n1"][0])
        runtimes["n1"].status()
        for node, (path, _) in pods.items():
            runtimes[node].delete(f"v6o-{node}", path)
            assert made.reservations(node) == {}
    finally:
        made.remove_pods()


# ---------------------------------------------------------------- agent restart


def test_agent_restart_keeps_both_leases_and_routes_leave_gives_both_back(fresh):
    start(fresh)
    before = {n: fresh.node_data(n) for n in NODES}
    routes = {n: (fresh.routes(n, family="-4"), fresh.routes(n, family="-6")) for n in NODES}
    path1, path2 = fresh.pod("rs1"), fresh.pod("rs2")
    fresh.runtime("n1").add("rs-1", path1)
    server = ips_of(fresh.runtime("n2").add("rs-2", path2))
    fresh.stop_agent("n1")
    assert (fresh.routes("n1", family="-4"), fresh.routes("n1", family="-6")) == routes["n1"]
    fresh.start_agent("n1")
    after = fresh.node_data("n1")
    for key in ("subnet", "subnet6", "gateway", "gateway6", "nodeIP", "nodeIP6"):
        assert after[key] == before["n1"][key], key
    wait_until(fresh.routes_converged, "routes after the restart")
    for node in NODES:
        assert (fresh.routes(node, family="-4"), fresh.routes(node, family="-6")) == (
            routes[node])
    talk_both_ways(path1, path2, server[6])
    talk_both_ways(path1, path2, server[4])
    fresh.stop_agent("n2")
    left = fresh.agent_cli("n2", "leave")
    assert left.returncode == 0, left.stderr
    assert f"released {before['n2']['subnet6']}" in left.stderr
    wait_until(lambda: fresh.routes("n1", family="-4") == {} and fresh.routes(
        "n1", family="-6") == {}, "n1 dropping both routes of the node that left")
    assert (fresh.routes("n2", family="-4"), fresh.routes("n2", family="-6")) == ({}, {})


# ---------------------------------------------------------------- STATUS per family


def test_status_per_family_gateway_and_pool(lab_factory, tmp_path):
    """No agent: the test writes the node file (a dual-stack one with a /126 IPv6 subnet,
    one pod address) and makes the bridge, so STATUS's answers come one by one."""
    made = DualCluster(lab_factory({"hosts": ["n1"]}), tmp_path, nodes=("n1",))
    try:
        path = made.node_file("n1")
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps({
            "node": "n1", "nodeIP": "192.168.100.1", "subnet": "10.244.7.0/24",
            "gateway": "10.244.7.1", "nodeIP6": "fd00:100::1", "subnet6": "fd00:10:0:7::/126",
            "gateway6": "fd00:10:0:7::1", "agentPid": os.getpid(),
            "agentStart": process_start_time(os.getpid())}))
        for argv in (["ip", "link", "add", "dcnet0", "type", "bridge"],
                     ["ip", "link", "set", "dcnet0", "up"],
                     ["ip", "addr", "add", "10.244.7.1/24", "dev", "dcnet0"]):
            made.lab.run("n1", argv)
        runtime = made.runtime("n1")
        with pytest.raises(PluginError) as lacks:
            runtime.status()
        assert lacks.value.code == 50 and "lacks gateway fd00:10:0:7::1" in lacks.value.msg
        made.lab.run("n1", ["ip", "addr", "add", "fd00:10:0:7::1/126", "dev", "dcnet0",
                            "nodad"])
        runtime.status()
        pod = made.pod("only")
        assert ips_of(runtime.add("only-1", pod)) == {4: "10.244.7.2", 6: "fd00:10:0:7::2"}
        with pytest.raises(PluginError) as full:
            runtime.status()
        assert full.value.code == 50 and "no free address left in fd00:10:0:7::/126" in (
            full.value.msg)
        with pytest.raises(PluginError) as no_more:
            runtime.add("only-2", made.pod("second"))
        assert no_more.value.code == 100
        assert sorted(made.reservations("n1")) == ["10.244.7.2", "fd00:10:0:7::2"]  # undone
        runtime.delete("only-1", pod)
        runtime.status()
    finally:
        made.remove_pods()


def test_an_ipv6_next_hop_off_the_segment_is_refused(fresh):
    """n2 announces an IPv6 node address n1 cannot reach on-link: n1 installs the IPv4
    route and refuses the IPv6 one with the host-gw message."""
    fresh.start_agent("n1")
    fresh.agents["n2"] = fresh.lab.start(
        "n2", [AGENT, "run", "--conf", fresh.conf_path("n2"), "--node", "n2",
               "--node-ip", "192.168.100.2,fd00:200::2"], name="agent-n2-far")
    fresh.wait_agent("n2")
    far = fresh.node_data("n2")
    assert far["nodeIP6"] == "fd00:200::2"

    def refused() -> list[str]:
        return fresh.node_data("n1")["refusedRoutes"]
    found = wait_until(refused, "n1 refusing the off-segment IPv6 next hop")
    assert found == [f"refusing route {far['subnet6']} via fd00:200::2 (node n2): the next "
                     "hop is unreachable from this node; host-gw needs every node on one L2 "
                     "segment"]
    wait_until(lambda: fresh.routes("n1", family="-4") == {far["subnet"]: "192.168.100.2"},
               "n1's IPv4 route to n2")
    assert fresh.routes("n1", family="-6") == {}


def test_a_lease_whose_next_hop_is_of_the_other_family_is_refused(dual):
    """A lease written by something else (an IPv6 subnet with an IPv4 node address)."""
    leases = dual.root / "store" / "leases"
    bogus = leases / "fd00:10:0:ff::-64.json"
    temporary = leases / ".bogus.tmp"
    temporary.write_text(json.dumps({"node": "bogus", "nodeIP": "192.168.100.9",
                                     "subnet": "fd00:10:0:ff::/64"}))
    temporary.rename(bogus)
    message = ("refusing route fd00:10:0:ff::/64 via 192.168.100.9 (node bogus): the next hop "
               "is not an IPv6 address")
    try:
        wait_until(lambda: message in dual.node_data("n1")["refusedRoutes"],
                   "n1 refusing the mixed-family lease")
        assert "fd00:10:0:ff::/64" not in dual.routes("n1", family="-6")
    finally:
        bogus.unlink()
    wait_until(lambda: dual.node_data("n1")["refusedRoutes"] == [], "the refusal cleared")
    assert dual.routes_converged()
