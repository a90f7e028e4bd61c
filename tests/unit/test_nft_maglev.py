"""Maglev lookup tables (dcnet.nft.maglev): prime sizes, determinism, balance, weights,
and minimal disruption when one backend leaves."""

from __future__ import annotations

import pytest

from dcnet.nft import maglev

pytestmark = pytest.mark.unit


def backends(n: int) -> dict[str, int]:
    return {f"be-tcp-10.0.0.1-80-10.64.{i // 250}.{i % 250}-8080": 1 for i in range(n)}


def test_table_size_is_prime_and_above_100_slots_per_backend():
    assert maglev.table_size(3) == 65537
    assert maglev.table_size(655) == 65537
    size = maglev.table_size(1000)
    assert size > 100 * 1000 and maglev.is_prime(size)
    assert not maglev.is_prime(65536) and maglev.is_prime(65537)
    with pytest.raises(ValueError):
        maglev.build({"a": 1}, 65536)


def test_two_directors_build_byte_identical_tables_whatever_the_input_order():
    names = backends(50)
    reordered = dict(reversed(list(names.items())))
    a, b = maglev.build(names), maglev.build(reordered)
    assert maglev.table_bytes(a) == maglev.table_bytes(b)
    assert len(a) == 65537 and set(a) == set(range(50))


@pytest.mark.parametrize("count", [3, 100, 1000])
def test_balance_max_over_mean_at_most_1_01(count):
    size = maglev.table_size(count)
    loads = maglev.loads(maglev.build(backends(count), size), count)
    mean = size / count
    assert max(loads) / mean <= 1.01, (max(loads), mean)
    assert min(loads) / mean >= 0.99


def test_weights_set_the_shares_and_weight_zero_takes_no_slot():
    table = maglev.build({"a": 3, "b": 2, "c": 1, "drained": 0})
    assert maglev.names_of({"a": 3, "b": 2, "c": 1, "drained": 0}) == ["a", "b", "c"]
    loads = maglev.loads(table, 3)
    assert [round(x / len(table), 3) for x in loads] == [0.5, 0.333, 0.167]
    assert maglev.build({"a": 0}) == ()


@pytest.mark.parametrize("count", [10, 100])
def test_removing_one_backend_moves_its_share_and_little_else(count):
    """Maglev is not perfectly minimal (paper, figure 12): removing one of N backends
    moves its 1/N plus a small share of other slots; measured here: at most 2/N."""
    names = backends(count)
    gone = sorted(names)[count // 2]
    after = {n: w for n, w in names.items() if n != gone}
    old, new = maglev.build(names), maglev.build(after)
    before_names, after_names = maglev.names_of(names), maglev.names_of(after)
    own = maglev.loads(old, count)[before_names.index(gone)] / len(old)
    moved = maglev.moved_share(before_names, old, after_names, new)
    assert moved >= own                       # every slot of the removed backend moved
    assert moved <= 2.0 / count, (moved, own)
    # and every slot that did not point to the removed backend mostly stays put
    kept = sum(1 for a, b in zip(old, new, strict=True)
               if before_names[a] != gone and before_names[a] == after_names[b])
    assert kept / (len(old) - own * len(old)) >= 1 - 1.0 / count
