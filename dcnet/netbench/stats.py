"""Statistics of repeated samples: medians, bootstrap intervals, ratios and significance.

Pure functions with a seeded random generator, so a report is reproducible from its
result file. The method follows the reference notes: medians rather than means, a 95 %
percentile bootstrap interval of the median, the ratio of two medians with its own
bootstrap interval, and a difference called significant only when an exact
Mann-Whitney U test says so (two-sided p < 0.05), the ratio's interval excludes 1, AND
the effect is at least the definition's ``min_effect`` (as pyperf's compare_to pairs a
test with a minimum effect). With five samples a side the rank test alone can pass while
the coarse bootstrap interval still spans 1; requiring both keeps a starred ratio's
printed interval consistent with the star.
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

BOOTSTRAP_RESAMPLES = 2000
CONFIDENCE = 0.95
ALPHA = 0.05
MIN_SAMPLES_FOR_CI = 5


@dataclass(frozen=True)
class Estimate:
    """Median of ``n`` samples and its bootstrap interval [low, high]."""

    median: float
    low: float
    high: float
    n: int

    def to_dict(self) -> dict[str, float | int]:
        return {"median": self.median, "low": self.low, "high": self.high, "n": self.n}


@dataclass(frozen=True)
class Comparison:
    """``candidate / reference`` of medians, its interval, the test's p and the verdict."""

    ratio: float
    low: float
    high: float
    p_value: float
    significant: bool
    n_reference: int
    n_candidate: int

    def to_dict(self) -> dict[str, float | int | bool]:
        return {"ratio": self.ratio, "low": self.low, "high": self.high,
                "p_value": self.p_value, "significant": self.significant,
                "n_reference": self.n_reference, "n_candidate": self.n_candidate}


def _rng(seed: int) -> random.Random:
    return random.Random(seed)


def _percentile(sorted_values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile ``q`` in [0, 1] of an already sorted sequence."""
    if not sorted_values:
        raise ValueError("percentile of no values")
    position = q * (len(sorted_values) - 1)
    lower = math.floor(position)
    upper = min(lower + 1, len(sorted_values) - 1)
    fraction = position - lower
    return sorted_values[lower] + (sorted_values[upper] - sorted_values[lower]) * fraction


def percentile(values: Sequence[float], q: float) -> float:
    """Percentile ``q`` (0..100) of ``values`` (linear interpolation)."""
    return _percentile(sorted(values), q / 100.0)


def _bootstrap_medians(values: Sequence[float], rng: random.Random,
                       resamples: int) -> list[float]:
    n = len(values)
    return sorted(statistics.median(rng.choices(values, k=n)) for _ in range(resamples))


def estimate(values: Sequence[float], seed: int = 1,
             resamples: int = BOOTSTRAP_RESAMPLES) -> Estimate:
    """Median and 95 % percentile-bootstrap interval of the median."""
    values = [float(v) for v in values]
    if not values:
        raise ValueError("no samples")
    median = statistics.median(values)
    if len(values) == 1:
        return Estimate(median, median, median, 1)
    medians = _bootstrap_medians(values, _rng(seed), resamples)
    tail = (1.0 - CONFIDENCE) / 2.0
    return Estimate(median, _percentile(medians, tail), _percentile(medians, 1.0 - tail),
                    len(values))


def compare(reference: Sequence[float], candidate: Sequence[float], seed: int = 1,
            min_effect: float = 0.05, resamples: int = BOOTSTRAP_RESAMPLES) -> Comparison:
    """Ratio of medians candidate/reference, its bootstrap interval and significance."""
    ref = [float(v) for v in reference]
    cand = [float(v) for v in candidate]
    if not ref or not cand:
        raise ValueError("both sides need samples")
    ref_median, cand_median = statistics.median(ref), statistics.median(cand)
    ratio = _ratio(cand_median, ref_median)
    rng = _rng(seed)
    ref_boot = _bootstrap_medians(ref, rng, resamples)
    cand_boot = _bootstrap_medians(cand, rng, resamples)
    rng.shuffle(cand_boot)
    ratios = sorted(_ratio(c, r) for c, r in zip(cand_boot, ref_boot, strict=True))
    tail = (1.0 - CONFIDENCE) / 2.0
    p_value = mann_whitney_p(ref, cand)
    low, high = _percentile(ratios, tail), _percentile(ratios, 1.0 - tail)
    excludes_one = low > 1.0 or high < 1.0
    significant = p_value < ALPHA and excludes_one and abs(ratio - 1.0) >= min_effect
    return Comparison(ratio, low, high, p_value, significant, len(ref), len(cand))


def _ratio(numerator: float, denominator: float) -> float:
    if denominator == 0:
        return math.inf if numerator > 0 else (1.0 if numerator == 0 else -math.inf)
    return numerator / denominator


def mann_whitney_p(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided p of the Mann-Whitney U test.

    Exact (the U distribution counted by dynamic programming) when there are no ties
    and both sides are small; otherwise the normal approximation with tie correction.
    """
    n, m = len(a), len(b)
    if n == 0 or m == 0:
        return 1.0
    ranks = _ranks([*a, *b])
    rank_sum_a = sum(ranks[:n])
    u_a = rank_sum_a - n * (n + 1) / 2.0
    u = min(u_a, n * m - u_a)
    tied = len(set(ranks)) != len(ranks)
    if not tied and n <= 30 and m <= 30:
        counts = _u_distribution(n, m)
        total = sum(counts)
        tail = sum(counts[: math.floor(u) + 1]) / total
        return min(1.0, 2.0 * tail)
    return _normal_p(u, n, m, [*a, *b])


def _ranks(values: Sequence[float]) -> list[float]:
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        average = (i + j) / 2.0 + 1.0
        for k in range(i, j + 1):
            ranks[order[k]] = average
        i = j + 1
    return ranks


def _u_distribution(n: int, m: int) -> list[int]:
    """counts[u] = number of orderings of n a's and m b's whose U statistic is u."""
    # f[i][j] is a list indexed by u for i a's and j b's.
    previous_row = [[1] for _ in range(m + 1)]  # i = 0: U is always 0
    for _ in range(n):
        row = [[1]]  # j = 0
        for j in range(1, m + 1):
            # last element is an a (adds j to U) or a b (adds nothing)
            with_a = [0] * j + previous_row[j]
            with_b = row[j - 1]
            size = max(len(with_a), len(with_b))
            row.append([(with_a[k] if k < len(with_a) else 0)
                        + (with_b[k] if k < len(with_b) else 0) for k in range(size)])
        previous_row = row
    return previous_row[m]


def _normal_p(u: float, n: int, m: int, values: Sequence[float]) -> float:
    mean = n * m / 2.0
    total = n + m
    tie_term = sum(c**3 - c for c in _tie_counts(values))
    variance = n * m / 12.0 * ((total + 1) - tie_term / (total * (total - 1)))
    if variance <= 0:
        return 1.0
    z = (abs(u - mean) - 0.5) / math.sqrt(variance)
    return min(1.0, math.erfc(max(z, 0.0) / math.sqrt(2.0)))


def _tie_counts(values: Sequence[float]) -> list[int]:
    counts: dict[float, int] = {}
    for value in values:
        counts[value] = counts.get(value, 0) + 1
    return [c for c in counts.values() if c > 1]
