"""From samples to figures: per (mode, test, metric) medians with intervals, and ratios.

Pure: works on a loaded result document. Only successful, non-warm-up samples count.
The metric catalogue says which metrics each test kind reports, their units and whether
higher is better (so a report can say "better"/"worse" rather than "up"/"down").
Percentiles are never averaged: each sample's p50/p99 is one value, and the figures are
the median of those values over the repeats.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dcnet.netbench import stats
from dcnet.netbench.results import measured


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
    Metric("connections_per_s", "connection rate", "conn/s", True, ("connrate",), 0),
)
BY_KEY = {metric.key: metric for metric in METRICS}
HEADLINE = {"tcp": ("gbps",), "udp": ("gbps",), "latency": ("p50_us", "p99_us"),
            "connrate": ("connections_per_s",)}


@dataclass(frozen=True)
class Figure:
    """One metric of one test on one mode, and its ratio to the baseline mode."""

    mode: str
    test: str
    kind: str
    metric: Metric
    estimate: stats.Estimate
    vs_baseline: stats.Comparison | None


def values(data: dict[str, Any]) -> dict[tuple[str, str, str], list[float]]:
    """(mode, test, metric) -> the measured values, in sample order."""
    out: dict[tuple[str, str, str], list[float]] = {}
    for sample in measured(data):
        for key, value in sample["metrics"].items():
            if key in BY_KEY and sample["kind"] in BY_KEY[key].kinds and value == value:
                out.setdefault((sample["mode"], sample["test"], key), []).append(float(value))
    return out


def kinds(data: dict[str, Any]) -> dict[str, str]:
    """Test name -> kind, from the definition recorded in the result file."""
    return {test["name"]: test["kind"] for test in data["definition"]["tests"]}


def figures(data: dict[str, Any], baseline: str | None = None) -> list[Figure]:
    """Every figure of a run, in definition order of modes, tests and metrics; ratios are
    to ``baseline`` (default: the definition's baseline mode)."""
    definition = data["definition"]
    seed = int(definition.get("seed", 1))
    min_effect = float(definition.get("min_effect", 0.05))
    baseline = baseline or definition["baseline"]
    table = values(data)
    test_kinds = kinds(data)
    out: list[Figure] = []
    for mode in definition["modes"]:
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
                out.append(Figure(mode, test, kind, metric, stats.estimate(samples, seed),
                                  comparison))
    return out


def find(figs: list[Figure], mode: str, test: str, metric: str) -> Figure | None:
    for figure in figs:
        if (figure.mode, figure.test, figure.metric.key) == (mode, test, metric):
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
