"""The recording format: JSON lines, one session a line (docs/mirror.md).

It owns :class:`Session` and its (de)serialisation, and anonymisation of client
addresses. A line::

    {"v": 1, "id": "…", "client": "10.0.0.1:40312" | "anon-3f2a…:40312",
     "server": "10.0.1.2:80", "start": 1733330000.123, "syn": true,
     "end": "fin" | "rst" | "open", "missing": 0, "retransmitted": 0,
     "chunks": [{"offset": 0, "t": 0.0, "data": "<base64>"}, …]}

``t`` is seconds since ``start`` (arrival of the session's first packet at the
recorder); ``offset`` is the byte offset in the client's stream, so gaps are visible.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

VERSION = 1


@dataclass(frozen=True)
class Chunk:
    offset: int
    t: float
    data: bytes


@dataclass(frozen=True)
class Session:
    id: str
    client: str
    server: str
    start: float
    syn: bool = True
    end: str = "fin"
    missing: int = 0
    retransmitted: int = 0
    chunks: tuple[Chunk, ...] = field(default_factory=tuple)

    @property
    def payload(self) -> bytes:
        return b"".join(chunk.data for chunk in self.chunks)

    def to_dict(self) -> dict:
        return {"v": VERSION, "id": self.id, "client": self.client, "server": self.server,
                "start": self.start, "syn": self.syn, "end": self.end,
                "missing": self.missing, "retransmitted": self.retransmitted,
                "chunks": [{"offset": c.offset, "t": round(c.t, 6),
                            "data": base64.b64encode(c.data).decode()} for c in self.chunks]}

    @classmethod
    def from_dict(cls, data: dict) -> Session:
        if data.get("v") != VERSION:
            raise ValueError(f"unknown recording version {data.get('v')!r}")
        chunks = tuple(Chunk(int(c["offset"]), float(c["t"]), base64.b64decode(c["data"]))
                       for c in data["chunks"])
        return cls(str(data["id"]), str(data["client"]), str(data["server"]),
                   float(data["start"]), bool(data["syn"]), str(data["end"]),
                   int(data["missing"]), int(data.get("retransmitted", 0)), chunks)


def dumps(session: Session) -> str:
    return json.dumps(session.to_dict(), separators=(",", ":"))


def read(path: str) -> list[Session]:
    with open(path) as handle:
        return [Session.from_dict(json.loads(line)) for line in handle if line.strip()]


def write(path: str, sessions: Iterable[Session]) -> None:
    with open(path, "w") as handle:
        for session in sessions:
            handle.write(dumps(session) + "\n")


def anonymise_address(address: str, key: bytes) -> str:
    """``IP:PORT`` -> ``anon-<keyed hash of IP>:PORT`` (same IP, same name; not reversible
    without the key)."""
    ip, _, port = address.rpartition(":")
    digest = hmac.new(key, ip.encode(), hashlib.sha256).hexdigest()[:16]
    return f"anon-{digest}:{port}"


def anonymised(sessions: Iterable[Session], key: bytes) -> Iterator[Session]:
    for s in sessions:
        yield Session(s.id, anonymise_address(s.client, key), s.server, s.start, s.syn,
                      s.end, s.missing, s.retransmitted, s.chunks)
