"""The drift watcher, one shot: a plan of the model under the target's lock; a non-empty
plan means the target was changed outside dcnet, recorded as an audit event.

It owns the audit event (who noticed, what differs, when, on which target and director)
and the audit log (JSON lines, appended with one ``write`` each, file 0600); ``elbctl
agent`` records its drifts with both (:mod:`dcnet.elbstore.driftwatch`). Planning and
repairing go through :func:`dcnet.target.session.run`, like every other caller.

Who made the change (``changed_by``) is what the kernel said while someone watched
(:class:`dcnet.sysio.nlmonitor.Monitor`: the process behind each route, rule, address
and nftables change): :func:`changed_by` keeps the changes of the kinds the target
owns, not made by the kernel itself nor by this process, and names their processes
(the callers take the changes before they change anything themselves: dcnet's own
``nft``/``ip`` children are not in them). What no notification tells is "unknown",
with the reason: IPVS (its generic netlink family has no multicast group: no change
notifications), HAProxy's runtime API (any process that can open the socket; it logs
no peer), BIND; and a one-shot check that did not watch (it sees the result, not the
change).
"""

from __future__ import annotations

import datetime
import getpass
import json
import os
import re
import socket

from dcnet.model import Model
from dcnet.plan import Plan
from dcnet.target import session
from dcnet.target.apply import ApplyResult

DEFAULT_AUDIT_LOG = "/var/log/dcnet/audit.jsonl"
# the kinds of kernel change (dcnet.sysio.nlmonitor) each target's state is made of
TARGET_KINDS = {"nft": ("nft", "route", "rule", "address"),
                "lvs": ("route", "rule", "address")}
WHO_UNKNOWN = {
    "lvs": "IPVS services and dests: the kernel sends no notification of IPVS changes "
           "(its generic netlink family has no multicast group), so who changed them is "
           "not recorded (routes, rules and addresses are)",
    "haproxy": "HAProxy's runtime API does not say who sent a command (any process that "
               "can open the admin socket; HAProxy logs no peer), so who changed it is "
               "not recorded",
    "dns": "BIND's zone files and rndc do not say who changed them: not recorded",
}
NOT_WATCHED = ("not watched: a one-shot check sees the result, not the change (elbctl "
               "drift --watch SECONDS, or elbctl agent's watcher, records who where the "
               "kernel says)")
CHANGES_KEPT = 20          # kernel changes listed in an event
LABEL = re.compile(r"[^A-Za-z0-9_.-]")


def changed_by(target: str, changes: list[dict] | None, *, self_pid: int | None = None,
               note: str = "", lost: int = 0) -> dict:
    """The event's ``changed_by`` from the kernel changes recorded while watching (None:
    not watched; ``note``: why; ``lost``: changes the watcher lost). Pure: ``self_pid``
    (default this process) marks dcnet's own netlink changes, which are left out with
    the kernel's (pid 0)."""
    mine = os.getpid() if self_pid is None else self_pid
    if changes is None:
        return {"watched": False, "by": [], "changes": [], "unknown": note or NOT_WATCHED}
    kinds = TARGET_KINDS.get(target, ())
    relevant = [c for c in changes if c["kind"] in kinds
                and c["by"].get("pid") not in (0, mine)]
    authors: dict[tuple, dict] = {}
    for change in relevant:
        by = change["by"]
        authors.setdefault((by.get("pid"), by.get("comm")), {
            k: by[k] for k in ("pid", "comm", "cmdline", "uid", "user", "port", "note")
            if by.get(k) not in (None, "")})
    unknown = [WHO_UNKNOWN.get(target, "")]
    if not relevant:
        unknown.append(f"no change of {', '.join(kinds)} was seen while watching"
                       if kinds else "")
    if lost:
        unknown.append(f"{lost} kernel change(s) or buffer overrun(s) were lost while "
                       "watching: their authors are unknown")
    kept = [{k: c[k] for k in ("kind", "action", "what")}
            | {"time": _iso(c["time"]), "pid": c["by"].get("pid"),
               "comm": c["by"].get("comm")} for c in relevant[-CHANGES_KEPT:]]
    out = {"watched": True, "by": list(authors.values()), "changes": kept,
           "unknown": "; ".join(u for u in unknown if u)}
    if len(relevant) > CHANGES_KEPT:
        out["changes_not_kept"] = len(relevant) - CHANGES_KEPT
    if lost:
        out["lost"] = lost
    return out


def author_label(who: dict) -> str:
    """A bounded metric label for ``changed_by``: the first author's comm (a kernel comm
    is at most 15 characters; other characters replaced), or ``unknown`` (pure)."""
    for author in who.get("by") or []:
        if author.get("comm"):
            return LABEL.sub("_", author["comm"])[:15]
    return "unknown"


def _iso(when: float) -> str:
    return datetime.datetime.fromtimestamp(when, datetime.UTC).isoformat(
        timespec="milliseconds")


def now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")


def audit_event(plan: Plan, target: str, model_source: str, *, when: str | None = None,
                repair: ApplyResult | None = None, repair_plan: Plan | None = None,
                director: str | None = None, command: str = "elbctl drift",
                who: dict | None = None) -> dict:
    """The audit record of one drift: pure given its inputs (``when`` defaults to now,
    ``director`` to the host name; ``command`` is the observer: ``elbctl drift`` or
    ``elbctl agent``; ``who``: :func:`changed_by`, default not watched)."""
    event = {
        "event": "drift",
        "time": when or now(),
        "target": target,
        "director": director or socket.gethostname(),
        "observer": {"user": _user(), "pid": os.getpid(), "command": command},
        "changed_by": who or changed_by(target, None),
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
          repair: bool = False, force: bool = False,
          changes: list[dict] | None = None, lost: int = 0) -> dict | None:
    """Plan under the lock; the audit event when the target drifted, else None. With
    ``repair``, a second locked run applies the model and the event records it.
    ``changes``: the kernel changes recorded while watching before the check (None: not
    watched; ``lost``: how many the watcher lost), for ``changed_by``."""
    outcome = session.run(target, model, options, apply=False, lock_timeout=lock_timeout,
                          force=force)
    if outcome.plan.empty:
        return None
    when = now()
    who = changed_by(target, changes, lost=lost)
    if not repair:
        return audit_event(outcome.plan, target, model.source, when=when, who=who)
    fixed = session.run(target, model, options, apply=True, lock_timeout=lock_timeout,
                        force=force)
    return audit_event(outcome.plan, target, model.source, when=when, repair=fixed.result,
                       repair_plan=fixed.plan, who=who)
