"""The documents the ELB stores in etcd, as JSON (pure).

A model revision holds the model as pushed (the YAML file and every file it names: the
carriers' CIDR lists and the HAProxy template directory, see :mod:`dcnet.elbstore.bundle`)
and, for ``elbctl backend``, the services' layouts (VIPs, ports, real servers) so a
registration needs no model parsing. The files and layouts travel zlib-compressed in
``payload`` (etcd refuses requests over 1.5 MiB by default; a model compresses ~10x);
the metadata next to it stays readable with ``etcdctl get``.

A backend entry is the file registry's entry (``{"weight": W, "state": S}``, see
:mod:`dcnet.lvs.store`) plus who wrote it and when. A status says what a director applied.

Every value here comes from etcd, and a service's credential may write its own
JOBNAME's backend keys, so decoding trusts nothing: any value that is not the document
(not JSON, not UTF-8, nested past the parser's recursion limit, wrong types, a weight
outside 0..65535, a key that is not ``ADDR[:PORT]``, a payload that inflates past
``MAX_PAYLOAD``) is a :class:`RecordError` naming the key (shortened), which the agent
reports and skips; unknown fields are ignored.
"""

from __future__ import annotations

import base64
import hashlib
import json
import zlib
from dataclasses import dataclass, field
from typing import Any

from dcnet.lvs.layout import parse_server
from dcnet.model.types import MAX_WEIGHT

FORMAT = 1
MAX_PAYLOAD = 256 << 20     # a model revision's files inflated (a zlib bomb stops here)
_DECODE_ERRORS = (ValueError, KeyError, TypeError, AttributeError, RecursionError)


def short(text: str, limit: int = 200) -> str:
    """``text`` cut to ``limit`` characters for a message (keys may be long), bytes that
    were not UTF-8 (surrogate escapes) shown as escapes."""
    cut = text if len(text) <= limit else f"{text[:limit]}...({len(text)} characters)"
    return cut.encode("utf-8", "backslashreplace").decode("utf-8")


def _inflate(packed: str) -> bytes:
    inflater = zlib.decompressobj()
    data = inflater.decompress(base64.b64decode(packed), MAX_PAYLOAD)
    if inflater.unconsumed_tail:
        raise ValueError(f"payload inflates past {MAX_PAYLOAD} bytes")
    return data


class RecordError(ValueError):
    """A stored document that cannot be read (names the key)."""


