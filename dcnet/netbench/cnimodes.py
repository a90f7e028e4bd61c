"""CNI modes: pods made by the dcnet plugin itself and by the reference plugins.

Every CNI mode uses the same topology shape (two nodes whose uplinks are ports of one
switch bridge, one empty pod namespace per node, see
:func:`dcnet.netbench.topologies.cni_nodes`; the dcnet MACVLAN mode adds a DHCP host) and execs the
plugins the way kubelet's libcni does (:class:`dcnet.lab.cni_invoke.CniRuntime`), so the
traffic crosses exactly what the plugin built:

- ``cni-dcnet-host-gw``: the installed ``dcnet`` binary with ``dcnet-agent`` on each node
  (node subnets from a file store, host-gw routes by the agents);
- ``cni-ref-bridge``: Debian's ``bridge`` + ``host-local`` (/usr/lib/cni), with the
  host-gw node routes a flannel-style daemon would add;
- ``cni-ref-macvlan``: Debian's ``macvlan`` (bridge mode on each node's uplink) +
  ``host-local`` with disjoint ranges of the underlay subnet;
- ``cni-dcnet-macvlan``: the dcnet binary in MACVLAN mode, its ``dcnet-agent`` per node
  taking addresses by DHCP from dnsmasq on the underlay (the DHCP lab of
  :mod:`dcnet.lab.cni_dhcp`); only when the plugin in this build has that mode.

Pods are deleted (CNI DEL) before the lab goes, which takes the nodes' state with it.
Every CNI mode can be dual-stack (``build(..., ipv6=True)``):
host-local gets an IPv6 range beside the IPv4 one (the mode's ULA pod subnet for the
bridge, a slice of the IPv6 underlay for macvlan), the nodes IPv6 routes and forwarding;
dcnet host-gw gets a second ``clusterCIDR`` (``fd00:6e62:66::/48``, /64 per node) and its
agents route both families (only when this build's plugin accepts that:
:func:`dcnet_ipv6_unsupported`). dcnet's MACVLAN mode is dual-stack too: the underlay
gets an IPv6 /64, dnsmasq announces it in router advertisements and the plugin's pods
take their IPv6 address by SLAAC (``ipv6: slaac``).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from typing import Any

from dcnet.lab.builder import Lab
from dcnet.lab.cni_invoke import CniRuntime
from dcnet.netbench import topologies
from dcnet.netbench.buildcontext import BuildContext, lab_mode
from dcnet.netbench.live import LiveMode

REFERENCE_DIR = "/usr/lib/cni"
NODES = ("n1", "n2")
PODS = {"n1": "p1", "n2": "p2"}
OCTETS = {"cni-dcnet-host-gw": 66, "cni-ref-bridge": 67, "cni-ref-macvlan": 68,
          "cni-dcnet-macvlan": 70}
READY_TIMEOUT = 30.0


def dcnet_modes() -> tuple[str, ...]:
    from dcnet.cni.config import MODES

    return tuple(MODES)


def unavailable(name: str) -> str | None:
    if name.startswith("cni-ref-"):
        plugin = name.removeprefix("cni-ref-")
        for needed in (plugin, "host-local"):
            if not os.access(os.path.join(REFERENCE_DIR, needed), os.X_OK):
                return (f"reference plugin {REFERENCE_DIR}/{needed} is missing "
                        "(apt-get install -y containernetworking-plugins)")
        return None
    mode = name.removeprefix("cni-dcnet-")
    if mode not in dcnet_modes():
        return (f"the dcnet CNI plugin in this build has no {mode} mode "
                f"(modes: {', '.join(dcnet_modes())})")
    if mode == "macvlan" and shutil.which("dnsmasq") is None:
        return "dnsmasq (the underlay's DHCP server) is missing (apt-get install -y dnsmasq)"
    return None


def build(name: str, context: BuildContext, ipv6: bool = False) -> dict[str, LiveMode]:
    """Mode ``name``: its IPv4 LiveMode, and with ``ipv6`` (reference modes) its IPv6 one."""
    dual = {"cni-ref-bridge": _ref_bridge, "cni-ref-macvlan": _ref_macvlan,
            "cni-dcnet-host-gw": _dcnet_host_gw, "cni-dcnet-macvlan": _dcnet_macvlan}
    if name not in dual:
        raise ValueError(f"no CNI mode {name!r}")
    work = os.path.join(context.work_dir, name)
    os.makedirs(work, exist_ok=True)
    return dual[name](context, work, ipv6)


def _wait(predicate: Any, what: str, timeout: float = READY_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"gave up waiting for {what} after {timeout}s")
        time.sleep(0.05)


def _add_pods_dual(context: BuildContext, lab: Lab, runtimes: dict[str, CniRuntime],
                   name: str) -> dict[str, dict[str, str]]:
    """CNI ADD one pod per node (DEL registered); pod -> family -> its first address."""
    addresses = {}
    for node, runtime in runtimes.items():
        pod = PODS[node]
        path = f"/run/netns/{lab.netns(pod)}"
        container = f"netbench-{name}-{pod}"
        result = runtime.add(container, path)
        context.stack.callback(_delete_quietly, runtime, container, path)
        addresses[pod] = pod_addresses(result)
    return addresses


def pod_addresses(result: dict[str, Any]) -> dict[str, str]:
    """Family -> first address (no prefix length) of a CNI ADD result's ``ips``."""
    found: dict[str, str] = {}
    for entry in result.get("ips") or []:
        address = entry["address"].split("/")[0]
        found.setdefault("ipv6" if ":" in address else "ipv4", address)
    return found


