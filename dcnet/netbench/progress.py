"""The progress bar of ``netbench run``: one redrawn line on a terminal, plain lines otherwise.

It shows samples done out of the total, a bar, the estimated time left (from the
average time per sample so far) and the last sample's headline figure.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

WIDTH = 24


def headline(kind: str, metrics: dict[str, float]) -> str:
    """The one figure worth printing for a sample of ``kind``."""
    if kind in ("tcp", "udp") and "gbps" in metrics:
        return f"{metrics['gbps']:.2f} Gb/s"
    if kind == "latency" and "p50_us" in metrics:
        return f"p50 {metrics['p50_us']:.1f} us, p99 {metrics['p99_us']:.1f} us"
    if kind == "rr" and "mean_us" in metrics:
        return f"mean {metrics['mean_us']:.1f} us"
    if kind == "connrate" and "connections_per_s" in metrics:
        return f"{metrics['connections_per_s']:.0f} conn/s"
    return ""


def format_seconds(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s"


class Progress:
    """Call ``step(label)`` after each sample."""

    def __init__(self, total: int, stream: TextIO | None = None, enabled: bool = True):
        self.total = total
        self.done = 0
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.started = time.monotonic()

    def line(self, label: str) -> str:
        filled = int(WIDTH * self.done / self.total) if self.total else WIDTH
        elapsed = time.monotonic() - self.started
        left = elapsed / self.done * (self.total - self.done) if self.done else 0.0
        bar = "#" * filled + "." * (WIDTH - filled)
        return (f"[{bar}] {self.done}/{self.total} {format_seconds(left)} left  {label}")

    def step(self, label: str) -> None:
        self.done += 1
        if not self.enabled:
            return
        text = self.line(label)
        if self.tty:
            self.stream.write("\r\x1b[K" + text[:160])
            if self.done == self.total:
                self.stream.write("\n")
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def message(self, text: str) -> None:
        if not self.enabled:
            return
        if self.tty:
            self.stream.write("\r\x1b[K")
        self.stream.write(text + "\n")
        self.stream.flush()
