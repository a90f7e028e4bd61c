"""Netns tests of the dcnet CNI plugin in host-gw mode, through the installed binary.

Three node namespaces on an underlay bridge, a dcnet-agent in each, pods made by exec'ing
the installed ``dcnet`` launcher the way libcni does (``dcnet.lab.cni_invoke``): traffic
across and within nodes, every spec version, DEL/CHECK/STATUS/GC semantics, 50
concurrent ADDs, bad input leaving nothing behind, interop with the reference plugins.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from dcnet.cni.hostgw import host_veth_name
from dcnet.cni.install import install
from dcnet.cni.version import SUPPORTED
from dcnet.lab.builder import Lab
from dcnet.lab.cni_invoke import CniRuntime, PluginError, exec_plugin
from dcnet.sysio import netns

pytestmark = pytest.mark.netns

REF_DIR = "/usr/lib/cni"
AGENT = os.path.join(os.path.dirname(sys.executable), "dcnet-agent")
CLUSTER_CIDR = "10.244.0.0/16"
NODES = ("n1", "n2", "n3")
MTU = 1400


def underlay(nodes=NODES) -> dict:
    return {
        "hosts": [*nodes, "sw"],
        "bridges": [{"name": "br0", "host": "sw"}],
        "links": [{"a": {"host": node, "ifname": "eth0",
                         "addresses": [f"192.168.100.{index + 1}/24"]},
                   "b": {"host": "sw", "ifname": f"p-{node}", "bridge": "br0"}}
                  for index, node in enumerate(nodes)],
    }


def wait_until(predicate, what: str, timeout: float = 30.0):
    """Poll until predicate() is truthy (a readiness wait, not a timing assertion)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.05)


