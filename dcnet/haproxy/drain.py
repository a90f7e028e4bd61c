"""Draining a server until it is safe to stop it: sessions counted, then shut down.

A drained or removed server (``set server B/S state drain``, done by the plan) gets no
new requests at once. :func:`wait_drained` then polls the server's current sessions
(``scur`` of ``show stat``) until every slot that runs the server has none, or the
deadline passes; past the deadline it ends what is left with ``shutdown sessions server
B/S`` (clients reconnect and land on another server). It says which happened, so the
caller (``elbctl backend drain|remove``, a container init hook) knows whether the server
was left idle or its sessions were cut.
"""

from __future__ import annotations

import csv
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from dcnet.haproxy.layout import listeners
from dcnet.lvs.layout import parse_server
from dcnet.model import Model

POLL = 0.1


@dataclass
class DrainOutcome:
    """What a drain ended with: ``idle`` (no session left) or sessions shut down."""

    slots: list[tuple[str, str]]
    idle: bool
    waited: float
    shut: dict[tuple[str, str], int] = field(default_factory=dict)   # sessions cut

    def describe(self) -> str:
        where = ", ".join(f"{b}/{s}" for b, s in self.slots) or "no running slot"
        if self.idle:
            return (f"drained after {self.waited:.1f}s: no session left on {where}; safe to "
                    "stop the server")
        cut = sum(self.shut.values())
        return (f"deadline passed after {self.waited:.1f}s: {cut} session(s) shut down on "
                f"{where}; safe to stop the server (those clients reconnect elsewhere)")


def parse_sessions(text: str) -> dict[tuple[str, str], int]:
    """Pure: ``(backend, server) -> scur`` from ``show stat`` CSV."""
    lines = text.splitlines()
    if not lines or not lines[0].startswith("# "):
        return {}
    rows = csv.DictReader([lines[0][2:], *[line for line in lines[1:] if line.strip()]])
    out = {}
    for row in rows:
        name = row.get("svname")
        if name in (None, "FRONTEND", "BACKEND"):
            continue
        out[(row["pxname"], name)] = int(row.get("scur") or 0)
    return out


def sessions(command: Callable[[str], str], slots: Iterable[tuple[str, str]]) -> dict:
    """Current sessions of ``slots`` (a slot HAProxy does not know counts 0)."""
    found = parse_sessions(command("show stat -1 4 -1"))
    return {slot: found.get(slot, 0) for slot in slots}


def wait_drained(command: Callable[[str], str], slots: list[tuple[str, str]],
                 deadline: float, *, poll: float = POLL, clock=time.monotonic,
                 sleep=time.sleep) -> DrainOutcome:
    """Wait until ``slots`` have no session, at most ``deadline`` seconds, then shut
    down what is left. ``command`` sends one runtime API command."""
    start = clock()
    while True:
        left = {slot: n for slot, n in sessions(command, slots).items() if n}
        if not left:
            return DrainOutcome(slots, True, clock() - start)
        if clock() - start >= deadline:
            break
        sleep(poll)
    for backend, server in left:
        command(f"shutdown sessions server {backend}/{server}")
    return DrainOutcome(slots, False, clock() - start, left)


def server_slots(runtime, model: Model, service: str, ident: str) -> list[tuple[str, str]]:
    """The (backend, slot) pairs running ``ident`` (``ADDR[:PORT]``) for ``service``."""
    address, port = parse_server(ident)
    backends = {item.name for item in listeners(model) if item.service.name == service}
    return sorted((r.backend, r.server) for r in runtime.servers() if r.backend in backends
                  and not r.free and r.address == address and port in (None, r.port))


def drain_server(runtime, model: Model, service: str, ident: str,
                 deadline: float | None = None) -> DrainOutcome:
    """Wait for ``ident`` of ``service`` (drained already) to be idle, at most the
    model's ``haproxy.drain_deadline`` (or ``deadline``)."""
    slots = server_slots(runtime, model, service, ident)
    limit = model.haproxy.drain_deadline if deadline is None else deadline
    return wait_drained(runtime.command, slots, limit)
