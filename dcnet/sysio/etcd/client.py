"""The etcd client: :class:`Client`'s keys and values, transactions (create /
compare-and-swap / raw), leases, maintenance (compaction, status) and auth
administration, over the transport and watch of its base classes."""

from __future__ import annotations

from dcnet.sysio.etcd.codec import KeyValue, _as_bytes, _b64, _revision, prefix_range_end
from dcnet.sysio.etcd.errors import EtcdError
from dcnet.sysio.etcd.watch import Watcher

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

_PERM_TYPES = {"read": "READ", "write": "WRITE", "readwrite": "READWRITE"}


class Client(Watcher):
    """An etcd v3 client over the JSON gateway; thread-safe; see :mod:`dcnet.sysio.etcd`.

    ``netns``: optional path of a network namespace in which TCP connections are opened.
    """

    # ------------------------------------------------------------ keys and values

    def get(self, key: str) -> KeyValue | None:
        reply = self._call("/v3/kv/range", {"key": self._key(key)}, "get " + key)
        kvs = reply.get("kvs") or []
        return self._kv(kvs[0]) if kvs else None

    def get_prefix(self, prefix: str) -> tuple[list[KeyValue], int]:
        full = self._full(prefix)
        reply = self._call("/v3/kv/range", {"key": _b64(full),
                                            "range_end": _b64(prefix_range_end(full))},
                           "get_prefix " + prefix)
        return [self._kv(kv) for kv in reply.get("kvs") or []], _revision(reply)

    def put(self, key: str, value: bytes | str, lease: int = 0) -> int:
        body = {"key": self._key(key), "value": _b64(_as_bytes(value))}
        if lease:
            body["lease"] = str(lease)
        return _revision(self._call("/v3/kv/put", body, "put " + key, idempotent=False))

    def delete(self, key: str) -> bool:
        reply = self._call("/v3/kv/deleterange", {"key": self._key(key)}, "delete " + key,
                           idempotent=False)
        return int(reply.get("deleted", 0)) > 0

    def delete_prefix(self, prefix: str) -> int:
        full = self._full(prefix)
        reply = self._call("/v3/kv/deleterange",
                           {"key": _b64(full), "range_end": _b64(prefix_range_end(full))},
                           "delete_prefix " + prefix, idempotent=False)
        return int(reply.get("deleted", 0))

    def create(self, key: str, value: bytes | str, lease: int = 0) -> bool:
        """Put only if the key does not exist; True when this call created it."""
        return self.replace(key, value, 0, lease)

    def replace(self, key: str, value: bytes | str, mod_revision: int,
                lease: int = 0) -> bool:
        """Put only if the key's mod_revision is ``mod_revision`` (0: must not exist)."""
        put: dict[str, Any] = {"key": key, "value": _as_bytes(value)}
        if lease:
            put["lease"] = str(lease)
        succeeded, _, _ = self.txn([_revision_compare(key, mod_revision)],
                                   [{"request_put": put}], [], _op=f"replace {key}")
        return succeeded

    def delete_if(self, key: str, mod_revision: int) -> bool:
        """Delete only if the key's mod_revision is ``mod_revision``."""
        succeeded, _, _ = self.txn([_revision_compare(key, mod_revision)],
                                   [{"request_delete_range": {"key": key}}], [],
                                   _op=f"delete_if {key}")
        return succeeded

    def txn(self, compare: list[dict], success: list[dict], failure: list[dict],
            _op: str = "txn") -> tuple[bool, list[dict], int]:
        """A raw transaction with plain str keys/values; returns (succeeded, responses,
        revision). In the responses kvs/prev_kv have key -> str and value -> bytes."""
        body = {"compare": [self._encode(item) for item in compare],
                "success": [self._encode(item) for item in success],
                "failure": [self._encode(item) for item in failure]}
        reply = self._call("/v3/kv/txn", body, _op, idempotent=False)
        responses = [self._decode(item) for item in reply.get("responses") or []]
        return bool(reply.get("succeeded")), responses, _revision(reply)

    # ------------------------------------------------------------ leases

    def lease_grant(self, ttl: int) -> int:
        reply = self._call("/v3/lease/grant", {"TTL": str(int(ttl))}, f"lease_grant {ttl}",
                           idempotent=False)
        if reply.get("error"):
            raise EtcdError(f"etcd lease_grant {ttl}: {reply['error']}")
        return int(reply["ID"])

    def lease_keepalive(self, lease_id: int) -> int:
        """Renew the lease once; the remaining TTL in seconds, 0 when it is gone."""
        reply = self._call("/v3/lease/keepalive", {"ID": str(lease_id)},
                           f"lease_keepalive {lease_id:x}")
        result = reply.get("result", reply)
        return int(result.get("TTL", 0))

    def lease_revoke(self, lease_id: int) -> None:
        """Revoke the lease (its keys are deleted); a lease already gone is fine."""
        try:
            self._call("/v3/lease/revoke", {"ID": str(lease_id)},
                       f"lease_revoke {lease_id:x}")
        except EtcdError as exc:
            if "lease not found" not in str(exc):
                raise

    # ------------------------------------------------------------ maintenance

    def compact(self, revision: int) -> None:
        self._call("/v3/kv/compaction", {"revision": str(revision), "physical": True},
                   f"compact {revision}")

    def status(self) -> dict:
        """Status of the member answering: member_id, leader, revision, raft_term,
        version, endpoint."""
        reply, endpoint = self._call("/v3/maintenance/status", {}, "status",
                                     with_endpoint=True)
        header = reply.get("header", {})
        return {"member_id": int(header.get("member_id", 0)),
                "leader": int(reply.get("leader", 0)),
                "revision": int(header.get("revision", 0)),
                "raft_term": int(reply.get("raftTerm", 0)),
                "version": reply.get("version", ""),
                "endpoint": endpoint}

    # ------------------------------------------------------------ auth administration

    def user_add(self, name: str, password: str) -> None:
        self._call("/v3/auth/user/add", {"name": name, "password": password},
                   f"user_add {name}", idempotent=False)

    def role_add(self, name: str) -> None:
        self._call("/v3/auth/role/add", {"name": name}, f"role_add {name}", idempotent=False)

    def role_grant_prefix(self, role: str, prefix: str, perm: str) -> None:
        """Grant ``role`` perm ("read" | "write" | "readwrite") on keys under prefix."""
        if perm not in _PERM_TYPES:
            raise ValueError(f"role_grant_prefix: perm {perm!r} is not one of "
                             f"{', '.join(_PERM_TYPES)}")
        full = self._full(prefix)
        self._call("/v3/auth/role/grant",
                   {"name": role, "perm": {"key": _b64(full),
                                           "range_end": _b64(prefix_range_end(full)),
                                           "permType": _PERM_TYPES[perm]}},
                   f"role_grant_prefix {role} {prefix} {perm}", idempotent=False)

    def user_grant_role(self, user: str, role: str) -> None:
        self._call("/v3/auth/user/grant", {"user": user, "role": role},
                   f"user_grant_role {user} {role}", idempotent=False)

    def auth_enable(self) -> None:
        self._call("/v3/auth/enable", {}, "auth_enable", idempotent=False)


def _revision_compare(key: str, mod_revision: int) -> dict:
    if mod_revision == 0:
        return {"key": key, "target": "CREATE", "result": "EQUAL", "create_revision": "0"}
    return {"key": key, "target": "MOD", "result": "EQUAL", "mod_revision": str(mod_revision)}
