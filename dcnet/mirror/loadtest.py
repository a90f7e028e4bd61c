"""One-click load test: replay a recording at rising factors until an SLO breaks.

It owns the ramp (:func:`run_loadtest`: one replay per step, in the order given, each
copy in its own namespace; it stops at the first step that breaks the SLO), the
per-step statistics (pure: :func:`step_stats` from the replay's result files) and the
SLO check (pure: :func:`breaches`). The report (JSON, Markdown, plot) is
:mod:`dcnet.mirror.loadtest_report`.

Per step: every request the step's copies should send counts (an HTTP session's
requests, one per raw session); a request without an answer (refused, reset, timed
out, its worker failed) is an error. Latency is per answered request (HTTP: request sent
to answer read; raw: connect to EOF). The SLO breaks when p99 > ``p99_ms`` or the error
share > ``errors``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

from dcnet.mirror import recording, replay

DEFAULT_STEPS = (1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0)


@dataclass(frozen=True)
class Slo:
    p99_ms: float
    errors: float           # share of requests, 0..1


def percentile(values: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile (None for no values)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * p // 100))      # ceil(n * p / 100)
    return ordered[int(rank) - 1]


def requests_of(session: recording.Session) -> int:
    split = replay.split_http(session.payload)
    return len(split) if split is not None else 1


def step_stats(factor: float, sessions: Sequence[recording.Session], summary: dict,
               wall_s: float) -> dict:
    """The step's numbers from its replay summary and the copies' result files."""
    plans = replay.plan_copies(sessions, factor)
    planned = answered = 0
    latencies: list[float] = []
    for copy in summary["copies"]:
        planned += sum(requests_of(s) for s in plans[copy["copy"]])
        if copy["exit"] != 0 or not os.path.exists(copy["out"]):
            continue
        with open(copy["out"]) as handle:
            for line in handle:
                result = json.loads(line)
                answered += len(result["latencies"])
                latencies.extend(result["latencies"])
    errors = planned - answered

    def ms(value: float | None) -> float | None:
        return None if value is None else round(value * 1e3, 3)

    return {"factor": factor, "copies": len(summary["copies"]), "requests": planned,
            "answered": answered, "errors": errors,
            "error_share": round(errors / planned, 6) if planned else 0.0,
            "p50_ms": ms(percentile(latencies, 50)), "p99_ms": ms(percentile(latencies, 99)),
            "max_ms": ms(max(latencies) if latencies else None),
            "wall_s": round(wall_s, 3),
            "throughput_rps": round(answered / wall_s, 1) if wall_s > 0 else None}


def breaches(stats: dict, slo: Slo) -> list[str]:
    """Why the step breaks the SLO (empty: it holds)."""
    reasons = []
    if stats["p99_ms"] is not None and stats["p99_ms"] > slo.p99_ms:
        reasons.append(f"p99 {stats['p99_ms']} ms > {slo.p99_ms} ms")
    if stats["error_share"] > slo.errors:
        reasons.append(f"errors {stats['error_share']:.2%} > {slo.errors:.2%}")
    if stats["answered"] == 0 and stats["requests"] > 0 and not reasons:
        reasons.append("no request answered")
    return reasons


def check_steps(steps: Sequence[float]) -> list[float]:
    steps = [float(s) for s in steps]
    if not steps:
        raise ValueError("no steps")
    for step in steps:
        if not replay.MIN_FACTOR <= step <= replay.MAX_FACTOR:
            raise ValueError(f"step x{step:g} outside {replay.MIN_FACTOR}..{replay.MAX_FACTOR}")
    if steps != sorted(set(steps)):
        raise ValueError("steps must rise")
    return steps


def run_loadtest(recording_path: str, target: str, slo: Slo, namespaces: Sequence[str],
                 out_dir: str, steps: Sequence[float] = DEFAULT_STEPS,
                 on_step: Callable[[dict], None] | None = None, concurrency: int = 16,
                 timeout: float = 600.0, clock: Callable[[], float] | None = None) -> dict:
    """Ramp the factor over ``steps`` until the SLO breaks; returns the report (data).

    ``on_step(stats)`` is called after each step (progress; tests use it to change the
    target between steps)."""
    import time

    clock = clock or time.monotonic
    steps = check_steps(steps)
    needed = replay.copy_count(steps[-1])
    if len(namespaces) < needed:
        raise ValueError(f"x{steps[-1]:g} needs {needed} namespaces, {len(namespaces)} given")
    sessions = recording.read(recording_path)
    report: dict = {"recording": recording_path, "target": target, "slo": asdict(slo),
                    "steps_planned": steps, "sessions": len(sessions),
                    "concurrency_per_copy": concurrency, "steps": [],
                    "breaking_step": None, "last_passing_step": None, "reasons": []}
    for factor in steps:
        step_dir = os.path.join(out_dir, f"x{factor:g}")
        os.makedirs(step_dir, exist_ok=True)
        begin = clock()
        summary = replay.run_replay(recording_path, factor, target, namespaces, step_dir,
                                    concurrency=concurrency, timeout=timeout)
        stats = step_stats(factor, sessions, summary, clock() - begin)
        stats["breaches"] = breaches(stats, slo)
        report["steps"].append(stats)
        if on_step is not None:
            on_step(stats)
        if stats["breaches"]:
            report["breaking_step"] = factor
            report["reasons"] = stats["breaches"]
            break
        report["last_passing_step"] = factor
    return report
