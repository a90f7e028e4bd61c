"""The janitor's CNI part (host-gw): IPAM reservations (IPv4 and IPv6) without a pod and
host veths without a reservation, on one node.

A host-gw pod is alive while its host veth (``host_veth_name(containerID, ifname)``) is
on the node bridge (the kernel deletes the pair with the pod's namespace). So a
reservation whose veth is not on the bridge, older than ``min_age`` seconds (an ADD in
progress reserves before it creates the veth), belongs to no pod; a ``dcn`` veth on the
bridge that no reservation names, or a retired (dying) one, has no pod either. Removal
goes through the owning component: host-gw's own CNI GC
(:meth:`dcnet.cni.hostgw.HostGw.gc`) with, as valid attachments, every reservation that
is not unused. The agent's routes no node lease explains come along
(:mod:`dcnet.chaos.janitor_routes`, removed through the agent). Run inside the node's
namespace (``netns``) when given. A macvlan network's conf goes to
:mod:`dcnet.chaos.janitor_dhcp` (DHCP leases and host-shim routes without pods).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from types import SimpleNamespace

from dcnet.chaos import janitor_dhcp, janitor_routes
from dcnet.cni import ip4, ip6, reaper
from dcnet.cni.config import load_conf
from dcnet.cni.hostgw import VETH_PREFIX, HostGw, host_veth_name
from dcnet.cni.ipam import Reservations
from dcnet.cni.rtnl import Netlink
from dcnet.sysio import netns as netns_mod


@dataclass
class CNIReport:
    reservations: list[dict]            # unused: {address, containerID, ifname}
    veths: list[str]                    # unused host veths
    kept: list[tuple[str, str]]         # attachments with a pod (the valid ones)
    applied: dict | None = None         # host-gw GC's answer
    routes: list[dict] = field(default_factory=list)   # agent routes no lease explains
    routes_removed: list[str] | None = None            # through the agent's own delete
    routes_note: str = ""                              # why routes were not judged/removed
    routes_judged: bool = True                         # False: leases or routes unreadable

    @property
    def left(self) -> bool:
        return bool(((self.reservations or self.veths) and self.applied is None)
                    or (self.routes and self.routes_removed is None))

    @property
    def failed(self) -> bool:
        return bool(self.applied and self.applied["errors"]) or not self.routes_judged

    def to_dict(self) -> dict:
        return {"reservations": self.reservations, "veths": self.veths,
                "kept": [list(k) for k in self.kept], "applied": self.applied,
                "routes": self.routes, "routes_removed": self.routes_removed,
                "routes_note": self.routes_note, "routes_judged": self.routes_judged}

    def to_text(self) -> str:
        lines = [f"cni host-gw: {len(self.reservations)} reservations and "
                 f"{len(self.veths)} host veths without a pod"]
        lines += [f"  - reservation {r['address']} ({r['containerID']}/{r['ifname']})"
                  for r in self.reservations]
        lines += [f"  - veth {name}" for name in self.veths]
        if self.applied is not None:
            lines.append(f"  removed through host-gw GC: {len(self.applied['releasedAddresses'])}"
                         f" addresses, links {self.applied['removedLinks']}, errors "
                         f"{self.applied['errors']}")
        lines.append(f"cni host-gw: {len(self.routes)} agent routes no node lease explains")
        lines += [f"  - route {r['dst']} via {r['via']}: {r['reason']}" for r in self.routes]
        if self.routes_removed is not None:
            lines.append(f"  removed through the agent's route delete: {self.routes_removed}")
        if self.routes_note:
            lines.append(f"  {self.routes_note}")
        return "\n".join(lines)


def read_conf(path: str) -> dict:
    """The dcnet plugin's conf from a conflist (name and cniVersion merged in) or a conf."""
    with open(path) as handle:
        raw = json.load(handle)
    if "plugins" not in raw:
        return raw
    plugin = next(p for p in raw["plugins"] if p.get("type") == "dcnet")
    return {**plugin, "name": raw.get("name", ""), "cniVersion": raw.get("cniVersion", "")}


def unused(conf_path: str, netns: str | None = None, apply: bool = False,
           min_age: float = 60.0) -> CNIReport | janitor_dhcp.DhcpReport:
    raw = read_conf(conf_path)
    if netns:
        return netns_mod.run_in(netns, _unused, raw, apply, min_age)
    return _unused(raw, apply, min_age)


def _unused(raw: dict, apply: bool, min_age: float) -> CNIReport | janitor_dhcp.DhcpReport:
    conf = load_conf(raw)
    if conf.mode == "macvlan":
        return janitor_dhcp.unused(conf, raw, apply, min_age)
    with Netlink() as nl:
        bridge = nl.link(conf.bridge)
        links = [link["name"] or "" for link in nl.links()
                 if bridge and link["master"] == bridge["index"]] if bridge else []
    veths = {n for n in links if n.startswith((VETH_PREFIX, reaper.DYING_PREFIX))}
    now = time.time()
    unused_res, kept = [], set()
    for fam in (ip4, ip6):
        owners = Reservations(conf.ipam_dir, fam).all()
        for address, (cid, ifname) in sorted(owners.items()):
            path = os.path.join(conf.ipam_dir, fam.fmt_ip(address))
            try:
                young = now - os.stat(path).st_mtime < min_age
            except FileNotFoundError:
                continue
            if host_veth_name(cid, ifname) in veths or young:
                kept.add((cid, ifname))
            else:
                unused_res.append({"address": fam.fmt_ip(address), "containerID": cid,
                                   "ifname": ifname})
    # a dual-stack pod with one reservation young (or with a veth) keeps both: GC is per
    # attachment, so listing the other would promise a removal GC will not make
    unused_res = [r for r in unused_res if (r["containerID"], r["ifname"]) not in kept]
    names = {host_veth_name(c, i) for c, i in kept}
    unused_veths = sorted(v for v in veths if v not in names)
    report = CNIReport(unused_res, unused_veths, sorted(kept))
    if apply and (unused_res or unused_veths):
        valid = [{"containerID": c, "ifname": i} for c, i in sorted(kept)]
        report.applied = HostGw().gc(SimpleNamespace(
            conf={**raw, "cni.dev/valid-attachments": valid}))
    found = janitor_routes.unused(conf, apply)
    report.routes, report.routes_removed = found.routes, found.removed
    report.routes_note, report.routes_judged = found.note, found.judged
    return report
