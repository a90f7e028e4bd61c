"""``elbctl agent``: one director following the desired state in etcd.

Two threads, each with its own etcd client:

- the watcher reads a snapshot (the backends' prefix first, which fixes the revision, then
  the current pointer and its model revision) and watches ``elb/desired/`` from the
  snapshot's revision + 1. When the connection breaks it resumes from the revision after
  the last event it passed on (no change missed); when that revision was compacted it
  reads a new snapshot (full resync). While etcd is unreachable it retries with backoff.
- the main loop folds snapshots and events into :class:`DesiredState`, waits until the
  changes settle (``debounce`` seconds without a new event, at most ``debounce_max``
  after the first), builds the effective model (:mod:`dcnet.elbstore.effective`) and runs
  the target's own plan/apply (:mod:`dcnet.elbstore.targets`), then writes its status.
  A failed apply is retried with backoff; every ``resync`` seconds the last desired state
  is applied again (repairs drift). Nothing is torn down while etcd is away: the target
  keeps its state and the agent converges once etcd answers again. A status that could
  not be written is written when etcd is back.
- after each successful apply, the draining backend records are followed
  (:class:`dcnet.elbstore.drains.DrainFollower`, a thread per record): the director's
  drain reports (connections left, then drained / deadline) reach the main loop through
  the same queue and are written like the status, under the director's status prefix,
  for ``elbctl backend drain|remove --store`` to wait on.
- drift (issue #20): a pass whose desired state is the one last applied successfully yet
  plans changes found the target changed outside dcnet (:mod:`dcnet.elbstore.driftwatch`:
  audit log, metric, etcd record). The model's ``agent.drift`` decides: ``repair``
  applies, ``alert`` plans only and reports the drift in the status until it is gone.
"""

from __future__ import annotations

import contextlib
import os
import queue
import socket
import sys
import threading
import time
from collections.abc import Callable

from dcnet.elbstore import bundle
from dcnet.elbstore.desired import DesiredState
from dcnet.elbstore.drains import DrainFollower
from dcnet.elbstore.driftwatch import DriftWatch, desired_key, plan_model, settles
from dcnet.elbstore.effective import effective_model
from dcnet.elbstore.keys import KeyNameError, Keys, check_director
from dcnet.elbstore.records import RecordError, Status, decode_current
from dcnet.elbstore.store import CountingClient, ElbStore
from dcnet.elbstore.targets import apply_model, available, create_target
from dcnet.model import ModelError


def stderr_log(text: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} elbctl agent: {text}", file=sys.stderr, flush=True)


