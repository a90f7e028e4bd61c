"""The documents the ELB stores in etcd, as JSON (pure).

A model revision holds the model as pushed (the YAML file and every file it names: the
carriers' CIDR lists and the HAProxy template directory, see :mod:`dcnet.elbstore.bundle`)
and, for ``elbctl backend``, the services' layouts (VIPs, ports, real servers) so a
registration needs no model parsing. The files and layouts travel zlib-compressed in
``payload`` (etcd refuses requests over 1.5 MiB by default; a model compresses ~10x);
the metadata next to it stays readable with ``etcdctl get``.

A backend entry is the file registry's entry (``{"weight": W, "state": S}``, see
:mod:`dcnet.lvs.store`) plus who wrote it and when. A status says what a director applied.
"""

from __future__ import annotations

import base64
import hashlib
import json
import zlib
from dataclasses import dataclass, field
from typing import Any

FORMAT = 1


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

    @property
    def digest(self) -> str:
        """The same for the same files, whatever revision or metadata."""
        text = json.dumps({"files": self.files, "model": self.model_file}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def encode(self) -> str:
        payload = json.dumps({"files": self.files, "model_file": self.model_file,
                              "layouts": self.layouts, "drain_seconds": self.drain_seconds},
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
            payload = json.loads(zlib.decompress(base64.b64decode(doc["payload"])))
            return cls(revision=int(doc["revision"]), files=dict(payload["files"]),
                       model_file=payload["model_file"], layouts=list(payload["layouts"]),
                       drain_seconds=int(payload["drain_seconds"]),
                       pushed_at=float(doc.get("pushed_at", 0.0)),
                       pushed_by=str(doc.get("pushed_by", "")),
                       comment=str(doc.get("comment", "")), rollback_of=doc.get("rollback_of"),
                       source=str(doc.get("source", "")))
        except (ValueError, KeyError, TypeError, AttributeError, zlib.error) as exc:
            raise RecordError(f"{key}: not a model revision this elbctl can read: {exc}") \
                from None

    def as_revision(self, revision: int, *, pushed_at: float, pushed_by: str, comment: str,
                    rollback_of: int | None = None) -> ModelRevision:
        """The same content stored again as ``revision`` (push retries, rollbacks)."""
        return ModelRevision(revision, self.files, self.model_file, self.layouts,
                             self.drain_seconds, pushed_at, pushed_by, comment, rollback_of,
                             self.source)

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
        if not isinstance(revision, int) or revision < 1:
            raise ValueError(f"bad revision {revision!r}")
        return revision
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise RecordError(f"{key}: not a current-revision pointer: {exc}") from None


def encode_entry(entry: dict, by: str = "", at: float = 0.0) -> str:
    """A registry entry as stored: the file registry's fields, plus who and when."""
    return json.dumps({"weight": entry["weight"], "state": entry["state"], "by": by,
                       "at": at}, sort_keys=True)


def decode_entry(value: bytes | str, key: str = "<backend>") -> dict:
    """The file registry's entry (``weight``, ``state``) of a stored backend."""
    try:
        doc = json.loads(value)
        weight, state = doc["weight"], doc["state"]
        if not isinstance(weight, int) or state not in ("active", "draining", "removed"):
            raise ValueError(f"weight {weight!r} / state {state!r}")
        return {"weight": weight, "state": state}
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise RecordError(f"{key}: not a backend entry: {exc}") from None


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
        except (ValueError, TypeError, AttributeError) as exc:
            raise RecordError(f"{key}: not a director status: {exc}") from None
