"""Maglev consistent hashing: the lookup table (deterministic), built in bulk with numpy.

Eisenbud et al., "Maglev: A Fast and Reliable Software Network Load Balancer" (NSDI
2016), section 3.4: every backend has a preference list (a permutation of the ``M``
table slots given by an offset and a skip derived from its name), and the backends take
turns claiming their next free preferred slot until the table is full. ``M`` is prime so
every skip in ``1..M-1`` walks every slot.

Weights: in every round a backend gains ``weight / max_weight`` credit and claims one slot
per whole credit, so shares follow the weights (equal weights: the paper's algorithm).
Weight 0 (drained) takes no slot.

:func:`build` gives exactly the table of that sequential algorithm (its pure-Python form is
tests/unit/maglev_reference.py) but computes it in bulk: from ``BULK_FROM`` backends numpy
walks a whole round of claims at once, and the last claims go by rank (see the comment
above ``BULK_FROM``); 1000 backends (M = 100003) take ~14 ms of CPU instead of ~84 ms.

The table depends only on the backends' names, weights and ``M``: backends are taken in
name order and hashed with SHA-256, so two directors with the same backends build
byte-identical tables (:func:`table_bytes`) and a flow keeps its backend across a
director failover. Removing one backend moves its slots plus the small disruption the
paper measures (:func:`moved_share`).

The nft target names a backend by its real server's identity (:func:`server_ids`): its
address, not its chain name, port, protocol or VIP. So every service with the same real
servers and weights has the same table and sends a client (``sh``) or a flow hash
(``mh``) to the same real server, as IPVS ``sh`` does across services with the same
destinations (its table is filled from the destination list, not from the service).
"""

from __future__ import annotations

import hashlib
import heapq
import ipaddress
import struct
from collections.abc import Mapping, Sequence

from dcnet.nft.options import MAGLEV_DEFAULT_SIZE

DEFAULT_SIZE = MAGLEV_DEFAULT_SIZE
SEEDS = "server-address"     # what permutations are seeded from (see server_ids)
SLOTS_PER_BACKEND = 100      # M > 100 x backends keeps max/mean load near 1


def is_prime(n: int) -> bool:
    if n < 2:
        return False
    if n % 2 == 0:
        return n == 2
    f = 3
    while f * f <= n:
        if n % f == 0:
            return False
        f += 2
    return True


def table_size(backends: int, minimum: int = DEFAULT_SIZE) -> int:
    """The smallest prime >= ``minimum`` and > SLOTS_PER_BACKEND x ``backends``."""
    n = max(minimum, SLOTS_PER_BACKEND * backends + 1)
    while not is_prime(n):
        n += 1
    return n


def _offset_skip(name: str, size: int) -> tuple[int, int]:
    digest = hashlib.sha256(name.encode()).digest()
    h1 = int.from_bytes(digest[:8], "big")
    h2 = int.from_bytes(digest[8:16], "big")
    return h1 % size, h2 % (size - 1) + 1


def _seeds(names: list[str], size: int):
    """:func:`_offset_skip` of every name, as two numpy arrays (offsets, skips)."""
    import numpy as np

    digests = b"".join([hashlib.sha256(name.encode()).digest() for name in names])
    words = np.frombuffer(digests, dtype=">u8").reshape(len(names), 4)
    return ((words[:, 0] % np.uint64(size)).astype(np.int64),
            (words[:, 1] % np.uint64(size - 1)).astype(np.int64) + 1)


def build(weights: Mapping[str, int], size: int = DEFAULT_SIZE) -> tuple[int, ...]:
    """The lookup table: slot -> index into ``sorted(names with weight > 0)``.

    Empty when no backend has a positive weight. ``size`` must be prime. The table is
    the sequential algorithm's (module docstring), computed in bulk (see ``_bulk``)."""
    if not is_prime(size):
        raise ValueError(f"maglev table size {size} is not prime")
    names = sorted(n for n, w in weights.items() if w > 0)
    if not names:
        return ()
    top = max(weights[n] for n in names)
    share = [weights[n] / top for n in names]
    if len(names) < BULK_FROM:
        seeds = [_offset_skip(name, size) for name in names]
        return tuple(_sequential(seeds, share, size))
    import numpy as np

    table = _bulk(*_seeds(names, size), share, size)
    if len(names) <= _SMALL_INTS:
        return tuple(table.tolist())
    return tuple(np.array(range(len(names)), dtype=object)[table].tolist())  # shared ints


