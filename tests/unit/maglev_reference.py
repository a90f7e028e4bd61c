"""The reference Maglev table build: the sequential pure-Python algorithm that
``dcnet.nft.maglev.build`` replaced (the table is a contract: the fast build must produce
byte-identical tables, see tests/unit/test_nft_maglev.py and bench/maglev_build.py)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

from dcnet.nft import maglev


def offset_skip(name: str, size: int) -> tuple[int, int]:
    digest = hashlib.sha256(name.encode()).digest()
    h1 = int.from_bytes(digest[:8], "big")
    h2 = int.from_bytes(digest[8:16], "big")
    return h1 % size, h2 % (size - 1) + 1


def build(weights: Mapping[str, int], size: int = maglev.DEFAULT_SIZE) -> tuple[int, ...]:
    """slot -> index into ``sorted(names with weight > 0)``: backends take turns (in name
    order, one turn per round) claiming the next free slot of their permutation; each
    round a backend earns weight/max-weight credit and claims a slot per whole credit."""
    if not maglev.is_prime(size):
        raise ValueError(f"maglev table size {size} is not prime")
    names = sorted(n for n, w in weights.items() if w > 0)
    if not names:
        return ()
    top = max(weights[n] for n in names)
    share = [weights[n] / top for n in names]
    pos = []
    skip = []
    for name in names:
        o, s = offset_skip(name, size)
        pos.append(o)
        skip.append(s)
    table = [-1] * size
    credit = [0.0] * len(names)
    filled = 0
    while True:
        for i in range(len(names)):
            credit[i] += share[i]
            while credit[i] >= 1.0:
                credit[i] -= 1.0
                c, step = pos[i], skip[i]
                while table[c] >= 0:
                    c += step
                    if c >= size:
                        c -= size
                table[c] = i
                nxt = c + step
                pos[i] = nxt - size if nxt >= size else nxt
                filled += 1
                if filled == size:
                    return tuple(table)
