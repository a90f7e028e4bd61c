"""Netns tests of the installed shim with the real agent: which path serves, and that
both paths answer the same.

One node namespace with a host-gw ``dcnet-agent`` serving the shim on a private exec
directory; ``dcnet-python`` is wrapped so every fallback leaves a line in a marker file.
Checked: ADD/CHECK/DEL and 20 concurrent ADDs served by the agent (no fallback); bad
input answered byte for byte as ``dcnet-python`` answers it; agent stopped (socket gone)
and SIGKILLed (stale socket): DEL succeeds, STATUS says 50, ADD says 11, all through the
fallback, and a restarted agent serves again; an agent killed mid-ADD (a stand-in that
reads the request and SIGKILLs itself): the fallback completes the ADD with the same
input; a peer from another namespace is declined.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from dcnet.cni import execd
from dcnet.cni.install import install, installed_kind
from dcnet.lab.builder import Lab
from dcnet.lab.cni_invoke import CniRuntime, PluginError, exec_plugin
from dcnet.sysio import netns

pytestmark = pytest.mark.netns

AGENT = os.path.join(os.path.dirname(sys.executable), "dcnet-agent")


def wait_until(predicate, what: str, timeout: float = 30.0):
    """Poll until predicate() is truthy (a readiness wait, not a timing assertion)."""
    import time

    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.05)
    return value


class Node:
    def __init__(self, lab: Lab, root: Path):
        self.lab, self.root = lab, root
        self.exec_dir = str(root / "exec")
        self.bin = str(root / "bin")
        self.plugin = install(self.bin, client="c", exec_dir=self.exec_dir)
        assert installed_kind(self.plugin) == "c"
        self.real = os.path.join(self.bin, "dcnet-python.real")
        os.replace(os.path.join(self.bin, "dcnet-python"), self.real)
        self.marker = root / "fallbacks"
        self.marker.write_text("")
        wrapper = os.path.join(self.bin, "dcnet-python")
        with open(wrapper, "w") as handle:
            handle.write(f"#!/bin/sh\necho \"$CNI_COMMAND\" >> {self.marker}\n"
                         f"exec {self.real}\n")
        os.chmod(wrapper, 0o755)
        self.conf = {"cniVersion": "1.1.0", "name": "shimnet", "type": "dcnet",
                     "clusterCIDR": "10.203.0.0/16", "runDir": str(root / "run"),
                     "dataDir": str(root / "data"),
                     "store": {"type": "file", "path": str(root / "store")}}
        (root / "net.conf").write_text(json.dumps(self.conf))
        self.socket = execd.socket_path(self.exec_dir,
                                        netns.identity(lab.netns("n1"))[1])
        self.starts = 0
        self.agent = None
        self.pods: list[str] = []

    def start_agent(self, *extra: str) -> None:
        self.starts += 1
        self.agent = self.lab.start("n1", [AGENT, "run", "--conf", str(self.root / "net.conf"),
                                           "--node", "n1", "--node-ip", "192.0.2.1",
                                           "--exec-dir", self.exec_dir, *extra],
                                    name=f"agent-{self.starts}")
        node_file = self.root / "run" / "shimnet" / "node.json"

        def ready():
            assert self.agent.poll() is None, "agent exited"
            try:
                pid = json.loads(node_file.read_text())["agentPid"]
            except (FileNotFoundError, ValueError):
                return False
            return pid == self.agent.pid and ("--no-serve-cni" in extra
                                              or os.path.exists(self.socket))
        wait_until(ready, "the agent")

    def runtime(self) -> CniRuntime:
        return CniRuntime(self.conf, [self.bin], self.lab.netns("n1"))

    def fallbacks(self) -> list[str]:
        return self.marker.read_text().split()

    def pod(self, name: str) -> str:
        full = f"{self.lab.prefix}-{name}"
        netns.create(full)
        self.pods.append(full)
        return f"/run/netns/{full}"

    def execute(self, path: str, env: dict, stdin: str):
        return exec_plugin(path, env, stdin, self.lab.netns("n1"))


@pytest.fixture
def node(lab_factory, tmp_path):
    if os.geteuid() != 0:
        pytest.skip("netns test: needs root")
    made = Node(lab_factory({"hosts": ["n1"]}), tmp_path)
    yield made
    for name in made.pods:
        netns.remove(name)
    if made.agent is not None and made.agent.poll() is None:
        made.agent.terminate()
        made.agent.wait(timeout=10)
    if os.path.exists(made.socket):
        os.unlink(made.socket)


def pod_has_address(path: str, address: str) -> bool:
    import subprocess

    out = subprocess.run(["ip", "-n", path.rsplit("/", 1)[1], "-4", "-j", "addr"],
                         capture_output=True, text=True, check=True).stdout
    return any(a["local"] == address for link in json.loads(out)
               for a in link.get("addr_info", []))


def test_agent_serves_add_check_del_and_concurrent_adds(node):
    node.start_agent()
    rt = node.runtime()
    pod = node.pod("p0")
    result = rt.add("c0", pod)
    address = result["ips"][0]["address"].split("/")[0]
    assert pod_has_address(pod, address)
    rt.check("c0", pod)
    rt.status()
    rt.delete("c0", pod)
    rt.delete("c0", pod)
    pods = [node.pod(f"q{i}") for i in range(20)]
    with ThreadPoolExecutor(max_workers=20) as pool:
        results = list(pool.map(lambda i: rt.add(f"k{i}", pods[i]), range(20)))
    addresses = {r["ips"][0]["address"] for r in results}
    assert len(addresses) == 20
    for i in range(20):
        rt.delete(f"k{i}", pods[i])
    assert node.fallbacks() == []  # every call above was served by the agent


BAD_INPUTS = [
    ({"CNI_COMMAND": "ADD"}, "{}"),
    ({"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c1", "CNI_NETNS": "/run/netns/none",
      "CNI_IFNAME": "eth0", "CNI_PATH": "/x"}, "{not json"),
    ({"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c1", "CNI_NETNS": "/run/netns/none",
      "CNI_IFNAME": "eth0", "CNI_PATH": "/x"}, None),  # valid conf, netns missing: 3
    ({"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "bad/id", "CNI_NETNS": "/x",
      "CNI_IFNAME": "eth0", "CNI_PATH": "/x"}, None),
    ({"CNI_COMMAND": "DEL", "CNI_CONTAINERID": "c1", "CNI_IFNAME": "eth0", "CNI_PATH": "/x",
      "CNI_ARGS": "FOO=1"}, None),
    ({"CNI_COMMAND": "CHECK", "CNI_CONTAINERID": "c1", "CNI_NETNS": "/x",
      "CNI_IFNAME": "eth0", "CNI_PATH": "/x"}, "version:0.3.1"),
    ({"CNI_COMMAND": "VERSION"}, ""),
    ({}, ""),
    ({"CNI_COMMAND": "STATUS", "CNI_PATH": "/x"}, "mode:bogus"),
]


def test_bad_input_answered_byte_for_byte_as_the_python_plugin(node):
    node.start_agent()
    for env, stdin in BAD_INPUTS:
        conf = dict(node.conf)
        if stdin and stdin.startswith("version:"):
            conf["cniVersion"] = stdin.split(":", 1)[1]
            stdin = None
        elif stdin and stdin.startswith("mode:"):
            conf["mode"] = stdin.split(":", 1)[1]
            stdin = None
        text = json.dumps(conf) if stdin is None else stdin
        served = node.execute(node.plugin, env, text)
        direct = node.execute(node.real, env, text)
        assert (served.rc, served.stdout, served.stderr) == (
            direct.rc, direct.stdout, direct.stderr), env
    assert node.fallbacks() == []


def test_agent_down_every_command_falls_back(node):
    node.start_agent()
    rt = node.runtime()
    pod = node.pod("p1")
    rt.add("c1", pod)
    node.agent.terminate()
    node.agent.wait(timeout=10)
    assert not os.path.exists(node.socket)
    with pytest.raises(PluginError) as status:
        rt.status()
    assert status.value.code == 50 and "not running" in status.value.msg
    with pytest.raises(PluginError) as add:
        rt.add("c2", node.pod("p2"))
    assert add.value.code == 11
    rt.delete("c1", pod)  # DEL never fails for want of the agent
    rt.delete("c1", pod)
    assert not list((node.root / "data" / "shimnet").glob("10.*"))
    assert node.fallbacks() == ["STATUS", "ADD", "DEL", "DEL"]
    node.start_agent()  # back: served again
    rt.add("c3", pod)
    rt.delete("c3", pod)
    assert node.fallbacks() == ["STATUS", "ADD", "DEL", "DEL"]


def test_sigkilled_agent_leaves_a_stale_socket_that_is_not_used(node):
    node.start_agent()
    rt = node.runtime()
    pod = node.pod("p3")
    rt.add("c4", pod)
    node.agent.send_signal(signal.SIGKILL)
    node.agent.wait(timeout=10)
    assert os.path.exists(node.socket)  # nobody removed it
    rt.delete("c4", pod)
    assert node.fallbacks() == ["DEL"]
    node.start_agent()  # the new agent replaces the stale socket
    rt.add("c5", pod)
    rt.delete("c5", pod)
    assert node.fallbacks() == ["DEL"]


STAND_IN = textwrap.dedent("""
    import os, signal, socket, sys
    from dcnet.cni import execd
    path, seen = sys.argv[1], sys.argv[2]
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(path)
    os.chmod(path, 0o600)
    sock.listen(1)
    conn, _ = sock.accept()
    request = execd.read_request(conn)
    with open(seen, "wb") as handle:
        handle.write(request)
    os.kill(os.getpid(), signal.SIGKILL)  # the agent dies holding the request