# How the table is computed. The sequential algorithm: rounds; in each, backend i (in
# name order) adds share[i] (<= 1) to its credit and, at >= 1, claims once: it walks its
# permutation from its position to the first free slot, takes it and moves one step on.
# Most of its cost is the end of the walks: with f of the slots free a claim steps ~1/f
# times. Two exact shortcuts give the same table:
# - Round by round (_bulk): a round's claimers are distinct backends; each walks (in numpy,
#   many steps at once) to its first slot free before the round; where several reach
#   one slot the first in name order keeps it and the others walk on, repeatedly. With
#   every slot preferring the earlier claimer this is deferred acceptance, whose unique
#   stable result is the sequential one (each claimer in order takes its first slot left).
# - The last TAIL claims (_tail): with few slots free, backend b's walk from position p
#   reaches free slot c after rank (c - p) * skip^-1 mod M steps; each claim takes its
#   free slot of least rank, by a scan of the ranks sorted once per backend (b's later
#   claims rank from the same p: every slot ranked below its previous claim is taken).
# Where 1000 backends' ~14 ms go: ~100 rounds of ~25 numpy calls (early rounds cost what
# numpy costs per call, ~40 us), the late rounds' long walks and acceptance (~40%), the
# tail ~1 ms, SHA-256 and the step table ~0.6 ms, the tuple ~1 ms. Tried, not faster:
# several rounds at once (a backend's claims cascade and conflicts grow with the batch),
# a round in chunks, walks passing slots an earlier claimer holds, listing each loser's
# next free slots (late walks outrun the lists), wider walk blocks, other WIDTH/TAIL.
BULK_FROM = 150     # backends; fewer make many short rounds: sequential, then _tail
TAIL = 200          # free slots left when the build turns to ranks
_COLUMNS = 128      # walk steps per backend computed at once (at most)
FEW = 24            # same-slot claims settled in Python (more: in numpy)
_PURE_RANKS = 40000  # tail ranks sorted in Python up to this many (no numpy import)
WIDTH = 4           # a walk computes WIDTH / (free share) steps at once
_SMALL_INTS = 350    # fewer backends: most of a table's ints are Python's cached ones
_TOP = 16           # tail ranks sorted per backend at first (all when passed)
_NEAR = 16          # walk steps kept one row per step (short walks add faster)


def _sequential(seeds: list[tuple[int, int]], share: list[float], size: int) -> list[int]:
    pos = [o for o, _s in seeds]
    skip = [s for _o, s in seeds]
    table = [-1] * size
    credit = [0.0] * len(seeds)
    left = size
    while left > TAIL:
        for i in range(len(seeds)):
            credit[i] += share[i]
            if credit[i] >= 1.0:
                credit[i] -= 1.0
                c, step = pos[i], skip[i]
                while table[c] >= 0:
                    c += step
                    if c >= size:
                        c -= size
                table[c] = i
                nxt = c + step
                pos[i] = nxt - size if nxt >= size else nxt
                left -= 1
                if left == TAIL:
                    claims = _next_claims(credit, share, left, i + 1)
                    free = _free_slots(table)
                    _tail(claims, pos, skip, free, size, table, pure=True)
                    return table
    claims = _next_claims(credit, share, left, 0)
    _tail(claims, pos, skip, _free_slots(table), size, table, pure=True)
    return table


def _free_slots(table: list[int]) -> list[int]:
    """The slots still -1, found by ``list.index`` (a scan in C)."""
    out = []
    c = -1
    try:
        while True:
            c = table.index(-1, c + 1)
            out.append(c)
    except ValueError:
        return out


