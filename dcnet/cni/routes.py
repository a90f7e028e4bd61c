"""host-gw routes as data: what should exist, what differs, and the on-link rule (pure).

``desired_routes`` maps every other node's subnet to that node's IP; ``diff`` compares it
with the routes the agent owns (marked by its route protocol) and returns the ordered
changes: deletions first, then additions and replacements. ``route_refusal`` explains why
a next hop cannot be used (host-gw needs every node on one L2 segment).
"""

from __future__ import annotations

from dcnet.cni.store import Lease


class Change:
    """One route change: action is 'del', 'add' or 'replace'."""

    __slots__ = ("action", "dst", "via")

    def __init__(self, action: str, dst: str, via: str | None):
        self.action, self.dst, self.via = action, dst, via

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Change) and (self.action, self.dst, self.via) == (
            other.action, other.dst, other.via)

    def __hash__(self) -> int:
        return hash((self.action, self.dst, self.via))

    def __repr__(self) -> str:
        return f"{self.action} {self.dst}" + (f" via {self.via}" if self.via else "")


def desired_routes(leases: list[Lease], node: str) -> dict[str, str]:
    """{subnet: next hop} for every node but this one."""
    return {lease.subnet: lease.node_ip for lease in leases if lease.node != node}


def diff(desired: dict[str, str], current: dict[str, str]) -> list[Change]:
    """Changes that turn ``current`` (our routes now) into ``desired``; deletes first."""
    deletes = [Change("del", dst, via) for dst, via in sorted(current.items())
               if dst not in desired]
    adds = []
    for dst, via in sorted(desired.items()):
        if dst not in current:
            adds.append(Change("add", dst, via))
        elif current[dst] != via:
            adds.append(Change("replace", dst, via))
    return deletes + adds


def route_refusal(dst: str, via: str, node: str, lookup: dict | None) -> str | None:
    """Why ``dst via`` cannot be installed, given the kernel's route lookup for ``via``
    ({'gateway': ip or None, 'dev': name}, or None when unreachable); None if on-link."""
    if lookup is None:
        return (f"refusing route {dst} via {via} (node {node}): the next hop is "
                f"unreachable from this node; host-gw needs every node on one L2 segment")
    if lookup.get("gateway"):
        return (f"refusing route {dst} via {via} (node {node}): the next hop is not "
                f"on-link (this node reaches it through gateway {lookup['gateway']} on "
                f"{lookup.get('dev') or '?'}); host-gw needs every node on one L2 segment")
    if lookup.get("local"):
        return (f"refusing route {dst} via {via} (node {node}): the next hop is an "
                f"address of this node; two nodes claim the same IP")
    return None
