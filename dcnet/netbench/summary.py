"""From samples to figures: per (mode, test, metric) medians with intervals, and ratios.

Pure: works on a loaded result document. Only successful, non-warm-up samples count.
The metric catalogue says which metrics each test kind reports, their units and whether
higher is better (so a report can say "better"/"worse" rather than "up"/"down").
Percentiles are never averaged: each sample's p50/p99 is one value, and the figures are
the median of those values over the repeats. Figures are per address family: a mode's
ratio to the baseline compares like with like (IPv6 to the baseline's IPv6), and every
IPv6 figure also carries its ratio to the same mode's IPv4 figure (``vs_ipv4``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dcnet.netbench import stats
from dcnet.netbench.results import families, family_of, measured


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    unit: str
    higher_is_better: bool
    kinds: tuple[str, ...]
    digits: int = 2
    short: str = ""


METRICS: tuple[Metric, ...] = (
    Metric("gbps", "throughput", "Gb/s", True, ("tcp", "udp")),
    Metric("cpu_s_per_gb", "CPU per GB, whole machine", "s/GB", False, ("tcp",), 3,
           "CPU/GB"),
    Metric("softirq_s_per_gb", "softirq per GB", "s/GB", False, ("tcp",), 3, "softirq/GB"),
    Metric("proc_cpu_s_per_gb", "CPU per GB, iperf3 processes", "s/GB", False, ("tcp",), 3,
           "process CPU/GB"),
    Metric("retransmits", "retransmits", "", False, ("tcp",), 0, "retransmits"),
    Metric("loss_pct", "UDP loss", "%", False, ("udp",), 1, "loss"),
    Metric("p50_us", "latency p50", "us", False, ("latency",), 1, "p50"),
    Metric("p90_us", "latency p90", "us", False, ("latency",), 1, "p90"),
    Metric("p99_us", "latency p99", "us", False, ("latency",), 1, "p99"),
    Metric("p999_us", "latency p99.9", "us", False, ("latency",), 1, "p99.9"),
    Metric("mean_us", "latency mean (qperf)", "us", False, ("rr",), 1, "mean"),
    Metric("connections_per_s", "connection rate", "conn/s", True, ("connrate",), 0),
)
BY_KEY = {metric.key: metric for metric in METRICS}
HEADLINE = {"tcp": ("gbps",), "udp": ("gbps",), "latency": ("p50_us", "p99_us"),
            "rr": ("mean_us",), "connrate": ("connections_per_s",)}


@dataclass(frozen=True)
class Figure:
    """One metric of one test on one mode over one family, its ratio to the baseline mode
    (same family) and, for IPv6, its ratio to the mode's IPv4 figure."""

    mode: str
    test: str
    kind: str
    metric: Metric
    estimate: stats.Estimate
    vs_baseline: stats.Comparison | None
    family: str = "ipv4"
    vs_ipv4: stats.Comparison | None = None


def label(mode: str, family: str) -> str:
    """A row label: the mode for IPv4, ``mode IPv6`` for IPv6."""
    return mode if family == "ipv4" else f"{mode} IPv6"


def values(data: dict[str, Any],
           family: str = "ipv4") -> dict[tuple[str, str, str], list[float]]:
    """(mode, test, metric) -> the measured values over ``family``, in sample order."""
    out: dict[tuple[str, str, str], list[float]] = {}
    for sample in measured(data):
        if family_of(sample) != family:
            continue
        for key, value in sample["metrics"].items():
            if key in BY_KEY and sample["kind"] in BY_KEY[key].kinds and value == value:
                out.setdefault((sample["mode"], sample["test"], key), []).append(float(value))
    return out


def kinds(data: dict[str, Any]) -> dict[str, str]:
    """Test name -> kind, from the definition recorded in the result file."""
    return {test["name"]: test["kind"] for test in data["definition"]["tests"]}


def figures(data: dict[str, Any], baseline: str | None = None) -> list[Figure]:
    """Every figure of a run, in definition order of modes, families, tests and metrics;
    ratios are to ``baseline`` (default: the definition's baseline mode) over the same
    family, and IPv6 figures also to the mode's IPv4 figure."""
    definition = data["definition"]
    seed = int(definition.get("seed", 1))
    min_effect = float(definition.get("min_effect", 0.05))
    baseline = baseline or definition["baseline"]
    tables = {family: values(data, family) for family in families(data)}
    ipv4 = tables.get("ipv4") or {}
    test_kinds = kinds(data)
    out: list[Figure] = []
    for mode in definition["modes"]:
        for family, table in tables.items():
            for test, kind in test_kinds.items():
                for metric in METRICS:
                    samples = table.get((mode, test, metric.key))
                    if kind not in metric.kinds or not samples:
                        continue
                    reference = table.get((baseline, test, metric.key))
                    comparison = None
                    if reference and mode != baseline:
                        comparison = stats.compare(reference, samples, seed=seed,
                                                   min_effect=min_effect)
                    same_mode_v4 = ipv4.get((mode, test, metric.key))
                    vs_ipv4 = None
                    if family != "ipv4" and same_mode_v4:
                        vs_ipv4 = stats.compare(same_mode_v4, samples, seed=seed,
                                                min_effect=min_effect)
                    out.append(Figure(mode, test, kind, metric, stats.estimate(samples, seed),
                                      comparison, family, vs_ipv4))
    return out


def find(figs: list[Figure], mode: str, test: str, metric: str,
         family: str = "ipv4") -> Figure | None:
    for figure in figs:
        if (figure.mode, figure.test, figure.metric.key, figure.family) == \
                (mode, test, metric, family):
            return figure
    return None


def verdict(metric: Metric, comparison: stats.Comparison) -> str:
    """'better', 'worse' or 'same' (not significant) for a candidate/reference ratio."""
    if not comparison.significant:
        return "same"
    higher = comparison.ratio > 1.0
    return "better" if higher == metric.higher_is_better else "worse"


def title(test: str, metric: Metric) -> str:
    """Column/series title: test name, short metric name, unit."""
    unit = f" ({metric.unit})" if metric.unit else ""
    short = f" {metric.short}" if metric.short else ""
    return f"{test}{short}{unit}"


def format_value(value: float, metric: Metric) -> str:
    if metric.digits == 0:
        return f"{value:,.0f}"
    return f"{value:.{metric.digits}f}"


def format_estimate(estimate: stats.Estimate, metric: Metric) -> str:
    return (f"{format_value(estimate.median, metric)} "
            f"[{format_value(estimate.low, metric)}, {format_value(estimate.high, metric)}]")


def format_ratio(comparison: stats.Comparison) -> str:
    """``0.80x* [0.75, 0.86]``; just ``0.80x`` when a side has one sample (no interval)."""
    if min(comparison.n_reference, comparison.n_candidate) < 2:
        return f"{comparison.ratio:.2f}x"
    mark = "*" if comparison.significant else ""
    return f"{comparison.ratio:.2f}x{mark} [{comparison.low:.2f}, {comparison.high:.2f}]"
