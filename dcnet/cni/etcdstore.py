"""Node subnet leases in etcd: ``EtcdStore``, the host-gw ``Store`` a whole cluster shares.

Keys: ``<prefix>/cni/<network>/leases/<a.b.c.d-len>``, value the lease as JSON
(``{"node", "nodeIP", "subnet"}``), so one etcd holds the leases of several networks.

- ``claim`` is one etcd transaction, "put only if the key does not exist": of any number
  of nodes racing for a subnet exactly one wins, and no two ever hold it.
- Every key this store writes is attached to one etcd lease of ``ttl`` seconds, granted on
  the first write and kept alive by a thread (every ttl/3 s). A node that dies (SIGKILL,
  power loss, partition) stops keeping it alive, etcd deletes its key when the TTL runs
  out, and every other agent's watch delivers the delete. ``hold`` re-attaches a lease
  written by an earlier life of the agent, so a restart within the TTL changes nothing.
  ``release`` deletes a key and revokes the etcd lease once nothing is attached to it.
  ``close`` does not revoke: stopping an agent leaves its routes for the TTL.
- ``wait`` is driven by a watch on the leases prefix (its own client and thread). After a
  disconnect it resumes from the last revision it delivered + 1, so no change is ever
  missed; when that revision was compacted meanwhile it re-reads the prefix and watches
  from the read's revision (a full resync). Losing or regaining etcd, a resync and the
  loss of the etcd lease all count as "may have changed", so the agent reconciles.
- Any etcd failure of a store operation raises ``StoreUnavailable`` ("etcd unreachable",
  "etcd refused access" or "etcd failed"): the agent then runs degraded on what it knows.

Reads go to etcd (linearizable range reads), so ``leases`` is never stale; the watch only
says when to read. Only the agent imports this module (the CNI ADD path never does).
"""

from __future__ import annotations

import collections
import json
import sys
import threading
from collections.abc import Callable

from dcnet.cni.storeapi import Lease, Store, StoreUnavailable
from dcnet.sysio import etcd

DEFAULT_TTL = 20
MIN_TTL, MAX_TTL = 2, 3600
RETRY = 1.0


def _subnet_key(subnet: str) -> str:
    return subnet.replace("/", "-")


def _stderr_log(text: str) -> None:
    print(f"dcnet-agent: etcd: {text}", file=sys.stderr, flush=True)


