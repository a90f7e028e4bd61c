"""Drain-first removal (pure): which removed real servers stay at weight 0, which go.

A real server that leaves the desired state is not deleted while it still has
connections: it is kept at weight 0 (new connections go elsewhere) until its counters
reach zero or its deadline (first seen draining + ``drain_seconds``) passes. Its service
stays while any of its dests drain, and the service's VIP and rule stay with it. The
drain set (dest key -> deadline, epoch seconds) is persisted by :mod:`dcnet.lvs.store`
so an elbctl restart keeps the deadlines.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from dcnet.lvs.state import Key, StateDict


@dataclass
class DrainPlan:
    desired: StateDict
    draining: dict[Key, float]                    # the drain set after this apply
    notes: list[str] = field(default_factory=list)


def reconcile(current: Mapping, desired: Mapping, conns: Mapping[Key, int],
              draining: Mapping[Key, float], now: float, drain_seconds: int) -> DrainPlan:
    """The desired state with draining dests (and what they need) kept, and the new set."""
    out: StateDict = dict(desired)        # values are shared, never changed in place
    new_set: dict[Key, float] = {}
    notes: list[str] = []
    gone = [(ident, attrs) for ident, attrs in current.items()
            if ident[0] == "dest" and ident not in desired]
    for (_kind, key), attrs in sorted(gone, key=lambda kv: str(kv[0])):
        active = conns.get(key, 0)
        deadline = draining.get(key, now + drain_seconds)
        label = " ".join(map(str, key))
        if active == 0:
            continue
        if drain_seconds == 0 or now >= deadline:
            notes.append(f"drain deadline passed: deleting dest {label} with {active} "
                         "connection(s)")
            continue
        out[("dest", key)] = {**attrs, "weight": 0}
        new_set[key] = deadline
        notes.append(f"draining dest {label}: {active} connection(s), deleted at the "
                     f"latest in {deadline - now:.0f}s")
    for key in new_set:
        _keep(out, current, ("service", key[:3]))
        vip = key[1]
        _keep(out, current, ("vip", (vip,)))
        _keep(out, current, ("rule", (vip,)))
    return DrainPlan(out, new_set, notes)


def _keep(out: StateDict, current: Mapping, ident: tuple) -> None:
    if ident not in out and ident in current:
        out[ident] = current[ident]
