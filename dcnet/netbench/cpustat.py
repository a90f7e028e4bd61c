"""CPU cost from /proc/stat: per-CPU time by state, including softirq, between two reads.

``parse`` turns the text of /proc/stat into per-CPU tick counters (pure); ``delta``
subtracts two snapshots into seconds per CPU and state; ``summary`` gives busy seconds
(user + nice + system + irq + softirq; idle, iowait and steal excluded), softirq seconds
and the per-CPU busy split. /proc/stat counts the whole machine, so on a shared host
other tenants' work is included; the result file says so and also keeps iperf3's own
per-process CPU figures.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

STATES = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")
BUSY = ("user", "nice", "system", "irq", "softirq")
PROC_STAT = "/proc/stat"


@dataclass(frozen=True)
class Snapshot:
    """Tick counters per CPU name (``cpu0``, ``cpu1``...) and state."""

    cpus: dict[str, dict[str, int]]


def parse(text: str) -> Snapshot:
    """Per-CPU counters from /proc/stat text (the aggregate ``cpu`` line is skipped)."""
    cpus: dict[str, dict[str, int]] = {}
    for line in text.splitlines():
        fields = line.split()
        if not fields or not fields[0].startswith("cpu") or fields[0] == "cpu":
            continue
        values = [int(v) for v in fields[1:1 + len(STATES)]]
        values += [0] * (len(STATES) - len(values))
        cpus[fields[0]] = dict(zip(STATES, values, strict=True))
    if not cpus:
        raise ValueError("no per-CPU lines in /proc/stat text")
    return Snapshot(cpus)


def read() -> Snapshot:
    with open(PROC_STAT) as handle:
        return parse(handle.read())


def ticks_per_second() -> int:
    return os.sysconf("SC_CLK_TCK")


def delta(before: Snapshot, after: Snapshot, hz: int = 100) -> dict[str, dict[str, float]]:
    """Seconds spent in each state on each CPU between two snapshots."""
    out: dict[str, dict[str, float]] = {}
    for cpu, counters in after.cpus.items():
        old = before.cpus.get(cpu)
        if old is None:
            continue
        out[cpu] = {state: max(0, counters[state] - old[state]) / hz for state in STATES}
    return out


def summary(seconds_by_cpu: dict[str, dict[str, float]]) -> dict[str, object]:
    """Busy and softirq seconds overall and busy seconds per CPU."""
    per_cpu = {cpu: round(sum(states[s] for s in BUSY), 4)
               for cpu, states in sorted(seconds_by_cpu.items())}
    return {
        "busy_s": round(sum(per_cpu.values()), 4),
        "softirq_s": round(sum(s["softirq"] for s in seconds_by_cpu.values()), 4),
        "system_s": round(sum(s["system"] for s in seconds_by_cpu.values()), 4),
        "user_s": round(sum(s["user"] + s["nice"] for s in seconds_by_cpu.values()), 4),
        "steal_s": round(sum(s["steal"] for s in seconds_by_cpu.values()), 4),
        "per_cpu_busy_s": per_cpu,
    }


def read_loadavg() -> list[float]:
    """The 1, 5 and 15 minute load averages."""
    with open("/proc/loadavg") as handle:
        return parse_loadavg(handle.read())


def parse_loadavg(text: str) -> list[float]:
    return [float(v) for v in text.split()[:3]]