def _next_claims(credit: list[float], share: list[float], count: int,
                 start: int) -> list[int]:
    """The next ``count`` claimers in order, from backend ``start`` of the round under
    way (``start`` 0: from the next round). Updates ``credit``."""
    out: list[int] = []
    i = start
    n = len(share)
    while len(out) < count:
        if i == n:
            i = 0
        credit[i] += share[i]
        if credit[i] >= 1.0:
            credit[i] -= 1.0
            out.append(i)
        i += 1
    return out


def _tail(claims: list[int], pos, skip, free: list[int], size: int, table,
          pure: bool = False) -> None:
    """Fill ``free`` (the free slots, one per claim) by rank (see above); ``pure``: sort
    the ranks in Python if there are few (a small build need not import numpy)."""
    if not claims:
        return
    who = sorted(set(claims))
    row = {b: k for k, b in enumerate(who)}
    ranks = None
    if pure and len(who) * len(free) <= _PURE_RANKS:
        order = []
        for b in who:
            p, inv = int(pos[b]), pow(int(skip[b]), -1, size)
            order.append(sorted(range(len(free)), key=lambda k: (free[k] - p) * inv % size))
    else:
        import numpy as np

        who_ = np.array(who)
        start = np.asarray(pos)[who_].astype(np.int64)[:, None]
        inverse = np.array([pow(int(s), -1, size) for s in np.asarray(skip)[who_].tolist()],
                           dtype=np.int64)[:, None]
        slots = np.array(free, dtype=np.int64)
        ranks = (slots[None, :] * inverse - start * inverse) % size
        if len(free) > _TOP:                   # each backend's first few, in rank order
            top = np.argpartition(ranks, _TOP - 1, axis=1)[:, :_TOP]
            order = np.take_along_axis(top, np.take_along_axis(ranks, top, 1).argsort(1),
                                       1).tolist()
        else:
            order = ranks.argsort(1).tolist()
    at = [0] * len(who)
    open_ = [True] * len(free)
    for b in claims:
        k = row[b]
        ranked = order[k]
        j = at[k]
        while True:
            if j == len(ranked):               # past its first few: all, in rank order
                ranked = order[k] = ranks[k].argsort().tolist()
            if open_[ranked[j]]:
                break
            j += 1
        open_[ranked[j]] = False
        at[k] = j + 1
        table[free[ranked[j]]] = b


