"""The verified-snapshot fingerprints that let a no-op sync skip reading IPVS (pure).

After an apply that ends clean (every change applied, no drain pending) elbctl records
two digests in its state directory (:meth:`dcnet.lvs.store.Store.save_fingerprint`):

- the **table** digest: SHA-256 of the namespace's ``/proc/net/ip_vs`` text (read after
  the apply, or the text the plan was made from when the apply wrote nothing to IPVS)
  with the connection counter columns (ActiveConn, InActConn) masked, so traffic alone
  does not change it (:func:`table_digest`: one regular-expression split in C);
- the **inputs** digest: SHA-256 of everything the desired IPVS state is computed from:
  the model's service fields that become layouts, the dynamic registry, the VIPs elbctl
  owns (model, drain set and VIP interface), the model's ``drain_seconds`` and this
  module's :data:`VERSION` (:func:`inputs_digest`).

The next plan computes both first; when both equal the record, the IPVS table is the one
that was verified and written last time and the model asks for the same again, so the
IPVS part of the current state is taken to be the desired one without parsing the file
or dumping services. What the file does not show is not seen by this shortcut: service
flags other than persistence and one-packet scheduling and the persistence engine (the
full read's service dump sees them), dest thresholds and tunnel options (the full read's
fast dest read does not either); ``--exact-read`` skips it and reads everything.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from itertools import chain
from operator import attrgetter

VERSION = 1      # bump when the desired-state mapping changes: old records stop matching

# a dest line: "\n  -> ADDR:PORT      Fwd     Weight ActiveConn InActConn" (the kernel pads
# the counters with blanks); the group keeps all but the counters, and splitting on the
# pattern then joining drops exactly the counters (all in C: ``re.sub`` with a group
# template calls back into Python once per match before Python 3.12)
_COUNTERS = re.compile(r"(\n  -> [^ ]+ +[A-Za-z]+ +\d+) +\d+ +\d+ *(?=\n)")


def masked(text: str) -> str:
    """``/proc/net/ip_vs`` text with each dest line's connection counters removed."""
    return "".join(_COUNTERS.split(text))


def table_digest(text: str) -> str:
    """The digest of an IPVS table as ``/proc/net/ip_vs`` prints it, counters masked."""
    return hashlib.sha256(masked(text).encode("ascii", "replace")).hexdigest()


_COUNTERS_BYTES = re.compile(_COUNTERS.pattern.encode())


def streamed_table_digest(handle, block: int = 1 << 18) -> str:
    """:func:`table_digest` of the text read from ``handle`` (opened in binary), a block
    of whole lines at a time: each block is masked with the line that follows it in
    view (a dest line's pattern ends before a newline), so the text hashed is the
    whole text masked, and no more than a block of it is held."""
    sha = hashlib.sha256()
    carry = b""
    while True:
        data = handle.read(block)
        if not data:
            break
        data = carry + data
        cut = data.rfind(b"\n")
        if cut <= 0:
            carry = data
            continue
        sha.update(b"".join(_COUNTERS_BYTES.split(data[:cut + 1]))[:-1])
        carry = data[cut:]
    sha.update(b"".join(_COUNTERS_BYTES.split(carry)))
    return sha.hexdigest()


def inputs_digest(model, registry: Mapping[str, Mapping], vips: Iterable[str]) -> str:
    """The digest of what the desired IPVS state and its ownership are computed from
    (and of what ``layouts.json`` holds): every field of the model that
    :func:`dcnet.lvs.layout.layouts` reads (keep the two in step; a unit test changes
    each of them), ``lvs.drain_seconds``, the registry and the owned VIPs.

    Read straight from the model, without building layouts: the real servers (100,000
    for 10,000 x 10) go through one C-level ``attrgetter`` each, and the whole is the
    ``repr`` of one tuple of strings, bytes, ints and None (canonical: equal inputs,
    equal text), hashed as :func:`streamed_inputs_digest` makes it."""
    return streamed_inputs_digest(lambda: (model.services,), model.lvs.drain_seconds,
                                  registry, vips)


def streamed_inputs_digest(chunks, drain_seconds: int, registry: Mapping[str, Mapping],
                           vips: Iterable[str]) -> str:
    """:func:`inputs_digest` of a model given as ``chunks()`` (called twice: a fresh
    iterable of its services, a tuple of them at a time, e.g.
    :meth:`dcnet.model.pieces.Pieces.chunks`): the text hashed is the ``repr`` of
    ``(VERSION, shape, servers, drain_seconds, sorted(vips), registry JSON)`` whole, fed
    to the hash a chunk at a time (the drift check never holds the whole model)."""
    sha = hashlib.sha256(f"({VERSION!r}, ".encode())
    _hash_list(sha, ([(s.name, [(carrier, vip.packed) for carrier, vip in s.vips],
                       [(p.protocol.value, p.port, p.scheduler, p.forward.value,
                         p.persistence, p.backend_port) for p in s.ports],
                       len(s.real_servers)) for s in chunk] for chunk in chunks()))
    sha.update(b", ")
    _hash_list(sha, (list(map(_SERVER_FIELDS, chain.from_iterable(
        s.real_servers for s in chunk))) for chunk in chunks()))
    sha.update(f", {drain_seconds!r}, {sorted(vips)!r}, "
               f"{json.dumps(registry, sort_keys=True)!r})".encode())
    return sha.hexdigest()


def _hash_list(sha, parts) -> None:
    """Hash the ``repr`` of the list that is ``parts`` (lists) concatenated."""
    sha.update(b"[")
    first = True
    for part in parts:
        if part:
            text = ", ".join(map(repr, part))
            sha.update((text if first else ", " + text).encode())
            first = False
    sha.update(b"]")


_SERVER_FIELDS = attrgetter("address.packed", "port", "weight")


def record(table: str, inputs: str, notes: Iterable[str] = (), objects: int = 0) -> dict:
    """What :meth:`dcnet.lvs.store.Store.save_fingerprint` keeps; ``notes``: the IPVS
    read's notes (services left alone), repeated by a plan that skips the read;
    ``objects``: the owned IPVS objects then (the change guard's base on the fast path)."""
    return {"version": VERSION, "table": table, "inputs": inputs, "notes": list(notes),
            "objects": objects}


def matches(saved: dict | None, table: str, inputs: str) -> bool:
    """Whether ``saved`` (a record, possibly None or corrupt) holds exactly these digests."""
    return (isinstance(saved, dict) and saved.get("version") == VERSION
            and saved.get("table") == table and saved.get("inputs") == inputs
            and isinstance(saved.get("notes"), list))
