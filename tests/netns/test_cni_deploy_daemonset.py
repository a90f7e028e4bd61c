"""Netns test: dcnet-agent run as deploy/kubernetes/dcnet-agent.yaml runs it (issue 13,
deployment).

The test reads the DaemonSet manifest and runs the agent container as a kubelet would on
the node: in the node's (host) network namespace (``hostNetwork``), in its own mount
namespace where the host's /run, /var/lib and /etc/cni are replaced by empty tmpfs
except exactly the manifest's hostPath volumes, bind-mounted at their mountPaths
(read-only where the manifest says so), with the capability bounding set the manifest's
``securityContext`` leaves and ``no_new_privs``, and the container's command. So the
manifest and the test cannot drift: a mount or a capability the agent needs but the
manifest lacks fails this test. The restart policy (``Always``): the agent is SIGKILLed
and started again the same way; pods made before keep working, CHECK and DEL them, new
pods come up. Pods are made through the installed shim, none through the fallback.

Paths are the manifest's real host paths (/run/dcnet, /var/lib/cni/networks, ...), so
the network has a name of its own and the store a directory of its own; the conflist is
the one the container's command names, /etc/cni/net.d/10-dcnet.conflist (skipped if the
host already has one).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal

import pytest
import yaml

from dcnet.lab.cni_invoke import CniRuntime
from tests.netns.test_cni_hostgw import (
    AGENT,
    MTU,
    REF_DIR,
    Cluster,
    EchoServer,
    address_of,
    tcp_echo,
    underlay,
    wait_until,
)
from tests.netns.test_cni_private_mount import _record_fallbacks

pytestmark = pytest.mark.netns

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CAP_NUMBERS = {"NET_ADMIN": 12, "NET_RAW": 13, "SYS_ADMIN": 21}  # linux/capability.h
MANIFEST = os.path.join(ROOT, "deploy", "kubernetes", "dcnet-agent.yaml")


def daemonset() -> dict:
    """The agent container and its pod spec, from the manifest."""
    with open(MANIFEST) as handle:
        doc = yaml.safe_load(handle)
    assert doc["kind"] == "DaemonSet"
    spec = doc["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    return {"spec": spec, "container": container}


def host_mounts(ds: dict) -> list[tuple[str, str, bool]]:
    """(hostPath, mountPath, readOnly) of each of the container's volume mounts."""
    volumes = {v["name"]: v for v in ds["spec"]["volumes"]}
    mounts = []
    for mount in ds["container"]["volumeMounts"]:
        volume = volumes[mount["name"]]
        assert set(volume) == {"name", "hostPath"}, "only hostPath volumes are emulated"
        mounts.append((volume["hostPath"]["path"], mount["mountPath"],
                       bool(mount.get("readOnly"))))
    return mounts


def masks(mounts) -> list[str]:
    """The directories hidden behind an empty tmpfs: each mountPath's parent, unless
    another mask already covers it (the container sees none of the host's files there)."""
    parents = sorted({os.path.dirname(m) for _, m, _ in mounts})
    kept: list[str] = []
    for path in parents:
        if not any(path == k or path.startswith(k + "/") for k in kept):
            kept.append(path)
    return kept


def bounding_set(ds: dict) -> str:
    caps = ds["container"]["securityContext"]["capabilities"]
    assert caps["drop"] == ["ALL"]
    return ",".join(["-all", *(f"+{c.lower()}" for c in caps["add"])])


def container_argv(ds: dict, stage: str, node: str) -> list[str]:
    """The container as a kubelet runs it, in a shell script under ``unshare --mount``."""
    container, spec = ds["container"], ds["spec"]
    assert spec["hostNetwork"] is True and spec["restartPolicy"] == "Always"
    mounts = host_mounts(ds)
    command = [part.replace("$(NODE_NAME)", node) for part in container["command"]]
    assert command[0] == "dcnet-agent"
    command[0] = AGENT  # the image's dcnet-agent: this tree's
    lines = ["set -e"]
    for index, (host, _, _) in enumerate(mounts):  # before the masks hide them
        lines += [f"mkdir -p {stage}/{index}", f"mount --bind {host} {stage}/{index}"]
    lines += [f"mount -t tmpfs dcnet-ds {m}" for m in masks(mounts)]
    for index, (_, inside, read_only) in enumerate(mounts):
        lines += [f"mkdir -p {inside}", f"mount --bind {stage}/{index} {inside}"]
        if read_only:
            lines.append(f"mount -o remount,bind,ro {inside}")
    security = container["securityContext"]
    setpriv = ["setpriv", "--bounding-set", bounding_set(ds)]
    if security.get("allowPrivilegeEscalation") is False:
        setpriv.append("--no-new-privs")
    lines.append("exec " + shlex.join([*setpriv, *command]))
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", "\n".join(lines)]


