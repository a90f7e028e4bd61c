"""Janitor: removes what earlier, killed lab runs left behind.

It owns ``sweep()``: for every state file under /run/dcnet-lab whose owner
process is dead (or whose pid was reused), it kills every process inside that
run's namespaces, deletes the namespaces, the log directory and the state file.
It also removes lab-pattern namespaces (``dl`` + 5 hex + ``-host``) that have no
state file at all once they are older than a short grace period. A live run
(owner alive with the recorded start time) is never touched.
``python -m dcnet.lab.janitor`` runs a sweep and prints what it removed.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import re
import shutil
import sys
from dataclasses import dataclass, field
from typing import Any

from dcnet.lab.builder import STATE_DIR, remove_namespace_and_processes, state_path
from dcnet.sysio import netns as netns_mod
from dcnet.sysio import proc

ORPHAN_NETNS = re.compile(r"^(dl[0-9a-f]{5})-[A-Za-z0-9_-]+$")
DEFAULT_GRACE_SECONDS = 30.0


@dataclass
class SweepReport:
    """What a sweep removed, what it left alone and what failed."""

    removed_runs: list[str] = field(default_factory=list)
    removed_netns: list[str] = field(default_factory=list)
    killed_pids: list[int] = field(default_factory=list)
    skipped_live_runs: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        return [
            *(f"removed run {prefix}" for prefix in self.removed_runs),
            *(f"removed netns {name}" for name in self.removed_netns),
            *(f"killed pid {pid}" for pid in self.killed_pids),
            *(f"left live run {prefix} alone" for prefix in self.skipped_live_runs),
            *(f"error: {error}" for error in self.errors),
        ]


def sweep(grace_seconds: float = DEFAULT_GRACE_SECONDS) -> SweepReport:
    """Remove leftovers of dead runs; return a report of what was done."""
    report = SweepReport()
    live_prefixes = set()
    for path in _state_files():
        state = _read_state(path, report)
        if state is None:
            continue
        if _owner_alive(state):
            live_prefixes.add(state["prefix"])
            report.skipped_live_runs.append(state["prefix"])
            continue
        _remove_dead_run(path, state, report)
    _remove_orphan_namespaces(live_prefixes, grace_seconds, report)
    return report


def _state_files() -> list[str]:
    try:
        names = sorted(os.listdir(STATE_DIR))
    except FileNotFoundError:
        return []
    return [os.path.join(STATE_DIR, name) for name in names if name.endswith(".json")]


def _read_state(path: str, report: SweepReport) -> dict[str, Any] | None:
    try:
        with open(path) as handle:
            state = json.load(handle)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        report.errors.append(f"unreadable state file {path}: {exc}")
        return None
    state.setdefault("prefix", os.path.basename(path)[: -len(".json")])
    return state


def _owner_alive(state: dict[str, Any]) -> bool:
    pid = state.get("owner_pid")
    return isinstance(pid, int) and proc.is_same_process(pid, state.get("owner_start_time"))


def _remove_dead_run(path: str, state: dict[str, Any], report: SweepReport) -> None:
    _kill_recorded_processes(state, report)
    for name in state.get("netns", []):
        _remove_netns(name, report)
    log_dir = state.get("log_dir")
    if log_dir and os.path.basename(log_dir).startswith(f"dcnet-lab-{state['prefix']}-"):
        shutil.rmtree(log_dir, ignore_errors=True)
    directory, name = os.path.split(path)
    temporaries = glob.glob(os.path.join(glob.escape(directory), f".{glob.escape(name)}.*.tmp"))
    for leftover in (*temporaries, path):  # atomic_write's temporaries, then the file
        with contextlib.suppress(FileNotFoundError):
            os.unlink(leftover)
    report.removed_runs.append(state["prefix"])


def _kill_recorded_processes(state: dict[str, Any], report: SweepReport) -> None:
    """Kill recorded pids that are still the very processes the run started."""
    for entry in state.get("processes", []):
        pid = entry.get("pid")
        if isinstance(pid, int) and proc.is_same_process(pid, entry.get("start_time")):
            proc.kill(pid)
            report.killed_pids.append(pid)


def _remove_netns(name: str, report: SweepReport) -> None:
    try:
        if not netns_mod.exists(name):
            return
        report.killed_pids.extend(netns_mod.pids(name))
        remove_namespace_and_processes(name)
        report.removed_netns.append(name)
    except Exception as exc:
        report.errors.append(f"removing netns {name}: {exc}")


def _remove_orphan_namespaces(live: set[str], grace_seconds: float, report: SweepReport) -> None:
    for name in netns_mod.list_names():
        match = ORPHAN_NETNS.match(name)
        if not match or match.group(1) in live or os.path.exists(state_path(match.group(1))):
            continue
        try:
            too_young = netns_mod.age_seconds(name) < grace_seconds
        except FileNotFoundError:
            continue
        if not too_young:
            _remove_netns(name, report)


def main() -> int:
    report = sweep()
    for line in report.lines() or ["nothing to clean up"]:
        print(line)
    return 1 if report.errors else 0


if __name__ == "__main__":
    sys.exit(main())
