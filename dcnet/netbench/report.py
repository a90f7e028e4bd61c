"""``netbench report DIR``: a Markdown report (and PNG plots) from a run's result file.

The report states the run (state, samples, repeats, warm-up dropped), the machine
(kernel, CPU, load average, tool versions), the caveat that on one host no NIC is in the
path, every mode's status and path, a table of ratios to the baseline mode with their
95 % intervals (``*`` marks a significant difference), and the absolute figures per test.
In a dual-stack run every mode's IPv6 row (``mode IPv6``) follows its IPv4 row, ratios to
the baseline compare the same family, a table gives each mode's IPv6 / IPv4 ratios, and a
(mode, family, test) that was skipped says ``skipped`` with the reason listed.
``render`` is pure (a result document in, Markdown out); ``write`` adds the plots.
"""

from __future__ import annotations

import os
import statistics
import time
from typing import Any

from dcnet.netbench import summary
from dcnet.netbench.results import families, family_of, family_status
from dcnet.netbench.summary import Figure, label

REPORT_FILE = "report.md"
CAVEAT = ("All traffic stays on one host: there is no NIC in any path, so modes that "
          "would cross a wire (macvlan siblings, the host-gw and VXLAN underlays) measure "
          "the kernel's CPU cost of each path, not line rate. Compare modes with each "
          "other through the ratios, not with published NIC figures.")


def _time(epoch: float | None) -> str:
    if not epoch:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(epoch))


def _load_during(data: dict[str, Any]) -> str:
    loads = [s["load_average"][0] for s in data["samples"] if s.get("load_average")]
    if not loads:
        return "-"
    return (f"median {statistics.median(loads):.2f}, min {min(loads):.2f}, "
            f"max {max(loads):.2f} (1-minute average at each sample's start)")


def header(data: dict[str, Any], baseline: str) -> list[str]:
    definition, env, run = data["definition"], data["environment"], data["run"]
    samples = data["samples"]
    warm = sum(1 for s in samples if s["warmup"])
    failed = sum(1 for s in samples if not s["ok"])
    kernel = env.get("kernel", {})
    cpu = env.get("cpu", {})
    tools = env.get("tools", {})
    lines = [
        f"# netbench report: {definition['name']}",
        "",
        f"- Run: **{run['state']}**, {_time(run.get('started'))} to "
        f"{_time(run.get('finished'))}; {len(samples)} samples ({warm} warm-up, dropped; "
        f"{failed} failed); {definition['repeats']} measured rounds after "
        f"{definition['warmup_rounds']} warm-up round(s), modes and tests shuffled within "
        f"each round (seed {definition['seed']}).",
        f"- Machine: Linux {kernel.get('release', '?')}, {cpu.get('model', '?')} x "
        f"{env.get('online_cpus', '?')} CPUs, {(env.get('memory_kib') or 0) // 1024} MiB.",
        f"- Load average (1/5/15 min): {' / '.join(env.get('load_average', []))} at start, "
        f"{' / '.join(env.get('load_average_end', []))} at end; during the samples: "
        f"{_load_during(data)}.",
        f"- Tools: {'; '.join(f'{k}: {v}' for k, v in tools.items())}.",
        f"- Statistics: median of the measured rounds, 95 % bootstrap interval in brackets; "
        f"ratios are mode / {baseline} with a bootstrap interval; `*` = "
        f"significant (exact Mann-Whitney U p < 0.05, interval excluding 1 and at "
        f"least {definition.get('min_effect', 0.05):.0%} apart).",
        f"- Address families: {', '.join(families(data))}"
        + ("; each mode's IPv6 row follows its IPv4 row, and ratios to the baseline compare "
           "the same family." if len(families(data)) > 1 else "."),
        "",
        f"> {CAVEAT}",
        "",
    ]
    for error in run.get("errors", []):
        lines.insert(-1, f"> Note: {error}")
    return lines


def _rows(data: dict[str, Any]) -> list[tuple[str, str]]:
    """(mode, family) rows in definition order, each mode's families together."""
    return [(mode, family) for mode in data["definition"]["modes"]
            for family in families(data)]


def _skipped_tests(data: dict[str, Any], mode: str, family: str) -> dict[str, str]:
    entry = (data["modes"].get(mode, {}).get("families") or {}).get(family) or {}
    return entry.get("skipped_tests") or {}


def modes_table(data: dict[str, Any]) -> list[str]:
    lines = ["## Modes", "", "| mode | status | path | MTU (client) |",
             "| --- | --- | --- | --- |"]
    for name, family in _rows(data):
        mode = data["modes"].get(name, {})
        status, reason = family_status(data, name, family)
        if status != "ok":
            status = f"{status}: {reason}"
        skipped = _skipped_tests(data, name, family)
        if skipped:
            status += "; skipped: " + "; ".join(f"{test}: {why}"
                                                for test, why in skipped.items())
        interfaces = mode.get("interfaces") or [{}]
        mtu = interfaces[0].get("mtu", "-")
        lines.append(f"| {label(name, family)} | {status} | {mode.get('path', '')} | {mtu} |")
    return [*lines, ""]


def _headline_columns(data: dict[str, Any]) -> list[tuple[str, str]]:
    """(test, metric) columns: each test's headline metrics, then CPU of each tcp test."""
    columns: list[tuple[str, str]] = []
    for test in data["definition"]["tests"]:
        columns += [(test["name"], key) for key in summary.HEADLINE[test["kind"]]]
    columns += [(t["name"], "cpu_s_per_gb") for t in data["definition"]["tests"]
                if t["kind"] == "tcp"]
    return columns