class Cluster:
    """A lab of node namespaces with dcnet installed, a conflist per node and agents."""

    def __init__(self, lab: Lab, root: Path, nodes=NODES):
        self.lab, self.root, self.nodes = lab, root, nodes
        self.bin_dir = str(root / "bin")
        install(self.bin_dir)
        self.pods: list[str] = []
        self.agents: dict[str, object] = {}
        self.restarts = 0

    # ------------------------------------------------------------ configuration

    def plugin(self, node: str, **extra) -> dict:
        conf = {"type": "dcnet", "mode": "host-gw", "bridge": "dcnet0", "mtu": MTU,
                "clusterCIDR": CLUSTER_CIDR, "subnetLen": 24,
                "runDir": str(self.root / f"run-{node}"),
                "dataDir": str(self.root / f"data-{node}"),
                "store": {"type": "file", "path": str(self.root / "store")},
                "capabilities": {"ips": True, "mac": True}}
        conf.update(extra)
        return conf

    def conflist(self, node: str, version: str = "1.1.0", chain=(), **extra) -> dict:
        return {"cniVersion": version, "name": "podnet",
                "plugins": [self.plugin(node, **extra), *chain]}

    def conf_path(self, node: str) -> str:
        path = self.root / f"{node}.conflist"
        path.write_text(json.dumps(self.conflist(node)))
        return str(path)

    def runtime(self, node: str, version: str = "1.1.0", chain=(), **extra) -> CniRuntime:
        return CniRuntime(self.conflist(node, version, chain, **extra),
                          [self.bin_dir, REF_DIR], self.lab.netns(node))

    def node_file(self, node: str) -> Path:
        return self.root / f"run-{node}" / "podnet" / "node.json"

    def ipam_dir(self, node: str) -> Path:
        return self.root / f"data-{node}" / "podnet"

    # ------------------------------------------------------------ agents

    def start_agent(self, node: str, wait: bool = True) -> None:
        self.restarts += 1
        self.agents[node] = self.lab.start(
            node, [AGENT, "run", "--conf", self.conf_path(node), "--node", node,
                   "--iface", "eth0"], name=f"agent-{node}-{self.restarts}")
        if wait:
            self.wait_agent(node)

    def wait_agent(self, node: str) -> dict:
        popen = self.agents[node]

        def ready():
            assert popen.poll() is None, f"agent of {node} exited: {self.agent_log(node)}"
            try:
                data = json.loads(self.node_file(node).read_text())
            except (FileNotFoundError, ValueError):
                return None
            return data if data["agentPid"] == popen.pid else None
        return wait_until(ready, f"agent of {node}")

    def stop_agent(self, node: str) -> None:
        popen = self.agents.pop(node)
        popen.terminate()
        popen.wait(timeout=10)

    def agent_log(self, node: str) -> str:
        logs = sorted(Path(self.lab.log_dir).glob(f"agent-{node}-*.log"))
        return "".join(p.read_text() for p in logs)

    def agent_cli(self, node: str, *argv: str) -> subprocess.CompletedProcess:
        return self.lab.run(node, [AGENT, *argv, "--conf", self.conf_path(node),
                                   "--node", node, "--iface", "eth0"], check=False)

    def subnet(self, node: str) -> str:
        return json.loads(self.node_file(node).read_text())["subnet"]

    def routes(self, node: str, proto: int = 217) -> dict[str, str]:
        out = self.lab.run(node, ["ip", "-j", "route", "show", "proto", str(proto)]).stdout
        return {r["dst"]: r.get("gateway") for r in json.loads(out or "[]")}

    def routes_converged(self) -> bool:
        subnets = {n: self.subnet(n) for n in self.agents}
        ips = {n: json.loads(self.node_file(n).read_text())["nodeIP"] for n in self.agents}
        for node in self.agents:
            want = {subnets[o]: ips[o] for o in self.agents if o != node}
            if self.routes(node) != want:
                return False
        return True

    # ------------------------------------------------------------ pods

    def pod(self, name: str) -> str:
        full = f"{self.lab.prefix}-{name}"
        netns.create(full)
        self.pods.append(full)
        return f"/run/netns/{full}"

    def remove_pods(self) -> None:
        for name in self.pods:
            netns.remove(name)
        self.pods.clear()

    def node_links(self, node: str) -> set[str]:
        out = self.lab.run(node, ["ip", "-j", "link", "show"]).stdout
        return {link["ifname"] for link in json.loads(out)}

    def pod_veths(self, node: str) -> set[str]:
        return {n for n in self.node_links(node) if n.startswith("dcn") and len(n) == 15}

    def reservations(self, node: str) -> dict[str, str]:
        directory = self.ipam_dir(node)
        if not directory.exists():
            return {}
        return {p.name: p.read_text() for p in directory.iterdir() if p.name[0].isdigit()}


def pod_ns(path: str) -> str:
    return path.rsplit("/", 1)[1]


def pod_state(path: str) -> str:
    name = pod_ns(path)
    links = subprocess.run(["ip", "-n", name, "-d", "link"], capture_output=True, text=True)
    addrs = subprocess.run(["ip", "-n", name, "-4", "addr"], capture_output=True, text=True)
    routes = subprocess.run(["ip", "-n", name, "route"], capture_output=True, text=True)
    return links.stdout + addrs.stdout + routes.stdout


def address_of(result: dict) -> str:
    return result["ips"][-1]["address"].split("/")[0]


class EchoServer:
    """A TCP echo listener whose socket lives in a pod namespace (served by a thread)."""

    def __init__(self, pod_path: str, address: str, port: int = 7777):
        def listen() -> socket.socket:
            sock = socket.socket()
            sock.bind((address, port))
            sock.listen(16)
            return sock
        self.sock = netns.run_in(pod_ns(pod_path), listen)
        self.address, self.port = address, port
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

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
            with socket.create_connection((address, port), timeout=3) as conn:
                conn.sendall(b"hello dcnet")
                return conn.recv(100)
        except OSError as exc:
            return f"error: {exc}".encode()
    return netns.run_in(pod_ns(pod_path), talk)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("netns test: needs root")
    root = tmp_path_factory.mktemp("dcnet-cni")
    with Lab(underlay()) as lab:
        made = Cluster(lab, root)
        try:
            for node in NODES:
                made.start_agent(node)
            wait_until(made.routes_converged, "routes between the three nodes")
            yield made
        finally:
            made.remove_pods()


