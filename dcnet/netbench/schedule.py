"""The order samples run in: rounds of every (mode, test) pair, shuffled within a round.

Pure and seeded. Every round visits each pair once, in an order shuffled afresh per
round, so modes are interleaved (A B A B, not A A B B) and slow drifts of a shared
machine's load spread over all modes instead of biasing one. The first
``warmup_rounds`` rounds are run and recorded but flagged as warm-up and left out of the
statistics.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Item:
    """One scheduled sample."""

    order: int
    round: int
    warmup: bool
    mode: str
    test: str


def plan(modes: Sequence[str], tests: Sequence[str], repeats: int, warmup_rounds: int,
         seed: int) -> list[Item]:
    rng = random.Random(seed)
    items: list[Item] = []
    for round_index in range(warmup_rounds + repeats):
        pairs = [(mode, test) for mode in modes for test in tests]
        rng.shuffle(pairs)
        for mode, test in pairs:
            items.append(Item(len(items), round_index, round_index < warmup_rounds, mode,
                              test))
    return items