@pytest.fixture
def ds_node(lab_factory, tmp_path):
    if os.geteuid() != 0:
        pytest.skip("netns test: needs root")
    ds = daemonset()
    conf_path = ds["container"]["command"][ds["container"]["command"].index("--conf") + 1]
    if os.path.exists(conf_path):
        pytest.skip(f"{conf_path} exists on this host: not overwriting it")
    name = f"dsnet{os.getpid()}"
    store = f"/var/lib/dcnet/test-{name}"
    made = Cluster(lab_factory(underlay(("n1",))), tmp_path, nodes=("n1",))
    conf = {"cniVersion": "1.1.0", "name": name, "plugins": [
        {"type": "dcnet", "mode": "host-gw", "bridge": "dcnet0", "mtu": MTU,
         "clusterCIDR": "10.244.0.0/16", "subnetLen": 24,
         "store": {"type": "file", "path": store}}]}  # runDir, dataDir: the defaults
    for host, _, _ in host_mounts(ds):
        os.makedirs(host, exist_ok=True)  # type: DirectoryOrCreate
    with open(conf_path, "w") as handle:
        json.dump(conf, handle)
    made.ds, made.conf, made.name = ds, conf, name
    made.stage = str(tmp_path / "stage")
    try:
        yield made
    finally:
        made.remove_pods()
        for popen in list(made.agents.values()):
            if popen.poll() is None:
                os.killpg(popen.pid, signal.SIGTERM)
                popen.wait(timeout=10)
        os.unlink(conf_path)
        for path in (store, f"/run/dcnet/{name}", f"/var/lib/cni/networks/{name}"):
            shutil.rmtree(path, ignore_errors=True)


def start_container(node: Cluster) -> dict:
    node.restarts += 1
    node.agents["n1"] = popen = node.lab.start(
        "n1", container_argv(node.ds, node.stage, "n1"), name=f"agent-n1-{node.restarts}")
    node_file = f"/run/dcnet/{node.name}/node.json"

    def ready():
        assert popen.poll() is None, f"agent exited: {node.agent_log('n1')}"
        try:
            with open(node_file) as handle:
                data = json.load(handle)
        except (FileNotFoundError, ValueError):
            return None
        return data if data["agentPid"] == popen.pid else None
    return wait_until(ready, "the DaemonSet agent")


def test_daemonset_agent_serves_pods_and_survives_restarts(ds_node):
    marker = _record_fallbacks(ds_node.bin_dir)
    start_container(ds_node)
    agent = ds_node.agents["n1"].pid
    root = f"/proc/{agent}/root"
    # its mount namespace is the manifest's: no /run/netns, the conflist read-only
    assert not os.path.exists(f"{root}/run/netns")
    with open(f"/proc/{agent}/status") as handle:
        caps = dict(line.split(":\t", 1) for line in handle if line.startswith("Cap"))
    wanted = sum(1 << CAP_NUMBERS[c] for c in ds_node.ds["container"]["securityContext"]
                 ["capabilities"]["add"])
    assert int(caps["CapBnd"], 16) == wanted and int(caps["CapEff"], 16) == wanted
    runtime = CniRuntime(ds_node.conf, [ds_node.bin_dir, REF_DIR], ds_node.lab.netns("n1"))
    first = ds_node.pod("ds-a")
    a_ip = address_of(runtime.add("ds-a", first))
    echo = EchoServer(first, a_ip)
    try:
        # restartPolicy Always: the container dies, kubelet starts it again
        os.killpg(ds_node.agents["n1"].pid, signal.SIGKILL)
        ds_node.agents["n1"].wait(timeout=10)
        start_container(ds_node)
        second = ds_node.pod("ds-b")
        b_ip = address_of(runtime.add("ds-b", second))
        assert b_ip != a_ip
        assert tcp_echo(second, a_ip) == b"hello dcnet"  # the old pod kept working
        runtime.check("ds-a", first)
        runtime.check("ds-b", second)
        runtime.delete("ds-a", first)
        runtime.delete("ds-b", second)
        runtime.status()
    finally:
        echo.close()
    with open(marker) as handle:
        assert handle.read() == "", ds_node.agent_log("n1")  # none by the fallback
    left = os.listdir(f"/var/lib/cni/networks/{ds_node.name}")
    assert [p for p in left if p[0].isdigit()] == []  # no reservation left