@pytest.fixture
def fresh_cluster(lab_factory, tmp_path):
    """A cluster whose agents each test starts and stops itself."""
    made = Cluster(lab_factory(underlay()), tmp_path)
    yield made
    made.remove_pods()


# ---------------------------------------------------------------- traffic


def test_pod_to_pod_tcp_across_nodes_and_on_one_node(cluster):
    pods = {}
    for node in NODES:
        runtime = cluster.runtime(node)
        for tag in ("a", "b"):
            path = cluster.pod(f"{node}{tag}")
            result = runtime.add(f"ctr-{node}{tag}", path,
                                 args=f"IgnoreUnknown=1;K8S_POD_NAMESPACE=default;"
                                      f"K8S_POD_NAME={node}{tag}")
            pods[f"{node}{tag}"] = (path, address_of(result), result)
    for name, (path, _, result) in pods.items():
        node = name[:2]
        assert result["cniVersion"] == "1.1.0"
        assert result["interfaces"][1]["sandbox"] == path
        assert result["ips"][0]["address"].startswith(cluster.subnet(node).rsplit(".", 2)[0])
        state = pod_state(path)
        assert f"mtu {MTU}" in state and "default via" in state
    servers = [EchoServer(path, address) for path, address, _ in pods.values()]
    try:
        n1a, n1b = pods["n1a"], pods["n1b"]
        assert tcp_echo(n1a[0], n1b[1]) == b"hello dcnet"  # same node
        for other in ("n2a", "n2b", "n3a", "n3b"):  # across nodes
            assert tcp_echo(n1a[0], pods[other][1]) == b"hello dcnet", other
        assert tcp_echo(pods["n3b"][0], n1a[1]) == b"hello dcnet"
    finally:
        for server in servers:
            server.close()
    for name, (path, _, _) in pods.items():
        cluster.runtime(name[:2]).delete(f"ctr-{name}", path)
    for node in NODES:
        assert cluster.reservations(node) == {}
        assert not cluster.pod_veths(node)


# ---------------------------------------------------------------- spec versions


@pytest.mark.parametrize("version", SUPPORTED)
def test_every_spec_version_add_check_del(cluster, version):
    runtime = cluster.runtime("n1", version)
    path = cluster.pod(f"v{version.replace('.', '')}")
    cid = f"ver-{version}"
    result = runtime.add(cid, path)
    assert result["cniVersion"] == version
    assert ("version" in result["ips"][0]) == version.startswith("0.")
    assert ("mtu" in result["interfaces"][1]) == (version == "1.1.0")
    if version in ("0.3.0", "0.3.1"):
        with pytest.raises(PluginError) as caught:
            runtime.check(cid, path)
        assert caught.value.code == 1
    else:
        runtime.check(cid, path)
    runtime.delete(cid, path)
    runtime.delete(cid, path)  # DEL is repeatable
    assert cluster.reservations("n1") == {}
    assert host_veth_name(cid, "eth0") not in cluster.node_links("n1")


def test_version_command_through_the_binary(cluster):
    done = exec_plugin(os.path.join(cluster.bin_dir, "dcnet"), {"CNI_COMMAND": "VERSION"}, "")
    assert done.rc == 0
    assert json.loads(done.stdout)["supportedVersions"] == list(SUPPORTED)


# ---------------------------------------------------------------- DEL and CHECK


