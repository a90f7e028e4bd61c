"""The load test's report: ``loadtest.json`` (the data), ``loadtest.md`` (the table and
the verdict) and ``loadtest.png`` (p99 latency and error share per factor, with the SLO
lines and the breaking step marked).

matplotlib is imported only here and only when plotting (Agg backend: no display), as
in :mod:`dcnet.chaos.report`.
"""

from __future__ import annotations

import json
import os

from dcnet.sysio import files

NAMES = ("loadtest.json", "loadtest.md", "loadtest.png")


def verdict(report: dict) -> str:
    slo = report["slo"]
    what = f"p99 <= {slo['p99_ms']:g} ms, errors <= {slo['errors']:.2%}"
    if report["breaking_step"] is None:
        top = report["steps"][-1]["factor"] if report["steps"] else None
        return f"The SLO ({what}) held at every step, up to x{top:g}."
    passing = report["last_passing_step"]
    last = f"x{passing:g}" if passing is not None else "none (the first step broke it)"
    return (f"The SLO ({what}) broke at x{report['breaking_step']:g}: "
            f"{'; '.join(report['reasons'])}. Last step that held: {last}.")


def _cell(value) -> str:
    return "-" if value is None else f"{value:g}"


def markdown(report: dict, plot_name: str | None = NAMES[2]) -> str:
    lines = ["# Load test", "",
             f"Recording `{report['recording']}` ({report['sessions']} sessions) to "
             f"`{report['target']}`, steps "
             f"{', '.join(f'x{s:g}' for s in report['steps_planned'])}, "
             f"{report['concurrency_per_copy']} sessions at a time per copy, one namespace "
             "and source address per copy.", "", f"**{verdict(report)}**", ""]
    if plot_name:
        lines += [f"![load test]({plot_name})", ""]
    lines += ["| factor | copies | requests | answered | errors | error share | p50 ms "
              "| p99 ms | max ms | wall s | answers/s | SLO |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for s in report["steps"]:
        lines.append(
            f"| x{s['factor']:g} | {s['copies']} | {s['requests']} | {s['answered']} | "
            f"{s['errors']} | {s['error_share']:.2%} | {_cell(s['p50_ms'])} | "
            f"{_cell(s['p99_ms'])} | {_cell(s['max_ms'])} | {s['wall_s']:g} | "
            f"{_cell(s['throughput_rps'])} | "
            f"{'; '.join(s['breaches']) if s['breaches'] else 'held'} |")
    return "\n".join(lines) + "\n"


def plot(report: dict, path: str) -> None:
    """p99 latency (log scale) and error share against the factor, with the SLO."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = report["steps"]
    factors = [s["factor"] for s in steps]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    p99 = [s["p99_ms"] if s["p99_ms"] is not None else float("nan") for s in steps]
    p50 = [s["p50_ms"] if s["p50_ms"] is not None else float("nan") for s in steps]
    top.plot(factors, p99, marker="o", color="#c0392b", label="p99")
    top.plot(factors, p50, marker=".", color="#7f8c8d", label="p50")
    top.axhline(report["slo"]["p99_ms"], color="#2c3e50", linestyle="--",
                label=f"SLO p99 {report['slo']['p99_ms']:g} ms")
    top.set_ylabel("latency (ms)")
    top.set_yscale("log")
    bottom.plot(factors, [100 * s["error_share"] for s in steps], marker="o",
                color="#d35400", label="errors")
    bottom.axhline(100 * report["slo"]["errors"], color="#2c3e50", linestyle="--",
                   label=f"SLO errors {report['slo']['errors']:.2%}")
    bottom.set_ylabel("errors (% of requests)")
    bottom.set_xlabel("amplification factor")
    for ax in (top, bottom):
        if report["breaking_step"] is not None:
            ax.axvline(report["breaking_step"], color="#c0392b", alpha=0.3, linewidth=6,
                       label=f"breaks at x{report['breaking_step']:g}")
        ax.set_xscale("log")
        ax.legend(loc="upper left", fontsize=7)
    fig.suptitle(verdict(report), fontsize=8, wrap=True)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write(report: dict, directory: str) -> list[str]:
    """The three files in ``directory``; the paths written."""
    os.makedirs(directory, exist_ok=True)
    paths = [os.path.join(directory, name) for name in NAMES]
    files.atomic_write(paths[0], json.dumps(report, indent=2, sort_keys=True) + "\n")
    files.atomic_write(paths[1], markdown(report))
    plot(report, paths[2])
    return paths
