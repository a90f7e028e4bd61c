"""The CNI steps of ``dcnet-demo``: dual-stack host-gw pods talking across nodes, then a
MACVLAN pod that gets its address from the lab's DHCP server.

host-gw: its own small lab (two node namespaces on an underlay bridge, each with an IPv4
and an IPv6 address), the ``dcnet`` launcher installed into a temporary CNI bin directory,
``dcnet-agent`` on each node, a dual-stack cluster range (an IPv4 and an IPv6 subnet per
node), one pod namespace per node made through the real binary (libcni-style exec),
addresses and routes of both families shown, a TCP exchange between the pods across the
nodes over IPv4 and over IPv6, then DEL.

macvlan: a node and a dnsmasq server on one segment (``dcnet.lab.cni_dhcp``), the agent
with a host shim and ``ipv6: slaac``, one pod whose IPv4 address comes from DHCP (shown in
the server's lease file) and whose IPv6 address from the router advertisements, the node
reaching its pod over both through the shim, then DEL releasing the lease.

With ``dcnet-demo --store etcd`` the host-gw nodes keep their subnet leases in a
three-member TLS etcd cluster on the same underlay instead of a shared directory; the
demo shows the lease keys in etcd, stops the etcd member the agents use, and starts one
more pod with all of etcd down (degraded mode).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
import tempfile
import threading
import time

from dcnet.cni import nodestate
from dcnet.cni.install import install
from dcnet.lab.builder import Lab
from dcnet.lab.cni_invoke import CniRuntime
from dcnet.sysio import netns

NODES = ("node1", "node2")
ETCD_HOSTS = ("etcd1", "etcd2", "etcd3")
PORT = 7000
CLUSTER = ["10.240.0.0/16", "fd00:240::/48"]      # dual stack: a subnet per family per node


def _topology(with_etcd: bool = False) -> dict:
    hosts = [*NODES, *(ETCD_HOSTS if with_etcd else ())]
    return {
        "hosts": [*hosts, "sw"],
        "bridges": [{"name": "br0", "host": "sw"}],
        "links": [{"a": {"host": host, "ifname": "eth0",
                         "addresses": [f"192.168.150.{i + 1}/24", f"fd00:150::{i + 1}/64"]},
                   "b": {"host": "sw", "ifname": f"p-{host}", "bridge": "br0"}}
                  for i, host in enumerate(hosts)],
    }


def _conflist(root: str, node: str) -> dict:
    return {"cniVersion": "1.1.0", "name": "demo",
            "plugins": [{"type": "dcnet", "mode": "host-gw", "clusterCIDR": CLUSTER,
                         "mtu": 1450, "runDir": f"{root}/run-{node}",
                         "dataDir": f"{root}/data-{node}",
                         "store": {"type": "file", "path": f"{root}/store"}}]}


def _wait(predicate, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def _echo_once(sock: socket.socket) -> None:
    conn, _ = sock.accept()
    with conn:
        conn.sendall(conn.recv(64))


def _talk(address: str) -> bytes:
    try:
        with socket.create_connection((address, PORT), timeout=3) as conn:
            conn.sendall(b"hello across nodes")
            return conn.recv(64)
    except OSError as exc:
        return str(exc).encode()


def demo(model, lab, report) -> None:
    """The demo hook: ``model`` and ``lab`` (the ELB lab) are not needed here."""
    _demo_hostgw(report, getattr(report, "store", "file"))
    _demo_macvlan(report)


def _demo_macvlan(report) -> None:
    from pathlib import Path

    from dcnet.lab.cni_dhcp import DhcpLab, topology

    report.section("CNI macvlan: a pod on the underlay, IPv4 by DHCP and IPv6 by SLAAC")
    root = Path(tempfile.mkdtemp(prefix="dcnet-cni-demo-mv-"))
    try:
        with Lab(topology(("node1",), ipv6=True)) as mv_lab:
            made = DhcpLab(mv_lab, root, nodes=("node1",))
            try:
                _run_macvlan(made, report)
            finally:
                made.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _run_macvlan(made, report) -> None:
    made.start_dnsmasq(t1=None, t2=None, ra=True)
    made.start_agent("node1", hostShim=True, ipv6="slaac")
    report.check(True, "dnsmasq on the segment (DHCPv4 and router advertisements); "
                       "dcnet-agent with a host shim on node1")
    runtime = made.runtime("node1", hostShim=True, ipv6="slaac")
    path = made.pod("web")
    result = runtime.add("demo-web", path,
                         args="IgnoreUnknown=1;K8S_POD_NAMESPACE=demo;K8S_POD_NAME=web")
    ips = {":" in ip["address"]: ip for ip in result["ips"]}
    address = ips[False]["address"].split("/")[0]
    lease = made.server_leases().get(address, {})
    report.check(bool(lease), f"pod got {ips[False]['address']} by DHCP (server "
                              f"lease for {lease.get('hostname')}, {lease.get('mac')})")
    six = ips.get(True)
    report.check(six is not None, "pod got " + (
        f"{six['address']} by SLAAC (gateway {six['gateway']}, the router's link-local "
        "address)" if six else "no IPv6 address"))
    for target in (address, *([six["address"].split("/")[0]] if six else [])):
        ping = made.lab.run("node1", ["ping", "-c", "1", "-W", "2", target], check=False)
        report.check(ping.returncode == 0, f"node1 reaches its macvlan pod {target} "
                                           "through the host shim")
    runtime.delete("demo-web", path)
    report.check(address not in made.server_leases(),
                 "DEL released the lease (gone from the server's lease file)")


def _demo_hostgw(report, store: str = "file") -> None:
    where = "etcd" if store == "etcd" else "a shared directory"
    report.section(f"CNI host-gw: two nodes, one pod each, through the dcnet binary "
                   f"(subnet leases in {where})")
    root = tempfile.mkdtemp(prefix="dcnet-cni-demo-")
    pods: list[str] = []
    try:
        with Lab(_topology(with_etcd=store == "etcd")) as cni_lab:
            cluster = None
            if store == "etcd":
                from dcnet.lab.etcd_lab import start_etcd_cluster

                cluster = start_etcd_cluster(cni_lab, list(ETCD_HOSTS), f"{root}/etcd",
                                             client_host="node1")
                cluster.wait_healthy()
                report.check(True, f"etcd cluster (TLS) up: {', '.join(cluster.endpoints)}")
            _run(cni_lab, root, pods, report, cluster)
            for name in pods:
                netns.remove(name)
    finally:
        for name in pods:
            if netns.exists(name):
                netns.remove(name)
        shutil.rmtree(root, ignore_errors=True)


def _run(cni_lab: Lab, root: str, pods: list[str], report, cluster=None) -> None:
    bin_dir = install(f"{root}/bin").rsplit("/", 1)[0]
    agent = os.path.join(os.path.dirname(sys.executable), "dcnet-agent")
    store_args = ["--store", cluster.url(), "--lease-ttl", "10"] if cluster else []
    for node in NODES:
        path = f"{root}/{node}.conflist"
        with open(path, "w") as handle:
            json.dump(_conflist(root, node), handle)
        cni_lab.start(node, [agent, "run", "--conf", path, "--node", node,
                             "--iface", "eth0", *store_args], name=f"agent-{node}")
    ready = _wait(lambda: all(os.path.exists(f"{root}/run-{n}/demo/node.json")
                              for n in NODES))
    report.check(ready, "dcnet-agent took a subnet on each node")
    if not ready:
        return
    if cluster is not None:
        _show_etcd_leases(cluster, report)
    results = {}
    for node in NODES:
        pod = f"{cni_lab.prefix}-pod-{node}"
        netns.create(pod)
        pods.append(pod)
        runtime = CniRuntime(_conflist(root, node), [bin_dir], cni_lab.netns(node))
        result = runtime.add(f"demo-{node}", f"/run/netns/{pod}")
        by_family = {":" in ip["address"]: ip["address"].split("/")[0]
                     for ip in result["ips"]}
        results[node] = (runtime, pod, by_family)
        report.check(len(by_family) == 2, f"{node}: pod {pod} got " + " and ".join(
            f"{ip['address']} (gateway {ip['gateway']})" for ip in result["ips"]))

    def routed() -> bool:
        return all(cni_lab.run(n, ["ip", family, "route", "show", "proto", "217"])
                   .stdout.strip() for n in NODES for family in ("-4", "-6"))
    report.check(_wait(routed), "agents installed host-gw routes for both families")
    for node in NODES:
        for family in ("-4", "-6"):
            for line in cni_lab.run(node, ["ip", family, "route", "show", "proto",
                                           "217"]).stdout.split("\n"):
                if line:
                    print(f"    {node}: {line}")
    for six in (False, True):
        _, server_pod, server_ips = results["node2"]
        _, client_pod, client_ips = results["node1"]
        if six not in server_ips or six not in client_ips:
            continue
        server_ip, client_ip = server_ips[six], client_ips[six]
        family = socket.AF_INET6 if six else socket.AF_INET
        listener = netns.run_in(server_pod, socket.create_server, (server_ip, PORT),
                                family=family)
        thread = threading.Thread(target=_echo_once, args=(listener,), daemon=True)
        thread.start()
        answer = netns.run_in(client_pod, _talk, server_ip)
        listener.close()
        shown = f"[{server_ip}]" if six else server_ip
        report.check(answer == b"hello across nodes",
                     f"TCP {client_ip} (node1) -> {shown}:{PORT} (node2): {answer!r}")
    if cluster is not None:
        _etcd_outage(cni_lab, root, bin_dir, pods, cluster, report)
    for node, (runtime, pod, _) in results.items():
        runtime.delete(f"demo-{node}", f"/run/netns/{pod}")
    report.check(True, "pods deleted (DEL) on both nodes")


def _show_etcd_leases(cluster, report) -> None:
    kvs, revision = cluster.client().get_prefix("/cni/demo/leases/")
    for kv in kvs:
        print(f"    etcd {kv.key} = {kv.value.decode()} (etcd lease {kv.lease:x})")
    report.check(len(kvs) == len(NODES), f"{len(kvs)} node subnet leases in etcd at "
                                          f"revision {revision}, each on a kept-alive lease")


def _degraded(root: str, node: str) -> str | None:
    """The agent's degraded reason, read as STATUS reads the node file (None: healthy)."""
    return nodestate.read(f"{root}/run-{node}/demo/node.json").degraded


