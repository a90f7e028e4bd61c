"""How keys and values travel through etcd's JSON gateway: the values a client returns
(:class:`KeyValue`, :class:`Event`), base64 and prefix-range helpers, and
:class:`KeyCodec`, which adds a client's key prefix on the way out and strips it on the
way back (plain concatenation: "/dcnet" + "/nodes/a")."""

from __future__ import annotations

import base64
from dataclasses import dataclass

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


@dataclass(frozen=True)
class KeyValue:
    key: str
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int


@dataclass(frozen=True)
class Event:
    kind: str  # "put" | "delete"
    kv: KeyValue


def _b64(data: str | bytes) -> str:
    raw = data.encode() if isinstance(data, str) else bytes(data)
    return base64.b64encode(raw).decode("ascii")


def _unb64(text: str | None) -> bytes:
    return base64.b64decode(text) if text else b""


def _as_bytes(value: bytes | str) -> bytes:
    return value.encode() if isinstance(value, str) else bytes(value)


def prefix_range_end(prefix: bytes) -> bytes:
    """The smallest key greater than every key starting with ``prefix``."""
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return b"\0"
    return stripped[:-1] + bytes([stripped[-1] + 1])


def _revision(reply: dict) -> int:
    return int(reply.get("header", {}).get("revision", 0))


class KeyCodec:
    """Prefix handling and base64 coding of keys, values and txn documents."""

    _prefix: bytes

    def _full(self, key: str) -> bytes:
        return self._prefix + key.encode()

    def _key(self, key: str) -> str:
        return _b64(self._full(key))

    def _strip(self, raw: bytes) -> str:
        if self._prefix and raw.startswith(self._prefix):
            raw = raw[len(self._prefix):]
        return raw.decode(errors="surrogateescape")

    def _kv(self, raw: dict) -> KeyValue:
        return KeyValue(key=self._strip(_unb64(raw.get("key"))), value=_unb64(raw.get("value")),
                        create_revision=int(raw.get("create_revision", 0)),
                        mod_revision=int(raw.get("mod_revision", 0)),
                        version=int(raw.get("version", 0)), lease=int(raw.get("lease", 0)))

    def _encode(self, item: Any, parent: str = "") -> Any:
        """Base64 key/range_end (with the prefix) and value fields of a txn dict."""
        if isinstance(item, dict):
            out = {}
            for name, value in item.items():
                if name in ("key", "range_end") and isinstance(value, str | bytes):
                    out[name] = _b64(self._full(value) if isinstance(value, str)
                                     else self._prefix + value)
                elif name == "value" and isinstance(value, str | bytes):
                    out[name] = _b64(value)
                else:
                    out[name] = self._encode(value, name)
            return out
        if isinstance(item, list):
            return [self._encode(value, parent) for value in item]
        return item

    def _decode(self, item: Any) -> Any:
        if isinstance(item, dict):
            out = {}
            for name, value in item.items():
                if name == "kvs" and isinstance(value, list):
                    out[name] = [self._decode_kv(kv) for kv in value]
                elif name == "prev_kv" and isinstance(value, dict):
                    out[name] = self._decode_kv(value)
                else:
                    out[name] = self._decode(value)
            return out
        if isinstance(item, list):
            return [self._decode(value) for value in item]
        return item

    def _decode_kv(self, raw: dict) -> dict:
        out = dict(raw)
        out["key"] = self._strip(_unb64(raw.get("key")))
        out["value"] = _unb64(raw.get("value"))
        return out
