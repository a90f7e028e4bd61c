"""Draining a server until it is safe to stop it: sessions counted, then shut down.

A drained or removed server (``set server B/S state drain``, done by the plan) gets no
new requests at once. :func:`wait_drained` then polls the server's current sessions
(``scur`` of ``show stat``, rows matched by the server's address) in the current worker
AND in every old worker still finishing its connections after a reload (through the
master socket, ``@!PID``), until none is left or the deadline passes; past the deadline
it ends what is left: ``shutdown sessions server B/S`` in the current worker, ``shutdown
session ID`` per stream in an old one (whose stopped proxies refuse the former). Clients
reconnect and land on another server. It says which happened, so the caller (``elbctl
backend drain|remove``, a container init hook) knows whether the server was left idle
or its sessions were cut.

A full ``elbctl apply`` that removes servers (the model no longer lists them) drains
them the same way before it takes them out (:func:`drain_removals`): all of the plan's
removals at once, then one wait, so the apply holds the lock for at most one
``drain_deadline``. Servers that go with the file instead (their whole backend leaves:
a service or port removed) are gone from the new worker at the reload, but the old
worker keeps their connections (in TCP mode until ``hard-stop-after``):
:func:`drain_reloaded` waits for those in the old workers after the reload, at most
``drain_deadline``, then shuts them down, so a removed server is safe to stop when the
apply returns either way.
"""

from __future__ import annotations

import contextlib
import csv
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from dcnet.haproxy.carry import FILE_SERVER
from dcnet.haproxy.layout import listeners
from dcnet.haproxy.runtime import HAProxyUnavailable
from dcnet.lvs.layout import parse_server
from dcnet.model import Model
from dcnet.plan import Action

POLL = 0.1


@dataclass(frozen=True)
class Match:
    """Which server rows to drain: the service's backends, the address, the port."""

    backends: frozenset[str]
    address: str
    port: int | None = None

    def __call__(self, backend: str, addr: str) -> bool:
        host, _, port = addr.rpartition(":")
        return (backend in self.backends and host.strip("[]") == self.address
                and (self.port is None or port == str(self.port)))


@dataclass(frozen=True)
class AnyOf:
    """The rows of any of several servers (the removals of one plan)."""

    matches: tuple[Match, ...]

    def __call__(self, backend: str, addr: str) -> bool:
        return any(match(backend, addr) for match in self.matches)


@dataclass(frozen=True)
class Worker:
    """One HAProxy worker: ``command`` sends it a runtime API command."""

    command: Callable[[str], str]
    label: str = ""          # "" for the current worker, "old worker PID" otherwise

    def sessions(self, match: Match) -> dict[tuple[str, str], int]:
        rows = parse_stat(self.command("show stat -1 4 -1"))
        return {(r["pxname"], r["svname"]): int(r.get("scur") or 0) for r in rows
                if match(r["pxname"], r.get("addr") or "")}

    def shutdown(self, backend: str, server: str) -> None:
        if not self.label:
            self.command(f"shutdown sessions server {backend}/{server}")
            return
        for line in self.command("show sess").splitlines():
            if f" be={backend} srv={server} " in line:
                self.command(f"shutdown session {line.split(':', 1)[0]}")


@dataclass
class DrainOutcome:
    """What a drain ended with: ``idle`` (no session left) or sessions shut down."""

    slots: list[str]
    idle: bool
    waited: float
    shut: dict[str, int] = field(default_factory=dict)   # slot -> sessions cut

    def describe(self) -> str:
        where = ", ".join(self.slots) or "no running slot"
        if self.idle:
            return (f"drained after {self.waited:.1f}s: no session left on {where}; safe to "
                    "stop the server")
        cut = sum(self.shut.values())
        return (f"deadline passed after {self.waited:.1f}s: {cut} session(s) shut down on "
                f"{where}; safe to stop the server (those clients reconnect elsewhere)")


def parse_stat(text: str) -> list[dict[str, str]]:
    """Pure: the server rows of ``show stat`` CSV, as dicts by column name."""
    lines = text.splitlines()
    if not lines or not lines[0].startswith("# "):
        return []
    rows = csv.DictReader([lines[0][2:], *[line for line in lines[1:] if line.strip()]])
    return [row for row in rows if row.get("svname") not in (None, "FRONTEND", "BACKEND")]


def _name(worker: Worker, slot: tuple[str, str]) -> str:
    return f"{slot[0]}/{slot[1]}" + (f" ({worker.label})" if worker.label else "")