def ratio_table(data: dict[str, Any], figures: list[Figure],
                baseline: str | None = None) -> list[str]:
    baseline = baseline or data["definition"]["baseline"]
    columns = _headline_columns(data)
    same = " over the same address family" if len(families(data)) > 1 else ""
    lines = [f"## Ratios to the {baseline} baseline", "",
             f"Each cell: mode / baseline{same}, 95 % interval in brackets, `*` significant. "
             "Throughput and connection rate: higher is better; latency and CPU per GB: "
             f"lower is better. The {baseline} row gives the absolute medians.", "",
             "| mode | " + " | ".join(summary.title(t, summary.BY_KEY[k])
                                      for t, k in columns) + " |",
             "| --- |" + " --- |" * len(columns)]
    for mode, family in _rows(data):
        if family_status(data, mode, family)[0] != "ok":
            continue
        skipped = _skipped_tests(data, mode, family)
        cells = []
        for test, key in columns:
            figure = summary.find(figures, mode, test, key, family)
            if test in skipped:
                cells.append("skipped")
            elif figure is None:
                cells.append("-")
            elif mode == baseline:
                cells.append(summary.format_value(figure.estimate.median, figure.metric))
            elif figure.vs_baseline is None:
                cells.append("no baseline")
            else:
                cells.append(summary.format_ratio(figure.vs_baseline))
        lines.append(f"| {label(mode, family)} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def family_table(data: dict[str, Any], figures: list[Figure]) -> list[str]:
    """Each mode's IPv6 / IPv4 ratios (empty unless the run has both families)."""
    if families(data) != ["ipv4", "ipv6"]:
        return []
    columns = _headline_columns(data)
    lines = ["## IPv6 / IPv4 per mode", "",
             "Each cell: the mode's IPv6 median / its IPv4 median, 95 % interval, `*` "
             "significant; same direction of better as above.", "",
             "| mode | " + " | ".join(summary.title(t, summary.BY_KEY[k])
                                      for t, k in columns) + " |",
             "| --- |" + " --- |" * len(columns)]
    for mode in data["definition"]["modes"]:
        status, reason = family_status(data, mode, "ipv6")
        if family_status(data, mode, "ipv4")[0] != "ok" or status != "ok":
            if data["modes"].get(mode, {}).get("status") == "ok":
                lines.append(f"| {mode} | {status}: {reason} |" + " |" * (len(columns) - 1))
            continue
        skipped = _skipped_tests(data, mode, "ipv6")
        cells = []
        for test, key in columns:
            figure = summary.find(figures, mode, test, key, "ipv6")
            if test in skipped:
                cells.append("skipped")
            elif figure is None or figure.vs_ipv4 is None:
                cells.append("-")
            else:
                cells.append(summary.format_ratio(figure.vs_ipv4))
        lines.append(f"| {mode} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def detail_tables(data: dict[str, Any], figures: list[Figure]) -> list[str]:
    lines = ["## Absolute figures (median [95 % interval], n samples)", ""]
    for test in data["definition"]["tests"]:
        keys = [m for m in summary.METRICS if test["kind"] in m.kinds]
        present = [m for m in keys if any(f.test == test["name"] and f.metric.key == m.key
                                          for f in figures)]
        if not present:
            continue
        lines += [f"### {test['name']} ({test['kind']})", "",
                  "| mode | n | " + " | ".join(
                      f"{m.label}{f' ({m.unit})' if m.unit else ''}" for m in present) + " |",
                  "| --- | --- |" + " --- |" * len(present)]
        for mode, family in _rows(data):
            row = [summary.find(figures, mode, test["name"], m.key, family) for m in present]
            if not any(row):
                continue
            n = max(f.estimate.n for f in row if f)
            cells = [summary.format_estimate(f.estimate, f.metric) if f else "-" for f in row]
            lines.append(f"| {label(mode, family)} | {n} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def failures(data: dict[str, Any]) -> list[str]:
    failed = [s for s in data["samples"] if not s["ok"]]
    if not failed:
        return []
    lines = ["## Failed samples", ""]
    seen: dict[tuple[str, str, str], int] = {}
    for sample in failed:
        key = (label(sample["mode"], family_of(sample)), sample["test"],
               sample.get("error") or "")
        seen[key] = seen.get(key, 0) + 1
    for (mode, test, error), count in seen.items():
        lines.append(f"- {mode} {test} x{count}: {error}")
    return [*lines, ""]


def render(data: dict[str, Any], plots: list[str] | None = None,
           baseline: str | None = None) -> str:
    """The Markdown report; ratios to ``baseline`` (default: the definition's)."""
    baseline = baseline or data["definition"]["baseline"]
    if baseline not in data["definition"]["modes"]:
        raise ValueError(f"baseline {baseline!r} is not a mode of this run "
                         f"({', '.join(data['definition']['modes'])})")
    figures = summary.figures(data, baseline)
    lines = [*header(data, baseline), *modes_table(data), *ratio_table(data, figures, baseline),
             *family_table(data, figures), *detail_tables(data, figures), *failures(data)]
    if plots:
        lines += ["## Plots", ""] + [f"![{name}]({name})" for name in plots] + [""]
    return "\n".join(lines)


def write(data: dict[str, Any], directory: str, with_plots: bool = True,
          baseline: str | None = None) -> str:
    """Write report.md (and the PNG plots) into ``directory``; returns the report path."""
    text = render(data, None, baseline)  # validates the baseline before writing anything
    os.makedirs(directory, exist_ok=True)
    plots: list[str] = []
    if with_plots:
        from dcnet.netbench import plots as plotting

        plots = plotting.write_all(summary.figures(data, baseline), directory)
        text = render(data, plots, baseline)
    path = os.path.join(directory, REPORT_FILE)
    with open(path, "w") as handle:
        handle.write(text)
    return path
