"""What target runs leave behind for the exporters: one status file per target instance,
and the optional Pushgateway push of short-lived commands.

:func:`dcnet.target.session.run` wraps every plan/apply in :func:`recording` while it
holds the target's lock, so the file ``<lock file>.status.json`` (written atomically,
0644) counts every run of every caller (``elbctl apply``, ``elbctl agent``, tests):
plans, applies by result, changes applied, writes by kind (the targets' ``counters()``
deltas), durations, and the time of the last successful sync. Exporters read it at
scrape time (:func:`read`); nothing here imports :mod:`dcnet.target`.

When ``$DCNET_PUSHGATEWAY`` names a Pushgateway (``host:port`` or a URL) the same
numbers of this run are pushed there too (job ``dcnet_elbctl``, grouped by target), for
commands that exit before any scrape. A push that fails is logged, never fatal.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from dcnet.sysio.files import atomic_write

ENV_PUSHGATEWAY = "DCNET_PUSHGATEWAY"
SUFFIX = ".status.json"
VERSION = 1
log = logging.getLogger(__name__)


def status_path(lock_path: str) -> str:
    return lock_path + SUFFIX


def read(path: str) -> dict[str, Any]:
    """The status recorded at ``path`` ({} when no run recorded one yet)."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (FileNotFoundError, ValueError):
        return {}
    return data if isinstance(data, dict) and data.get("version") == VERSION else {}


@dataclass
class Run:
    """One run being recorded: the session fills ``plan`` and ``result`` as it goes."""

    target: str
    apply: bool
    plan: Any = None
    result: Any = None


def merge(status: dict[str, Any], run: Run, error: BaseException | None, started: float,
          finished: float) -> dict[str, Any]:
    """Pure: ``status`` with ``run`` counted in (a new dict)."""
    out = {"version": VERSION, "target": run.target, "plans": 0, "applies": {},
           "changes_applied": 0, "writes": {}, "duration_sum": 0.0, "duration_count": 0}
    out.update(status)
    out["applies"] = dict(out["applies"])
    out["writes"] = dict(out["writes"])
    duration = max(0.0, finished - started)
    out["last_attempt"] = finished
    if not run.apply:
        out["plans"] += 1
        if error is None and run.plan is not None:
            out["last_plan_changes"] = len(run.plan.changes)
        return out
    if error is not None:
        outcome = "error"
    elif run.result is not None and run.result.ok:
        outcome = "ok"
    else:
        outcome = "failed"
    out["applies"][outcome] = out["applies"].get(outcome, 0) + 1
    out["duration_sum"] += duration
    out["duration_count"] += 1
    out["last_duration"] = duration
    out["last_result"] = outcome
    if run.result is not None:
        out["changes_applied"] += len(run.result.applied)
        for kind, count in run.result.writes.items():
            out["writes"][kind] = out["writes"].get(kind, 0) + count
    if outcome == "ok":
        out["last_success"] = finished
        out["last_plan_changes"] = len(run.plan.changes) if run.plan is not None else 0
    return out


@contextlib.contextmanager
def recording(target: str, lock_path: str | None, apply: bool) -> Iterator[Run]:
    """Record the run done inside the block (also when it raises) in the status file
    next to ``lock_path`` (nothing when the target has no lock file), then push it."""
    run = Run(target, apply)
    started = time.time()
    error: BaseException | None = None
    try:
        yield run
    except BaseException as exc:
        error = exc
        raise
    finally:
        finished = time.time()
        if lock_path is not None:
            path = status_path(lock_path)
            try:
                atomic_write(path, json.dumps(merge(read(path), run, error, started,
                                                    finished), sort_keys=True))
            except OSError as exc:
                log.warning("cannot record the run of %s in %s: %s", target, path, exc)
        if apply and os.environ.get(ENV_PUSHGATEWAY):
            push_run(os.environ[ENV_PUSHGATEWAY], run, error, finished - started)


def push_run(gateway: str, run: Run, error: BaseException | None, duration: float) -> bool:
    """Push this run's numbers to the Pushgateway at ``gateway``; False when it failed."""
    from prometheus_client import CollectorRegistry, Gauge, push_to_gateway

    registry = CollectorRegistry()
    ok = error is None and run.result is not None and run.result.ok
    Gauge("dcnet_elbctl_last_run_success", "1 when this run applied its plan fully",
          registry=registry).set(1 if ok else 0)
    Gauge("dcnet_elbctl_last_run_duration_seconds", "Seconds the run took (lock held)",
          registry=registry).set(duration)
    Gauge("dcnet_elbctl_last_run_timestamp_seconds", "When the run ended",
          registry=registry).set_to_current_time()
    applied = Gauge("dcnet_elbctl_last_run_changes", "Changes of the run's plan by outcome",
                    ["outcome"], registry=registry)
    planned = len(run.plan.changes) if run.plan is not None else 0
    done = len(run.result.applied) if run.result is not None else 0
    applied.labels("planned").set(planned)
    applied.labels("applied").set(done)
    writes = Gauge("dcnet_elbctl_last_run_writes", "Writes of the run by kind", ["kind"],
                   registry=registry)
    for kind, count in (run.result.writes if run.result is not None else {}).items():
        writes.labels(kind).set(count)
    try:
        push_to_gateway(gateway, job="dcnet_elbctl", registry=registry,
                        grouping_key={"target": run.target}, timeout=5)
    except OSError as exc:
        log.warning("push to the Pushgateway %s failed: %s", gateway, exc)
        return False
    return True