def _etcd_outage(cni_lab: Lab, root: str, bin_dir: str, pods: list[str], cluster,
                 report) -> None:
    def routes() -> dict[str, str]:
        return {n: cni_lab.run(n, ["ip", "route", "show", "proto", "217"]).stdout
                for n in NODES}

    before = routes()
    cluster.stop_all()
    degraded = _wait(lambda: all(_degraded(root, n) for n in NODES))
    report.check(degraded, f"all of etcd stopped: both agents report "
                           f"{_degraded(root, NODES[0])!r} in the node file STATUS reads")
    report.check(routes() == before, "host-gw routes unchanged while etcd is down")
    pod = f"{cni_lab.prefix}-pod-late"
    netns.create(pod)
    pods.append(pod)
    runtime = CniRuntime(_conflist(root, "node1"), [bin_dir], cni_lab.netns("node1"))
    result = runtime.add("demo-late", f"/run/netns/{pod}")
    report.check(bool(result.get("ips")), f"a new pod on node1 still starts with etcd down: "
                                          f"{result['ips'][0]['address']}")
    runtime.delete("demo-late", f"/run/netns/{pod}")
    cluster.start_all()
    cluster.wait_healthy()
    recovered = _wait(lambda: not any(_degraded(root, n) for n in NODES), timeout=40.0)
    report.check(recovered and routes() == before,
                 "etcd back: agents converge, no longer degraded, routes as before")
