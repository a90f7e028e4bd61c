"""Which real server a DR (or NAT Maglev) VIP:port sends a flow to, computed as the kernel
does (pure): nft's ``jhash EXPR mod M seed S`` is the kernel's ``jhash()`` (Bob Jenkins'
lookup3, ``include/linux/jhash.h``) over the expression's registers, scaled to ``[0, M)``
by ``reciprocal_scale`` (``nft_jhash_eval``); each register is 4 bytes, a shorter field
(a port) zero-padded, addresses in network byte order. The slot then picks the server
from the Maglev table :mod:`dcnet.nft.dr` loads. Used by tests and for explaining where a
client went (``lookup``).
"""

from __future__ import annotations

import functools
import ipaddress
import struct

from dcnet.nft import maglev

INITVAL = 0xDEADBEEF
MASK = 0xFFFFFFFF


def _rol(x: int, k: int) -> int:
    return ((x << k) | (x >> (32 - k))) & MASK


def _mix(a: int, b: int, c: int) -> tuple[int, int, int]:
    a = (a - c) & MASK; a ^= _rol(c, 4); c = (c + b) & MASK        # noqa: E702
    b = (b - a) & MASK; b ^= _rol(a, 6); a = (a + c) & MASK        # noqa: E702
    c = (c - b) & MASK; c ^= _rol(b, 8); b = (b + a) & MASK        # noqa: E702
    a = (a - c) & MASK; a ^= _rol(c, 16); c = (c + b) & MASK       # noqa: E702
    b = (b - a) & MASK; b ^= _rol(a, 19); a = (a + c) & MASK       # noqa: E702
    c = (c - b) & MASK; c ^= _rol(b, 4); b = (b + a) & MASK        # noqa: E702
    return a, b, c


def _final(a: int, b: int, c: int) -> int:
    c ^= b; c = (c - _rol(b, 14)) & MASK        # noqa: E702
    a ^= c; a = (a - _rol(c, 11)) & MASK        # noqa: E702
    b ^= a; b = (b - _rol(a, 25)) & MASK        # noqa: E702
    c ^= b; c = (c - _rol(b, 16)) & MASK        # noqa: E702
    a ^= c; a = (a - _rol(c, 4)) & MASK         # noqa: E702
    b ^= a; b = (b - _rol(a, 14)) & MASK        # noqa: E702
    c ^= b; c = (c - _rol(b, 24)) & MASK        # noqa: E702
    return c


def jhash(key: bytes, initval: int) -> int:
    """The kernel's ``jhash(key, len(key), initval)`` (little-endian words, as on x86)."""
    length = len(key)
    a = b = c = (INITVAL + length + initval) & MASK
    k = key
    while len(k) > 12:
        x, y, z = struct.unpack_from("<III", k)
        a, b, c = _mix((a + x) & MASK, (b + y) & MASK, (c + z) & MASK)
        k = k[12:]
    if not k:
        return c
    tail = k + bytes(12 - len(k))
    x, y, z = struct.unpack("<III", tail)
    return _final((a + x) & MASK, (b + y) & MASK, (c + z) & MASK)


def slot(saddr: str, sport: int | None, size: int, seed: int) -> int:
    """The slot of ``jhash ip saddr [. th sport] mod size seed seed`` (``ip6 saddr``
    for an IPv6 address; ``sport`` None: source hashing)."""
    data = ipaddress.ip_address(saddr).packed
    if sport is not None:
        data += struct.pack(">H", sport) + b"\0\0"
    return (jhash(data, seed) * size) >> 32


def lookup(s, saddr: str, sport: int) -> str | None:
    """The real server address a DR input ``s`` (:class:`dcnet.nft.dr.DrInput`) sends
    the flow ``saddr:sport`` to; None if every server is at weight 0."""
    active = [b for b in s.backends if b.weight > 0]
    if len(active) <= 1:
        return active[0].key[3] if active else None
    by_id = dict(zip(maglev.server_ids([b.key[3:5] for b in active]), active, strict=True))
    weights = tuple(sorted((i, b.weight) for i, b in by_id.items()))
    size = maglev.table_size(len(weights), s.maglev_size)
    table, names = _table(weights, size)
    from dcnet.nft.ruleset import JHASH_SEED

    n = slot(saddr, sport if s.scheduler == "mh" else None, size, int(JHASH_SEED, 16))
    return by_id[names[table[n]]].key[3]


@functools.lru_cache(maxsize=8)
def _table(weights: tuple, size: int) -> tuple[tuple[int, ...], list[str]]:
    return maglev.build(dict(weights), size), maglev.names_of(dict(weights))