def test_del_twice_without_netns_and_after_netns_is_gone(cluster):
    runtime = cluster.runtime("n2")
    path = cluster.pod("delgone")
    runtime.add("del-1", path)
    netns.remove(pod_ns(path))
    cluster.pods.remove(pod_ns(path))
    runtime.delete("del-1", path)  # the netns path no longer exists
    runtime.delete("del-1", "")  # no CNI_NETNS at all
    assert cluster.reservations("n2") == {}


def test_del_after_failed_add(cluster):
    runtime = cluster.runtime("n2")
    path = cluster.pod("failadd")
    netns.run_in(pod_ns(path), subprocess.run,
                 ["ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p"],
                 check=True)
    before = (cluster.node_links("n2"), cluster.reservations("n2"))
    with pytest.raises(PluginError) as caught:
        runtime.add("failed-1", path)
    assert caught.value.code == 102 and "already exists" in caught.value.msg
    assert (cluster.node_links("n2"), cluster.reservations("n2")) == before
    runtime.delete("failed-1", path)  # the runtime's DEL after a failed ADD succeeds
    assert "eth0" in pod_state(path)  # ... and did not touch what was not ours


def test_check_has_no_side_effects_and_detects_drift(cluster):
    runtime = cluster.runtime("n3")
    path = cluster.pod("check")
    result = runtime.add("chk-1", path)
    snapshot = (cluster.node_links("n3"), cluster.reservations("n3"), pod_state(path),
                cluster.routes("n3"))
    for _ in range(3):
        runtime.check("chk-1", path)
    assert (cluster.node_links("n3"), cluster.reservations("n3"), pod_state(path),
            cluster.routes("n3")) == snapshot
    netns.run_in(pod_ns(path), subprocess.run,
                 ["ip", "addr", "del", result["ips"][0]["address"], "dev", "eth0"], check=True)
    drifted = pod_state(path)
    with pytest.raises(PluginError) as caught:
        runtime.check("chk-1", path)
    assert caught.value.code == 103 and "lacks" in caught.value.msg
    assert pod_state(path) == drifted  # CHECK repaired nothing, added nothing
    runtime.delete("chk-1", path)


# ---------------------------------------------------------------- GC


def test_gc_releases_everything_not_valid_and_reports_it(cluster):
    runtime = cluster.runtime("n1")
    paths = [cluster.pod(f"gc{i}") for i in range(3)]
    for index, path in enumerate(paths):
        runtime.add(f"gc-{index}", path)
    reports = runtime.gc([("gc-1", "eth0")])
    report = json.loads(reports[0].strip().splitlines()[-1])
    assert sorted(r["containerID"] for r in report["releasedAddresses"]) == ["gc-0", "gc-2"]
    assert sorted(report["removedLinks"]) == sorted(
        host_veth_name(f"gc-{i}", "eth0") for i in (0, 2))
    assert [v.splitlines()[0] for v in cluster.reservations("n1").values()] == ["gc-1"]
    links = cluster.node_links("n1")
    assert host_veth_name("gc-1", "eth0") in links
    assert host_veth_name("gc-0", "eth0") not in links
    assert "eth0" not in pod_state(paths[0]) and "eth0" in pod_state(paths[1])
    runtime.check("gc-1", paths[1])
    runtime.delete("gc-1", paths[1])


def test_gc_without_valid_attachments_is_refused(cluster):
    runtime = cluster.runtime("n1")
    plugin = runtime.conflist["plugins"][0]
    conf = runtime.plugin_conf(plugin, None, None)
    done = exec_plugin(runtime.find("dcnet"), runtime.env("GC"), json.dumps(conf),
                       runtime.node_netns)
    assert done.rc == 1 and json.loads(done.stdout)["code"] == 7


# ---------------------------------------------------------------- concurrency