def _poll(workers: list[Worker], match: Match) -> dict[tuple[int, tuple[str, str]], int]:
    found = {}
    for index, worker in enumerate(workers):
        try:
            rows = worker.sessions(match)
        except HAProxyUnavailable:
            if not worker.label:
                raise
            continue                  # an old worker that exited meanwhile: nothing left
        found.update({(index, slot): n for slot, n in rows.items()})
    return found


def wait_drained(workers: list[Worker], match: Match, deadline: float, *,
                 poll: float = POLL, clock=time.monotonic, sleep=time.sleep) -> DrainOutcome:
    """Wait until no worker has a session on a server ``match`` selects, at most
    ``deadline`` seconds, then shut down what is left."""
    start = clock()
    found = _poll(workers, match)
    slots = [_name(workers[i], slot) for i, slot in sorted(found)]
    while True:
        left = {key: n for key, n in found.items() if n}
        if not left:
            return DrainOutcome(slots, True, clock() - start)
        if clock() - start >= deadline:
            break
        sleep(poll)
        found = _poll(workers, match)
    for index, slot in sorted(left):
        try:
            workers[index].shutdown(*slot)
        except HAProxyUnavailable:
            if not workers[index].label:
                raise
    return DrainOutcome(slots, False, clock() - start,
                        {_name(workers[i], slot): n for (i, slot), n in sorted(left.items())})


def workers(runtime) -> list[Worker]:
    """The current worker (admin socket) and the old ones (master socket, ``@!PID``)."""
    old = runtime.proc().old_workers
    return [Worker(runtime.command),
            *(Worker(lambda text, pid=pid: runtime.worker_command(pid, text),
                     f"old worker {pid}") for pid in old)]


def drain_server(runtime, model: Model, service: str, ident: str,
                 deadline: float | None = None, *,
                 progress: Callable[[int], None] | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> DrainOutcome:
    """Wait for ``ident`` of ``service`` (drained already) to be idle in every worker, at
    most the model's ``haproxy.drain_deadline`` (or ``deadline``). ``progress`` is told
    the server's sessions (all workers) after each poll (the etcd agent reports them);
    ``sleep`` may raise to abandon the wait."""
    address, port = parse_server(ident)
    backends = frozenset(i.name for i in listeners(model) if i.service.name == service)
    limit = model.haproxy.drain_deadline if deadline is None else deadline
    match = Match(backends, address, port)
    found = workers(runtime)
    if progress is not None:
        counts: dict[str, int] = {}

        def counted(worker: Worker) -> Worker:
            def command(text: str) -> str:
                reply = worker.command(text)
                if text.startswith("show stat"):
                    counts[worker.label] = sum(int(r.get("scur") or 0)
                                               for r in parse_stat(reply)
                                               if match(r["pxname"], r.get("addr") or ""))
                    progress(sum(counts.values()))
                return reply
            return Worker(command, worker.label)
        found = [counted(w) for w in found]
    return wait_drained(found, match, limit, sleep=sleep)


def drain_removals(runtime, removals: list[tuple[str, str, str, bool]],
                   deadline: float) -> DrainOutcome:
    """Drain the servers a plan removes, ``(backend, slot, "address:port", drained)``
    (``drained``: already in drain), and wait until none has a session in any worker, at
    most ``deadline`` seconds, then shut down what is left. The caller then puts them in
    maintenance. If the wait cannot run, the servers drained here are made ready again."""
    matches, done = [], []
    try:
        for backend, slot, key, drained in removals:
            address, _, port = key.rpartition(":")
            matches.append(Match(frozenset({backend}), address.strip("[]"), int(port)))
            if not drained:
                runtime.set_server(backend, slot, state="drain")
                done.append((backend, slot))
        return wait_drained(workers(runtime), AnyOf(tuple(matches)), deadline)
    except BaseException:
        for backend, slot in done:
            with contextlib.suppress(Exception):
                runtime.set_server(backend, slot, state="ready")
        raise


def drain_reloaded(runtime, changes, deadline: float,
                   log: Callable[[str], None]) -> DrainOutcome | None:
    """After a reload: the servers the plan's file removed (``file-server`` deletes,
    keys ``(backend, "address:port")``) may still have sessions in the old workers; wait
    until none is left, at most ``deadline`` seconds, then shut them down, and ``log``
    how it ended (None: the reload removed no server)."""
    matches = []
    for change in changes:
        if change.kind == FILE_SERVER and change.action is Action.DELETE:
            address, _, port = change.key[1].rpartition(":")
            matches.append(Match(frozenset({change.key[0]}), address.strip("[]"), int(port)))
    if not matches:
        return None
    outcome = wait_drained(workers(runtime), AnyOf(tuple(matches)), deadline)
    log(f"removal of {len(matches)} server(s) by the reload: {outcome.describe()}")
    return outcome