""")


def test_agent_killed_mid_add_fallback_completes_it(node):
    node.start_agent("--no-serve-cni")  # the real agent (node file), a stand-in serves
    seen = node.root / "seen"
    stand_in = node.lab.start("n1", [sys.executable, "-c", STAND_IN, node.socket, str(seen)],
                              name="stand-in")
    wait_until(lambda: os.path.exists(node.socket), "the stand-in's socket")
    rt = node.runtime()
    pod = node.pod("p4")
    result = rt.add("c6", pod, args="IgnoreUnknown=1;K8S_POD_NAME=web")
    assert stand_in.wait(timeout=10) == -signal.SIGKILL
    assert node.fallbacks() == ["ADD"]
    assert pod_has_address(pod, result["ips"][0]["address"].split("/")[0])
    env, stdin = execd.decode_request(seen.read_bytes())
    assert env == {k: v for k, v in rt.env("ADD", "c6", pod, "eth0",
                                           "IgnoreUnknown=1;K8S_POD_NAME=web").items()
                   if k.startswith("CNI_")}
    assert json.loads(stdin) == rt.plugin_conf(node.conf, None, None)
    os.unlink(node.socket)
    rt.delete("c6", pod)


def test_peer_from_another_namespace_is_declined(node):
    node.start_agent()
    sock = socket.socket(socket.AF_UNIX)  # this test process is not in n1's namespace
    with sock:
        sock.connect(node.socket)
        sock.sendall(execd.encode_request({"CNI_COMMAND": "VERSION"}, b""))
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    kind, _code, reason, _ = execd.decode_reply(data)
    assert kind == "F" and b"another network namespace" in reason
