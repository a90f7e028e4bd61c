"""``netbench compare A B``: run B against run A, metric by metric, with significance.

For every (mode, test, metric) measured in both runs it gives A's and B's medians, the
ratio B/A with its 95 % bootstrap interval, the exact Mann-Whitney U p-value, and a
verdict: ``better``/``worse`` when significant (p < 0.05, the ratio's interval excludes 1
and the ratio is at least ``min_effect`` away from 1; higher-is-better is known per
metric), otherwise ``same``. Each address family is compared with the same family of the
other run (IPv6 rows are labelled ``mode IPv6``). Pure: two loaded result documents in,
rows and Markdown text out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dcnet.netbench import results, stats, summary


@dataclass(frozen=True)
class Row:
    mode: str
    test: str
    metric: summary.Metric
    a: stats.Estimate
    b: stats.Estimate
    comparison: stats.Comparison
    family: str = "ipv4"

    @property
    def verdict(self) -> str:
        return summary.verdict(self.metric, self.comparison)


def rows(a: dict[str, Any], b: dict[str, Any], min_effect: float | None = None,
         seed: int = 1) -> list[Row]:
    if min_effect is None:
        min_effect = float(b["definition"].get("min_effect", 0.05))
    out = []
    for family in results.families(b):
        values_a, values_b = summary.values(a, family), summary.values(b, family)
        for (mode, test, key), samples_b in values_b.items():
            samples_a = values_a.get((mode, test, key))
            if not samples_a:
                continue
            out.append(Row(mode, test, summary.BY_KEY[key], stats.estimate(samples_a, seed),
                           stats.estimate(samples_b, seed),
                           stats.compare(samples_a, samples_b, seed=seed,
                                         min_effect=min_effect), family))
    order = {m.key: i for i, m in enumerate(summary.METRICS)}
    families = {name: i for i, name in enumerate(("ipv4", "ipv6"))}
    return sorted(out, key=lambda r: (r.mode, families.get(r.family, 9), r.test,
                                      order[r.metric.key]))


def render(a: dict[str, Any], b: dict[str, Any], min_effect: float | None = None) -> str:
    table = rows(a, b, min_effect)
    effect = min_effect if min_effect is not None else b["definition"].get("min_effect", 0.05)
    lines = [f"# netbench compare: B = {b.get('_path', 'B')} against A = {a.get('_path', 'A')}",
             "",
             f"Ratio = B / A of medians, 95 % bootstrap interval; significant = exact "
             f"Mann-Whitney U p < 0.05, interval excluding 1, at least {effect:.0%} apart.", ""]
    if not table:
        return "\n".join([*lines, "No (mode, test, metric) was measured in both runs.", ""])
    lines += ["| mode | test | metric | A | B | B/A | p | verdict |",
              "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for row in table:
        lines.append(
            f"| {summary.label(row.mode, row.family)} | {row.test} | {row.metric.label} | "
            f"{summary.format_value(row.a.median, row.metric)} (n={row.a.n}) | "
            f"{summary.format_value(row.b.median, row.metric)} (n={row.b.n}) | "
            f"{summary.format_ratio(row.comparison)} | {row.comparison.p_value:.3f} | "
            f"{row.verdict} |")
    significant = [r for r in table if r.verdict != "same"]
    lines.append("")
    if significant:
        lines.append(f"Significant differences ({len(significant)} of {len(table)}):")
        lines += [f"- {summary.label(r.mode, r.family)} {r.test} {r.metric.label}: {r.verdict} "
                  f"({r.comparison.ratio:.2f}x)" for r in significant]
    else:
        lines.append(f"No significant difference in {len(table)} comparisons.")
    smallest = min(min(r.a.n, r.b.n) for r in table)
    if smallest < 4:
        lines.append(f"(With {smallest} samples on a side no difference can reach p < 0.05; "
                     "run at least 5 repeats.)")
    return "\n".join([*lines, ""])
