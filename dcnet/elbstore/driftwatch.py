"""Drift noticed by ``elbctl agent`` (issue #20): its target changed outside dcnet.

The agent's periodic pass plans the desired state again. When that state (the model
revision and the registered backends) is the one it last applied successfully, a
non-empty plan cannot come from etcd: someone changed the target by hand (a ``set
weight`` on HAProxy's runtime API, an ``ipvsadm``, ...). This module owns what follows:

- the audit event, built and appended to the audit log by :mod:`dcnet.chaos.drift`, the
  same event ``elbctl drift`` writes, with ``policy`` and ``action`` added;
- the counts behind the agent's metrics (``events`` by action, ``active`` while a drift
  is left standing);
- the etcd audit records ``elb/status/<DIRECTOR>/audit/<TIME>`` (the director's own
  prefix, which its role may write): each on a lease of ``ttl`` seconds, at most
  ``keep`` per director, written when etcd answers (kept in memory until then, at most
  ``keep``).

Under ``agent.drift: alert`` a drift is recorded once and reported on every pass (the
status says ``drift``) until it is gone or becomes a different drift; under ``repair``
every repaired drift is an event.

Who: a :class:`dcnet.sysio.nlmonitor.Monitor` watches the target's namespace (routes,
rules, addresses, nftables) from the start. Each pass's ``suspect`` takes what it
recorded since the target last matched (``settled`` forgets it), before the pass
applies anything, so a repair's own changes are never its author; the event's
``changed_by`` is :func:`dcnet.chaos.drift.changed_by` of it. ``authors`` counts events
by the first author's comm (``unknown`` when none), at most ``AUTHOR_LABELS`` distinct
names (then ``other``): a bounded metric label, never a pid.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable

from dcnet.chaos import drift as audit
from dcnet.elbstore.keys import Keys
from dcnet.sysio.nlmonitor import Monitor
from dcnet.target import session

AUDIT_TTL = 7 * 86400          # seconds an etcd audit record lives
AUDIT_KEEP = 100               # etcd audit records kept per director
RECORDED_CHANGES = 100         # changes listed in an etcd record (the log has them all)
AUTHOR_LABELS = 16             # distinct comm labels of the authors counter


def desired_key(model_revision: int, registry) -> str:
    """What the agent applied, as a comparable string (pure)."""
    text = json.dumps(registry, sort_keys=True, default=str)
    return f"{model_revision}:{hashlib.sha256(text.encode()).hexdigest()}"


def plan_key(plan) -> str:
    """The same drift gives the same key (pure)."""
    text = json.dumps([c.to_dict() for c in plan.changes], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def settles(plan) -> bool:
    """Whether the target matches ``plan``'s desired state once it is applied, with
    nothing left for a later pass to finish: LVS keeps removed dests at weight 0 while
    they drain (its payload's ``draining``) and deletes them on a later pass, which is
    no drift."""
    return not getattr(plan.payload, "draining", None)


def plan_model(target: str, options: dict, model) -> session.Outcome:
    """Plan ``model`` under the target's lock without applying (what ``alert`` does)."""
    timeout = float(os.environ.get("DCNET_LOCK_TIMEOUT", session.DEFAULT_LOCK_TIMEOUT))
    given = {k: v for k, v in options.items() if v is not None and v is not False}
    return session.run(target, model, given, apply=False, force=True, lock_timeout=timeout)


def record_of(event: dict) -> str:
    """The etcd record of ``event``: the event with at most RECORDED_CHANGES changes."""
    out = dict(event)
    left = len(event["changes"]) - RECORDED_CHANGES
    if left > 0:
        out["changes"] = event["changes"][:RECORDED_CHANGES]
        out["described"] = event["described"][:RECORDED_CHANGES]
        out["changes_not_recorded"] = left
    out.pop("repair", None)
    if "repair" in event:
        out["repair"] = {"time": event["repair"]["time"], "ok": event["repair"]["ok"]}
    return json.dumps(out, sort_keys=True)


def stamp(when: str) -> str:
    """An ISO time as a key part that sorts: 2026-12-04T23:10:00.123+00:00 ->
    20261204T231000.123Z."""
    return when.replace("-", "").replace(":", "").replace("+0000", "Z")


class DriftWatch:
    def __init__(self, director: str, target: str, keys: Keys,
                 audit_log: str = audit.DEFAULT_AUDIT_LOG, *, ttl: int = AUDIT_TTL,
                 keep: int = AUDIT_KEEP, log: Callable[[str], None] = print,
                 netns: str | None = None, watch: bool = True):
        self.director, self.target, self.keys = director, target, keys
        self.audit_log, self.ttl, self.keep, self.log = audit_log, ttl, keep, log
        self.events = {"repaired": 0, "alerted": 0}    # audit events recorded, by action
        self.authors: dict[str, int] = {}              # events by first author's comm
        self.monitor: Monitor | None = None
        self._watch_note = "" if watch else "not watched (turned off)"
        self._seen: list[dict] | None = None   # kernel changes since the target matched
        self._lost = 0                          # ... and how many were lost
        if watch:
            path = netns if not netns or "/" in netns else f"/run/netns/{netns}"
            try:
                self.monitor = Monitor(path).start()
            except OSError as exc:
                self._watch_note = f"not watched: the kernel's notifications: {exc}"
                log(f"drift: who changes {target} is not recorded: {exc}")
        self.standing: dict | None = None      # the drift left as is (alert), its event
        self._standing_key: str | None = None
        self._clean: str | None = None         # desired_key of the last successful apply
        self._unwritten: list[tuple[str, str]] = []    # (key, record) for etcd
        self._last_stamp = ""

    @property
    def active(self) -> bool:
        return self.standing is not None

    @property
    def prefix(self) -> str:
        return self.keys.director_status_prefix(self.director) + "audit/"

    def suspect(self, desired: str) -> bool:
        """Whether a non-empty plan of ``desired`` would be drift: it was applied. Called
        before the pass changes anything: what the monitor recorded until now is what
        a drift found by this pass is attributed to."""
        self._seen = self.monitor.changes() if self.monitor is not None else None
        self._lost = self.monitor.lost if self.monitor is not None else 0
        return desired == self._clean

    def close(self) -> None:
        if self.monitor is not None:
            self.monitor.close()
            self.monitor = None

    def settled(self, desired: str | None) -> None:
        """The target matches ``desired`` now (None: an apply failed or left something
        to finish, so the next pass is not judged)."""
        if self.standing is not None and desired is not None:
            self.log(f"drift recorded at {self.standing['time']} is gone")
        if self.monitor is not None:
            self.monitor.mark()
        self._clean = desired
        self.standing, self._standing_key = None, None

    def noticed(self, plan, model_source: str, policy: str, *, repair=None,
                repair_plan=None) -> dict | None:
        """Record a drift: the audit event (log, count, etcd record) unless it is the
        drift left standing already (then None)."""
        key = plan_key(plan)
        if repair is None and key == self._standing_key:
            return None
        action = "alerted" if repair is None else "repaired"
        who = audit.changed_by(self.target, self._seen, note=self._watch_note,
                               lost=self._lost)
        event = audit.audit_event(plan, self.target, model_source, repair=repair,
                                  repair_plan=repair_plan, director=self.director,
                                  command="elbctl agent", who=who)
        event["policy"], event["action"] = policy, action
        label = audit.author_label(who)
        if label not in self.authors and len(self.authors) >= AUTHOR_LABELS:
            label = "other"
        self.authors[label] = self.authors.get(label, 0) + 1
        self.log(f"drift of {self.target}: changed by " + (", ".join(
            f"{a.get('comm')} (pid {a.get('pid')}, {a.get('user', '?')})" for a in who["by"])
            or "unknown") + (f"; {who['unknown']}" if who["unknown"] else ""))
        try:
            audit.append_event(self.audit_log, event)
        except OSError as exc:      # the etcd record and the metric still say it
            self.log(f"audit log {self.audit_log} not written: {exc}")
        self.events[action] += 1
        if repair is None:
            self.standing, self._standing_key = event, key
        name = stamp(event["time"])
        if name <= self._last_stamp:            # two events in one millisecond
            name = f"{self._last_stamp}+"
        self._last_stamp = name
        self._unwritten = [*self._unwritten, (self.prefix + name, record_of(event))][
            -self.keep:]
        return event

    def flush(self, client) -> None:
        """Write the pending etcd records, then drop the oldest beyond ``keep``; raises
        EtcdError (the records stay pending)."""
        if not self._unwritten:
            return
        while self._unwritten:
            key, record = self._unwritten[0]
            lease = client.lease_grant(self.ttl)
            client.put(key, record, lease=lease)
            self._unwritten.pop(0)
        kvs, _ = client.get_prefix(self.prefix)
        for kv in sorted(kvs, key=lambda kv: kv.key)[:-self.keep or None]:
            client.delete(kv.key)
