"""Netns tests of host-gw on etcd: the etcd Store, and dcnet-agents sharing an etcd cluster.

A real three-member etcd cluster (TLS) runs in lab namespaces (``dcnet.lab.etcd_lab``).
The Store contract runs against ``EtcdStore`` in tests/test_store_contract.py; here the
store's watch is shown to resume after a disconnect without missing a change and to
resync after a compaction; leases expire when nobody keeps them alive and a restarted
holder adopts its lease. Then node
namespaces run real ``dcnet-agent --store etcds://...`` processes with pods made by the
installed plugin: losing one etcd member changes nothing, a SIGKILLed node's routes go
away everywhere within the lease TTL, all of etcd down leaves routes and ADD working
(STATUS warns: degraded), and everything converges when etcd returns. Waits are bounded
readiness waits; no timing is asserted.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from dcnet.cni.etcdstore import EtcdStore
from dcnet.cni.store import Lease
from dcnet.lab.cni_invoke import exec_plugin
from dcnet.lab.etcd_lab import EtcdCluster, start_etcd_cluster
from dcnet.sysio import netns
from dcnet.sysio.etcd import Client, parse_url
from tests.netns.test_cni_hostgw import (
    AGENT,
    Cluster,
    EchoServer,
    address_of,
    tcp_echo,
    wait_until,
)

pytestmark = pytest.mark.netns

TTL = 8  # the agents' etcd lease TTL in the cluster tests (seconds)
MARGIN = 15  # beyond the TTL: keep-alive period, watch delivery, a loaded machine
PREFIX = "/dcnet"


def store_on(cluster: EtcdCluster, prefix: str, ttl: int = TTL, endpoints=None,
             host: str | None = None) -> EtcdStore:
    """An EtcdStore whose clients talk from a lab namespace (as an agent's would)."""
    settings = parse_url(cluster.url(prefix=prefix))
    if endpoints is not None:
        settings = dataclasses.replace(settings, endpoints=tuple(endpoints))
    where = netns.path_of(cluster.lab.netns(host or cluster.client_host))
    return EtcdStore(settings, "podnet", ttl, log=lambda text: None,
                     client_factory=lambda s: Client(s, netns=where))


def unique_prefix() -> str:
    return f"/t{uuid.uuid4().hex[:10]}"


# ---------------------------------------------------------------- the store's watch and leases


def lease_json(node: str, subnet: str) -> str:
    return json.dumps(Lease(node, "192.168.0.9", subnet).to_dict())


def test_watch_resumes_after_a_disconnect_without_missing_a_change(etcd_cluster):
    cluster, prefix = etcd_cluster, unique_prefix()
    first = cluster.member_endpoint("etcd1")
    store = store_on(cluster, prefix, endpoints=[first])  # its watch can only use etcd1
    writer = cluster.client(prefix=prefix, endpoints=cluster.endpoints[1:])
    root = store.root
    try:
        writer.put(root + "10.244.1.0-24", lease_json("a", "10.244.1.0/24"))
        assert store.wait(10.0)
        cluster.stop("etcd1")  # the watch's only endpoint goes away
        wait_until(lambda: store.unreachable, "the store notices etcd1 is gone")
        writer.put(root + "10.244.2.0-24", lease_json("b", "10.244.2.0/24"))
        writer.delete(root + "10.244.2.0-24")  # created and deleted while disconnected
        writer.put(root + "10.244.3.0-24", lease_json("c", "10.244.3.0/24"))
        cluster.start("etcd1")
        cluster.wait_healthy()
        seen = wait_until(lambda: [(kind, key.rsplit("/", 1)[1]) for _, kind, key
                                   in store.events if "10.244.1." not in key
                                   ] if len(store.events) >= 4 else None,
                          "the changes made while disconnected")
        assert seen == [("put", "10.244.2.0-24"), ("delete", "10.244.2.0-24"),
                        ("put", "10.244.3.0-24")]
        revisions = [revision for revision, _, _ in store.events]
        assert revisions == sorted(revisions) and len(set(revisions)) == len(revisions)
        assert store.resumes > 0 and store.resyncs == 0  # resumed, never re-read
        assert store.wait(10.0)
        assert [le.subnet for le in store.leases()] == ["10.244.1.0/24", "10.244.3.0/24"]
    finally:
        store.close()


def test_watch_resyncs_when_its_resume_revision_was_compacted(etcd_cluster):
    cluster, prefix = etcd_cluster, unique_prefix()
    store = store_on(cluster, prefix, endpoints=[cluster.member_endpoint("etcd1")])
    writer = cluster.client(prefix=prefix, endpoints=cluster.endpoints[1:])
    root = store.root
    try:
        writer.put(root + "10.244.1.0-24", lease_json("a", "10.244.1.0/24"))
        assert store.wait(10.0)
        cluster.stop("etcd1")
        wait_until(lambda: store.unreachable, "the store notices etcd1 is gone")
        writer.put(root + "10.244.2.0-24", lease_json("b", "10.244.2.0/24"))
        revision = writer.put(root + "10.244.3.0-24", lease_json("c", "10.244.3.0/24"))
        writer.delete(root + "10.244.1.0-24")
        writer.compact(revision + 1)  # everything the watch would resume from is gone
        cluster.start("etcd1")
        cluster.wait_healthy()
        wait_until(lambda: store.resyncs == 1, "a full resync")
        assert store.wait(10.0)
        assert [le.subnet for le in store.leases()] == ["10.244.2.0/24", "10.244.3.0/24"]
        kinds = [(kind, key.rsplit("/", 1)[1]) for _, kind, key in store.events]
        assert ("delete", "10.244.1.0-24") not in kinds  # not replayed: read afresh
        writer.put(root + "10.244.4.0-24", lease_json("d", "10.244.4.0/24"))
        wait_until(lambda: any(key.endswith("10.244.4.0-24") for _, _, key in store.events),
                   "the watch goes on after the resync")
    finally:
        store.close()


def test_leases_expire_unless_kept_alive_and_a_restarted_holder_adopts_them(etcd_cluster):
    cluster, prefix = etcd_cluster, unique_prefix()
    reader = cluster.client(prefix=prefix)
    observer = store_on(cluster, prefix)
    lease = Lease("n1", "192.168.0.1", "10.244.0.0/24")
    first = store_on(cluster, prefix, ttl=3)
    assert first.claim(lease)
    key = first.key(lease.subnet)
    owner = reader.get(key).lease
    assert owner
    first.close()  # like a stopped agent: no release, no revoke
    second = store_on(cluster, prefix, ttl=3)  # the agent's next life
    second.hold(lease)
    adopted = reader.get(key)
    assert adopted.lease not in (0, owner)
    assert json.loads(adopted.value) == lease.to_dict()
    time.sleep(3 * 3)  # well past the first lease's TTL: only the adoption keeps it
    assert observer.leases() == [lease]
    second.close()  # nobody keeps it alive now
    wait_until(lambda: observer.leases() == [], "the lease expires", timeout=3 + MARGIN)
    third = store_on(cluster, prefix, ttl=3)
    assert third.claim(lease)
    assert third.release(lease.subnet)  # release deletes the key, revokes the lease
    assert reader.get(key) is None
    third.close()
    observer.close()


# ---------------------------------------------------------------- agents on etcd

NODES = ("n1", "n2", "n3", "n4")
ETCD_HOSTS = ("e1", "e2", "e3")


def etcd_underlay() -> dict:
    """Nodes n1..n4 and etcd members e1..e3 on one underlay bridge (in host sw, which
    has .254 as the tests' vantage point)."""
    ends = [(node, f"192.168.100.{index + 1}") for index, node in enumerate(NODES)]
    ends += [(host, f"192.168.100.{index + 11}") for index, host in enumerate(ETCD_HOSTS)]
    return {
        "hosts": [*NODES, *ETCD_HOSTS, "sw"],
        "bridges": [{"name": "br0", "host": "sw", "addresses": ["192.168.100.254/24"]}],
        "links": [{"a": {"host": host, "ifname": "eth0", "addresses": [f"{address}/24"]},
                   "b": {"host": "sw", "ifname": f"p-{host}", "bridge": "br0"}}
                  for host, address in ends],
    }


class EtcdNodes(Cluster):
    """Node namespaces whose agents keep their leases in the lab's etcd cluster."""

    def __init__(self, lab, root: Path, etcd: EtcdCluster):
        super().__init__(lab, root, NODES)
        self.etcd = etcd
        self.url = etcd.url(prefix=PREFIX)
        self.keys = etcd.client(prefix=PREFIX)

    def start_agent(self, node: str, wait: bool = True) -> None:
        self.restarts += 1
        self.agents[node] = self.lab.start(
            node, [AGENT, "run", "--conf", self.conf_path(node), "--node", node,
                   "--iface", "eth0", "--store", self.url, "--lease-ttl", str(TTL)],
            name=f"agent-{node}-{self.restarts}")
        if wait:
            self.wait_agent(node)

    def kill_agent(self, node: str) -> None:
        """SIGKILL: no clean stop, no release, no revoke."""
        popen = self.agents.pop(node)
        os.killpg(popen.pid, signal.SIGKILL)
        popen.wait(timeout=10)

    def node_state(self, node: str) -> dict:
        return json.loads(self.node_file(node).read_text())

    def lease_keys(self) -> dict[str, tuple[int, str]]:
        """{subnet key: (create revision, holder)} as etcd has them."""
        kvs, _ = self.keys.get_prefix("/cni/podnet/leases/")
        return {kv.key.rsplit("/", 1)[1]: (kv.create_revision, json.loads(kv.value)["node"])
                for kv in kvs}

    def all_routes(self) -> dict[str, dict[str, str]]:
        return {node: self.routes(node) for node in self.agents}

    def status(self, node: str) -> subprocess.CompletedProcess:
        runtime = self.runtime(node)
        plugin = runtime.conflist["plugins"][0]
        return exec_plugin(runtime.find("dcnet"), runtime.env("STATUS"),
                           json.dumps(runtime.plugin_conf(plugin, None, None)),
                           runtime.node_netns)


@pytest.fixture
def etcd_nodes(lab_factory, tmp_path):
    lab = lab_factory(etcd_underlay())
    etcd = start_etcd_cluster(lab, list(ETCD_HOSTS), str(tmp_path / "etcd"), client_host="sw")
    etcd.wait_healthy()
    made = EtcdNodes(lab, tmp_path, etcd)
    yield made
    made.remove_pods()
    etcd.close()


def start_pod(nodes: EtcdNodes, node: str, tag: str) -> tuple[str, str, EchoServer]:
    path = nodes.pod(tag)
    address = address_of(nodes.runtime(node).add(f"ctr-{tag}", path))
    return path, address, EchoServer(path, address)


def talks(a: tuple, b: tuple) -> bool:
    return tcp_echo(a[0], b[1]) == b"hello dcnet"


def test_agents_on_etcd_survive_member_loss_node_death_and_a_full_outage(etcd_nodes):
    nodes = etcd_nodes
    for node in ("n1", "n2", "n3"):
        nodes.start_agent(node)
    wait_until(nodes.routes_converged, "routes between n1, n2 and n3")
    pods = {node: start_pod(nodes, node, f"{node}a") for node in ("n1", "n2", "n3")}
    assert talks(pods["n1"], pods["n2"]) and talks(pods["n1"], pods["n3"])
    assert talks(pods["n3"], pods["n2"])
    routes, keys = nodes.all_routes(), nodes.lease_keys()
    assert sorted(holder for _, holder in keys.values()) == ["n1", "n2", "n3"]

    # One etcd member dies (the agents' first endpoint): nothing changes.
    nodes.etcd.kill("etcd1")
    deadline = time.monotonic() + TTL + 2  # past a lease TTL: keep-alives went elsewhere
    while time.monotonic() < deadline:
        assert nodes.all_routes() == routes
        time.sleep(0.5)
    assert nodes.lease_keys() == keys  # not one lease re-created
    assert talks(pods["n1"], pods["n2"]) and talks(pods["n2"], pods["n3"])
    pods["n2b"] = start_pod(nodes, "n2", "n2b")
    assert talks(pods["n2b"], pods["n3"])
    assert not any(nodes.node_state(n)["degraded"] for n in ("n1", "n2", "n3"))
    nodes.etcd.start("etcd1")
    nodes.etcd.wait_healthy()

    # A node dies without a word: its lease expires, every other node drops its route.
    n3_subnet = nodes.subnet("n3")
    nodes.kill_agent("n3")
    for node in ("n1", "n2"):
        wait_until(lambda n=node: n3_subnet not in nodes.routes(n),
                   f"{node} drops the dead node's route", timeout=TTL + MARGIN)
    assert nodes.all_routes() == {
        "n1": {k: v for k, v in routes["n1"].items() if k != n3_subnet},
        "n2": {k: v for k, v in routes["n2"].items() if k != n3_subnet}}
    assert nodes.lease_keys() == {k: v for k, v in keys.items() if v[1] != "n3"}

    # All of etcd down: routes kept, pods talk, a new pod starts, STATUS says degraded.
    routes = nodes.all_routes()
    nodes.etcd.stop_all()
    for node in ("n1", "n2"):
        wait_until(lambda n=node: nodes.node_state(n)["degraded"], f"{node} degraded")
    state = nodes.node_state("n1")["degraded"]
    assert state.startswith("etcd unreachable since ")
    status = nodes.status("n1")
    assert status.rc == 0, status.stdout
    assert f"degraded: {state}" in status.stderr
    assert talks(pods["n1"], pods["n2"]) and talks(pods["n2b"], pods["n1"])
    pods["n1b"] = start_pod(nodes, "n1", "n1b")
    assert talks(pods["n1b"], pods["n2"])
    time.sleep(2)  # a few degraded passes of every agent
    assert nodes.all_routes() == routes
    assert "degraded:" in nodes.agent_log("n1")

    # etcd returns: degraded clears, a node joining now gets routes everywhere.
    nodes.etcd.start_all()
    nodes.etcd.wait_healthy()
    for node in ("n1", "n2"):
        wait_until(lambda n=node: not nodes.node_state(n)["degraded"], f"{node} recovers")
    status = nodes.status("n1")
    assert status.rc == 0 and "degraded" not in status.stderr
    nodes.start_agent("n4")
    wait_until(nodes.routes_converged, "routes between n1, n2 and n4")
    assert set(nodes.routes("n1")) == {nodes.subnet("n2"), nodes.subnet("n4")}
    pods["n4"] = start_pod(nodes, "n4", "n4a")
    assert talks(pods["n4"], pods["n1b"]) and talks(pods["n2"], pods["n4"])
    for _, _, server in pods.values():
        server.close()


def block_etcd(nodes: EtcdNodes, node: str, on: bool) -> None:
    """Cut (or restore) a node's TCP to etcd's client port: connections are reset."""
    action = "-A" if on else "-D"
    nodes.lab.run(node, ["iptables", action, "OUTPUT", "-p", "tcp", "--dport", "2379",
                         "-j", "REJECT", "--reject-with", "tcp-reset"])


def test_a_node_cut_off_from_etcd_keeps_serving_and_gets_its_subnet_back(etcd_nodes):
    nodes = etcd_nodes
    for node in ("n1", "n2"):
        nodes.start_agent(node)
    wait_until(nodes.routes_converged, "routes between n1 and n2")
    n2_subnet = nodes.subnet("n2")
    pods = {"n1": start_pod(nodes, "n1", "n1a"), "n2": start_pod(nodes, "n2", "n2a")}
    assert talks(pods["n1"], pods["n2"])
    n2_routes = nodes.routes("n2")

    block_etcd(nodes, "n2", True)
    wait_until(lambda: nodes.node_state("n2")["degraded"], "n2 degraded")
    # n2's etcd lease expires: the others drop its route; n2 keeps its own routes.
    wait_until(lambda: n2_subnet not in nodes.routes("n1"), "n1 drops n2's route",
               timeout=TTL + MARGIN)
    assert nodes.routes("n2") == n2_routes
    # The agent restarts while cut off: it serves the subnet of its node file.
    nodes.stop_agent("n2")
    nodes.start_agent("n2")
    state = nodes.node_state("n2")
    assert state["subnet"] == n2_subnet and state["degraded"].startswith("etcd unreachable")
    assert nodes.status("n2").rc == 0
    pods["n2b"] = start_pod(nodes, "n2", "n2b")
    assert pods["n2b"][1].rsplit(".", 1)[0] == n2_subnet.rsplit(".", 1)[0]

    block_etcd(nodes, "n2", False)
    wait_until(lambda: nodes.routes("n1").get(n2_subnet) == "192.168.100.2",
               "n2 re-claims its subnet and n1 routes to it again", timeout=TTL + MARGIN)
    wait_until(lambda: not nodes.node_state("n2")["degraded"], "n2 recovers")
    assert nodes.subnet("n2") == n2_subnet
    assert [holder for _, holder in nodes.lease_keys().values()].count("n2") == 1
    assert talks(pods["n1"], pods["n2"]) and talks(pods["n2b"], pods["n1"])
    assert "claimed this node's previous subnet" in nodes.agent_log("n2")
    for _, _, server in pods.values():
        server.close()

    # A clean stop keeps the lease (a restart would adopt it); leave gives it back.
    nodes.stop_agent("n2")
    assert [holder for _, holder in nodes.lease_keys().values()].count("n2") == 1
    left = nodes.agent_cli("n2", "leave", "--store", nodes.url)
    assert left.returncode == 0 and f"released {n2_subnet}" in left.stdout, left.stderr
    assert "n2" not in [holder for _, holder in nodes.lease_keys().values()]
    wait_until(lambda: n2_subnet not in nodes.routes("n1"), "n1 drops the leaver's route")
