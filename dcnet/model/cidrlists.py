"""Overlaps between the carriers' client CIDR lists (pure).

BIND matches views in order and the first match wins silently, so a client prefix in two
carriers' lists would quietly go to whichever view comes first: :func:`overlaps` finds
every such pair (with both prefixes and both carriers). Model validation refuses them
(``elbctl validate``), and the DNS back end checks again before it renders
(:func:`dcnet.dns.carriers.check_overlaps`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from dcnet.model.types import Carrier, IPNetwork


@dataclass(frozen=True)
class Overlap:
    first: Carrier
    first_prefix: IPNetwork
    second: Carrier
    second_prefix: IPNetwork

    def __str__(self) -> str:
        return (f"client prefix {self.second_prefix} of carrier {self.second.name!r} "
                f"({self.second.cidr_file}) overlaps {self.first_prefix} of carrier "
                f"{self.first.name!r} ({self.first.cidr_file}): the first matching view "
                "would win silently")


def overlaps(carriers: Sequence[Carrier], limit: int | None = None) -> list[Overlap]:
    """Every pair of prefixes of different carriers that overlap, O(n log n) in prefixes.

    CIDR blocks either nest or are disjoint, so after sorting by start address (wider
    first) a stack of the blocks still open holds exactly the blocks containing the next.
    With ``limit``, stops after that many (model validation lists at most 1,000 problems).
    """
    entries = sorted(
        ((net.version, int(net.network_address), net.prefixlen, pos, net, c)
         for pos, c in enumerate(carriers) for net in c.cidrs),
        key=lambda e: e[:4])
    found: list[Overlap] = []
    stack: list[tuple] = []
    for entry in entries:
        version, start, _, _, net, carrier = entry
        while stack and (stack[-1][0] != version
                         or int(stack[-1][4].broadcast_address) < start):
            stack.pop()
        seen: set[str] = set()
        for outer in reversed(stack):
            other = outer[5]
            if other.name != carrier.name and other.name not in seen:
                seen.add(other.name)
                first, second = sorted([(outer[3], other, outer[4]), (entry[3], carrier, net)],
                                       key=lambda t: t[0])
                found.append(Overlap(first[1], first[2], second[1], second[2]))
                if limit is not None and len(found) >= limit:
                    return found
        stack.append(entry)
    return found
