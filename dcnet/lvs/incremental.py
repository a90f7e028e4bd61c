"""The LVS target's incremental sync: the per-service record and the read of changed services.

After an apply that ended clean (no drain pending) the target records, in its state
directory (``ipvs_services.json``, written atomically), per virtual service
(``proto VIP port``) the digest of its inputs: everything
:func:`dcnet.lvs.state.desired_ipvs` builds its IPVS objects from (VIP, port fields, real
servers with the registry merged in, :data:`VERSION`). A clean apply made the kernel's
objects of that service exactly what these inputs ask for, so the digest also stands for
the state written.
The record also holds the digest of the owned VIPs, the IPVS read's notes, the owned
object count, when the last *full* read was made and how many incremental applies
followed it.

A plan whose model digest differs from the fingerprint's (:mod:`dcnet.lvs.fingerprint`)
computes the digests of the desired services and :func:`select` compares them with the
record (pure): the services whose digest changed, and the recorded ones no longer
desired, are read one by one (:func:`read_services`: one ``IPVS_CMD_GET_SERVICE`` and, if
it exists, one dest dump each); the others are not read at all. IPVS has no generation
id, so drift in services not read is found by a full read, which happens when: the record
is missing, corrupt or of another version; the owned VIPs changed; once
:data:`FULL_READ_EVERY` incremental applies followed the last full read or it is older
than :data:`FULL_READ_AGE` seconds (:func:`full_read_due`); too many services changed
(:func:`select`); a drain is pending; ``--exact-read`` (or ``LVSTarget(full_read=True)``,
which still reads dests from ``/proc/net/ip_vs``). The no-op
fingerprint check still runs on every plan with an unchanged model, and sees any table
change made since the last apply.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from operator import attrgetter
from types import MappingProxyType

from dcnet.lvs import state
from dcnet.lvs.layout import effective_servers
from dcnet.lvs.reader import IPVSRead
from dcnet.sysio.files import atomic_write

VERSION = 1
FILE = "ipvs_services.json"
FULL_READ_EVERY = 50          # incremental applies after which the next plan reads all
FULL_READ_AGE = 900.0         # seconds after the last full read when one is due again
MIN_FULL_SHARE = 256          # more changed services than this and a quarter: full read


@dataclass(frozen=True)
class Record:
    """The per-service record of the last clean apply (see the module docstring)."""

    services: Mapping[str, str]      # "proto vip port" -> digest of its desired objects
    vips: str                        # digest of the owned VIPs
    verified_at: float               # time of the last full read this record follows
    applies: int = 0                 # incremental applies since that full read
    notes: tuple[str, ...] = ()      # the full read's notes (services left alone)
    objects: int = 0                 # owned IPVS objects after the apply


@dataclass(frozen=True)
class Selection:
    """What a plan reads: ``read`` (service keys) for an incremental read, None for a
    full read, with the reason."""

    read: frozenset | None
    reason: str
    changed: int = 0
    total: int = 0


def key_text(skey: tuple) -> str:
    return f"{skey[0]} {skey[1]} {skey[2]}"


def text_key(text: str) -> tuple:
    proto, vip, port = text.split(" ")
    return (proto, vip, int(port))


def vips_digest(vips: Iterable[str]) -> str:
    return hashlib.sha256(" ".join(sorted(vips)).encode()).hexdigest()[:32]


_SERVER = attrgetter("address", "port", "weight")
_PORT = attrgetter("protocol", "port", "scheduler", "forward", "persistence", "backend_port")


def layout_digests(model_layouts: Iterable, registry: Mapping) -> dict[str, str]:
    """Per service key text, the digest of everything its desired IPVS objects are made
    from by :func:`dcnet.lvs.state.desired_ipvs` (keep the two in step): the VIP, the
    port's fields and the real servers with the registry merged in (pure; one ``repr``
    of plain tuples per VIP:port, so 10,000 services cost one pass)."""
    out: dict[str, str] = {}
    sha = hashlib.sha256
    for layout in model_layouts:
        entries = registry.get(layout.name)
        servers = effective_servers(layout, dict(entries)) if entries else layout.servers
        shown = repr((VERSION, sorted(map(repr, map(_SERVER, servers)))))   # any order
        for _carrier, vip in layout.vips:
            for port in layout.ports:
                fields = _PORT(port)
                out[f"{fields[0]} {vip} {fields[1]}"] = sha(
                    f"{vip}|{fields!r}|{shown}".encode()).hexdigest()[:32]
    return out


def layouts_of(model_layouts: Iterable, skeys: frozenset) -> list:
    """The layouts owning any of the service keys ``skeys``."""
    return [layout for layout in model_layouts
            if any((port.protocol, vip, port.port) in skeys
                   for _carrier, vip in layout.vips for port in layout.ports)]


def full_read_due(record: Record | None, now: float) -> str | None:
    """Why the record no longer vouches for the services it skips (None: it does). A
    record made by a full read with no incremental apply since never expires: the no-op
    fingerprint checks the whole table on every plan."""
    if record is None or record.applies == 0:
        return None
    if record.applies >= FULL_READ_EVERY:
        return f"{record.applies} incremental applies since the last full read"
    age = now - record.verified_at
    if age > FULL_READ_AGE or age < 0:
        return f"the last full read is {age:.0f}s old"
    return None


def select(record: Record | None, digests: Mapping[str, str], vips: str,
           now: float) -> Selection:
    """Pure: the services to read (changed digest, new, or recorded and no longer
    desired), or None with the reason a full read is needed."""
    total = len(digests)
    if record is None:
        return Selection(None, "no record of the last clean apply", total=total)
    if record.vips != vips:
        return Selection(None, "the owned VIPs changed", total=total)
    due = full_read_due(record, now)
    if due is not None:
        return Selection(None, due, total=total)
    recorded = record.services
    changed = {k for k, d in digests.items() if recorded.get(k) != d}
    changed |= {k for k in recorded if k not in digests}
    if not changed:
        return Selection(None, "nothing changed in the model but its digest", total=total)
    if len(changed) > MIN_FULL_SHARE and len(changed) * 4 > total:
        return Selection(None, f"{len(changed)} of {total} services changed", len(changed),
                         total)
    return Selection(frozenset(text_key(k) for k in changed), "incremental", len(changed),
                     total)


def after(record: Record | None, digests: Mapping[str, str], vips: Iterable[str],
          now: float, notes: Iterable[str], objects: int) -> Record:
    """The record a clean apply of this plan writes: after an incremental read
    (``record``: the one it followed) it keeps that record's full-read time and counts
    one more incremental apply; after a full read (None) it starts again from ``now``."""
    return Record(MappingProxyType(dict(digests)), vips_digest(vips),
                  now if record is None else record.verified_at,
                  0 if record is None else record.applies + 1, tuple(notes), objects)


def read_services(ipvs, skeys: Iterable[tuple]) -> IPVSRead:
    """The IPVS state of ``skeys`` only: per service one GET (absent: nothing) and one
    dest dump; fwmark services cannot be asked for by (proto, VIP, port)."""
    out = IPVSRead()
    for skey in sorted(skeys):
        ws = ipvs.service(state.wire_service(skey))
        if ws is None:
            continue
        observed = state.observed_service(ws)
        if observed is None:
            continue
        out.state[("service", skey)] = observed[1]
        for row in ipvs.dest_rows(ws):
            dkey, attrs = state.observed_row(skey, row)
            out.state[("dest", dkey)] = attrs
            out.conns[dkey] = row[7] + row[8]
    return out


def restrict(desired: Mapping, skeys: frozenset) -> dict:
    """The IPVS objects of ``desired`` that belong to the services ``skeys``."""
    return {ident: attrs for ident, attrs in desired.items()
            if ident[0] in state.IPVS_KINDS and ident[1][:3] in skeys}


# ------------------------------------------------------------------ the file


def load(path: str) -> Record | None:
    """The record at ``path``; None when missing, corrupt or of another version."""
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
        if data.get("version") != VERSION:
            return None
        services = data["services"]
        if not isinstance(services, dict):
            return None
        return Record(MappingProxyType(services), str(data["vips"]),
                      float(data["verified_at"]), int(data["applies"]),
                      tuple(str(n) for n in data["notes"]), int(data["objects"]))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def applies_since_full_read(path: str) -> int | None:
    """The record's ``applies`` read from the head of its file only (:func:`save` sorts
    the keys, so it comes first), without its per-service digests (10,000 of them at
    10,000 services: the drift check's fast path needs only this); None when the head
    is not so (no record, or of another form: :func:`load` it)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(64)
    except OSError:
        return None
    match = _APPLIES.match(head)
    return None if match is None else int(match.group(1))


_APPLIES = re.compile(rb'\{"applies":(\d+),')


def save(path: str, record: Record) -> None:
    data = {"version": VERSION, "vips": record.vips, "verified_at": record.verified_at,
            "applies": record.applies, "notes": list(record.notes),
            "objects": record.objects, "services": dict(record.services)}
    os.makedirs(os.path.dirname(path) or ".", mode=0o700, exist_ok=True)
    atomic_write(path, json.dumps(data, separators=(",", ":"), sort_keys=True), mode=0o600)


def remove(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
