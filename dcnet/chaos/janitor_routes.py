"""The janitor's host-gw routes part: routes of the node agent that no node lease
explains, on one node.

The host-gw agent (:class:`dcnet.cni.agent.Agent`) owns the routes of the main table
marked with the network's route protocol: one ``<subnet> via <node IP>`` per other
node's lease. A running agent sweeps any other such route at its next pass, so one left
over means the agent is stopped (routes stay when it stops: a node that left meanwhile
keeps its route here) or degraded (it never deletes while the store is out of reach).
:func:`judge` (pure) lists each route whose destination is not another node's leased
subnet, with the reason. Reading goes through the agent's own code (its route dump and
the store's leases); a store out of reach judges nothing (``judged`` False: the CLI
exits 1 rather than claim nothing is unused). Removal goes through the agent
too: under its node lock (``AgentLock``), the agent's own route delete, as
``dcnet-agent leave`` does; while an agent serves the node the janitor removes nothing
and names it (its reconcile is the one to sweep). Call inside the node's namespace.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass

from dcnet.cni.agent import Agent, AgentError
from dcnet.cni.config import NetConf
from dcnet.cni.routes import Change
from dcnet.cni.store import Lease, StoreUnavailable, open_store


def judge(routes: dict[str, str | None], leases: list[Lease], node: str | None,
          clusters: list[str]) -> list[dict]:
    """The routes (``{dst: via}``, the agent's) that no other node's lease explains,
    each ``{dst, via, reason}``, sorted by destination (pure)."""
    nets = [ipaddress.ip_network(c) for c in clusters]

    def inside(dst: str) -> bool:
        net = ipaddress.ip_network(dst, strict=False)
        return any(net.version == c.version and net.subnet_of(c) for c in nets)

    others = {le.subnet for le in leases if le.node != node and inside(le.subnet)}
    own = {le.subnet for le in leases if le.node == node}
    out = []
    for dst, via in sorted(routes.items()):
        if dst in others:
            continue
        if not inside(dst):
            reason = (f"outside the network's cluster ranges ({', '.join(clusters)}): "
                      "left from an earlier configuration")
        elif dst in own:
            reason = f"this node's own subnet (leased by {node}): pods are on the bridge"
        else:
            reason = "no node holds a lease of this subnet (a node that left, or an " \
                     "expired etcd lease)"
        out.append({"dst": dst, "via": via, "reason": reason})
    return out


def node_name(conf: NetConf) -> str | None:
    """The node the agent last published in its node file (None without one)."""
    try:
        with open(conf.node_file) as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return None
    node = data.get("node") if isinstance(data, dict) else None
    return node if isinstance(node, str) else None


@dataclass
class Findings:
    routes: list[dict]                  # unused: {dst, via, reason}
    removed: list[str] | None = None    # None: no removal tried
    note: str = ""                      # why nothing was judged or removed
    judged: bool = True                 # False: the leases or routes could not be read


def unused(conf: NetConf, apply: bool) -> Findings:
    """The agent's routes no lease explains on this node (removed with ``apply``)."""
    node = node_name(conf)
    try:
        store = open_store(conf.store, conf.name)
    except (OSError, ValueError) as exc:
        return Findings([], note=f"routes not judged: store: {exc}", judged=False)
    try:
        agent = Agent(conf, store, node or "?", node_ip="0.0.0.0",
                      log=lambda line: None)
    except AgentError as exc:
        store.close()
        return Findings([], note=f"routes not judged: {exc}", judged=False)
    try:
        try:
            leases = store.leases()
        except StoreUnavailable as exc:
            return Findings([], note=f"routes not judged: the store is out of reach "
                                     f"({exc})", judged=False)
        found = judge(agent.current_routes(), leases, node, list(agent.clusters.values()))
        if not apply or not found:
            return Findings(found)
        if not agent.lock.try_acquire():
            return Findings(found, note=f"not removed: dcnet-agent pid "
                                        f"{agent.lock.holder()} serves this node; its "
                                        "next pass sweeps them")
        removed = []
        for route in found:
            agent.apply(Change("del", route["dst"], None))
            removed.append(route["dst"])
        return Findings(found, removed)
    finally:
        agent.close()
        store.close()
