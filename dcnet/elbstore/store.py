"""The ELB's state in etcd: pushing and rolling back model revisions, registering
backends, reading and writing director status. Every write that depends on what was
read is one etcd transaction guarded by the keys' ``mod_revision`` (compare-and-swap),
retried on conflict, so concurrent writers never lose an update:

- push / rollback: ``current`` unchanged and the new revision's key absent -> put the new
  revision and move ``current`` to it, in one transaction;
- backend add/remove/drain: that one backend key unchanged -> put or delete it (other
  servers' keys are independent, so registrations of different servers never conflict).

Only :mod:`dcnet.sysio.etcd` talks to etcd; :class:`CountingClient` counts the requests
(the agents report them in their status, the benchmark prints them per change).
"""

from __future__ import annotations

import collections
import getpass
import random
import socket
import time
from dataclasses import dataclass, field

from dcnet.elbstore.bundle import Collected, layout_docs
from dcnet.elbstore.keys import Keys
from dcnet.elbstore.records import (
    ModelRevision,
    Status,
    decode_current,
    decode_entry,
    encode_current,
    encode_entry,
)
from dcnet.lvs.dynamic import (
    ACTIONS,
    BackendCommandError,
    _resolve,
    check_request,
    update_registry,
)
from dcnet.lvs.layout import ServiceLayout

MAX_ATTEMPTS = 200
COUNTED = frozenset({"get", "get_prefix", "put", "delete", "delete_prefix", "create",
                     "replace", "delete_if", "txn", "lease_grant", "lease_keepalive",
                     "lease_revoke", "watch_prefix", "status"})


class StoreConflict(RuntimeError):
    """Too many concurrent writers kept changing the same key."""


class CountingClient:
    """A :class:`dcnet.sysio.etcd.Client` that counts its requests by method
    (``watch_prefix`` counts once per watch opened; ``watch_responses`` the responses)."""

    def __init__(self, client):
        self._client = client
        self.counts: collections.Counter[str] = collections.Counter()

    def __getattr__(self, name):
        attr = getattr(self._client, name)
        if name not in COUNTED:
            return attr
        if name == "watch_prefix":
            def watch(*args, **kwargs):
                self.counts["watch_prefix"] += 1
                for item in attr(*args, **kwargs):
                    self.counts["watch_responses"] += 1
                    yield item
            return watch

        def counted(*args, **kwargs):
            self.counts[name] += 1
            return attr(*args, **kwargs)
        return counted

    def replace_client(self, client) -> None:
        """Use ``client`` from now on (the old one is closed); counts are kept."""
        old, self._client = self._client, client
        old.close()

    def total(self) -> int:
        """Requests sent (watch responses are not requests)."""
        return sum(n for k, n in self.counts.items() if k != "watch_responses")


def who(settings_user: str | None = None) -> str:
    user = settings_user or getpass.getuser()
    return f"{user}@{socket.gethostname()}"


def _pause(attempt: int) -> None:
    time.sleep(random.uniform(0, min(0.2, 0.002 * 2 ** min(attempt, 7))))


@dataclass
class BackendChange:
    """What ``elbctl backend ... --store`` did."""

    service: str
    server: str
    action: str
    key: str
    entry: dict | None              # the stored entry after the change (None: deleted/none)
    revision: int | None            # etcd revision of the write (None: nothing written)
    attempts: int = 1
    notes: list[str] = field(default_factory=list)

    def to_text(self) -> str:
        if self.revision is None:
            head = f"{self.action} {self.server} in {self.service}: nothing to change"
        elif self.entry is None:
            head = (f"{self.action} {self.server} in {self.service}: registration deleted "
                    f"(etcd revision {self.revision})")
        else:
            head = (f"{self.action} {self.server} in {self.service}: recorded as "
                    f"{self.entry['state']} weight {self.entry['weight']} "
                    f"(etcd revision {self.revision})")
        return "\n".join([head, *(f"  note: {n}" for n in self.notes)])


