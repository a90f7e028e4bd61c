"""netbench statistics and schedule: medians, bootstrap intervals, Mann-Whitney, shuffling."""

from __future__ import annotations

import itertools
import math

import pytest

from dcnet.netbench import schedule, stats

pytestmark = pytest.mark.unit


def test_estimate_median_and_interval_contain_the_median():
    values = [10.0, 11.0, 9.5, 10.5, 30.0]
    estimate = stats.estimate(values, seed=3)
    assert estimate.median == 10.5
    assert estimate.low <= estimate.median <= estimate.high
    assert estimate.low >= min(values) and estimate.high <= max(values)
    assert estimate.n == 5
    assert stats.estimate(values, seed=3) == estimate  # seeded: reproducible


def test_estimate_single_sample_and_no_sample():
    assert stats.estimate([4.0]) == stats.Estimate(4.0, 4.0, 4.0, 1)
    with pytest.raises(ValueError):
        stats.estimate([])


def test_interval_narrows_with_tighter_samples():
    wide = stats.estimate([5, 8, 10, 12, 15, 7, 13], seed=1)
    tight = stats.estimate([9.9, 10.0, 10.1, 10.0, 9.95, 10.05, 10.0], seed=1)
    assert (tight.high - tight.low) < (wide.high - wide.low)


def _brute_force_p(a, b):
    """Two-sided exact p by enumerating every split of the pooled ranks."""
    n, pooled = len(a), sorted([*a, *b])
    u_obs = sum(1 for x in a for y in b if x > y)
    u_obs = min(u_obs, len(a) * len(b) - u_obs)
    count = total = 0
    for chosen in itertools.combinations(range(len(pooled)), n):
        picked = set(chosen)
        xs = [pooled[i] for i in chosen]
        ys = [pooled[i] for i in range(len(pooled)) if i not in picked]
        u = sum(1 for x in xs for y in ys if x > y)
        total += 1
        count += min(u, n * len(b) - u) <= u_obs
    return count / total


@pytest.mark.parametrize("a, b", [
    ([1, 2, 3, 4, 5], [6, 7, 8, 9, 10]),
    ([1, 3, 5, 7, 9], [2, 4, 6, 8, 10]),
    ([1.5, 2.5, 9.0], [3.0, 4.0, 5.0, 6.0]),
    ([10, 20], [15, 25, 35]),
])
def test_mann_whitney_exact_matches_enumeration(a, b):
    assert stats.mann_whitney_p(a, b) == pytest.approx(min(1.0, _brute_force_p(a, b)))


def test_mann_whitney_known_values_and_ties():
    assert stats.mann_whitney_p([1, 2, 3, 4, 5], [6, 7, 8, 9, 10]) == pytest.approx(2 / 252)
    assert stats.mann_whitney_p([1, 2], [3, 4]) == pytest.approx(2 / 6)
    tied = stats.mann_whitney_p([1, 1, 2, 2, 3], [1, 2, 3, 3, 3])
    assert 0.05 < tied <= 1.0  # normal approximation with tie correction
    assert stats.mann_whitney_p([5, 5, 5], [5, 5, 5]) == 1.0


def test_compare_significant_needs_test_and_minimum_effect():
    reference = [10.0, 10.1, 9.9, 10.05, 9.95]
    faster = [12.0, 12.1, 11.9, 12.05, 11.95]
    result = stats.compare(reference, faster, seed=2, min_effect=0.05)
    assert result.ratio == pytest.approx(1.2)
    assert result.low <= result.ratio <= result.high
    assert result.significant and result.p_value < 0.05
    # clearly separated but only 1 % apart: below the minimum effect
    nudge = [v * 1.01 + 0.001 for v in reference]
    assert not stats.compare(reference, nudge, min_effect=0.05).significant
    # overlapping samples: the test says no
    noisy = [8.0, 12.0, 10.0, 9.0, 11.5]
    assert not stats.compare(reference, noisy).significant


def test_compare_too_few_samples_never_significant():
    result = stats.compare([1.0, 1.1], [2.0, 2.1])
    assert result.ratio == pytest.approx(2.05 / 1.05)
    assert not result.significant


def test_compare_zero_reference():
    assert math.isinf(stats.compare([0.0, 0.0], [1.0, 1.0]).ratio)


def test_percentile_interpolates():
    assert stats.percentile([1, 2, 3, 4], 50) == 2.5
    assert stats.percentile([5], 99) == 5


def test_schedule_interleaves_every_pair_once_per_round():
    items = schedule.plan(["a", "b", "c"], ["t1", "t2"], repeats=5, warmup_rounds=1, seed=4)
    assert len(items) == 6 * 6
    assert [i.order for i in items] == list(range(36))
    for round_index in range(6):
        in_round = [(i.mode, i.test) for i in items if i.round == round_index]
        assert sorted(in_round) == sorted(itertools.product("abc", ["t1", "t2"]))
        assert all(i.warmup == (round_index == 0) for i in items if i.round == round_index)
    orders = {tuple((i.mode, i.test) for i in items if i.round == r) for r in range(6)}
    assert len(orders) > 1  # shuffled afresh per round
    assert items == schedule.plan(["a", "b", "c"], ["t1", "t2"], 5, 1, 4)
    assert items != schedule.plan(["a", "b", "c"], ["t1", "t2"], 5, 1, 5)
