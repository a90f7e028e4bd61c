"""The order samples run in: rounds of every (mode, family, test), shuffled within a round.

Pure and seeded. Every round visits each (mode, address family, test) once, in an order
shuffled afresh per round, so modes and families are interleaved (A B A B, not A A B B)
and slow drifts of a shared machine's load spread over all of them instead of biasing
one. The first ``warmup_rounds`` rounds are run and recorded but flagged as warm-up and
left out of the statistics. ``skip`` names (mode, family, test) cells that are not run
(a mode or test that cannot use a family); with one family and no skips the order is the
one earlier versions planned for (mode, test) pairs with the same seed.
"""

from __future__ import annotations

import random
from collections.abc import Collection, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Item:
    """One scheduled sample."""

    order: int
    round: int
    warmup: bool
    mode: str
    test: str
    family: str = "ipv4"


def plan(modes: Sequence[str], tests: Sequence[str], repeats: int, warmup_rounds: int,
         seed: int, families: Sequence[str] = ("ipv4",),
         skip: Collection[tuple[str, str, str]] = ()) -> list[Item]:
    rng = random.Random(seed)
    items: list[Item] = []
    cells = [(mode, family, test) for mode in modes for family in families for test in tests
             if (mode, family, test) not in skip]
    for round_index in range(warmup_rounds + repeats):
        shuffled = list(cells)
        rng.shuffle(shuffled)
        for mode, family, test in shuffled:
            items.append(Item(len(items), round_index, round_index < warmup_rounds, mode,
                              test, family))
    return items
