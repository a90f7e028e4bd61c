"""Drain reports: what each director's agent says about a draining backend record.

``elbctl backend drain|remove --store`` writes a ``draining`` backend record
(:mod:`dcnet.elbstore.store`) and waits (:mod:`dcnet.elbstore.drainwait`) for every
director to say that the server is safe to stop. Each agent, once an apply put the server
in drain, follows it (:class:`DrainFollower`): one thread per record asks the director's
target to wait (its ``wait_drained``: HAProxy counts the server's sessions in every
worker and shuts them down at ``haproxy.drain_deadline``; LVS counts its dests' active
connections until ``lvs.drain_deadline``) and reports, under its own status prefix
(``elb/status/<DIRECTOR>/drain/<JOBNAME>/<ADDR[:PORT]>``, see :mod:`dcnet.elbstore.keys`)
a :class:`DrainReport`: ``draining`` with the active connections/sessions while it waits,
then ``drained`` (none left: safe), ``deadline`` (the deadline passed: HAProxy shut the
sessions down, LVS still had connections), ``readded`` (the server carries weight
again) or ``failed`` (the target could not be asked). A report names the record it is
about (the backend key's ``mod_revision``), so a waiter never takes an older drain's
report for its own. A target without ``wait_drained`` (DNS, nft) serves no connection
of its own: it reports ``drained`` at once, saying it did not count.

The follower never writes to etcd itself: it hands reports to the agent's main loop
(``submit``), which writes them with its status and retries while etcd is away. When a
record stops draining (added back, removed, deleted) its thread is told to stop and its
report is deleted.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from dcnet.elbstore.records import _DECODE_ERRORS, RecordError, short

DRAINING, DRAINED, DEADLINE, READDED, FAILED = (
    "draining", "drained", "deadline", "readded", "failed")
FINAL = frozenset({DRAINED, DEADLINE, READDED, FAILED})


@dataclass
class DrainReport:
    """One director's drain of one backend record."""

    director: str
    service: str
    server: str
    record: int                    # mod_revision of the backend key drained
    state: str                     # draining | drained | deadline | readded | failed
    active: int = 0                # connections/sessions left at the last poll
    waited: float = 0.0            # seconds since the director started waiting
    detail: str = ""               # the target's own words (or the error)
    time: float = 0.0

    @property
    def final(self) -> bool:
        return self.state in FINAL

    def encode(self) -> str:
        return json.dumps(vars(self), sort_keys=True)

    @classmethod
    def decode(cls, value: bytes | str, key: str = "<drain report>") -> DrainReport:
        try:
            doc = json.loads(value)
            known = {k: doc[k] for k in cls.__dataclass_fields__ if k in doc}
            report = cls(**known)
            if not isinstance(report.record, int) or not isinstance(report.state, str):
                raise ValueError(f"record {report.record!r} / state {report.state!r}")
            return report
        except _DECODE_ERRORS as exc:
            raise RecordError(f"{short(key)}: not a drain report: {short(str(exc))}") \
                from None


class _Abandoned(Exception):
    """The record stopped draining (or the agent stops): the wait is abandoned."""


def verdict(outcome) -> tuple[str, int]:
    """(report state, connections left) of a target's drain outcome: HAProxy's has
    ``idle``; LVS's has ``state`` (safe / not programmed / deadline / weighted again)."""
    if hasattr(outcome, "idle"):
        return (DRAINED, 0) if outcome.idle else (DEADLINE, sum(outcome.shut.values()))
    left = outcome.counts.active
    if outcome.safe:
        return DRAINED, left
    return (READDED if outcome.state == "weighted again" else DEADLINE), left


class DrainFollower:
    """Follows the draining records of one director (see the module docstring).

    ``submit(key, report_or_None)`` hands a report (None: delete it) to the agent's main
    loop; ``create()`` makes a fresh target instance (closed after each wait)."""

    def __init__(self, director: str, create: Callable[[], object],
                 submit: Callable[[tuple[str, str], DrainReport | None], None],
                 log: Callable[[str], None] = lambda text: None):
        self.director = director
        self.create = create
        self.submit = submit
        self.log = log
        self.followed: dict[tuple[str, str], tuple[int, threading.Event]] = {}
        self.threads: list[threading.Thread] = []

    def follow(self, registry, records, model) -> None:
        """After a successful apply of ``model``: follow each draining record not followed
        yet, stop following (and delete the report of) records no longer draining."""
        draining = {(job, ident): records.get((job, ident), 0)
                    for job, entries in registry.items()
                    for ident, entry in entries.items() if entry["state"] == DRAINING}
        for key, (record, stop) in list(self.followed.items()):
            if draining.get(key) != record:
                stop.set()
                del self.followed[key]
                if key not in draining:
                    self.submit(key, None)
        self.threads = [t for t in self.threads if t.is_alive()]
        for key, record in sorted(draining.items()):
            if key in self.followed:
                continue
            stop = threading.Event()
            self.followed[key] = (record, stop)
            thread = threading.Thread(target=self._wait, args=(key, record, model, stop),
                                      name=f"drain {key[1]}", daemon=True)
            self.threads.append(thread)
            thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        for _record, stop in self.followed.values():
            stop.set()
        for thread in self.threads:
            thread.join(timeout)

    def _wait(self, key: tuple[str, str], record: int, model, stop: threading.Event) -> None:
        job, ident = key
        started = time.monotonic()
        last = [None]

        def report(state: str, active: int = 0, detail: str = "") -> None:
            if not stop.is_set():
                self.submit(key, DrainReport(self.director, job, ident, record, state,
                                             active, round(time.monotonic() - started, 3),
                                             detail, time.time()))

        def progress(active: int) -> None:
            if active != last[0]:
                last[0] = active
                report(DRAINING, active)

        def sleep(seconds: float) -> None:
            if stop.wait(seconds):
                raise _Abandoned

        try:
            target = self.create()
        except Exception as exc:  # the target cannot be reached: said, never raised
            report(FAILED, detail=f"{type(exc).__name__}: {exc}")
            return
        try:
            waiter = getattr(target, "wait_drained", None)
            if waiter is None:
                report(DRAINED, detail=f"target {getattr(target, 'name', '?')} holds no "
                                       "connection of its own: nothing counted")
                return
            outcome = waiter(model, job, ident, progress=progress, sleep=sleep)
            state, left = verdict(outcome)
            report(state, left, outcome.describe())
            self.log(f"drain of {ident} in {job} (record {record}): {outcome.describe()}")
        except _Abandoned:
            return
        except Exception as exc:  # HAProxy gone, IPVS unreadable, ...: reported
            report(FAILED, last[0] or 0, f"{type(exc).__name__}: {exc}")
        finally:
            try:
                target.close()
            except Exception as exc:  # closing must not hide the report
                self.log(f"closing the target after a drain: {exc}")
