"""The environment recorded in every result file: kernel, CPU, load, tools, sysctls, links.

``machine()`` reads the host-wide facts once per run (kernel, CPU model and count,
memory, load average, tool versions, global sysctls); ``interface(netns, ifname)`` reads
one interface's MTU, qdisc and offloads inside a namespace; ``namespace_sysctls`` reads
the per-namespace TCP settings. The parsers (``parse_offloads``, ``parse_cpuinfo``) are
pure and tested on captured output; reading never fails a run, it records the error.
"""

from __future__ import annotations

import json
import os
import platform
import sys
from typing import Any

import dcnet
from dcnet.netbench import connrate, iperf3, qperf, sockperf
from dcnet.sysio import netns as netns_mod
from dcnet.sysio import proc

GLOBAL_SYSCTLS = ("net.core.default_qdisc", "net.core.rmem_max", "net.core.wmem_max",
                  "net.core.netdev_max_backlog", "kernel.sched_autogroup_enabled")
NAMESPACE_SYSCTLS = ("net.ipv4.tcp_congestion_control", "net.ipv4.tcp_rmem",
                     "net.ipv4.tcp_wmem", "net.ipv4.tcp_tw_reuse", "net.ipv4.ip_forward",
                     "net.ipv4.ip_local_port_range")
OFFLOADS = ("rx-checksumming", "tx-checksumming", "scatter-gather",
            "tcp-segmentation-offload", "generic-segmentation-offload",
            "generic-receive-offload", "large-receive-offload", "rx-gro-list",
            "rx-udp-gro-forwarding")


def _read(path: str) -> str:
    try:
        with open(path) as handle:
            return handle.read().strip()
    except OSError as exc:
        return f"<unreadable: {exc.strerror}>"


def _sysctl_path(key: str) -> str:
    return "/proc/sys/" + key.replace(".", "/")


def parse_cpuinfo(text: str) -> dict[str, Any]:
    """CPU model and logical CPU count from /proc/cpuinfo text."""
    models = [line.split(":", 1)[1].strip() for line in text.splitlines()
              if line.startswith("model name")]
    return {"model": models[0] if models else "unknown", "logical_cpus": len(models)}


def parse_offloads(text: str) -> dict[str, str]:
    """The interesting ``ethtool -k`` features: name -> 'on'/'off' (with '[fixed]')."""
    found: dict[str, str] = {}
    for line in text.splitlines():
        name, _, value = line.strip().partition(":")
        if name in OFFLOADS and value:
            found[name] = value.strip()
    return found


def machine() -> dict[str, Any]:
    uname = platform.uname()
    with open("/proc/cpuinfo") as handle:
        cpu = parse_cpuinfo(handle.read())
    return {
        "hostname": uname.node,
        "kernel": {"release": uname.release, "version": uname.version,
                   "machine": uname.machine},
        "cpu": cpu,
        "online_cpus": os.cpu_count(),
        "memory_kib": _meminfo_total(),
        "load_average": _read("/proc/loadavg").split()[:3],
        "python": sys.version.split()[0],
        "dcnet": dcnet.__version__,
        "tools": {"iperf3": iperf3.version(), "sockperf": sockperf.version(),
                  "qperf": qperf.version(),
                  "connrate": connrate.version()},
        "sysctls": {key: _read(_sysctl_path(key)) for key in GLOBAL_SYSCTLS},
        "clock_ticks_per_s": os.sysconf("SC_CLK_TCK"),
    }


def _meminfo_total() -> int | None:
    for line in _read("/proc/meminfo").splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1])
    return None


def _namespace_sysctls() -> dict[str, str]:
    return {key: _read(_sysctl_path(key)) for key in NAMESPACE_SYSCTLS}


def namespace_sysctls(namespace: str | None) -> dict[str, str]:
    """Per-namespace TCP and forwarding sysctls as seen inside ``namespace``."""
    if namespace is None:
        return _namespace_sysctls()
    return netns_mod.run_in(namespace, _namespace_sysctls)


def interface(namespace: str | None, ifname: str) -> dict[str, Any]:
    """MTU, kind, qdisc and offloads of one interface (errors recorded, never raised)."""
    info: dict[str, Any] = {"netns": namespace or "<root>", "ifname": ifname}
    try:
        link = json.loads(proc.run(["ip", "-j", "-d", "link", "show", "dev", ifname],
                                   netns=namespace).stdout)[0]
        info["mtu"] = link.get("mtu")
        info["kind"] = (link.get("linkinfo") or {}).get("info_kind", "device")
        info["qdisc"] = link.get("qdisc")
        info["tso_max_size"] = link.get("tso_max_size")
        info["gso_max_size"] = link.get("gso_max_size")
        info["gro_max_size"] = link.get("gro_max_size")
    except Exception as exc:
        info["error"] = str(exc)
        return info
    try:
        info["offloads"] = parse_offloads(proc.run(["ethtool", "-k", ifname],
                                                   netns=namespace).stdout)
    except Exception as exc:
        info["offloads_error"] = str(exc)
    return info
