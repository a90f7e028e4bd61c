"""Running an experiment: steady state, method, rollbacks, steady state, and the result.

It owns the run's order and its safety: under the journal's lock it first reverts what
an earlier runner left (:func:`recover`), checks the steady state (the probes' success
ratio over ``steady_seconds``; no fault is applied when it does not hold), applies each
fault after journaling it, waits its duration, reverts it, runs the rollbacks and checks
the steady state again. Whatever happens (an error, Ctrl-C, SIGTERM) every journaled
fault is reverted before it returns; after a SIGKILL the next run or ``recover`` does it.
The result (a dict, also written as JSON, ``result_format`` versioned) has per probe and
per fault step the failed requests during and after the fault, the time from the fault
to the first and to the last failure in it (time to detect), the time from its revert to
the first success after the last failure (time to recover), a timeline (requests OK and
failed per 100 ms, and the run's events: steady windows, fault injected and reverted,
rollbacks) and the state left over after the run (goal: none): faults still journaled,
chaos nft tables, stopped processes, and every difference between the snapshots of the
scoped namespaces and watched files taken before and after (:mod:`dcnet.chaos.snapshot`).
:mod:`dcnet.chaos.report` turns a result into Markdown and a timeline plot.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import time
from collections.abc import Callable, Iterator

from dcnet.chaos import faults, snapshot
from dcnet.chaos.experiment import Experiment, Rollback, Step
from dcnet.chaos.journal import Journal
from dcnet.chaos.probes import ProbeRunner, buckets, make, recovered_at, window
from dcnet.sysio import files, netns, proc

Log = Callable[[str], None]
RESULT_FORMAT = 2           # 2: timeline, time_to_recover, snapshot leftovers, loadavg
BUCKET_SECONDS = 0.1


class SteadyStateFailed(RuntimeError):
    """The steady-state hypothesis did not hold before the method: nothing was injected."""


def recover(journal: Journal, log: Log = print) -> list[str]:
    """Revert every fault the journal holds as applied and not reverted (caller holds the
    journal's lock); what was done, one line each."""
    done = []
    for number, record in journal.pending():
        try:
            done.append(faults.revert(record))
        except (proc.CommandError, OSError) as exc:
            done.append(f"fault {number} ({record['kind']} in {record['namespace']}): revert "
                        f"failed: {exc}")
            log(done[-1])
            continue
        journal.reverted(number)
        log(done[-1])
    journal.clear_if_done()
    return done


@contextlib.contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    def handler(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")
    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run(experiment: Experiment, journal: Journal, out: str | None = None,
        log: Log = print, lock_timeout: float = 10.0) -> dict:
    with journal.locked(lock_timeout), _sigterm_interrupts():
        recovered = recover(journal, log)
        result = {"result_format": RESULT_FORMAT, "experiment": experiment.name,
                  "source": experiment.source, "description": experiment.description,
                  "director": socket.gethostname(), "recovered_at_start": recovered,
                  "steps": [], "rollbacks": [], "interrupted": False, "error": None}
        before = snapshot.take(experiment.namespaces, experiment.watch_files)
        probes = [make(p) for p in experiment.probes]
        t0 = time.monotonic()
        for probe in probes:
            probe.start()
        marks: list[dict] = []
        events: list[dict] = []
        try:
            _steady(experiment, probes, "before", result, events)
            for index, step in enumerate(experiment.method):
                marks.append(_step(experiment, journal, index, step, log))
            recover(journal, log)           # the faults held (stacked) until the method ends
            for rollback in experiment.rollbacks:
                result["rollbacks"].append(_rollback(rollback, log))
                events.append({"t": time.monotonic(), "event": "rollback",
                               "what": os.path.basename(rollback.argv[0])})
            events.append({"t": time.monotonic(), "event": "steady after"})
            time.sleep(experiment.steady_seconds)
        except KeyboardInterrupt as exc:
            result["interrupted"] = True
            result["error"] = f"interrupted ({exc or 'Ctrl-C'})"
        except (faults.FaultError, SteadyStateFailed, proc.CommandError, OSError) as exc:
            result["error"] = str(exc)
        finally:
            result["reverted_at_end"] = recover(journal, log)
            end = time.monotonic()
            for probe in probes:
                probe.stop()
        _summarise(experiment, probes, marks, events, t0, end, result)
        result["timeline"] = _timeline(probes, marks, events, t0, end)
        result["leftovers"] = leftovers(experiment, journal, marks)
        result["leftovers"] += [line for p in probes for line in p.leftovers]
        settled = time.monotonic()
        result["leftovers"] += _settle(experiment, before)
        result["settle_seconds"] = round(time.monotonic() - settled, 3)
        result["loadavg"] = [round(x, 2) for x in os.getloadavg()]
        result["ok"] = result["error"] is None and all(
            p["after"]["ok"] for p in result["probes"]) and not result["leftovers"]
        if out:
            files.atomic_write(out, json.dumps(result, indent=2, sort_keys=True) + "\n")
        return result


def _steady(experiment: Experiment, probes: list[ProbeRunner], phase: str, result: dict,
            events: list[dict]):
    start = time.monotonic()
    event = {"t": start, "event": f"steady {phase}"}
    events.append(event)
    time.sleep(experiment.steady_seconds)
    end = event["until"] = time.monotonic()
    # a request is recorded when it ends: let the ones started in the window finish
    deadline = end + max(p.probe.timeout for p in probes) + 0.1
    while any(p.in_flight_since(end) for p in probes) and time.monotonic() < deadline:
        time.sleep(0.02)
    for probe in probes:
        w = window(probe.records, start, end)
        if w["success"] is None or w["success"] < probe.probe.min_success:
            raise SteadyStateFailed(f"steady state {phase} the method does not hold: probe "
                                    f"{probe.probe.name} {w}")


def _step(experiment: Experiment, journal: Journal, index: int, step: Step, log: Log) -> dict:
    mark = {"index": index, "kind": step.kind, "namespace": step.namespace,
            "duration": step.duration}
    if step.kind == "pause":
        mark["start"] = time.monotonic()
        time.sleep(step.duration)
        mark["end"] = time.monotonic()
        return mark
    record = faults.prepare(step, experiment.name, index)
    number = journal.record(record)              # BEFORE the fault exists
    mark["fault"] = record
    mark["start"] = time.monotonic()
    faults.apply(record)
    mark["injected"] = time.monotonic()
    log(f"fault {index}: {step.kind} in {step.namespace} for {step.duration:g}s")
    if step.hold:               # stacked with the next steps: reverted when the method ends
        time.sleep(step.duration)
        mark["end"] = mark["reverted"] = time.monotonic()
        return mark
    try:
        time.sleep(step.duration)
    finally:
        mark["end"] = time.monotonic()
        log(faults.revert(record))
        journal.reverted(number)
        mark["reverted"] = time.monotonic()
    return mark


def _rollback(rollback: Rollback, log: Log) -> dict:
    started = time.monotonic()
    if rollback.wait_gone:      # e.g. a SIGTERMed daemon still shutting down on its port
        pattern = re.compile(rollback.wait_gone)
        while any(pattern.search(proc.cmdline(p)) for p in netns.pids(rollback.namespace)
                  ) and time.monotonic() < started + rollback.timeout:
            time.sleep(0.1)
    # setsid -f: the process outlives the runner and is nobody's child here
    proc.run(["sh", "-c", 'log=$1; shift; setsid -f "$@" </dev/null >>"$log" 2>&1', "sh",
              rollback.log or "/dev/null", *rollback.argv], netns=rollback.namespace)
    ready = True
    if rollback.ready_tcp:
        address, port = rollback.ready_tcp.rsplit(":", 1)
        ready = netns.run_in(rollback.namespace, _wait_tcp, address, int(port),
                             rollback.timeout)
    if rollback.ready_command:
        ready = ready and _wait_command(rollback, started + rollback.timeout)
    log(f"rollback: started {rollback.argv[0]} in {rollback.namespace} (ready: {ready})")
    return {"namespace": rollback.namespace, "argv": list(rollback.argv),
            "ready": ready, "seconds": round(time.monotonic() - started, 3)}


def _settle(experiment: Experiment, before: dict) -> list[str]:
    """The differences from the snapshot before, once none are left or ``settle_seconds``
    passed (state cleaned up asynchronously, e.g. dying veths the agent reaps)."""
    deadline = time.monotonic() + experiment.settle_seconds
    while True:
        left = snapshot.diff(before, snapshot.take(experiment.namespaces,
                                                   experiment.watch_files))
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.2)


def _wait_command(rollback: Rollback, deadline: float) -> bool:
    while time.monotonic() < deadline:
        try:
            proc.run(list(rollback.ready_command), netns=rollback.namespace)
            return True
        except proc.CommandError:
            time.sleep(0.1)
    return False


def _wait_tcp(address: str, port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((address, port), 0.5):
            return True
        time.sleep(0.05)
    return False


def _summarise(experiment: Experiment, probes: list[ProbeRunner], marks: list[dict],
               events: list[dict], t0: float, end: float, result: dict) -> None:
    result["probes"] = []
    for probe in probes:
        # before: the steady window checked before the method (none: until the first step)
        first = marks[0]["start"] if marks else end
        begin, first = next(((e["t"], e["until"]) for e in events
                             if e["event"] == "steady before" and "until" in e), (t0, first))
        # after: the last steady window (after the rollbacks), as the hypothesis is checked
        last = max((e["t"] for e in events if e["event"] == "steady after"),
                   default=max((m["end"] for m in marks), default=end))
        summary = {"name": probe.probe.name, "kind": probe.probe.kind,
                   "target": (probe.probe.url or probe.probe.route or probe.probe.conflist
                              or f"{probe.probe.qname} {probe.probe.qtype} @{probe.probe.server}"),
                   "before": window(probe.records, begin, first),
                   "after": window(probe.records, last, end)}
        summary["after"]["ok"] = (summary["after"]["success"] or 0) >= probe.probe.min_success
        summary["total"] = window(probe.records, t0, end)
        if hasattr(probe, "failed_adds"):
            summary["failed_adds"] = probe.failed_adds[:20]
            summary["slow_adds"] = probe.slow_adds[:20]
            summary["dirty_failures"] = probe.dirty_failures
        if getattr(probe, "last_error", None):
            summary["last_error"] = probe.last_error
        result["probes"].append(summary)
    for m in marks:
        step = {k: m[k] for k in ("index", "kind", "namespace", "duration")}
        if "fault" in m:
            step["fault"] = m["fault"]
            step["inject_seconds"] = round(m["injected"] - m["start"], 4)
            step["revert_seconds"] = round(m["reverted"] - m["end"], 4)
        step["probes"] = {}
        for probe in probes:
            during = window(probe.records, m["start"], m["end"])
            after = window(probe.records, m["end"], end)
            step["probes"][probe.probe.name] = {
                "during": during, "after": after,
                "time_to_first_failure": during["first_failure"],
                "time_to_detect": during["last_failure"],
                "time_to_recover": recovered_at(probe.records, m["end"], end)}
        result["steps"].append(step)


def _timeline(probes: list[ProbeRunner], marks: list[dict], events: list[dict],
              t0: float, end: float) -> dict:
    """Requests OK/failed per bucket and the run's events, seconds from the probes' start."""
    out = [{"t": e["t"], **{k: v for k, v in e.items() if k != "t"}} for e in events]
    for m in marks:
        if "fault" in m:
            what = f"{m['kind']} in {m['namespace']}"
            out.append({"t": m["injected"], "event": "fault start", "step": m["index"],
                        "what": what})
            out.append({"t": m["end"], "event": "fault stop", "step": m["index"],
                        "what": what})
    for e in out:
        e["t"] = round(e["t"] - t0, 3)
        if "until" in e:
            e["until"] = round(e["until"] - t0, 3)
    return {"bucket_seconds": BUCKET_SECONDS, "seconds": round(end - t0, 3),
            "events": sorted(out, key=lambda e: e["t"]),
            "probes": {p.probe.name: buckets(p.records, t0, end, BUCKET_SECONDS)
                       for p in probes}}


def leftovers(experiment: Experiment, journal: Journal, marks: list[dict]) -> list[str]:
    """What the run left behind: faults still journaled, chaos nft tables, processes it
    stopped and that are still stopped."""
    left = [f"journal: fault {n} ({r['kind']} in {r['namespace']}) not reverted"
            for n, r in journal.pending()]
    for name in experiment.namespaces:
        if netns.exists(name):
            left += [f"{name}: nft table {t}" for t in faults.tables(name)]
    for m in marks:
        if m.get("kind") == "stop":
            for pid, started in m["fault"]["pids"]:
                if proc.is_same_process(pid, started) and proc.state(pid) == "T":
                    left.append(f"pid {pid} still stopped")
    return left
