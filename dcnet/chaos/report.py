"""An experiment's report: Markdown (figures per fault step, left-overs) and a timeline plot.

:func:`markdown` is pure (a result dict from :func:`dcnet.chaos.runner.run` in, text
out). :func:`plot` draws requests OK (green) and failed (red) per bucket (100 ms) for
every probe, one panel each, with each fault's span shaded and the rollbacks marked;
matplotlib is imported only here and only when plotting (Agg backend: no display).
:func:`write` puts ``result.json``, ``report.md`` and ``timeline.png`` in a directory.
"""

from __future__ import annotations

import json
import os

from dcnet.sysio import files


def _seconds(value) -> str:
    return "-" if value is None else f"{value:.3f} s"


def markdown(result: dict, plot_name: str | None = "timeline.png") -> str:
    lines = [f"# Chaos experiment `{result['experiment']}`", ""]
    if result.get("description"):
        lines += [result["description"], ""]
    verdict = "OK" if result.get("ok") else "NOT OK"
    lines += [f"Result: **{verdict}** (steady state after the run held: "
              f"{all(p['after']['ok'] for p in result.get('probes', []))}; "
              f"error: {result.get('error') or 'none'}; "
              f"left over: {len(result.get('leftovers', []))}). "
              f"Load average at the end: {' '.join(map(str, result.get('loadavg', [])))}.", ""]
    if plot_name:
        lines += [f"![timeline]({plot_name})", ""]
    lines += ["## Probes", "", "| probe | kind | before: failed/requests | after: "
              "failed/requests | total: failed/requests | steady after |",
              "|---|---|---|---|---|---|"]
    for p in result.get("probes", []):
        cells = [f"{p[w]['failed']}/{p[w]['requests']}" for w in ("before", "after", "total")]
        lines.append(f"| {p['name']} | {p.get('kind', 'http')} | {' | '.join(cells)} | "
                     f"{'yes' if p['after']['ok'] else 'no'} |")
    lines += ["", "## Faults", "", "| step | fault | probe | failed during | failed after "
              "| first failure | time to detect | time to recover | inject / revert |",
              "|---|---|---|---|---|---|---|---|---|"]
    for step in result.get("steps", []):
        if "fault" not in step:
            continue
        fault = f"{step['kind']} in {step['namespace']} for {step['duration']:g} s"
        timing = f"{step['inject_seconds']:.3f} / {step['revert_seconds']:.3f} s"
        for name, f in step["probes"].items():
            lines.append(
                f"| {step['index']} | {fault} | {name} | {f['during']['failed']}/"
                f"{f['during']['requests']} | {f['after']['failed']}/{f['after']['requests']}"
                f" | {_seconds(f.get('time_to_first_failure'))} | "
                f"{_seconds(f['time_to_detect'])} | {_seconds(f.get('time_to_recover'))} "
                f"| {timing} |")
    lines += ["", "First failure and time to detect: the first and the last failed request "
              "while the fault was in place, from its injection (the last is when the system "
              "had routed around it, if it did). Time to recover: from the revert to the "
              "first success after the last failure (0: nothing failed after).", "",
              "## Rollbacks", ""]
    for r in result.get("rollbacks", []):
        lines.append(f"- `{' '.join(r['argv'])}` in {r['namespace']}: ready {r['ready']} "
                     f"after {r['seconds']} s")
    if not result.get("rollbacks"):
        lines.append("- none")
    lines += ["", "## Left over after the run", ""]
    lines += [f"- {line}" for line in result.get("leftovers", [])] or ["- nothing"]
    return "\n".join(lines) + "\n"


def plot(result: dict, path: str) -> None:
    """The timeline as a PNG (one panel per probe)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    timeline = result["timeline"]
    width = timeline["bucket_seconds"]
    names = list(timeline["probes"]) or ["(no probe)"]
    fig, axes = plt.subplots(len(names), 1, figsize=(10, 1.0 + 2.2 * len(names)),
                             sharex=True, squeeze=False)
    starts = {e["step"]: e["t"] for e in timeline["events"] if e["event"] == "fault start"}
    for ax, name in zip(axes[:, 0], names, strict=True):
        counts = timeline["probes"].get(name, [])
        xs = [i * width for i in range(len(counts))]
        ok = [c[0] for c in counts]
        failed = [c[1] for c in counts]
        ax.bar(xs, ok, width=width, align="edge", color="#4c9a2a", label="OK")
        ax.bar(xs, failed, width=width, align="edge", bottom=ok, color="#c0392b",
               label="failed")
        for e in timeline["events"]:
            if e["event"] == "fault stop" and e["step"] in starts:
                ax.axvspan(starts[e["step"]], e["t"], color="#f39c12", alpha=0.2,
                           label=f"fault {e['step']}: {e['what']}")
            elif e["event"] == "rollback":
                ax.axvline(e["t"], color="#2c3e50", linestyle="--", linewidth=1,
                           label=f"rollback: {e['what']}")
        ax.set_ylabel(f"{name}\nrequests / {width * 1000:g} ms")
        ax.legend(loc="upper right", fontsize=7)
    axes[-1, 0].set_xlabel("seconds since the probes started")
    fig.suptitle(f"{result['experiment']}: requests OK / failed per {width * 1000:g} ms")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write(result: dict, directory: str) -> list[str]:
    """result.json, report.md and timeline.png in ``directory``; the paths written."""
    os.makedirs(directory, exist_ok=True)
    paths = [os.path.join(directory, n) for n in ("result.json", "report.md", "timeline.png")]
    files.atomic_write(paths[0], json.dumps(result, indent=2, sort_keys=True) + "\n")
    has_timeline = "timeline" in result
    files.atomic_write(paths[1], markdown(result, "timeline.png" if has_timeline else None))
    if not has_timeline:
        return paths[:2]
    plot(result, paths[2])
    return paths
