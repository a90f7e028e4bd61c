"""Test helper: the samples of a Prometheus text exposition, parsed by
``prometheus_client``'s own parser (so a malformed body fails the test)."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from dcnet.metrics.exposition import Exposition


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    """``{(sample name, frozenset(labels.items())): value}``."""
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def value(text: str, name: str, **labels) -> float | None:
    return samples(text).get((name, frozenset(labels.items())))


def scrape(*collectors) -> str:
    exposition = Exposition()
    for collector in collectors:
        exposition.register(collector)
    return exposition.generate().decode()