def _bulk(pos, skip, share: list[float], size: int):
    """The table as a numpy array, round by round (see above), from the backends'
    offsets and skips (:func:`_seeds`)."""
    import numpy as np

    n = pos.size
    steps = _step_table(skip, size, min(_COLUMNS, size))
    near = np.ascontiguousarray(steps[:, :_NEAR].T, dtype=np.int64)
    shares = np.array(share)
    equal = all(x == 1.0 for x in share)
    taken2 = np.zeros(2 * size, dtype=bool)     # taken, twice over: no wrap in a walk
    holder = np.full(size, n, dtype=np.int32)
    table = holder if equal else np.full(size, -1, dtype=np.int32)  # equal: claimer = backend
    credit = np.zeros(n)
    everyone = np.arange(n, dtype=np.int32)
    left = size
    while left > TAIL:
        if equal:
            claim = everyone
        else:
            credit += shares
            claim = np.flatnonzero(credit >= 1.0)
            credit[claim] -= 1.0
        rest = []
        if claim.size > left - TAIL:
            rest = claim[left - TAIL:].tolist()
            claim = claim[:left - TAIL]
        width = max(2, WIDTH * size // left)
        whole = claim.size == n                 # every backend, in order
        reach = width if 8 * left > size or not whole else max(2, 2 * size // left)
        # (late, every backend: most find a free slot within 2 / (free share) steps)
        if whole and 2 * left > size:           # most start on a free slot: walk the rest
            q = pos
            walk = np.flatnonzero(taken2[pos])
            if walk.size:
                q[walk] = _first_free(pos[walk], walk, taken2, size, reach, steps, skip,
                                      after=True)
        else:
            q = _first_free(pos if whole else pos[claim], None if whole else claim, taken2,
                            size, reach, steps, skip, near)
        idx = everyone[:claim.size]
        holder[q] = idx
        bad = np.flatnonzero(holder[q] != idx)  # some reached one slot: deferred acceptance
        if bad.size > FEW:
            _accept(q, claim, idx, holder, n, taken2, size, width, steps, skip)
        elif bad.size:
            _accept_few(q, bad, claim, holder, n, taken2, size, skip)
        if not equal:
            table[q] = claim
        taken2[q] = True
        taken2[q + size] = True
        nxt = q + (skip if whole else skip[claim])
        nxt -= size * (nxt >= size)
        if whole:
            pos = nxt
        else:
            pos[claim] = nxt
        left -= claim.size
        if rest:
            claims = rest[:left]
            if len(claims) < left:
                claims += _next_claims(credit.tolist(), share, left - len(claims), 0)
            _tail(claims, pos, skip, np.flatnonzero(~taken2[:size]).tolist(), size, table)
            return table
    _tail(_next_claims(credit.tolist(), share, left, 0), pos, skip,
          np.flatnonzero(~taken2[:size]).tolist(), size, table)
    return table


def _accept(q, claim, idx, holder, n: int, taken2, size: int, width: int, steps, skip):
    """Deferred acceptance among one round's claimers: where several reached one slot
    the first keeps it, the others walk on, until no slot has two claimers. ``holder``
    holds ``n`` at every slot free before the round; after: the claimer at each ``q``."""
    import numpy as np

    holder[q] = n
    np.minimum.at(holder, q, idx)
    lose = np.flatnonzero(holder[q] != idx)
    while lose.size:
        moved = _first_free(q[lose], claim[lose], taken2, size, width, steps, skip,
                            after=True)
        q[lose] = moved
        if (holder[moved] == n).all():        # all to slots no one holds: distinct?
            holder[moved] = lose
            if (holder[moved] == lose).all():
                return
        holder[q] = n
        np.minimum.at(holder, q, idx)
        lose = np.flatnonzero(holder[q] != idx)


def _accept_few(q, bad, claim, holder, n: int, taken2, size: int, skip) -> None:
    """:func:`_accept` for a few same-slot claims, one step at a time in Python.
    ``holder`` holds the last of ``q``'s claimers at each of its slots, ``bad`` the
    claimers overwritten there (ranked by index: the first keeps the slot)."""
    slots = q[bad]
    at: dict[int, list[int]] = {}
    for j, c, h in zip(bad.tolist(), slots.tolist(), holder[slots].tolist(), strict=True):
        js = at.get(c)
        if js is None:
            at[c] = [h, j]
        else:
            js.append(j)
    losers = []
    for c, js in at.items():
        first = min(js)
        if first != js[0]:
            holder[c] = first
        js.remove(first)
        losers += js
    heapq.heapify(losers)
    while losers:
        j = heapq.heappop(losers)
        step = int(skip[claim[j]])
        c = int(q[j])
        while True:
            c += step
            if c >= size:
                c -= size
            if taken2[c]:
                continue
            h = int(holder[c])
            if h == n or h > j:
                break
        if h != n:
            heapq.heappush(losers, h)         # an earlier claimer takes its slot
        holder[c] = j
        q[j] = c


def _step_table(skip, size: int, columns: int):
    """``steps[b, k] = k * skip[b] mod size`` for ``k < columns``, by doubling."""
    import numpy as np

    kind = np.int32 if 2 * size < 2**31 else np.int64
    steps = np.empty((skip.size, columns), dtype=kind)
    steps[:, 0] = 0
    if columns > 1:
        steps[:, 1] = skip
    k = 2
    while k < columns:
        w = min(k, columns - k)
        block = steps[:, k:k + w]
        np.add(steps[:, :w], ((k * skip) % size).astype(kind)[:, None], out=block)
        block -= kind(size) * (block >= size)
        k += w
    return steps


def _first_free(start, who, taken2, size: int, width: int, steps, skip, near=None,
                after: bool = False):
    """Per claimer ``who[j]`` (``who`` None: every backend, in order): the first slot of
    its walk from ``start[j]`` (included; ``after``: excluded) not taken, ``width`` steps
    at a time. ``near``: the first steps of every backend, one row per step (a faster
    add for short walks)."""
    import numpy as np

    m = start.size
    if near is not None and who is None and width <= near.shape[0] and not after:
        cand = near[:width] + start
        got = cand.ravel()[taken2[cand.T].argmin(1) * m + np.arange(m)]
    else:
        width = min(width, steps.shape[1] - after)
        cand = (steps[:, after:after + width] if who is None
                else steps[who, after:after + width]) + start[:, None]
        got = cand.ravel()[taken2[cand].argmin(1) + np.arange(0, m * width, width)]
    still = taken2[got]                         # no free slot in these steps
    if still.any():
        again = np.flatnonzero(still)
        width = min(width, steps.shape[1])
        walker = again if who is None else who[again]
        base = got[again]
        base -= size * (base >= size)
        stride = (width * skip[walker]) % size
        while again.size:
            base += stride
            base -= size * (base >= size)
            cand = steps[walker, :width] + base[:, None]
            found = cand.ravel()[taken2[cand].argmin(1)
                                 + np.arange(0, base.size * width, width)]
            got[again] = found
            still = taken2[found]
            if not still.any():
                break
            keep = np.flatnonzero(still)
            found -= size * (found >= size)
            again, walker, base, stride = (again[keep], walker[keep], found[keep],
                                           stride[keep])
    got -= size * (got >= size)
    return got


def server_ids(servers: Sequence[tuple[str, int]]) -> list[str]:
    """The Maglev name of each real server ``(address, port)`` of one service, in order.

    The canonical address alone: a service's real port follows its VIP port (``:80 ->
    :8080``, ``:53 -> :53``), so the port would tell the same server apart across a
    VIP's ports and protocols. Several backends at one address (one host, several ports)
    are ranked by port: the first is ``address``, the k-th after it ``address#k``. The
    names depend only on the set of servers, never on their order."""
    canon = [str(ipaddress.ip_address(a)) for a, _p in servers]
    at: dict[str, list[tuple[int, int]]] = {}
    for i, (a, (_a, p)) in enumerate(zip(canon, servers, strict=True)):
        at.setdefault(a, []).append((p, i))
    out = [""] * len(servers)
    for a, ranked in at.items():
        for rank, (_p, i) in enumerate(sorted(ranked)):
            out[i] = a if rank == 0 else f"{a}#{rank}"
    return out


def names_of(weights: Mapping[str, int]) -> list[str]:
    """The backend order :func:`build` indexes into."""
    return sorted(n for n, w in weights.items() if w > 0)


def table_bytes(table: Sequence[int]) -> bytes:
    """A canonical byte form of a table (4 bytes per slot, big-endian)."""
    return struct.pack(f">{len(table)}I", *table)


def table_digest(names: Sequence[str], table: Sequence[int]) -> str:
    """A short digest of the table and the names its slots point to."""
    h = hashlib.sha256("\0".join(names).encode())
    h.update(table_bytes(table))
    return h.hexdigest()[:12]


def loads(table: Sequence[int], count: int) -> list[int]:
    """How many slots each of ``count`` backends holds."""
    out = [0] * count
    for i in table:
        out[i] += 1
    return out


def moved_share(before: Sequence[str], old: Sequence[int],
                after: Sequence[str], new: Sequence[int]) -> float:
    """The share of slots whose backend (by name) differs between two tables."""
    moved = sum(1 for a, b in zip(old, new, strict=True) if before[a] != after[b])
    return moved / len(old)