def _delete_quietly(runtime: CniRuntime, container: str, path: str) -> None:
    try:
        runtime.delete(container, path)
    except Exception as exc:  # teardown goes on; the lab removes what DEL left
        sys.stderr.write(f"netbench: CNI DEL {container}: {exc}\n")


def _finish(name: str, context: BuildContext, lab: Lab, addresses: dict[str, str],
            family: str = "ipv4", **notes: Any) -> LiveMode:
    return lab_mode(name, context, lab, "p1", "p2", addresses["p2"],
                    [("p1", "eth0"), ("n1", "eth0"), ("n2", "eth0"), ("p2", "eth0")],
                    family=family, **notes)


def _finish_dual(name: str, context: BuildContext, lab: Lab,
                 addresses: dict[str, dict[str, str]], ipv6: bool,
                 **notes: Any) -> dict[str, LiveMode]:
    families = ("ipv4", "ipv6") if ipv6 else ("ipv4",)
    return {family: _finish(name, context, lab, {pod: found[family] for pod, found
                                                 in addresses.items()}, family, **notes)
            for family in families}


def dcnet_host_gw_conf(octet: int, work: str, node: str, ipv6: bool) -> dict[str, Any]:
    """The conflist of the dcnet host-gw mode on ``node`` (dual-stack with ``ipv6``)."""
    cidr: str | list[str] = f"10.{octet}.0.0/16"
    extra: dict[str, Any] = {}
    if ipv6:
        cidr = [cidr, f"{topologies.ULA}:{octet}::/48"]
        extra["subnetLenV6"] = 64
    return {"cniVersion": "1.1.0", "name": "nbnet", "plugins": [{
        "type": "dcnet", "mode": "host-gw", "clusterCIDR": cidr, "subnetLen": 24, **extra,
        "bridge": "dcnet0", "mtu": 1500, "runDir": f"{work}/run-{node}",
        "dataDir": f"{work}/data-{node}", "store": {"type": "file", "path": f"{work}/store"}}]}


def dcnet_ipv6_unsupported() -> str | None:
    """Why this build's dcnet plugin cannot run host-gw dual-stack, or None when it can."""
    from dcnet.cni.config import load_conf, pick_plugin

    try:
        load_conf(pick_plugin(dcnet_host_gw_conf(66, "/nonexistent", "n1", True)))
    except Exception as exc:  # the plugin's own refusal, whatever its type
        return f"IPv6 not supported by this mode yet: the dcnet plugin refuses it ({exc})"
    return None


def _dcnet_host_gw(context: BuildContext, work: str, ipv6: bool = False) -> dict[str, LiveMode]:
    from dcnet.cni.install import install

    octet = OCTETS["cni-dcnet-host-gw"]
    lab = context.lab(topologies.cni_nodes(octet, ipv6=ipv6))
    bin_dir = os.path.dirname(install(os.path.join(work, "bin")))
    agent = os.path.join(os.path.dirname(sys.executable), "dcnet-agent")
    runtimes = {}
    for node in NODES:
        conflist = dcnet_host_gw_conf(octet, work, node, ipv6)
        path = os.path.join(work, f"{node}.conflist")
        with open(path, "w") as handle:
            json.dump(conflist, handle)
        lab.start(node, [agent, "run", "--conf", path, "--node", node, "--iface", "eth0"],
                  name=f"agent-{node}", log_path=os.path.join(context.log_dir,
                                                              f"{lab.prefix}-agent-{node}.log"))
        runtimes[node] = CniRuntime(conflist, [bin_dir], lab.netns(node))
    families = [["ip", "route"]] + ([["ip", "-6", "route"]] if ipv6 else [])

    def ready() -> bool:
        return all(os.path.exists(f"{work}/run-{n}/nbnet/node.json") for n in NODES) and all(
            lab.run(n, [*ip, "show", "proto", "217"]).stdout.strip()
            for n in NODES for ip in families)

    _wait(ready, "dcnet-agent subnets and host-gw routes on both nodes")
    addresses = _add_pods_dual(context, lab, runtimes, "cni-dcnet-host-gw")
    return _finish_dual("cni-dcnet-host-gw", context, lab, addresses, ipv6,
                        plugin="dcnet host-gw", mtu=1500)