class ElbStore:
    def __init__(self, client, keys: Keys, author: str = ""):
        self.client = client
        self.keys = keys
        self.author = author or who()

    # ------------------------------------------------------------------ models

    def current(self):
        """(current model revision or None, its pointer's KeyValue or None)."""
        kv = self.client.get(self.keys.current)
        return (decode_current(kv.value, kv.key) if kv else None), kv

    def model(self, revision: int) -> ModelRevision:
        kv = self.client.get(self.keys.model(revision))
        if kv is None:
            raise LookupError(f"no model revision {revision} in etcd "
                              f"({self.keys.model(revision)})")
        return ModelRevision.decode(kv.value, kv.key)

    def push(self, collected: Collected, comment: str = "", source: str = "") -> ModelRevision:
        """Store a validated model as a new revision and make it current."""
        record = ModelRevision(0, collected.files, collected.model_file,
                               layout_docs(collected.model),
                               collected.model.lvs.drain_seconds, source=source,
                               drain_deadline=max(collected.model.lvs.drain_deadline,
                                                  collected.model.haproxy.drain_deadline))
        return self._store_as_current(record, comment, None)

    def rollback(self, revision: int, comment: str = "") -> ModelRevision:
        """Make revision ``revision``'s model current again, as a new revision."""
        old = self.model(revision)
        return self._store_as_current(old, comment or f"rollback to revision {revision}",
                                      revision)

    def _store_as_current(self, record: ModelRevision, comment: str,
                          rollback_of: int | None) -> ModelRevision:
        for attempt in range(MAX_ATTEMPTS):
            current, kv = self.current()
            new = record.as_revision((current or 0) + 1, pushed_at=time.time(),
                                     pushed_by=self.author, comment=comment,
                                     rollback_of=rollback_of)
            compare = [_mod_equal(self.keys.current, kv.mod_revision if kv else 0),
                       _mod_equal(self.keys.model(new.revision), 0)]
            success = [_put(self.keys.model(new.revision), new.encode()),
                       _put(self.keys.current, encode_current(new.revision))]
            ok, _, _ = self.client.txn(compare, success, [])
            if ok:
                return new
            _pause(attempt)
        raise StoreConflict(f"{self.keys.current} kept changing: gave up after "
                            f"{MAX_ATTEMPTS} attempts")

    def history(self) -> tuple[list[ModelRevision], int | None]:
        kvs, _ = self.client.get_prefix(self.keys.models)
        records = [ModelRevision.decode(kv.value, kv.key) for kv in kvs]
        current, _ = self.current()
        return sorted(records, key=lambda r: r.revision), current

    # ------------------------------------------------------------------ backends

    def layouts(self) -> dict[str, ServiceLayout]:
        current, _ = self.current()
        if current is None:
            raise BackendCommandError(f"no model in etcd under {self.keys.root}: run "
                                      "'elbctl push -f MODEL --store ...' first")
        return {d["name"]: ServiceLayout.from_json(d) for d in self.model(current).layouts}

    def change_backend(self, action: str, service: str, server_text: str,
                       weight: int | None = None, *, only_known: bool = False,
                       expect_record: int | None = None) -> BackendChange:
        """add / remove / drain one real server of one service, with the file registry's
        rules (:func:`dcnet.lvs.dynamic.update_registry`), as a compare-and-swap on its key.
        ``only_known``: nothing for a server neither the model nor the registry has;
        ``expect_record``: nothing unless the key is still that record (``mod_revision``:
        ``backend remove`` after its drain leaves a server added back meanwhile)."""
        if action not in ACTIONS:
            raise BackendCommandError(f"unknown action {action!r}")
        layout = _resolve(self.layouts(), service)
        ident = check_request(layout, server_text, weight)
        key = self.keys.backend(layout.name, ident)
        for attempt in range(MAX_ATTEMPTS):
            kv = self.client.get(key)
            if expect_record is not None and (kv.mod_revision if kv else 0) != expect_record:
                result = BackendChange(layout.name, ident, action, key, None, None, attempt + 1)
                result.notes.append(f"{key} changed since etcd revision {expect_record} "
                                    "(added back?): left as it is")
                return result
            if only_known and kv is None and ident not in {s.ident for s in layout.servers}:
                result = BackendChange(layout.name, ident, action, key, None, None, attempt + 1)
                result.notes.append(f"{ident} is neither in the model nor registered")
                return result
            entries = {ident: decode_entry(kv.value, key)} if kv else {}
            update_registry(entries, layout, ident, action, weight)
            entry = entries.get(ident)
            result = BackendChange(layout.name, ident, action, key, entry, None, attempt + 1)
            if entry is None and kv is None:
                result.notes.append(f"{ident} was not registered")
                return result
            if entry is None:
                op = {"request_delete_range": {"key": key}}
            else:
                op = _put(key, encode_entry(entry, self.author, time.time()))
            ok, _, revision = self.client.txn(
                [_mod_equal(key, kv.mod_revision if kv else 0)], [op], [])
            if ok:
                result.revision = revision
                return result
            _pause(attempt)
        raise StoreConflict(f"{key} kept changing: gave up after {MAX_ATTEMPTS} attempts")

    def registry(self) -> dict[str, dict[str, dict]]:
        kvs, _ = self.client.get_prefix(self.keys.backends)
        out: dict[str, dict[str, dict]] = {}
        for kv in kvs:
            what = self.keys.parse(kv.key)
            if what[0] == "backend":
                out.setdefault(what[1], {})[what[2]] = decode_entry(kv.value, kv.key)
        return out

    # ------------------------------------------------------------------ status

    def write_status(self, status: Status) -> int:
        return self.client.put(self.keys.status(status.director), status.encode())

    def statuses(self) -> list[Status]:
        kvs, _ = self.client.get_prefix(self.keys.statuses)
        return [Status.decode(kv.value, kv.key) for kv in kvs
                if self.keys.parse(kv.key)[0] == "status"]


def _mod_equal(key: str, mod_revision: int) -> dict:
    return {"key": key, "target": "MOD", "result": "EQUAL", "mod_revision": mod_revision}


def _put(key: str, value: str) -> dict:
    return {"request_put": {"key": key, "value": value}}
