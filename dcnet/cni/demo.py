"""The CNI steps of ``dcnet-demo``: host-gw pods talking across nodes, then a MACVLAN pod
that gets its address from the lab's DHCP server.

host-gw: its own small lab (two node namespaces on an underlay bridge), the ``dcnet``
launcher installed into a temporary CNI bin directory, ``dcnet-agent`` on each node, one
pod namespace per node made through the real binary (libcni-style exec), addresses and
routes shown, a TCP exchange between the pods across the nodes, then DEL.

macvlan: a node and a dnsmasq server on one segment (``dcnet.cni.dhcplab``), the agent
with a host shim, one pod whose address comes from DHCP (shown in the server's lease
file), the node reaching its pod through the shim, then DEL releasing the lease.
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

from dcnet.cni.install import install
from dcnet.cni.invoke import CniRuntime
from dcnet.lab.builder import Lab
from dcnet.sysio import netns

NODES = ("node1", "node2")
PORT = 7000


def _topology() -> dict:
    return {
        "hosts": [*NODES, "sw"],
        "bridges": [{"name": "br0", "host": "sw"}],
        "links": [{"a": {"host": node, "ifname": "eth0",
                         "addresses": [f"192.168.150.{i + 1}/24"]},
                   "b": {"host": "sw", "ifname": f"p-{node}", "bridge": "br0"}}
                  for i, node in enumerate(NODES)],
    }


def _conflist(root: str, node: str) -> dict:
    return {"cniVersion": "1.1.0", "name": "demo",
            "plugins": [{"type": "dcnet", "mode": "host-gw", "clusterCIDR": "10.240.0.0/16",
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
    _demo_hostgw(report)
    _demo_macvlan(report)


def _demo_macvlan(report) -> None:
    from pathlib import Path

    from dcnet.cni.dhcplab import DhcpLab, topology

    report.section("CNI macvlan: a pod on the underlay with its address from DHCP")
    root = Path(tempfile.mkdtemp(prefix="dcnet-cni-demo-mv-"))
    try:
        with Lab(topology(("node1",))) as mv_lab:
            made = DhcpLab(mv_lab, root, nodes=("node1",))
            try:
                _run_macvlan(made, report)
            finally:
                made.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _run_macvlan(made, report) -> None:
    made.start_dnsmasq(t1=None, t2=None)
    made.start_agent("node1", hostShim=True)
    report.check(True, "dnsmasq on the segment; dcnet-agent with a host shim on node1")
    runtime = made.runtime("node1")
    path = made.pod("web")
    result = runtime.add("demo-web", path,
                         args="IgnoreUnknown=1;K8S_POD_NAMESPACE=demo;K8S_POD_NAME=web")
    address = result["ips"][0]["address"].split("/")[0]
    lease = made.server_leases().get(address, {})
    report.check(bool(lease), f"pod got {result['ips'][0]['address']} by DHCP (server "
                              f"lease for {lease.get('hostname')}, {lease.get('mac')})")
    ping = made.lab.run("node1", ["ping", "-c", "1", "-W", "2", address], check=False)
    report.check(ping.returncode == 0, f"node1 reaches its macvlan pod {address} through "
                                       "the host shim")
    runtime.delete("demo-web", path)
    report.check(address not in made.server_leases(),
                 "DEL released the lease (gone from the server's lease file)")


def _demo_hostgw(report) -> None:
    report.section("CNI host-gw: two nodes, one pod each, through the dcnet binary")
    root = tempfile.mkdtemp(prefix="dcnet-cni-demo-")
    pods: list[str] = []
    try:
        with Lab(_topology()) as cni_lab:
            _run(cni_lab, root, pods, report)
            for name in pods:
                netns.remove(name)
    finally:
        for name in pods:
            if netns.exists(name):
                netns.remove(name)
        shutil.rmtree(root, ignore_errors=True)


def _run(cni_lab: Lab, root: str, pods: list[str], report) -> None:
    bin_dir = install(f"{root}/bin").rsplit("/", 1)[0]
    agent = os.path.join(os.path.dirname(sys.executable), "dcnet-agent")
    for node in NODES:
        path = f"{root}/{node}.conflist"
        with open(path, "w") as handle:
            json.dump(_conflist(root, node), handle)
        cni_lab.start(node, [agent, "run", "--conf", path, "--node", node,
                             "--iface", "eth0"], name=f"agent-{node}")
    ready = _wait(lambda: all(os.path.exists(f"{root}/run-{n}/demo/node.json")
                              for n in NODES))
    report.check(ready, "dcnet-agent took a subnet on each node")
    if not ready:
        return
    results = {}
    for node in NODES:
        pod = f"{cni_lab.prefix}-pod-{node}"
        netns.create(pod)
        pods.append(pod)
        runtime = CniRuntime(_conflist(root, node), [bin_dir], cni_lab.netns(node))
        result = runtime.add(f"demo-{node}", f"/run/netns/{pod}")
        results[node] = (runtime, pod, result["ips"][0]["address"].split("/")[0])
        report.check(True, f"{node}: pod {pod} got {result['ips'][0]['address']} "
                           f"(gateway {result['ips'][0]['gateway']})")

    def routed() -> bool:
        return all(cni_lab.run(n, ["ip", "route", "show", "proto", "217"]).stdout.strip()
                   for n in NODES)
    report.check(_wait(routed), "agents installed host-gw routes")
    for node in NODES:
        for line in cni_lab.run(node, ["ip", "route", "show", "proto", "217"]).stdout.split(
                "\n"):
            if line:
                print(f"    {node}: {line}")
    _, server_pod, server_ip = results["node2"]
    listener = netns.run_in(server_pod, socket.create_server, (server_ip, PORT))
    thread = threading.Thread(target=_echo_once, args=(listener,), daemon=True)
    thread.start()
    _, client_pod, client_ip = results["node1"]
    answer = netns.run_in(client_pod, _talk, server_ip)
    listener.close()
    report.check(answer == b"hello across nodes",
                 f"TCP {client_ip} (node1) -> {server_ip}:{PORT} (node2): {answer!r}")
    for node, (runtime, pod, _) in results.items():
        runtime.delete(f"demo-{node}", f"/run/netns/{pod}")
    report.check(True, "pods deleted (DEL) on both nodes")