class EtcdStore(Store):
    """Subnet leases under ``<settings.prefix>/cni/<network>/leases/``.

    ``client_factory(settings)`` makes its etcd clients (tests pass one that opens its
    sockets in a lab namespace)."""

    def __init__(self, settings: etcd.Settings, network: str = "default",
                 ttl: int = DEFAULT_TTL, log: Callable[[str], None] | None = None,
                 client_factory: Callable[[etcd.Settings], etcd.Client] | None = None):
        if not MIN_TTL <= int(ttl) <= MAX_TTL:
            raise ValueError(f"leaseTTL: {ttl} out of range {MIN_TTL}..{MAX_TTL} seconds")
        self.ttl = int(ttl)
        self.root = f"/cni/{network}/leases/"  # under settings.prefix (the client adds it)
        self.log = log or _stderr_log
        make = client_factory or etcd.Client
        self.client = make(settings)
        self._watch_client = make(settings)
        self._lock = threading.Lock()  # the etcd lease id and what is attached to it
        self._lease_id = 0
        self._mine: set[str] = set()  # keys attached to our etcd lease
        self._seen: dict[str, etcd.KeyValue] = {}  # keys as of the last leases() read
        self._changed = threading.Condition()
        self._version = self._consumed = 0
        self._stop = threading.Event()
        self.unreachable: str | None = None  # the last failure while etcd is unreachable
        self.watch_revision: int | None = None  # last revision the watch delivered
        self.resumes = 0  # attempts to restart the watch from watch_revision + 1
        self.resyncs = 0  # full re-reads after the resume revision was compacted
        self.events: collections.deque = collections.deque(maxlen=1024)
        # (revision, "put"|"delete", key) as the watch delivered them, for diagnostics
        try:
            _, self.watch_revision = self._watch_client.get_prefix(self.root)
        except etcd.EtcdError as exc:  # start anyway: the watch thread keeps trying
            self._unreachable(exc)
        self._keeper: threading.Thread | None = None
        self._watcher = threading.Thread(target=self._watch_loop, daemon=True,
                                         name="etcd-lease-watch")
        self._watcher.start()

    def key(self, subnet: str) -> str:
        return self.root + _subnet_key(subnet)

    # ------------------------------------------------------------ Store interface

    def leases(self) -> list[Lease]:
        kvs, _revision = self._call("read the leases", self.client.get_prefix, self.root)
        out, seen = [], {}
        for kv in kvs:
            try:
                lease = Lease.from_dict(json.loads(kv.value))
            except (ValueError, KeyError, TypeError):
                continue  # not a lease of ours
            if kv.key != self.key(lease.subnet):
                continue
            out.append(lease)
            seen[kv.key] = kv
        self._seen = seen
        return sorted(out, key=lambda lease: lease.subnet)

    def claim(self, lease: Lease) -> bool:
        key = self.key(lease.subnet)
        lease_id = self._our_lease()
        won = self._call(f"claim {lease.subnet}", self.client.create, key, _value(lease),
                         lease_id)
        if won:
            with self._lock:
                self._mine.add(key)
        return bool(won)

    def update(self, lease: Lease) -> None:
        key = self.key(lease.subnet)
        for _attempt in range(10):
            current = self._call(f"read {lease.subnet}", self.client.get, key)
            if current is None:
                raise KeyError(lease.subnet)
            lease_id = self._our_lease()
            if self._call(f"update {lease.subnet}", self.client.replace, key, _value(lease),
                          current.mod_revision, lease_id):
                with self._lock:
                    self._mine.add(key)
                return
        raise StoreUnavailable("etcd failed", f"update {lease.subnet}: kept changing")

    def release(self, subnet: str) -> bool:
        key = self.key(subnet)
        gone = self._call(f"release {subnet}", self.client.delete, key)
        with self._lock:
            self._mine.discard(key)
            revoke = self._lease_id if not self._mine else 0
            if revoke:
                self._lease_id = 0
        if revoke:  # nothing left to keep alive
            self._call("revoke the etcd lease", self.client.lease_revoke, revoke)
        return bool(gone)

    def hold(self, lease: Lease) -> None:
        key = self.key(lease.subnet)
        seen = self._seen.get(key)
        if seen is not None and self._lease_id and seen.lease == self._lease_id:
            return
        current = self._call(f"read {lease.subnet}", self.client.get, key)
        if current is None:
            return  # gone (expired): the holder claims it again on its next pass
        lease_id = self._our_lease()
        if current.lease == lease_id:
            return
        if self._call(f"adopt {lease.subnet}", self.client.replace, key, current.value,
                      current.mod_revision, lease_id):
            with self._lock:
                self._mine.add(key)
            self.log(f"{lease.subnet}: attached to this agent's etcd lease {lease_id:x} "
                     f"(was {current.lease:x})")

    def wait(self, timeout: float) -> bool:
        with self._changed:
            self._changed.wait_for(lambda: self._version != self._consumed, timeout)
            changed = self._version != self._consumed
            self._consumed = self._version
            return changed

    def close(self) -> None:
        """Stop the watch and the keep-alive. The etcd lease is not revoked: the keys
        stay for the TTL (a restarted agent adopts them), unless released first."""
        self._stop.set()
        for thread in (self._watcher, self._keeper):
            if thread is not None and thread is not threading.current_thread():
                thread.join(timeout=3.0)
        self.client.close()
        self._watch_client.close()

    # ------------------------------------------------------------ the etcd lease

    def _our_lease(self) -> int:
        with self._lock:
            if self._lease_id:
                return self._lease_id
            self._lease_id = self._call("grant an etcd lease", self.client.lease_grant,
                                        self.ttl)
            if self._keeper is None:
                self._keeper = threading.Thread(target=self._keep_alive, daemon=True,
                                                name="etcd-lease-keepalive")
                self._keeper.start()
            return self._lease_id

    def _keep_alive(self) -> None:
        interval = max(0.5, self.ttl / 3)
        pause = interval
        while not self._stop.wait(pause):
            lease_id = self._lease_id
            if not lease_id:
                pause = interval
                continue
            try:
                remaining = self.client.lease_keepalive(lease_id)
            except etcd.EtcdError as exc:
                self._unreachable(exc)
                pause = RETRY
                continue
            self._reachable()
            pause = interval
            if remaining <= 0:
                with self._lock:
                    if self._lease_id == lease_id:
                        self._lease_id = 0
                        self._mine.clear()
                self.log(f"etcd lease {lease_id:x} expired (etcd was out of reach for "
                         f"longer than its {self.ttl} s TTL): its keys are gone")
                self._signal()

    # ------------------------------------------------------------ the watch

    def _watch_loop(self) -> None:
        failures = 0  # in a row, without an answer in between
        while not self._stop.is_set():
            try:
                if self.watch_revision is None:
                    self._resync()
                for revision, events in self._watch_client.watch_prefix(
                        self.root, self.watch_revision + 1, self._stop):
                    failures = 0
                    self._delivered(revision, events)
                if not self._stop.is_set():
                    self.resumes += 1  # the stream ended: resume where it stopped
            except etcd.EtcdCompacted as exc:
                self.log(f"watch from revision {self.watch_revision + 1} was compacted "
                         f"(compacted up to {exc.compact_revision}): full resync")
                self.watch_revision = None
            except etcd.EtcdError as exc:
                # A broken stream is retried at once (the client fails over to another
                # endpoint); only a retry that finds no endpoint means etcd is away.
                failures += 1
                self.resumes += 1
                if failures > 1:
                    self._unreachable(exc)
                    self._stop.wait(RETRY)
            except Exception as exc:  # never let the watch thread die
                self.log(f"watch failed: {type(exc).__name__}: {exc}")
                self._stop.wait(RETRY)

    def _resync(self) -> None:
        _kvs, revision = self._watch_client.get_prefix(self.root)
        self.watch_revision = revision
        self.resyncs += 1
        self._reachable()
        self._signal()

    def _delivered(self, revision: int, events: list[etcd.Event]) -> None:
        self._reachable()
        if not events:
            return  # a progress or creation notice: its revision may run ahead of events
        last = self.watch_revision or 0
        for event in events:
            self.events.append((event.kv.mod_revision, event.kind, event.kv.key))
            last = max(last, event.kv.mod_revision or revision)
        self.watch_revision = last
        self._signal()

    # ------------------------------------------------------------ state

    def _signal(self) -> None:
        with self._changed:
            self._version += 1
            self._changed.notify_all()

    def _unreachable(self, exc: Exception) -> None:
        first = self.unreachable is None
        self.unreachable = str(exc)
        if first:
            self.log(f"unreachable: {exc}")
            self._signal()

    def _reachable(self) -> None:
        if self.unreachable is not None:
            self.unreachable = None
            self.log("reachable again")
            self._signal()

    def _call(self, what: str, func, *args):
        try:
            result = func(*args)
        except etcd.EtcdUnavailable as exc:
            self._unreachable(exc)
            raise StoreUnavailable("etcd unreachable", f"{what}: {exc}") from None
        except etcd.EtcdPermissionDenied as exc:
            raise StoreUnavailable("etcd refused access", f"{what}: {exc}") from None
        except etcd.EtcdError as exc:
            raise StoreUnavailable("etcd failed", f"{what}: {exc}") from None
        self._reachable()
        return result


def _value(lease: Lease) -> str:
    return json.dumps(lease.to_dict(), sort_keys=True)


def open_etcd_store(spec: dict, network: str = "default",
                    log: Callable[[str], None] | None = None) -> EtcdStore:
    """The store of a config section ``{"type": "etcd", "url": URL, "leaseTTL": N}``."""
    url = spec.get("url")
    if not isinstance(url, str) or not url:
        raise ValueError("store.url: expected an etcd://HOST:PORT[,...][/PREFIX] URL")
    try:
        settings = etcd.parse_url(url)
    except ValueError as exc:
        raise ValueError(f"store.url: {exc}") from None
    ttl = spec.get("leaseTTL", DEFAULT_TTL)
    if isinstance(ttl, bool) or not isinstance(ttl, int):
        raise ValueError(f"store.leaseTTL: expected whole seconds, got {ttl!r}")
    if not MIN_TTL <= ttl <= MAX_TTL:
        raise ValueError(f"store.leaseTTL: {ttl} out of range {MIN_TTL}..{MAX_TTL} seconds")
    return EtcdStore(settings, network, ttl, log)


__all__ = ["DEFAULT_TTL", "EtcdStore", "open_etcd_store"]
