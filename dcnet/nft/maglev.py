"""Maglev consistent hashing: the lookup table, built in pure Python (deterministic).

Eisenbud et al., "Maglev: A Fast and Reliable Software Network Load Balancer" (NSDI
2016), section 3.4: every backend has a preference list (a permutation of the ``M``
table slots given by an offset and a skip derived from its name), and the backends take
turns claiming their next free preferred slot until the table is full. ``M`` is prime so
every skip in ``1..M-1`` walks every slot.

Weights: in every round a backend gains ``weight / max_weight`` credit and claims one slot
per whole credit, so shares follow the weights (equal weights: the paper's algorithm).
Weight 0 (drained) takes no slot.

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
import ipaddress
from collections.abc import Mapping, Sequence

DEFAULT_SIZE = 65537
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


def build(weights: Mapping[str, int], size: int = DEFAULT_SIZE) -> tuple[int, ...]:
    """The lookup table: slot -> index into ``sorted(names with weight > 0)``.

    Empty when no backend has a positive weight. ``size`` must be prime."""
    if not is_prime(size):
        raise ValueError(f"maglev table size {size} is not prime")
    names = sorted(n for n, w in weights.items() if w > 0)
    if not names:
        return ()
    top = max(weights[n] for n in names)
    share = [weights[n] / top for n in names]
    pos = []
    skip = []
    for name in names:
        o, s = _offset_skip(name, size)
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
    return b"".join(i.to_bytes(4, "big") for i in table)


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
