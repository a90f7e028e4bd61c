"""The node subnet-lease interface every store implements: ``Lease`` (node N, reachable at
IP A, owns subnet S), the ``Store`` ABC and ``StoreUnavailable``.

It is the piece shared by the stores (``dcnet.cni.store``: file, in-memory fake and
``open_store``; ``dcnet.cni.etcdstore``: etcd) and their users (the agent, subnet
allocation, routes), so that each store depends on it and never on another store.
"""

from __future__ import annotations

from abc import ABC, abstractmethod


class StoreUnavailable(RuntimeError):
    """The store cannot be read or written now (e.g. no etcd endpoint answers).

    ``summary`` is a short phrase for status displays ("etcd unreachable"); the message
    carries the details."""

    def __init__(self, summary: str, detail: str = ""):
        super().__init__(f"{summary}: {detail}" if detail else summary)
        self.summary = summary


class Lease:
    """A node's subnet lease (subnet as 'a.b.c.d/len')."""

    __slots__ = ("node", "node_ip", "subnet")

    def __init__(self, node: str, node_ip: str, subnet: str):
        self.node, self.node_ip, self.subnet = node, node_ip, subnet

    def to_dict(self) -> dict:
        return {"node": self.node, "nodeIP": self.node_ip, "subnet": self.subnet}

    @classmethod
    def from_dict(cls, data: dict) -> Lease:
        return cls(str(data["node"]), str(data["nodeIP"]), str(data["subnet"]))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Lease) and self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash((self.node, self.node_ip, self.subnet))

    def __repr__(self) -> str:
        return f"Lease({self.node!r}, {self.node_ip!r}, {self.subnet!r})"


class Store(ABC):
    """Subnet leases shared by every node's agent."""

    @abstractmethod
    def leases(self) -> list[Lease]:
        """Every current lease, sorted by subnet."""

    @abstractmethod
    def claim(self, lease: Lease) -> bool:
        """Create ``lease`` if no lease holds its subnet; False (and no change) otherwise."""

    @abstractmethod
    def update(self, lease: Lease) -> None:
        """Replace the lease of ``lease.subnet`` (KeyError if none exists)."""

    @abstractmethod
    def release(self, subnet: str) -> bool:
        """Delete the lease of ``subnet``; False if there was none."""

    @abstractmethod
    def wait(self, timeout: float) -> bool:
        """Block until leases may have changed since the last ``wait`` (or since this
        store object was made), at most ``timeout`` seconds; True if they may have."""

    def hold(self, lease: Lease) -> None:  # noqa: B027 (optional hook)
        """The holder's confirmation, on every pass, that ``lease`` is still its own.

        Nothing to do for stores whose leases never expire; the etcd store attaches the
        lease to this process's keep-alive (a restarted agent adopts its lease)."""

    def close(self) -> None:  # noqa: B027 (optional hook, nothing to release by default)
        """Release resources (watches, connections)."""
