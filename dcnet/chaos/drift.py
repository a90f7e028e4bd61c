"""The drift watcher, one shot: a plan of the model under the target's lock; a non-empty
plan means the target was changed outside dcnet, recorded as an audit event.

It owns the audit event (who noticed, what differs, when, on which target and director)
and the audit log (JSON lines, appended with one ``write`` each, file 0600); ``elbctl
agent`` records its drifts with both (:mod:`dcnet.elbstore.driftwatch`). Planning and
repairing go through :func:`dcnet.target.session.run`, like every other caller.
"""

from __future__ import annotations

import datetime
import getpass
import json
import os
import socket

from dcnet.model import Model
from dcnet.plan import Plan
from dcnet.target import session
from dcnet.target.apply import ApplyResult

DEFAULT_AUDIT_LOG = "/var/log/dcnet/audit.jsonl"


def now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")


def audit_event(plan: Plan, target: str, model_source: str, *, when: str | None = None,
                repair: ApplyResult | None = None, repair_plan: Plan | None = None,
                director: str | None = None, command: str = "elbctl drift") -> dict:
    """The audit record of one drift: pure given its inputs (``when`` defaults to now,
    ``director`` to the host name; ``command`` is the observer: ``elbctl drift`` or
    ``elbctl agent``)."""
    event = {
        "event": "drift",
        "time": when or now(),
        "target": target,
        "director": director or socket.gethostname(),
        "observer": {"user": _user(), "pid": os.getpid(), "command": command},
        "changed_by": "outside dcnet (not recorded by the target)",
        "model": model_source,
        "summary": plan.counts(),
        "changes": [c.to_dict() for c in plan.changes],
        "described": [c.describe() for c in plan.changes],
    }
    if repair is not None:
        event["repair"] = {"time": now(), "ok": repair.ok,
                           "applied": [c.to_dict() for c in (repair_plan or plan).changes],
                           "result": repair.to_dict()}
    return event


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())


def append_event(path: str, event: dict) -> None:
    """Append ``event`` as one JSON line (one write, O_APPEND: concurrent writers do not
    interleave lines); the file is created 0600, its directory 0700."""
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, mode=0o700, exist_ok=True)
    line = (json.dumps(event, sort_keys=True) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def check(target: str, model: Model, options: dict, *, lock_timeout: float,
          repair: bool = False, force: bool = False) -> dict | None:
    """Plan under the lock; the audit event when the target drifted, else None. With
    ``repair``, a second locked run applies the model and the event records it."""
    outcome = session.run(target, model, options, apply=False, lock_timeout=lock_timeout,
                          force=force)
    if outcome.plan.empty:
        return None
    when = now()
    if not repair:
        return audit_event(outcome.plan, target, model.source, when=when)
    fixed = session.run(target, model, options, apply=True, lock_timeout=lock_timeout,
                        force=force)
    return audit_event(outcome.plan, target, model.source, when=when, repair=fixed.result,
                       repair_plan=fixed.plan)
