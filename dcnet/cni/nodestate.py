"""The node file: what the agent publishes for the plugin on the same node.

``<runDir>/<network>/node.json`` holds the node's name, IP and subnet lease, the bridge
gateway and the agent's pid and start time (flannel's subnet.env, as JSON), and
``degraded`` when the agent cannot reach its store (e.g. "etcd unreachable since ..."):
it then keeps serving the subnet it has. The agent writes it atomically; the plugin reads
it on every ADD (one small file, no store access on the hot path) and STATUS uses it to
tell whether the agent is alive and whether it runs degraded. Dual stack: ``subnet``,
``gateway`` and ``nodeIP`` are the IPv4 ones (null on an IPv6-only network),
``subnet6``, ``gateway6`` and ``nodeIP6`` the IPv6 ones; ``NodeState.pools`` lists the
node's subnet of each family, IPv4 first.
"""

from __future__ import annotations

import os
import sys

from dcnet.cni import cjson, ip4, ip6
from dcnet.cni.errors import TRY_AGAIN_LATER, CniError
from dcnet.sysio.files import atomic_write

ModuleType = type(sys)  # types.ModuleType without importing types


class Pool:
    """The node's subnet of one family: ``fam`` (the ``ip4`` or ``ip6`` module), network
    and prefix length, and the bridge gateway (integers)."""

    __slots__ = ("fam", "gateway", "net", "plen", "version")

    def __init__(self, fam: ModuleType, subnet: str, gateway: str):
        self.fam = fam
        self.version = 6 if fam is ip6 else 4
        self.net, self.plen = fam.parse_cidr(subnet, strict=True)
        self.gateway: int = fam.parse_ip(gateway)


class NodeState:
    """The parsed node file."""

    __slots__ = ("agent_pid", "agent_start", "degraded", "gateway", "node", "node_ip", "plen",
                 "pools", "subnet")

    def __init__(self, data: dict):
        self.node: str = data["node"]
        self.node_ip: str | None = data.get("nodeIP")
        self.pools: list[Pool] = []
        if data.get("subnet"):
            self.pools.append(Pool(ip4, data["subnet"], data["gateway"]))
        if data.get("subnet6"):
            self.pools.append(Pool(ip6, data["subnet6"], data["gateway6"]))
        if not self.pools:
            raise KeyError("subnet")
        first = self.pools[0]
        # the IPv4 subnet (None on an IPv6-only network)
        self.subnet, self.plen, self.gateway = (
            (first.net, first.plen, first.gateway) if first.version == 4 else (None, None, None))
        self.agent_pid: int = int(data["agentPid"])
        self.agent_start: int | None = data.get("agentStart")
        self.degraded: str | None = data.get("degraded") or None


def read(path: str) -> NodeState:
    """The node file, or CniError(11) saying why the node is not ready."""
    try:
        with open(path) as handle:
            data = cjson.loads(handle.read())
        return NodeState(data)
    except FileNotFoundError:
        raise CniError(TRY_AGAIN_LATER, "this node has no subnet yet",
                       f"{path} is missing: is dcnet-agent running on this node?") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise CniError(TRY_AGAIN_LATER, f"node file {path} is unreadable",
                       f"{type(exc).__name__}: {exc}") from None


def write(path: str, data: dict) -> None:
    import json

    os.makedirs(os.path.dirname(path), exist_ok=True)
    atomic_write(path, json.dumps(data, indent=1), fsync=False)


def process_start_time(pid: int) -> int | None:
    """Field 22 of /proc/<pid>/stat (start time in ticks), None if the pid is gone."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def agent_problem(state: NodeState) -> str | None:
    """Why the agent that wrote the file is not running, or None if it is."""
    started = process_start_time(state.agent_pid)
    if started is None:
        return f"dcnet-agent (pid {state.agent_pid}) is not running"
    if state.agent_start is not None and started != state.agent_start:
        return f"dcnet-agent (pid {state.agent_pid}) is not running (the pid was reused)"
    return None
