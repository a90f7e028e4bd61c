"""Draining real servers: which removed ones stay at weight 0 (pure), and waiting for one.

:func:`reconcile` (pure), for full applies and ``elbctl backend``:

A real server that leaves the desired state is not deleted while it still has
connections: it is kept at weight 0 (new connections go elsewhere) until its counters
reach zero or its deadline (first seen draining + ``drain_seconds``) passes. Its service
stays while any of its dests drain, and the service's VIP and rule stay with it. The
drain set (dest key -> deadline, epoch seconds) is persisted by :mod:`dcnet.lvs.store`
so an elbctl restart keeps the deadlines.

:func:`wait_idle`, for ``elbctl backend drain|remove`` (:mod:`dcnet.lvs.dynamic`): poll a
drained server's connection counters (ActiveConn/InActConn of its dests, one IPVS dump
per service key) until it has no active (ESTABLISHED) connection (two polls in a row),
or the deadline
passed, or it carries weight again (added back meanwhile), and say which
(:class:`DrainOutcome`). Inactive entries (FIN_WAIT, TIME_WAIT, ...) do not count: their
connections are closing and send nothing the server must answer.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
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


# ------------------------------------------------------------------ waiting for one server

POLL = 0.2
SAFE, DEADLINE, READDED, ABSENT = "safe", "deadline passed", "weighted again", "not programmed"


@dataclass(frozen=True)
class Counts:
    """One poll of a server's dests: how many, their connections, their total weight."""

    dests: int = 0
    active: int = 0
    inactive: int = 0
    weight: int = 0


@dataclass(frozen=True)
class DrainOutcome:
    """How a wait ended: ``state`` is SAFE, DEADLINE, READDED or ABSENT."""

    server: str
    state: str
    waited: float
    counts: Counts = Counts()

    @property
    def safe(self) -> bool:
        return self.state in (SAFE, ABSENT)

    def describe(self) -> str:
        c = self.counts
        if self.state == SAFE:
            return (f"safe: {self.server} has no active connection after {self.waited:.1f}s "
                    f"({c.inactive} closing connection entr{'y' if c.inactive == 1 else 'ies'}"
                    " left); safe to stop the server")
        if self.state == ABSENT:
            return f"safe: {self.server} is not programmed in IPVS; nothing to wait for"
        if self.state == READDED:
            return (f"not drained: {self.server} carries weight {c.weight} again after "
                    f"{self.waited:.1f}s (added back meanwhile); do not stop it")
        return (f"deadline passed after {self.waited:.1f}s with {c.active} active "
                f"connection(s) on {self.server}; stopping it cuts them")


def wait_idle(server: str, read: Callable[[], Counts], deadline: float, *,
              poll: float = POLL, quiet: int = 2, clock=time.monotonic,
              sleep=time.sleep) -> DrainOutcome:
    """Poll ``read`` until the server has had no active connection ``quiet`` polls in a
    row (or once the deadline passed), is weighted again, has no dest, or ``deadline``
    seconds passed with active connections (one read, then one per ``poll``).

    Two quiet polls, not one: a connection whose handshake was under way when the
    weight went to 0 is SYN_RECV (counted inactive) for one round trip, then
    ESTABLISHED; the second read, ``poll`` later, sees it."""
    start = clock()
    zeros = 0
    while True:
        counts = read()
        waited = clock() - start
        if counts.dests == 0:
            return DrainOutcome(server, ABSENT, waited, counts)
        if counts.weight > 0:
            return DrainOutcome(server, READDED, waited, counts)
        zeros = zeros + 1 if counts.active == 0 else 0
        if zeros >= quiet or (zeros and waited >= deadline):
            return DrainOutcome(server, SAFE, waited, counts)
        if waited >= deadline:
            return DrainOutcome(server, DEADLINE, waited, counts)
        sleep(min(poll, max(deadline - waited, 0.0)) if counts.active else poll)