@dataclass(frozen=True)
class ModelRevision:
    """One stored model revision."""

    revision: int
    files: dict[str, str]                 # relative path -> text; includes the model file
    model_file: str                       # which of ``files`` is the model
    layouts: list[dict]                   # ServiceLayout.to_json() of every service
    drain_seconds: int
    pushed_at: float = 0.0
    pushed_by: str = ""
    comment: str = ""
    rollback_of: int | None = None
    source: str = ""                      # the model's path where it was pushed from
    drain_deadline: int = 30              # longest lvs/haproxy drain_deadline (backend drain)

    @property
    def digest(self) -> str:
        """The same for the same files, whatever revision or metadata."""
        text = json.dumps({"files": self.files, "model": self.model_file}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def encode(self) -> str:
        payload = json.dumps({"files": self.files, "model_file": self.model_file,
                              "layouts": self.layouts, "drain_seconds": self.drain_seconds,
                              "drain_deadline": self.drain_deadline},
                             sort_keys=True, separators=(",", ":"))
        packed = base64.b64encode(zlib.compress(payload.encode(), 6)).decode("ascii")
        return json.dumps({"format": FORMAT, "revision": self.revision,
                           "pushed_at": self.pushed_at, "pushed_by": self.pushed_by,
                           "comment": self.comment, "rollback_of": self.rollback_of,
                           "source": self.source, "digest": self.digest,
                           "services": len(self.layouts), "payload": packed},
                          sort_keys=True)

    @classmethod
    def decode(cls, value: bytes | str, key: str = "<model revision>") -> ModelRevision:
        try:
            doc = json.loads(value)
            if doc.get("format") != FORMAT:
                raise ValueError(f"unknown format {doc.get('format')!r}")
            payload = json.loads(_inflate(doc["payload"]))
            return cls(revision=int(doc["revision"]), files=dict(payload["files"]),
                       model_file=payload["model_file"], layouts=list(payload["layouts"]),
                       drain_seconds=int(payload["drain_seconds"]),
                       pushed_at=float(doc.get("pushed_at", 0.0)),
                       pushed_by=str(doc.get("pushed_by", "")),
                       comment=str(doc.get("comment", "")), rollback_of=doc.get("rollback_of"),
                       source=str(doc.get("source", "")),
                       drain_deadline=int(payload.get("drain_deadline", 30)))
        except (*_DECODE_ERRORS, zlib.error) as exc:
            raise RecordError(f"{short(key)}: not a model revision this elbctl can read: "
                              f"{short(str(exc))}") from None

    def as_revision(self, revision: int, *, pushed_at: float, pushed_by: str, comment: str,
                    rollback_of: int | None = None) -> ModelRevision:
        """The same content stored again as ``revision`` (push retries, rollbacks)."""
        return ModelRevision(revision, self.files, self.model_file, self.layouts,
                             self.drain_seconds, pushed_at, pushed_by, comment, rollback_of,
                             self.source, self.drain_deadline)

    def summary(self) -> dict[str, Any]:
        """The metadata (no files), for ``elbctl history``."""
        return {"revision": self.revision, "pushed_at": self.pushed_at,
                "pushed_by": self.pushed_by, "comment": self.comment,
                "rollback_of": self.rollback_of, "source": self.source,
                "digest": self.digest, "services": len(self.layouts)}


def encode_current(revision: int) -> str:
    return json.dumps({"revision": revision})


def decode_current(value: bytes | str, key: str = "<current>") -> int:
    try:
        revision = json.loads(value)["revision"]
        if isinstance(revision, bool) or not isinstance(revision, int) or revision < 1:
            raise ValueError(f"bad revision {revision!r}")
        return revision
    except _DECODE_ERRORS as exc:
        raise RecordError(f"{short(key)}: not a current-revision pointer: "
                          f"{short(str(exc))}") from None


def encode_entry(entry: dict, by: str = "", at: float = 0.0) -> str:
    """A registry entry as stored: the file registry's fields, plus who and when."""
    return json.dumps({"weight": entry["weight"], "state": entry["state"], "by": by,
                       "at": at}, sort_keys=True)


def decode_entry(value: bytes | str, key: str = "<backend>") -> dict:
    """The file registry's entry (``weight``, ``state``) of a stored backend."""
    try:
        doc = json.loads(value)
        weight, state = doc["weight"], doc["state"]
        if isinstance(weight, bool) or not isinstance(weight, int) or \
                not 0 <= weight <= MAX_WEIGHT or state not in ("active", "draining", "removed"):
            raise ValueError(f"weight {weight!r} / state {state!r}")
        return {"weight": weight, "state": state}
    except _DECODE_ERRORS as exc:
        raise RecordError(f"{short(key)}: not a backend entry: {short(str(exc))}") from None


def decode_backend(ident: str, value: bytes | str, key: str = "<backend>") -> dict:
    """:func:`decode_entry` for the backend key ending in ``ident``, which must be
    ``ADDR``, ``ADDR:PORT`` or ``[V6]:PORT`` (the merge parses it)."""
    try:
        parse_server(ident)
    except ValueError:
        raise RecordError(f"{short(key)}: not a backend key: {short(ident)!r} is not "
                          "ADDR[:PORT]") from None
    return decode_entry(value, key)


@dataclass
class Status:
    """What one director last did (``elb/status/<DIRECTOR>/state``)."""

    director: str
    target: str
    result: str                          # ok | failed | invalid | waiting
    model_revision: int | None = None    # the model revision applied (or tried)
    revision: int = 0                    # etcd revision of the desired state applied
    time: float = 0.0
    errors: list[str] = field(default_factory=list)
    changes: int = 0                     # changes in the plan
    applied: int = 0                     # of which applied
    summary: str = ""
    etcd_ops: dict[str, int] = field(default_factory=dict)   # this agent's requests so far
    applies: int = 0                     # applies run by this agent process
    host: str = ""
    pid: int = 0

    def encode(self) -> str:
        return json.dumps(vars(self), sort_keys=True)

    @classmethod
    def decode(cls, value: bytes | str, key: str = "<status>") -> Status:
        try:
            doc = json.loads(value)
            known = {k: doc[k] for k in cls.__dataclass_fields__ if k in doc}
            return cls(**known)
        except _DECODE_ERRORS as exc:
            raise RecordError(f"{short(key)}: not a director status: {short(str(exc))}") \
                from None
