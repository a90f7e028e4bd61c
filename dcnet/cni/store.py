"""Where node subnet leases live: the narrow ``Store`` interface and its implementations.

A lease says "node N, reachable at IP A, owns subnet S". The interface is deliberately
small so that a distributed store (etcd, a later issue) fits it: ``leases`` (read all),
``claim`` (atomically create a lease for a subnet nobody holds), ``update`` (change the
holder's IP), ``release`` (delete) and ``wait`` (block until something may have changed:
the hook the agent reacts to instead of polling), plus ``hold`` (the holder confirms a
lease is still its own: a no-op here, a re-attach to the keep-alive for stores whose
leases expire). ``FileStore`` is the embedded default (one JSON file per subnet in a
shared directory, O_EXCL-style claims via ``link``, inotify for ``wait``); ``MemoryStore``
is the fake for unit tests; ``dcnet.cni.etcdstore.EtcdStore`` keeps leases in etcd
(imported only when asked for). All pass the same contract tests
(tests/store_contract.py). A store that cannot be reached raises ``StoreUnavailable``.
"""

from __future__ import annotations

import json
import os
import threading
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


def _key(subnet: str) -> str:
    return subnet.replace("/", "-")


class FileStore(Store):
    """Leases as ``<path>/leases/<a.b.c.d-len>.json``; safe across processes and nodes
    sharing the directory (claims are atomic ``link`` calls, updates ``rename``)."""

    def __init__(self, path: str):
        self.dir = os.path.join(path, "leases")
        os.makedirs(self.dir, exist_ok=True)
        from dcnet.cni.inotify import Inotify

        self._watch = Inotify(self.dir)

    def _file(self, subnet: str) -> str:
        return os.path.join(self.dir, f"{_key(subnet)}.json")

    def _temporary(self, lease: Lease) -> str:
        temporary = os.path.join(self.dir, f".{_key(lease.subnet)}.{os.getpid()}."
                                           f"{threading.get_ident()}.tmp")
        with open(temporary, "w") as handle:
            json.dump(lease.to_dict(), handle)
        return temporary

    def leases(self) -> list[Lease]:
        out = []
        for name in sorted(os.listdir(self.dir)):
            if not name.endswith(".json") or name.startswith("."):
                continue
            try:
                with open(os.path.join(self.dir, name)) as handle:
                    out.append(Lease.from_dict(json.load(handle)))
            except (FileNotFoundError, ValueError, KeyError, TypeError):
                continue  # released meanwhile, or not ours
        return sorted(out, key=lambda lease: lease.subnet)

    def claim(self, lease: Lease) -> bool:
        temporary = self._temporary(lease)
        try:
            os.link(temporary, self._file(lease.subnet))
            return True
        except FileExistsError:
            return False
        finally:
            os.unlink(temporary)

    def update(self, lease: Lease) -> None:
        if not os.path.exists(self._file(lease.subnet)):
            raise KeyError(lease.subnet)
        os.replace(self._temporary(lease), self._file(lease.subnet))

    def release(self, subnet: str) -> bool:
        try:
            os.unlink(self._file(subnet))
            return True
        except FileNotFoundError:
            return False

    def wait(self, timeout: float) -> bool:
        return self._watch.wait(timeout)

    def close(self) -> None:
        self._watch.close()


class MemoryStore(Store):
    """In-process fake with the same semantics (for unit tests)."""

    def __init__(self) -> None:
        self._leases: dict[str, Lease] = {}
        self._changed = threading.Condition()
        self._version = 0
        self._seen = 0

    def _bump(self) -> None:
        self._version += 1
        self._changed.notify_all()

    def leases(self) -> list[Lease]:
        with self._changed:
            return [Lease.from_dict(v.to_dict()) for _, v in sorted(self._leases.items())]

    def claim(self, lease: Lease) -> bool:
        with self._changed:
            if lease.subnet in self._leases:
                return False
            self._leases[lease.subnet] = Lease.from_dict(lease.to_dict())
            self._bump()
            return True

    def update(self, lease: Lease) -> None:
        with self._changed:
            if lease.subnet not in self._leases:
                raise KeyError(lease.subnet)
            self._leases[lease.subnet] = Lease.from_dict(lease.to_dict())
            self._bump()

    def release(self, subnet: str) -> bool:
        with self._changed:
            if self._leases.pop(subnet, None) is None:
                return False
            self._bump()
            return True

    def wait(self, timeout: float) -> bool:
        with self._changed:
            self._changed.wait_for(lambda: self._version != self._seen, timeout)
            changed = self._version != self._seen
            self._seen = self._version
            return changed


def open_store(spec: dict, network: str = "default") -> Store:
    """The store a config's ``store`` section names: ``{"type": "file", "path": DIR}`` or
    ``{"type": "etcd", "url": "etcd://...", "leaseTTL": SECONDS}`` (``network`` names the
    CNI network, which the etcd store puts in its keys)."""
    kind = spec.get("type", "file")
    if kind == "file":
        path = spec.get("path")
        if not isinstance(path, str) or not path.startswith("/"):
            raise ValueError("store.path: expected an absolute directory path")
        return FileStore(path)
    if kind == "etcd":
        from dcnet.cni.etcdstore import open_etcd_store

        return open_etcd_store(spec, network)
    raise ValueError(f"store.type: unknown store {kind!r} (expected 'file' or 'etcd')")


__all__ = ["FileStore", "Lease", "MemoryStore", "Store", "StoreUnavailable", "open_store"]