def test_fifty_concurrent_adds_never_share_an_address(cluster):
    runtime = cluster.runtime("n2")
    paths = [cluster.pod(f"burst{i}") for i in range(50)]
    with ThreadPoolExecutor(max_workers=50) as workers:
        results = list(workers.map(lambda item: runtime.add(f"burst-{item[0]}", item[1]),
                                   enumerate(paths)))
    addresses = [address_of(r) for r in results]
    assert len(set(addresses)) == 50
    assert sorted(cluster.reservations("n2")) == sorted(addresses)
    with ThreadPoolExecutor(max_workers=50) as workers:
        list(workers.map(lambda item: runtime.delete(f"burst-{item[0]}", item[1]),
                         enumerate(paths)))
    assert cluster.reservations("n2") == {}
    assert not cluster.pod_veths("n2")


# ---------------------------------------------------------------- bad input


def raw_call(cluster, node: str, env: dict, stdin: str):
    done = exec_plugin(os.path.join(cluster.bin_dir, "dcnet"), env, stdin,
                       cluster.lab.netns(node))
    assert done.stdout.strip(), f"no JSON on stdout (exit {done.rc}): {done.stderr}"
    return done.rc, json.loads(done.stdout)


@pytest.mark.parametrize(("case", "code"), [
    ("malformed-json", 6), ("missing-env", 4), ("unknown-version", 1), ("unknown-mode", 7),
    ("missing-netns", 3), ("bad-ifname", 4), ("bad-cni-args", 4), ("netns-is-own", 8),
    ("foreign-address", 101), ("io-failure", 5),
])
def test_bad_input_gets_its_code_and_leaves_nothing(cluster, case, code):
    runtime = cluster.runtime("n3")
    path = cluster.pod(f"bad-{case}")
    conf = runtime.plugin_conf(runtime.conflist["plugins"][0], None, None)
    env = runtime.env("ADD", f"bad-{case}", path, "eth0")
    stdin = json.dumps(conf)
    if case == "malformed-json":
        stdin = stdin[:-5]
    elif case == "missing-env":
        del env["CNI_IFNAME"]
    elif case == "unknown-version":
        stdin = json.dumps(dict(conf, cniVersion="2.0.0"))
    elif case == "unknown-mode":
        stdin = json.dumps(dict(conf, mode="ipvlan"))
    elif case == "missing-netns":
        env["CNI_NETNS"] = "/run/netns/does-not-exist-dcnet"
    elif case == "bad-ifname":
        env["CNI_IFNAME"] = "eth0:1"
    elif case == "bad-cni-args":
        env["CNI_ARGS"] = "K8S_POD_NAME=x;SOMETHING=y"
    elif case == "netns-is-own":
        env["CNI_NETNS"] = f"/run/netns/{cluster.lab.netns('n3')}"
    elif case == "foreign-address":
        stdin = json.dumps(dict(conf, runtimeConfig={"ips": ["10.99.0.5/24"]}))
    elif case == "io-failure":  # the reservation directory cannot be made
        stdin = json.dumps(dict(conf, dataDir="/proc/version/dcnet"))
    before = (cluster.node_links("n3"), cluster.reservations("n3"), pod_state(path))
    rc, out = raw_call(cluster, "n3", env, stdin)
    assert rc == 1 and out["code"] == code, out
    assert out["msg"]
    assert (cluster.node_links("n3"), cluster.reservations("n3"), pod_state(path)) == before


def test_requested_address_and_mac_via_runtime_config(cluster):
    runtime = cluster.runtime("n3")
    path = cluster.pod("static")
    subnet = cluster.subnet("n3").rsplit(".", 1)[0]
    result = runtime.add("static-1", path, runtime={"ips": [f"{subnet}.77/24"],
                                                    "mac": "0a:00:00:00:00:77"})
    assert address_of(result) == f"{subnet}.77"
    assert result["interfaces"][1]["mac"] == "0a:00:00:00:00:77"
    assert "0a:00:00:00:00:77" in pod_state(path)
    runtime.check("static-1", path, runtime={"ips": [f"{subnet}.77/24"]})
    runtime.delete("static-1", path)


# ---------------------------------------------------------------- interop


