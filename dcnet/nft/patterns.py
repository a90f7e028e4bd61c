"""Weight patterns of the flat layout: a VIP:port's uneven weights as one canonical id.

A flat VIP:port in the slot layout holds W elements (``wr4``: slot -> RIP . RPORT). One
whose reduced weights are uneven and sum to W <= :data:`PAT_MAX` is held in the
*pattern* layout instead (:mod:`dcnet.nft.flat`): its backends, heaviest first, are
indices 0 .. n-1 (``wrp4``: index -> RIP . RPORT, n elements), and the slot -> index map
of its weights is shared with every VIP:port of the same weights (``picks``). Its
weights, sorted heaviest first, are a partition of W; :func:`pattern_id` is ``W << 21 |
rank`` of that partition among all partitions of W (lexicographic): a function of the
weights alone, so no registry, and every director and every plan names the same weights
alike. The rank of a partition of 64 is below 2**21 (1,741,630 partitions).

At a new connection the packet mark is the scratch register (nft 1.0.6 has no other,
and cannot nest a map lookup in another's key): ``meta mark set`` the VIP:port's
:data:`SCRATCH` | id, then ``meta mark set meta mark . numgen random mod W map @picks``
(:data:`PICKED` | index), then ``dnat`` to ``VIP . proto . port . meta mark map @wrp4``;
a filter chain right after DNAT (priority dstnat + 1, in prerouting and output) sets a
packet mark with both top bits set back to 0 (:data:`RESTORE_RULE`). So the first packet
of a pattern VIP:port's connection leaves prerouting with packet mark 0, whatever mark
an earlier hook gave it (later packets never pass the nat chains); the connection mark
(carrier routing's) is untouched.
"""

from __future__ import annotations

import itertools
from functools import cache

PAT_MAX = 64                # the largest W held as a pattern (its rank fits 21 bits)
ID_SHIFT = 21
SCRATCH = 0x80000000        # a pattern map's value: SCRATCH | id
PICKED = 0xC0000000         # a picks map's value: PICKED | index
RESTORE_RULE = "meta mark & 0xc0000000 == 0xc0000000 meta mark set 0"


@cache
def count(n: int, k: int) -> int:
    """Partitions of ``n`` into parts of at most ``k``."""
    if n == 0:
        return 1
    return sum(count(n - p, p) for p in range(1, min(n, k) + 1))


def rank(parts: list[int]) -> int:
    """The rank of ``parts`` (non-increasing, positive) among the partitions of their
    sum, in lexicographic order of the parts."""
    out, left, top = 0, sum(parts), sum(parts)
    for p in parts:
        out += sum(count(left - x, x) for x in range(1, min(p, top + 1)))
        left, top = left - p, p
    return out


def pattern_id(parts: list[int]) -> int:
    """``W << 21 | rank`` of a partition of W <= PAT_MAX (heaviest part first)."""
    w = sum(parts)
    if not 0 < w <= PAT_MAX or any(b > a for a, b in itertools.pairwise(parts)):
        raise ValueError(f"not a partition of 1..{PAT_MAX} heaviest first: {parts}")
    return w << ID_SHIFT | rank(parts)


def unrank(pattern: int) -> list[int]:
    """The partition (heaviest part first) of a :func:`pattern_id`."""
    left = top = pattern >> ID_SHIFT
    r = pattern & ((1 << ID_SHIFT) - 1)
    parts: list[int] = []
    while left:
        for x in range(1, min(left, top) + 1):
            c = count(left - x, x)
            if r < c:
                parts.append(x)
                left, top = left - x, x
                break
            r -= c
        else:
            raise ValueError(f"not a pattern id: {pattern:#x}")
    if r or not parts:
        raise ValueError(f"not a pattern id: {pattern:#x}")
    return parts


def picks(parts: list[int]) -> list[tuple[tuple[int, int], int]]:
    """The shared map's elements of a pattern: ``((SCRATCH | id, slot), PICKED | index)``
    for each of the W slots (index i holds parts[i] consecutive slots)."""
    key = SCRATCH | pattern_id(parts)
    out, slot = [], 0
    for index, p in enumerate(parts):
        for _ in range(p):
            out.append(((key, slot), PICKED | index))
            slot += 1
    return out
