"""Where node subnet leases live: the implementations of the narrow ``Store`` interface
(:mod:`dcnet.cni.storeapi`, re-exported here) and ``open_store``, which picks one.

A lease says "node N, reachable at IP A, owns subnet S". The interface is deliberately
small so that a distributed store (etcd) fits it: ``leases`` (read all),
``claim`` (atomically create a lease for a subnet nobody holds), ``update`` (change the
holder's IP), ``release`` (delete) and ``wait`` (block until something may have changed:
the hook the agent reacts to instead of polling), plus ``hold`` (the holder confirms a
lease is still its own: a no-op here, a re-attach to the keep-alive for stores whose
leases expire). ``FileStore`` is the embedded default (one JSON file per subnet in a
shared directory, O_EXCL-style claims via ``link``, inotify for ``wait``); ``MemoryStore``
is the fake for unit tests; ``dcnet.cni.etcdstore.EtcdStore`` keeps leases in etcd
(imported only when asked for; it depends on ``storeapi``, not on this module). All pass
the same contract tests (tests/test_store_contract.py). A store that cannot be reached raises
``StoreUnavailable``.
"""

from __future__ import annotations

import json
import os
import threading

from dcnet.cni.storeapi import Lease, Store, StoreUnavailable
from dcnet.sysio.files import atomic_write


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
        atomic_write(self._file(lease.subnet), json.dumps(lease.to_dict()), fsync=False)

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
