"""Bounded cardinality: per-server series only while they stay few (pure logic).

Every collector emits per-service series (bounded by the model's services, ports and
carriers). Per-real-server series are added only while their number stays at or below a
threshold (``--max-server-series``, default :data:`DEFAULT_MAX_SERVER_SERIES`); above it
the collector emits the per-service aggregates alone and says so in
``dcnet_metrics_per_server_series_enabled 0`` and ``dcnet_metrics_server_rows``. Node
exporter's IPVS collector has no such switch and reached 18k series on users' hosts
(node_exporter#1708). Nothing here is labelled by client or connection.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass

DEFAULT_MAX_SERVER_SERIES = 2000
MODES = ("auto", "server", "service")


@dataclass(frozen=True)
class Bound:
    """The switch: ``mode`` ``auto`` (per server up to ``max_server_series`` rows),
    ``server`` (always per server) or ``service`` (never per server)."""

    max_server_series: int = DEFAULT_MAX_SERVER_SERIES
    mode: str = "auto"

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"cardinality mode {self.mode!r} is not one of {', '.join(MODES)}")
        if self.max_server_series < 0:
            raise ValueError("max_server_series must be >= 0")

    def per_server(self, rows: int) -> bool:
        """Whether ``rows`` per-server rows may be exposed one series set each."""
        if self.mode == "server":
            return True
        if self.mode == "service":
            return False
        return rows <= self.max_server_series


def aggregate(rows: Iterable, key: Callable[[object], Hashable],
              values: Callable[[object], Mapping[str, float]]) -> dict[Hashable, dict[str, float]]:
    """Sum ``values(row)`` per ``key(row)``, keys in first-seen order."""
    out: dict[Hashable, dict[str, float]] = {}
    for row in rows:
        into = out.setdefault(key(row), {})
        for name, value in values(row).items():
            into[name] = into.get(name, 0) + value
    return out
