"""``elbctl backend drain|remove --store``: waiting until every director says the drained
server is safe to stop, or the deadline passed (the agents' side: :mod:`dcnet.elbstore.drains`).

The directors are those with a status in etcd (``elb/status/<DIRECTOR>/state``) when the
wait starts: each runs the one model, so each serves the service. The wait polls the
backend key and each director's drain report for that record
(``elb/status/<DIRECTOR>/drain/<JOBNAME>/<ADDR[:PORT]>`` naming the key's
``mod_revision``) until every director's report is final, the record changed (added back,
removed: not waited further) or the model's longest ``drain_deadline`` (LVS or HAProxy)
plus ``GRACE`` (the agents' debounce and apply) passed. It says, per director, what it
reported, and names any director that did not answer.

Exit codes as the local ``elbctl backend drain`` (:func:`dcnet.lvs.dynamic.drain_backend`):
0 every director drained the server (safe to stop it), 4 a deadline passed (a director
cut sessions at its deadline or still had connections, failed, or did not answer), 5 the
record changed meanwhile (added back: do not stop the server).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from dcnet.elbstore.drains import DEADLINE, DRAINED, DRAINING, READDED, DrainReport
from dcnet.elbstore.records import RecordError, decode_entry

GRACE = 15.0                 # seconds past the drain deadline for agents to apply and report
POLL = 0.2
SAFE_EXIT, DEADLINE_EXIT, READDED_EXIT = 0, 4, 5


@dataclass
class DrainWait:
    """How ``backend drain|remove --store`` waited for one record."""

    service: str
    server: str
    record: int
    limit: float
    directors: list[str]
    reports: dict[str, DrainReport] = field(default_factory=dict)
    changed: str | None = None         # the record changed meanwhile: how
    waited: float = 0.0

    @property
    def missing(self) -> list[str]:
        return [d for d in self.directors if d not in self.reports or
                not self.reports[d].final]

    @property
    def exit_code(self) -> int:
        if self.changed is not None or any(r.state == READDED for r in self.reports.values()):
            return READDED_EXIT
        if self.missing or any(r.state != DRAINED for r in self.reports.values()):
            return DEADLINE_EXIT
        return SAFE_EXIT

    def to_text(self) -> str:
        lines = []
        for name in self.directors:
            report = self.reports.get(name)
            if report is None:
                lines.append(f"  {name}: did not answer within {self.limit:.0f}s")
            elif not report.final:
                lines.append(f"  {name}: still draining ({report.active} connection(s) left "
                             f"after {report.waited:.1f}s) when the wait ended")
            else:
                lines.append(f"  {name}: {report.state}: {report.detail}")
        code = self.exit_code
        if self.changed is not None:
            head = (f"not drained: {self.server} in {self.service} {self.changed} after "
                    f"{self.waited:.1f}s; do not stop it")
        elif not self.directors:
            head = (f"safe: no director has a status in etcd; nothing serves {self.server}")
        elif code == SAFE_EXIT:
            head = (f"safe: {self.server} drained on every director ({len(self.directors)}) "
                    f"after {self.waited:.1f}s; safe to stop the server")
        elif code == READDED_EXIT:
            head = f"not drained: {self.server} carries weight again; do not stop it"
        else:
            silent = [d for d in self.missing if d not in self.reports]
            head = (f"deadline passed after {self.waited:.1f}s: not every director drained "
                    f"{self.server} ({', '.join(self.missing) or 'sessions cut at a deadline'}"
                    + (f"; no answer from {', '.join(silent)}" if silent else "")
                    + "); stopping the server may cut connections")
        return "\n".join([head, *lines])


def wait_for_drain(store, service: str, server: str, record: int, *, grace: float = GRACE,
                   poll: float = POLL, clock=time.monotonic, sleep=time.sleep,
                   say: Callable[[str], None] = lambda text: None) -> DrainWait:
    """Wait for the directors' reports on backend record ``record`` (see the module
    docstring); ``say`` is told each director's progress as it changes."""
    keys, client = store.keys, store.client
    directors = sorted({s.director for s in store.statuses()})
    current, _ = store.current()
    deadline = store.model(current).drain_deadline if current is not None else 0
    wait = DrainWait(service, server, record, deadline + grace, directors)
    key = keys.backend(service, server)
    start = clock()
    told: dict[str, tuple] = {}
    while directors:
        wait.waited = clock() - start
        kv = client.get(key)
        state = _state(kv.value, key) if kv is not None else "deleted"
        if kv is not None and state == DRAINING and kv.mod_revision != record:
            record = wait.record = kv.mod_revision      # drained again meanwhile: the
            wait.reports.clear()                       # newer record is the one to wait for
        if kv is None or state != DRAINING:
            wait.changed = (f"was {state} (etcd revision {kv.mod_revision})" if kv
                            else "was deleted")
            break
        for name in directors:
            if name in wait.reports and wait.reports[name].final:
                continue
            report = _report(client.get(keys.drain_report(name, service, server)), record)
            if report is None:
                continue
            wait.reports[name] = report
            seen = (report.state, report.active)
            if told.get(name) != seen:
                told[name] = seen
                say(f"  {name}: {report.state}, {report.active} connection(s) left"
                    if report.state in (DRAINING, DEADLINE) else f"  {name}: {report.state}")
        if not wait.missing or wait.waited >= wait.limit:
            break
        sleep(min(poll, max(wait.limit - wait.waited, 0.0)))
    wait.waited = clock() - start
    return wait


def _state(value: bytes, key: str) -> str:
    try:
        return decode_entry(value, key)["state"]
    except RecordError:
        return "unreadable"


def _report(kv, record: int) -> DrainReport | None:
    """The director's report when it is about ``record`` (an older drain's is not)."""
    if kv is None:
        return None
    try:
        report = DrainReport.decode(kv.value, kv.key)
    except RecordError:
        return None
    return report if report.record == record else None
