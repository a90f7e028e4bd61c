"""Anonymising a recording before it leaves the director: client addresses (keyed hash,
:func:`dcnet.mirror.recording.anonymise_address`) and chosen HTTP request headers.

:func:`redact_headers` rewrites the value of every named header (case-insensitive) in
each HTTP/1.x request of a session's client stream to ``anon-<keyed hash of the value>``
(the same value maps to the same token under one key, so a replay still sees one user's
requests as one user's, and diffs stay stable), e.g. ``Authorization``, ``Cookie``,
``X-Forwarded-For``. Request lines and bodies are left as they are. The chunks keep their
arrival times: each chunk's offset moves by what the rewriting before it added or
removed, so gaps (``missing``) and timing survive. A session that is not HTTP is
returned unchanged.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable, Iterator

from dcnet.mirror.recording import Chunk, Session

DEFAULT_REDACTED = ("authorization", "cookie", "proxy-authorization", "x-forwarded-for",
                    "x-real-ip")
_REQUEST_LINE = re.compile(rb"^[A-Z]{3,10} \S+ HTTP/1\.[01]\r?$")


def token(value: bytes, key: bytes) -> bytes:
    return b"anon-" + hmac.new(key, value.strip(), hashlib.sha256).hexdigest()[:16].encode()


def _rewrites(data: bytes, names: frozenset[bytes], key: bytes) -> list[tuple[int, int, bytes]]:
    """(start, end, replacement) of each header value to rewrite in ``data``."""
    out = []
    at = 0
    while at < len(data):
        line_end = data.find(b"\n", at)
        if line_end < 0:
            break
        if not _REQUEST_LINE.match(data[at:line_end]):
            at = line_end + 1                   # a body or a partial line: skip on
            continue
        at = line_end + 1                       # the headers of one request
        while at < len(data):
            end = data.find(b"\n", at)
            if end < 0:
                return out
            line = data[at:end].rstrip(b"\r")
            if not line:                        # end of the header block
                at = end + 1
                break
            name, sep, _ = line.partition(b":")
            if sep and name.strip().lower() in names:
                start = at + len(name) + 1
                value = data[start:at + len(line)]
                lead = len(value) - len(value.lstrip())
                out.append((start + lead, at + len(line), token(value, key)))
            at = end + 1
    return out


def redact_session(session: Session, names: Iterable[str], key: bytes) -> Session:
    """``session`` with the named headers' values replaced (pure)."""
    wanted = frozenset(n.lower().encode() for n in names)
    if not session.chunks or not wanted:
        return session
    base = session.chunks[0].offset
    data = session.payload
    rewrites = _rewrites(data, wanted, key)
    if not rewrites:
        return session
    pieces, shifts, last, delta = [], [], 0, 0
    for start, end, new in rewrites:
        pieces += [data[last:start], new]
        delta += len(new) - (end - start)
        shifts.append((end, delta))             # positions at/after ``end`` move by delta
        last = end
    pieces.append(data[last:])
    text = b"".join(pieces)

    def moved(position: int) -> int:
        shift = 0
        for at, value in shifts:
            if position >= at:
                shift = value
        return position + shift

    # chunks are contiguous in ``payload`` (gaps live only in their offsets)
    position, bounds = 0, []
    for chunk in session.chunks:
        bounds.append((position, position + len(chunk.data)))
        position += len(chunk.data)
    chunks = []
    for index, chunk in enumerate(session.chunks):
        lo = moved(bounds[index][0]) if index else 0
        hi = moved(bounds[index][1]) if index + 1 < len(session.chunks) else len(text)
        gap = chunk.offset - base - bounds[index][0]        # bytes missing before it
        chunks.append(Chunk(base + lo + gap, chunk.t, text[lo:hi]))
    return Session(session.id, session.client, session.server, session.start, session.syn,
                   session.end, session.missing, session.retransmitted, tuple(chunks))


def redacted(sessions: Iterable[Session], names: Iterable[str], key: bytes
             ) -> Iterator[Session]:
    names = tuple(names)
    for session in sessions:
        yield redact_session(session, names, key)