def _dcnet_macvlan(context: BuildContext, work: str, ipv6: bool = False) -> dict[str, LiveMode]:
    """dcnet's MACVLAN mode on the DHCP lab of :mod:`dcnet.lab.cni_dhcp` (the same switched
    underlay shape with a ``dhcp`` host running dnsmasq), plus this benchmark's two pods.
    With ``ipv6`` the underlay is dual-stack, dnsmasq also sends router advertisements of
    its /64 (SLAAC, no DHCPv6) and the plugin runs with ``ipv6: slaac``."""
    from pathlib import Path

    from dcnet.lab import cni_dhcp as dhcplab

    topology = dhcplab.topology(NODES, ipv6=ipv6)
    topology["hosts"] += list(PODS.values())
    lab = context.lab(topology)
    dhcp = dhcplab.DhcpLab(lab, Path(work), NODES)
    dhcp.start_dnsmasq(lease="1h", t1=None, t2=None, fresh=True, ra=ipv6)
    extra = {"ipv6": "slaac"} if ipv6 else {}
    runtimes = {}
    for node in NODES:
        dhcp.start_agent(node, **extra)
        runtimes[node] = dhcp.runtime(node, **extra)
    addresses = _add_pods_dual(context, lab, runtimes, "cni-dcnet-macvlan")
    plugin = "dcnet macvlan (bridge) + DHCP via dcnet-agent" + (
        ", IPv6 by SLAAC from dnsmasq's RAs" if ipv6 else "")
    return _finish_dual("cni-dcnet-macvlan", context, lab, addresses, ipv6, plugin=plugin)


def _ref_bridge(context: BuildContext, work: str, ipv6: bool = False) -> dict[str, LiveMode]:
    octet = OCTETS["cni-ref-bridge"]
    lab = context.lab(topologies.cni_nodes(octet, node_routes=True, ipv6=ipv6))
    runtimes = {}
    for index, node in enumerate(NODES, start=1):
        ranges = [[{"subnet": f"10.{octet}.{index}.0/24"}]]
        routes = [{"dst": "0.0.0.0/0"}]
        if ipv6:
            ranges.append([{"subnet": topologies.v6_net(octet, index)}])
            routes.append({"dst": "::/0"})
        conf = {"cniVersion": "1.0.0", "name": "refbridge", "type": "bridge",
                "bridge": "cni0", "isGateway": True, "ipMasq": False, "mtu": 1500,
                "ipam": {"type": "host-local", "ranges": ranges, "routes": routes,
                         "dataDir": f"{work}/ipam-{node}"}}
        runtimes[node] = CniRuntime(conf, [REFERENCE_DIR], lab.netns(node))
    addresses = _add_pods_dual(context, lab, runtimes, "cni-ref-bridge")
    return _finish_dual("cni-ref-bridge", context, lab, addresses, ipv6,
                        plugin="reference bridge + host-local", mtu=1500)


def _ref_macvlan(context: BuildContext, work: str, ipv6: bool = False) -> dict[str, LiveMode]:
    octet = OCTETS["cni-ref-macvlan"]
    lab = context.lab(topologies.cni_nodes(octet, ipv6=ipv6))
    runtimes = {}
    for index, node in enumerate(NODES):
        first = 100 + 50 * index
        ranges = [[{"subnet": f"192.168.{octet}.0/24",
                    "rangeStart": f"192.168.{octet}.{first}",
                    "rangeEnd": f"192.168.{octet}.{first + 49}"}]]
        if ipv6:
            underlay = topologies.UNDERLAY_V6
            ranges.append([{"subnet": topologies.v6_net(octet, underlay),
                            "rangeStart": topologies.v6(octet, underlay, first, None),
                            "rangeEnd": topologies.v6(octet, underlay, first + 49, None)}])
        conf = {"cniVersion": "1.0.0", "name": "refmacvlan", "type": "macvlan",
                "master": "eth0", "mode": "bridge",
                "ipam": {"type": "host-local", "ranges": ranges,
                         "dataDir": f"{work}/ipam-{node}"}}
        runtimes[node] = CniRuntime(conf, [REFERENCE_DIR], lab.netns(node))
    addresses = _add_pods_dual(context, lab, runtimes, "cni-ref-macvlan")
    return _finish_dual("cni-ref-macvlan", context, lab, addresses, ipv6,
                        plugin="reference macvlan (bridge) + host-local")
