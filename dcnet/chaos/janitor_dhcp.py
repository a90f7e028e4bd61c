"""The janitor's macvlan part: DHCP leases the node agent holds for pods that no longer
exist, and host-shim routes no pod's lease explains, on one node.

The agent (:class:`dcnet.cni.dhcpagent.MacvlanAgent`) journals one record per attachment
(``<stateDir>/<network>/leases/``) with the pod's namespace path and identity. A record
belongs to no pod when that namespace is gone (another file, or none, at the path), when
the pod's link is gone from it (no link of the attachment's alias), or when it stayed
``pending`` (never bound) for over ``min_age`` seconds (an ADD in progress writes it
first). A running agent releases gone-namespace leases of its own clients at its next
sweep and the rest at its next start; the janitor lists what is there now. The shim
routes (``/32`` and ``/128`` on the host shim, the network's route protocol) that no
live lease's address explains belong to no pod either.

:func:`judge` and :func:`judge_routes` are pure. Removal goes through the agent: leases
through its own release path (one CNI DEL per unused attachment on its socket, as a
runtime sends it: its ``teardown`` releases the lease, deletes the link and the shim
route under the attachment's lock; not a GC, whose valid list would also end an ADD
begun after the judgement); with no agent answering, through the plugin's DEL fallback
(the release queued for the agent, which sends it when it is back). Shim routes no lease explains
are removed with the agent's own ``sweep_shim_routes`` under its node lock, never while
an agent serves the node (it sweeps them when it starts). Call inside the node's
namespace.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from types import SimpleNamespace

from dcnet.cni import agentproto, leases, slaac
from dcnet.cni.config import NetConf
from dcnet.cni.errors import CniError
from dcnet.cni.macvlan import Macvlan, link_alias
from dcnet.cni.podns import is_namespace, netns_identity, pod_netlink
from dcnet.cni.rtnl import Netlink

GONE, NO_LINK, STALE_PENDING, ALIVE, UNKNOWN = ("namespace gone", "link gone",
                                               "pending", "alive", "unknown")


def pod_state(record: dict) -> str:
    """What is left of a journal record's pod: GONE (no namespace of that identity at
    the path), NO_LINK (the namespace is there without the attachment's link), ALIVE, or
    UNKNOWN (this mount namespace cannot see the pod's: a plain file at the path)."""
    wanted = tuple(record.get("netnsID") or ())
    found = netns_identity(record.get("netns") or "")
    if found is not None and found != wanted and not is_namespace(found):
        return UNKNOWN
    if not wanted or found != wanted:
        return GONE
    alias = link_alias(record["network"], record["containerID"], record["ifname"])
    try:
        with pod_netlink(record["netns"]) as pod:
            link = pod.link(record["ifname"])
    except (OSError, RuntimeError):
        return UNKNOWN
    return ALIVE if link is not None and link["alias"] == alias else NO_LINK


REASONS = {GONE: "the pod's network namespace is gone (no DEL reached the agent)",
           NO_LINK: "the pod's namespace has no link of this attachment",
           STALE_PENDING: "never bound (an ADD that did not finish)"}


def judge(records: list[dict], states: dict[str, str], network: str, now: float,
          min_age: float) -> tuple[list[dict], list[dict]]:
    """(unused, kept) journal records of ``network`` given each record's pod state (by
    attachment key); a pending record is unused only once older than ``min_age`` (its
    ``updated`` time), whatever its pod's state. Each unused one gets a ``reason`` (pure)."""
    unused, kept = [], []
    for record in records:
        if record.get("network") != network:
            continue
        key = leases.attachment_key(record["containerID"], record["ifname"])
        state = states.get(key, UNKNOWN)
        young = now - float(record.get("updated") or 0) < min_age
        if record.get("state") == leases.PENDING:
            state = STALE_PENDING if not young else ALIVE
        if state in REASONS:
            unused.append({**_brief(record), "reason": REASONS[state]})
        else:
            kept.append(record)
    return unused, kept


def _brief(record: dict) -> dict:
    return {"containerID": record["containerID"], "ifname": record["ifname"],
            "address": (record.get("configured") or {}).get("address"),
            "address6": (record.get("configured6") or {}).get("address"),
            "state": record.get("state"), "netns": record.get("netns")}


def lease_addresses(records: list[dict]) -> set[str]:
    """The pod addresses (no prefix length) ``records`` configured (pure)."""
    return {(r.get(k) or {}).get("address", "").split("/")[0]
            for r in records for k in ("configured", "configured6")} - {""}


def judge_routes(routes: list[str], kept: list[dict], unused: list[dict]) -> list[dict]:
    """The shim routes (destination addresses) no kept lease explains, each with its
    reason: the route of an unused lease goes with that lease (pure)."""
    live = lease_addresses(kept)
    gone = {a.split("/")[0]: u["containerID"] for u in unused
            for a in (u["address"], u["address6"]) if a}
    out = []
    for dst in sorted(routes):
        if dst in live:
            continue
        reason = (f"the pod of {gone[dst]} is gone (its lease is listed: removed with it)"
                  if dst in gone else "no lease of this node holds this address")
        out.append({"dst": dst, "reason": reason, "with_lease": dst in gone})
    return out


@dataclass
class DhcpReport:
    leases: list[dict]                     # unused: containerID, ifname, address, reason
    routes: list[dict]                     # shim routes: dst, reason, with_lease
    kept: int = 0                          # leases with a pod
    shim: str | None = None                # the host shim's name (None: no shim)
    released: list[dict] | None = None     # DEL answered by the agent
    queued: list[str] | None = None        # releases queued for an agent that is down
    routes_removed: list[str] | None = None
    notes: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def left(self) -> bool:
        leases_left = bool(self.leases) and self.released is None and self.queued is None
        routes_left = any(not r["with_lease"] for r in self.routes) and \
            self.routes_removed is None
        return leases_left or routes_left

    @property
    def failed(self) -> bool:
        return bool(self.errors)

    def to_dict(self) -> dict:
        return {"part": "dhcp", "leases": self.leases, "shim_routes": self.routes,
                "kept": self.kept, "shim": self.shim, "released": self.released,
                "queued": self.queued, "shim_routes_removed": self.routes_removed,
                "notes": self.notes, "errors": self.errors}

    def to_text(self) -> str:
        lines = [f"cni macvlan: {len(self.leases)} DHCP leases held for pods that no "
                 f"longer exist ({self.kept} with a pod)"]
        lines += [f"  - lease {u['address'] or '-'} ({u['containerID']}/{u['ifname']}, "
                  f"{u['state']}): {u['reason']}" for u in self.leases]
        if self.released is not None:
            lines.append(f"  released through the agent's DEL: {self.released}")
        if self.queued is not None:
            lines.append(f"  release queued for the agent (it sends them when it is "
                         f"back): {self.queued}")
        lines.append(f"cni macvlan: {len(self.routes)} host-shim routes without a pod"
                     + ("" if self.shim else " (no host shim)"))
        lines += [f"  - route {r['dst']} dev {self.shim}: {r['reason']}" for r in self.routes]
        if self.routes_removed is not None:
            lines.append(f"  removed with the agent's shim sweep: {self.routes_removed}")
        lines += [f"  {note}" for note in self.notes]
        lines += [f"  error: {error}" for error in self.errors]
        return "\n".join(lines)


def shim_routes(conf: NetConf) -> tuple[int | None, list[str]]:
    """(the shim's index, the destinations of its host routes of the network's route
    protocol), read here (the node's namespace)."""
    if not conf.host_shim:
        return None, []
    with Netlink() as nl:
        link = nl.link(conf.host_shim["name"])
        if link is None:
            return None, []
        index = link["index"]
        out = [".".join(str(b) for b in r["dst"]) for r in nl.routes()
               if r["oif"] == index and r["plen"] == 32
               and r["protocol"] == conf.route_protocol]
        out += [slaac.fmt6(r["dst"]) for r in slaac.routes6(nl)
                if r["oif"] == index and r["plen"] == 128
                and r["protocol"] == conf.route_protocol]
    return index, out


def unused(conf: NetConf, raw: dict, apply: bool, min_age: float,
           now: float | None = None) -> DhcpReport:
    """The unused leases and shim routes of this node (removed with ``apply``)."""
    journal = leases.Journal(conf.lease_dir)
    records, problems = journal.records()
    states = {leases.attachment_key(r["containerID"], r["ifname"]): pod_state(r)
              for r in records if r.get("network") == conf.name}
    found, kept = judge(records, states, conf.name, time.time() if now is None else now,
                        min_age)
    index, routes = shim_routes(conf)
    report = DhcpReport(found, judge_routes(routes, kept, found), len(kept),
                        conf.host_shim["name"] if conf.host_shim and index else None,
                        notes=[f"journal: {p}" for p in problems])
    if UNKNOWN in states.values():
        report.notes.append("leases whose pod this mount namespace cannot see are kept")
    if not apply:
        return report
    if found:
        _release(conf, raw, found, report)
    if any(not r["with_lease"] for r in report.routes):
        _sweep_routes(conf, found, kept, report)
    return report


def _release(conf: NetConf, raw: dict, found: list[dict], report: DhcpReport) -> None:
    """One CNI DEL per unused attachment, as the runtime sends it: the agent's own
    teardown under the attachment's lock (release, link, shim route, journal), or, with
    no agent answering, the plugin's fallback (the release queued for the agent)."""
    down = _agent_down(conf)
    done: list = []
    for unused in found:
        args = SimpleNamespace(command="DEL", container_id=unused["containerID"],
                               ifname=unused["ifname"], netns="", args="", path="",
                               conf=raw)
        try:
            Macvlan().delete(args)
        except CniError as exc:
            report.errors.append(f"{unused['containerID']}/{unused['ifname']}: DEL: "
                                 f"{exc.msg}")
            continue
        done.append(leases.attachment_key(unused["containerID"], unused["ifname"])
                    if down else {"containerID": unused["containerID"],
                                  "ifname": unused["ifname"]})
    if down:
        report.queued = done
    else:
        report.released = done


def _agent_down(conf: NetConf) -> bool:
    try:
        agentproto.call(conf.socket_path, agentproto.request("PING", {}, {}), 5.0)
    except agentproto.Unreachable:
        return True
    return False


def _sweep_routes(conf: NetConf, found: list[dict], kept: list[dict],
                  report: DhcpReport) -> None:
    """The agent's own shim sweep under its node lock (routes of unused leases stay for
    their release to remove)."""
    from dcnet.cni.dhcpagent import MacvlanAgent

    agent = MacvlanAgent(conf, log=lambda line: None)
    if not agent.lock.try_acquire():
        agent._node_nl.close()
        report.notes.append(f"shim routes not removed: dcnet-agent pid "
                            f"{agent.lock.holder()} serves this node; it sweeps them "
                            "when it starts")
        return
    try:
        agent.shim_index, _ = shim_routes(conf)
        before = set(shim_routes(conf)[1])
        agent.sweep_shim_routes(lease_addresses(kept) | {
            a.split("/")[0] for u in found for a in (u["address"], u["address6"]) if a})
        report.routes_removed = sorted(before - set(shim_routes(conf)[1]))
    finally:
        with contextlib.suppress(OSError):
            agent.close()