class Agent:
    def __init__(self, settings, director: str, target: str, options: dict | None = None, *,
                 cache_dir: str | None = None, debounce: float = 0.05,
                 debounce_max: float = 0.5, resync: float = 60.0, retry_max: float = 30.0,
                 log: Callable[[str], None] = stderr_log,
                 client_factory: Callable[[], object] | None = None,
                 audit_log: str | None = None):
        if target not in available():
            raise ValueError(f"unknown target {target!r} (known: {', '.join(available())})")
        self.settings = settings
        self.director = check_director(director)
        self.target = target
        self.options = dict(options or {})
        self.keys = Keys()
        self.cache_dir = cache_dir or os.path.join("/var/lib/dcnet/elb-agent", director)
        self.debounce, self.debounce_max = debounce, debounce_max
        self.resync, self.retry_max = resync, retry_max
        self.log = log
        if client_factory is None:
            from dcnet.sysio.etcd import Client

            def client_factory():
                return Client(settings)
        self._client_factory = client_factory
        self.main_client = CountingClient(client_factory())
        self.watch_client = CountingClient(client_factory())
        self.store = ElbStore(self.main_client, self.keys, director)
        self.state = DesiredState(self.keys)
        self.events: queue.Queue = queue.Queue()
        self.applies = 0
        self._parsed: tuple[int, object] | None = None
        self._last_written: tuple | None = None
        self._pending: Status | None = None
        self._pending_key: tuple | None = None
        self._status_retry_at = 0.0
        self._status_warned = False
        self._drain_reports: dict[tuple[str, str], object] = {}   # key -> report or None
        self.drift = DriftWatch(self.director, target, self.keys,
                                **({"audit_log": audit_log} if audit_log else {}), log=log,
                                netns=self.options.get("netns"))
        self.drains = DrainFollower(
            self.director, lambda: create_target(self.target, self.options),
            lambda key, report: self.events.put(("drain", key, report)), log)

    # ------------------------------------------------------------------ watcher thread

    def _snapshot(self, client):
        backend_kvs, revision = client.get_prefix(self.keys.backends)
        current_kv = client.get(self.keys.current)
        model_kv = None
        if current_kv is not None:
            with contextlib.suppress(RecordError):       # reported by DesiredState
                model_kv = client.get(self.keys.model(decode_current(current_kv.value)))
        return current_kv, model_kv, backend_kvs, revision

    def _watch(self, stop: threading.Event) -> None:
        from dcnet.sysio.etcd import EtcdCompacted, EtcdError, EtcdUnavailable

        client, start, pause = self.watch_client, None, 0.2
        while not stop.is_set():
            try:
                if start is None:
                    snapshot = self._snapshot(client)
                    self.events.put(("snapshot", snapshot))
                    start = snapshot[3] + 1
                    pause = 0.2
                for _revision, events in client.watch_prefix(self.keys.desired, start, stop):
                    if events:
                        last = max(e.kv.mod_revision for e in events)
                        self.events.put(("events", last, events))
                        start = last + 1
                    pause = 0.2
            except EtcdCompacted as exc:
                self.events.put(("note", f"revision {start} was compacted (compact revision "
                                         f"{exc.compact_revision}): full resync"))
                start = None
            except EtcdUnavailable as exc:
                self.events.put(("down", str(exc)))
                # a fresh client logs in again: a watch refused mid-stream with "invalid
                # auth token" (etcd restarted, its tokens gone) does not renew the token
                client.replace_client(self._client_factory())
                stop.wait(pause)
                pause = min(pause * 2, 5.0)
            except EtcdError as exc:
                self.events.put(("error", str(exc)))
                stop.wait(pause)
                pause = min(pause * 2, 5.0)
            except Exception as exc:  # a bug must not stop the director: report, retry
                self.events.put(("error", f"watcher: {type(exc).__name__}: {exc}"))
                stop.wait(pause)
                pause = min(pause * 2, 5.0)

    # ------------------------------------------------------------------ main loop

    def run(self, stop: threading.Event) -> None:
        self.log(f"director {self.director}, target {self.target}, watching "
                 f"{self.keys.desired} on {', '.join(self.settings.endpoints)}")
        watcher = threading.Thread(target=self._watch, args=(stop,), name="etcd-watch",
                                   daemon=True)
        watcher.start()
        synced = False
        etcd_down = False
        first_dirty = last_event = None
        retry_at: float | None = None
        backoff = 1.0
        last_apply = time.monotonic()
        while not stop.is_set():
            now = time.monotonic()
            wakeups = [now + 1.0]
            if first_dirty is not None:
                wakeups.append(min(last_event + self.debounce, first_dirty + self.debounce_max))
            if retry_at is not None:
                wakeups.append(retry_at)
            if synced:
                wakeups.append(last_apply + self.resync)
            messages = []
            try:
                messages.append(self.events.get(timeout=max(0.0, min(wakeups) - now)))
                while True:
                    messages.append(self.events.get_nowait())
            except queue.Empty:
                pass
            for message in messages:
                kind = message[0]
                if kind == "snapshot":
                    self.state.load_snapshot(*message[1])
                    synced, etcd_down = True, False
                    first_dirty = first_dirty or time.monotonic()
                    last_event = time.monotonic()
                    self.log(f"snapshot at etcd revision {self.state.revision}: model "
                             f"revision {self.state.current}, "
                             f"{sum(map(len, self.state.registry.values()))} registered "
                             "backend(s)")
                elif kind == "events":
                    if etcd_down:
                        self.log("etcd answers again; watch resumed")
                        etcd_down = False
                    if self.state.apply_events(message[1], message[2]):
                        first_dirty = first_dirty or time.monotonic()
                        last_event = time.monotonic()
                elif kind == "drain":
                    self._drain_reports[message[1]] = message[2]
                elif kind == "down":
                    if not etcd_down:
                        self.log(f"etcd unreachable, keeping the {self.target} state as it "
                                 f"is and retrying: {message[1]}")
                    etcd_down = True
                else:
                    self.log(message[1])
            for problem in self.state.problems:
                self.log(f"ignored: {problem}")
            self.state.problems.clear()
            now = time.monotonic()
            due = (first_dirty is not None and (now - last_event >= self.debounce
                                                or now - first_dirty >= self.debounce_max))
            due = due or (retry_at is not None and now >= retry_at)
            due = due or (synced and now - last_apply >= self.resync)
            if due and synced and not stop.is_set():
                first_dirty = last_event = None
                ok = self.converge()
                last_apply = time.monotonic()
                if ok is False:
                    retry_at = last_apply + backoff
                    backoff = min(backoff * 2, self.retry_max)
                else:
                    retry_at, backoff = None, 1.0
            self._flush_status()
        self.drains.stop()
        while not self.events.empty():            # the last reports of stopped waits
            message = self.events.get_nowait()
            if message[0] == "drain":
                self._drain_reports[message[1]] = message[2]
        self._flush_status()
        watcher.join(10.0)          # the watch ends with ``stop``; then close both clients
        for client in (self.watch_client, self.main_client):
            with contextlib.suppress(Exception):
                client.close()

    # ------------------------------------------------------------------ one apply

    def converge(self) -> bool | None:
        """Apply the desired state once; False when it should be retried, None when
        there is nothing to apply (no model) or it is invalid."""
        from dcnet.sysio.etcd import EtcdError

        state = self.state
        if state.current is None:
            self._report(Status(self.director, self.target, "waiting", None, state.revision,
                                errors=["no model pushed yet"]))
            return None
        missing = state.missing_model()
        if missing is not None:
            try:
                state.add_model(self.store.model(missing))
            except (EtcdError, LookupError, RecordError) as exc:
                self._report(Status(self.director, self.target, "failed", missing,
                                    state.revision, errors=[f"reading the model: {exc}"]))
                return False
        record = state.model
        try:
            model = self._model(record)
        except ModelError as exc:
            self._report(Status(self.director, self.target, "invalid", record.revision,
                                state.revision, errors=[str(p) for p in exc.problems]))
            return None
        effective = effective_model(model, state.registry)
        desired = desired_key(record.revision, state.registry)
        suspect = self.drift.suspect(desired)
        if suspect and model.agent.drift == "alert":
            return self._alert(record.revision, effective, desired)
        self.applies += 1
        started = time.monotonic()
        try:
            outcome = apply_model(self.target, self.options, effective)
        except Exception as exc:  # target unreachable (HAProxy down, IPVS, lock, ...)
            self._report(Status(self.director, self.target, "failed", record.revision,
                                state.revision, errors=[f"{type(exc).__name__}: {exc}"]))
            return False
        result = outcome.result
        errors = [] if result.ok else [f"{result.failed.describe()}: {result.error}"]
        status = Status(self.director, self.target, "ok" if result.ok else "failed",
                        record.revision, state.revision, errors=errors,
                        changes=len(outcome.plan.changes), applied=len(result.applied),
                        summary=outcome.plan.summary())
        if outcome.plan.changes or not result.ok:
            self.log(f"model revision {record.revision} at etcd revision {state.revision}: "
                     f"{status.summary}; applied {status.applied} in "
                     f"{time.monotonic() - started:.3f}s"
                     + ("" if result.ok else f"; FAILED {errors[0]}"))
        if suspect and outcome.plan.changes:
            event = self.drift.noticed(outcome.plan, f"etcd model revision {record.revision}",
                                       "repair", repair=result, repair_plan=outcome.plan)
            self.log(f"drift: {self.target} was changed outside dcnet, "
                     f"{'repaired' if result.ok else 'repair FAILED'} (agent.drift: repair; "
                     f"audit event at {event['time']})")
        self.drift.settled(desired if result.ok and settles(outcome.plan) else None)
        self._report(status)
        if result.ok:
            self.drains.follow(state.registry, state.records, effective)
        return result.ok

    def _alert(self, model_revision: int, effective, desired: str) -> bool:
        """``agent.drift: alert``: plan only. A drift is recorded once and reported in
        the status (result ``drift``) on every pass, the target left as it is."""
        revision = self.state.revision
        try:
            plan = plan_model(self.target, self.options, effective).plan
        except Exception as exc:  # target unreachable (HAProxy down, IPVS, lock, ...)
            self._report(Status(self.director, self.target, "failed", model_revision,
                                revision, errors=[f"{type(exc).__name__}: {exc}"]))
            return False
        if not plan.changes:
            self.drift.settled(desired if settles(plan) else None)
            self._report(Status(self.director, self.target, "ok", model_revision, revision,
                                summary=plan.summary()))
            return True
        self.drift.noticed(plan, f"etcd model revision {model_revision}", "alert")
        since = self.drift.standing["time"]
        described = [c.describe() for c in plan.changes]
        errors = [f"{self.target} changed outside dcnet (noticed {since}), left as is "
                  "(agent.drift: alert); the model would change:", *described[:10]]
        if len(described) > 10:
            errors.append(f"{len(described) - 10} more changes")
        self._report(Status(self.director, self.target, "drift", model_revision, revision,
                            errors=errors, changes=len(plan.changes),
                            summary=plan.summary()))
        return True

    def _model(self, record):
        if self._parsed is not None and self._parsed[0] == record.revision:
            return self._parsed[1]
        self._private_cache()
        model = bundle.load_files(record.files, record.model_file,
                                  os.path.join(self.cache_dir, "model"))
        self._parsed = (record.revision, model)
        return model

    def _private_cache(self) -> None:
        """The cache directory 0700 (made so, or tightened when it is ours and looser):
        it holds the model's files and templates (issue 14)."""
        os.makedirs(self.cache_dir, mode=0o700, exist_ok=True)
        info = os.stat(self.cache_dir)
        if info.st_mode & 0o077 and info.st_uid == os.geteuid():
            os.chmod(self.cache_dir, 0o700)

    # ------------------------------------------------------------------ status

    def _report(self, status: Status) -> None:
        same = (status.result, status.model_revision, status.revision, tuple(status.errors),
                status.changes)
        if same == self._last_written and not status.changes:
            return
        if status.result not in ("ok",) and same != self._pending_key:
            self.log(f"{status.result} (model revision {status.model_revision}): "
                     + "; ".join(status.errors))
        status.time = time.time()
        status.host, status.pid = socket.gethostname(), os.getpid()
        status.applies = self.applies
        self._pending = status
        self._pending_key = same

    def _flush_status(self) -> None:
        from dcnet.sysio.etcd import EtcdError

        if time.monotonic() < self._status_retry_at:
            return
        if self._drain_reports and not self._flush_drains():
            return
        if not self._flush_audit():
            return
        if self._pending is None:
            return
        status = self._pending
        counts = self.main_client.counts + self.watch_client.counts
        status.etcd_ops = dict(sorted(counts.items()))
        try:
            self.store.write_status(status)
        except EtcdError as exc:
            if not self._status_warned:
                self.log(f"status not written yet (will retry): {exc}")
                self._status_warned = True
            self._status_retry_at = time.monotonic() + 2.0
            return
        self._status_warned = False
        self._last_written = self._pending_key
        self._pending = None

    def _flush_audit(self) -> bool:
        """Write the pending etcd audit records of drifts; False when etcd refused."""
        from dcnet.sysio.etcd import EtcdError

        try:
            self.drift.flush(self.main_client)
        except EtcdError as exc:
            if not self._status_warned:
                self.log(f"drift audit record not written yet (will retry): {exc}")
                self._status_warned = True
            self._status_retry_at = time.monotonic() + 2.0
            return False
        return True

    def _flush_drains(self) -> bool:
        """Write (or delete) the pending drain reports; False when etcd refused."""
        from dcnet.sysio.etcd import EtcdError

        for key, report in list(self._drain_reports.items()):
            try:
                path = self.keys.drain_report(self.director, *key)
            except KeyNameError as exc:        # a registry key no JOBNAME: nothing to say
                self.log(f"drain report not written: {exc}")
                del self._drain_reports[key]
                continue
            try:
                if report is None:
                    self.main_client.delete(path)
                else:
                    self.main_client.put(path, report.encode())
            except EtcdError as exc:
                if not self._status_warned:
                    self.log(f"drain report not written yet (will retry): {exc}")
                    self._status_warned = True
                self._status_retry_at = time.monotonic() + 2.0
                return False
            if self._drain_reports.get(key) is report:
                del self._drain_reports[key]
        return True
