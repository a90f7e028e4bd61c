"""PNG plots of a run: one horizontal bar chart per figure family, with 95 % intervals.

matplotlib is imported only here and only when plotting (Agg backend: no display).
Each chart has one bar group per mode and one bar per test (or percentile), the bar at
the median and the error bar spanning the bootstrap interval. In a dual-stack run each
mode's IPv6 group (``mode IPv6``) follows its IPv4 group.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from dcnet.netbench.summary import Figure, label

CHARTS = (
    # file name, title, x label, (kinds, metric keys)
    ("throughput.png", "Throughput (median, 95% CI)", "Gb/s", ("tcp", "udp"), ("gbps",)),
    ("latency.png", "Latency, sockperf one-way (median of per-run percentiles)", "us",
     ("latency",), ("p50_us", "p99_us")),
    ("rr.png", "Latency, qperf one-way mean (median over runs)", "us", ("rr",),
     ("mean_us",)),
    ("connrate.png", "Connection rate, one sequential client", "connections/s",
     ("connrate",), ("connections_per_s",)),
    ("cpu.png", "CPU cost, whole machine (both ends, incl. softirq)", "CPU s per GB",
     ("tcp",), ("cpu_s_per_gb",)),
)


def _series(figures: Sequence[Figure], kinds: Sequence[str],
            metrics: Sequence[str]) -> tuple[list[str], dict[str, dict[str, Figure]]]:
    """Row labels (mode, or ``mode IPv6``) in order, and series -> row label -> figure."""
    modes: list[str] = []
    series: dict[str, dict[str, Figure]] = {}
    for figure in figures:
        if figure.kind not in kinds or figure.metric.key not in metrics:
            continue
        row = label(figure.mode, figure.family)
        if row not in modes:
            modes.append(row)
        name = figure.test if len(metrics) == 1 else f"{figure.test} {figure.metric.short}"
        series.setdefault(name, {})[row] = figure
    return modes, series


def write_all(figures: Sequence[Figure], directory: str) -> list[str]:
    """Write every chart that has data; returns the file names written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for name, title, xlabel, kinds, metrics in CHARTS:
        modes, series = _series(figures, kinds, metrics)
        if not series:
            continue
        height = 0.8 / len(series)
        fig, ax = plt.subplots(figsize=(8, 1.0 + 0.45 * len(modes) * max(1, len(series)) ** 0.5))
        for index, (series_name, by_mode) in enumerate(series.items()):
            positions, medians, lows, highs = [], [], [], []
            for row, mode in enumerate(modes):
                figure = by_mode.get(mode)
                if figure is None:
                    continue
                positions.append(row + index * height)
                medians.append(figure.estimate.median)
                lows.append(figure.estimate.median - figure.estimate.low)
                highs.append(figure.estimate.high - figure.estimate.median)
            ax.barh(positions, medians, height=height, xerr=[lows, highs], capsize=2,
                    label=series_name)
        ax.set_yticks([row + height * (len(series) - 1) / 2 for row in range(len(modes))])
        ax.set_yticklabels(modes)
        ax.invert_yaxis()
        ax.set_xlabel(xlabel)
        ax.set_title(title)
        ax.legend(fontsize="small", loc="best")
        fig.tight_layout()
        fig.savefig(os.path.join(directory, name), dpi=100)
        plt.close(fig)
        written.append(name)
    return written