def test_prev_result_from_an_earlier_plugin_is_amended(cluster):
    """Chained after the reference loopback plugin, dcnet appends to its result."""
    runtime = cluster.runtime("n2", "1.0.0")
    runtime.conflist["plugins"].insert(0, {"type": "loopback"})
    path = cluster.pod("chained")
    result = runtime.add("prev-1", path)
    names = [i["name"] for i in result["interfaces"]]
    assert names == ["lo", host_veth_name("prev-1", "eth0"), "eth0"]
    ours = [ip for ip in result["ips"] if ip["address"].startswith("10.244.")]
    assert len(ours) == 1 and ours[0]["interface"] == 2  # index shifted past "lo"
    runtime.check("prev-1", path)
    runtime.delete("prev-1", path)
    assert cluster.reservations("n2") == {}



def test_reference_meta_plugins_accept_dcnet_results(cluster):
    chain = [{"type": "portmap", "capabilities": {"portMappings": True}},
             {"type": "bandwidth", "capabilities": {"bandwidth": True}},
             {"type": "tuning", "sysctl": {"net.ipv4.conf.eth0.arp_notify": "1"}}]
    runtime = cluster.runtime("n1", "1.0.0", chain)  # Debian's plugins speak up to 1.0.0
    path = cluster.pod("chain")
    runtime_conf = {"portMappings": [{"hostPort": 18080, "containerPort": 80,
                                      "protocol": "tcp"}],
                    "bandwidth": {"ingressRate": 10_000_000, "ingressBurst": 1_000_000,
                                  "egressRate": 10_000_000, "egressBurst": 1_000_000}}
    result = runtime.add("chain-1", path, runtime=runtime_conf)
    assert result["cniVersion"] == "1.0.0"
    assert result["interfaces"][1]["sandbox"] == path
    assert address_of(result).startswith(cluster.subnet("n1").rsplit(".", 1)[0])
    rules = cluster.lab.run("n1", ["iptables-save"]).stdout
    assert "18080" in rules  # portmap programmed the node from dcnet's result
    sysctl = netns.sysctl_get(pod_ns(path), "net.ipv4.conf.eth0.arp_notify")
    assert sysctl == "1"  # tuning found dcnet's interface in the sandbox
    # Debian's portmap CHECK fails on its own ipv6 chain even after the reference
    # bridge's ADD (same message), so CHECK runs the rest of the chain.
    checker = cluster.runtime("n1", "1.0.0", chain[1:])
    checker.cache = runtime.cache
    checker.check("chain-1", path, runtime=runtime_conf)
    runtime.delete("chain-1", path, runtime=runtime_conf)
    runtime.delete("chain-1", path, runtime=runtime_conf)
    assert "18080" not in cluster.lab.run("n1", ["iptables-save"]).stdout
    assert cluster.reservations("n1") == {}


def test_reference_bridge_and_host_local_on_the_same_lab(cluster, tmp_path):
    ref = CniRuntime({"cniVersion": "1.0.0", "name": "refnet", "type": "bridge",
                      "bridge": "cni0", "isGateway": True, "ipMasq": False,
                      "ipam": {"type": "host-local", "subnet": "10.250.9.0/24",
                               "dataDir": str(tmp_path / "ref")}},
                     [REF_DIR], cluster.lab.netns("n1"))
    ours = cluster.runtime("n1", "1.0.0")
    ref_pod, our_pod = cluster.pod("refpod"), cluster.pod("ourpod")
    theirs = ref.add("ref-1", ref_pod)
    mine = ours.add("our-1", our_pod)
    assert [i["name"] for i in theirs["interfaces"]][-1] == "eth0"
    assert set(mine) <= set(theirs) | {"routes"}  # same result shape
    assert mine["interfaces"][-1]["sandbox"] == our_pod
    ref.delete("ref-1", ref_pod)
    ours.delete("our-1", our_pod)
