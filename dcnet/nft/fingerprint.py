"""The nft target's record of its last clean apply: incremental sync without a listing.

After an apply that ended clean, the target records (in its state directory, one file
per namespace) the namespace's nftables generation id right after dcnet's transaction,
the namespace's identity, and per VIP:port (a *group*) the digest of the inputs its
objects were built from and those objects themselves. A plan first reads the generation
id (one netlink request); if it still equals the record, nothing (no nft user at all)
committed since, so the table is exactly what the record says: the plan then builds and
diffs only the groups whose input digest changed (a no-op reads no listing and builds
no object; a one-service change builds one group). Any other commit in the namespace,
or a crash between dcnet's commit and the record, moves the generation past the record
and the next plan does the full read.

File: line 1 a JSON header ``{"genid", "identity", "objects", "table", "layout"}``
(``table`` is ``inet dcnet``: a record without it, written for the IPv4-only ``table ip
dcnet`` of earlier versions, is ignored, so the first plan after the upgrade reads the
namespace, finds the old table and deletes it; ``layout`` is :data:`LAYOUT`: 2 since the
table holds counter objects, 3 since VIP:ports may be flat (:mod:`dcnet.nft.flat`), 4
since flat VIP:ports may hold weight patterns (:mod:`dcnet.nft.patterns`): a
record of an older layout is ignored too, so the first plan after such an upgrade is a
full read that renders the table anew), then one line per group
``<group>\\t<input digest>\\t<JSON [[kind, key, attrs], ...]>``; the table's own objects
are the group ``""``. Object JSON is decoded only for the groups a plan needs. Written
atomically (:func:`dcnet.sysio.files.atomic_write`). An incremental apply appends its
delta instead (:func:`append`: one JSON line ``{"from", "genid", "identity", "objects",
"groups"}`` to ``<file>.log``, fsynced), so a one-service apply does not rewrite the
record of every service; :func:`load` replays it, a journal that does not follow from
the record makes it unusable (full read), a torn last line leaves the record older than
the namespace (full read too); the record is rewritten, and the journal removed, once
the journal outgrows a quarter of it.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from dcnet.sysio.files import atomic_write

INFRA = ""
TABLE_FORMAT = "inet dcnet"   # records of the IPv4-only ``ip dcnet`` table never match
LAYOUT = 4        # 2: counter objects; 3: the flat layout; 4: its patterns (older: no match)
JOURNAL = ".log"              # <record>.log: the deltas of incremental applies
JOURNAL_MAX = 0.25            # journal bytes above this share of the record: rewrite


@dataclass(frozen=True)
class Record:
    genid: int
    identity: str
    objects: int
    groups: Mapping[str, tuple[str, str]]     # group -> (input digest, objects JSON)


def group_text(key3: tuple) -> str:
    return " ".join(str(p) for p in key3)


def encode(items: Iterable[tuple[tuple[str, tuple], Mapping]]) -> str:
    return json.dumps([[kind, list(key), dict(attrs)] for (kind, key), attrs in items],
                      separators=(",", ":"))


def decode(text: str) -> dict:
    """Objects JSON -> state (lists back to tuples, as the desired state holds them)."""
    out = {}
    for kind, key, attrs in json.loads(text):
        out[(kind, tuple(key))] = {k: tuple(v) if isinstance(v, list) else v
                                   for k, v in attrs.items()}
    return out


_memo: dict[str, tuple] = {}      # path -> (stat key, Record): the last loaded or saved


def _stat_key(path: str) -> tuple | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size


def load(path: str) -> Record | None:
    """The record at ``path`` with its journal replayed (None: none or unusable); files
    unchanged since this process last loaded or wrote them are not parsed again."""
    key = (_stat_key(path), _stat_key(path + JOURNAL))
    hit = _memo.get(path)
    if key[0] is not None and hit is not None and hit[0] == key:
        return hit[1]
    record = _load(path)
    if record is not None:
        record = _replay(path + JOURNAL, record)
    if key[0] is not None and record is not None:
        _memo[path] = (key, record)
    return record


def _replay(log: str, record: Record) -> Record | None:
    """``record`` with the journal's deltas applied; None if the journal does not follow
    from it (a record rewritten after the journal was written: read the namespace)."""
    try:
        with open(log, encoding="utf-8") as fh:
            lines = fh.readlines()
    except FileNotFoundError:
        return record
    except OSError:
        return None
    groups, genid, objects = dict(record.groups), record.genid, record.objects
    for line in lines:
        try:
            entry = json.loads(line) if line.endswith("\n") else None
        except ValueError:
            entry = None
        if entry is None:
            break        # a torn last line: the record stays older than the namespace
        if entry.get("from") != genid or entry.get("identity") != record.identity:
            return None
        for g, v in entry["groups"].items():
            if v is None:
                groups.pop(g, None)
            else:
                groups[g] = (v[0], v[1])
        genid, objects = int(entry["genid"]), int(entry["objects"])
    return Record(genid, record.identity, objects, groups)


def append(path: str, old: Record, record: Record, delta: Mapping) -> None:
    """Record ``record`` (``old`` with the groups of ``delta`` replaced, None: gone) by
    appending ``delta`` to the journal (one JSON line, fsynced), or by rewriting the
    record (:func:`save`) once the journal outgrows :data:`JOURNAL_MAX` of it."""
    log = path + JOURNAL
    main, journal = _stat_key(path), _stat_key(log)
    if main is None or (journal is not None and journal[3] > JOURNAL_MAX * main[3]):
        save(path, record)
        return
    line = json.dumps({"from": old.genid, "genid": record.genid, "identity": record.identity,
                       "objects": record.objects,
                       "groups": {g: (list(v) if v is not None else None)
                                  for g, v in delta.items()}}, separators=(",", ":"))
    with open(log, "a", encoding="utf-8") as fh:
        os.chmod(log, 0o600)
        fh.write(line + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    _memo[path] = ((_stat_key(path), _stat_key(log)), record)


def _load(path: str) -> Record | None:
    try:
        with open(path, encoding="utf-8") as fh:
            header = json.loads(fh.readline())
            groups = {}
            for line in fh:
                group, digest, objects = line.rstrip("\n").split("\t", 2)
                groups[group] = (digest, objects)
    except (OSError, ValueError, KeyError):
        return None
    return _record(header, groups)


def _record(header, groups) -> Record | None:
    """The record a header read from a file opens (None: of another table layout, IPv4
    only or without counters, or not a header)."""
    if not isinstance(header, dict) or (header.get("table"), header.get("layout", 1)) != (
            TABLE_FORMAT, LAYOUT):
        return None
    try:
        return Record(int(header["genid"]), str(header["identity"]), int(header["objects"]),
                      groups)
    except (KeyError, TypeError, ValueError):
        return None


@dataclass(frozen=True)
class Index:
    """A record (its journal replayed) without its objects: each group's input digest,
    and where its objects are (the offset of its line in the record file, or the
    objects JSON of the journal's line that replaced it), read only when asked
    (:meth:`objects`). At 10,000 VIP:ports it holds about 3 MiB where :func:`load` holds
    the 9.5 MiB of objects JSON too: the drift check's (:mod:`dcnet.nft.drift`)."""

    record: Record                            # groups: group -> input digest
    path: str
    where: Mapping[str, int | str]

    def objects(self, group: str) -> dict:
        """The group's objects as the record holds them (its state)."""
        place = self.where[group]
        if isinstance(place, str):
            return decode(place)
        with open(self.path, "rb") as fh:
            fh.seek(place)
            line = fh.readline().decode()
        return decode(line.rstrip("\n").split("\t", 2)[2])


def index(path: str) -> Index | None:
    """The :class:`Index` of the record at ``path`` and its journal (None: none, or
    unusable, as :func:`load` says)."""
    groups: dict[str, tuple[str, int | str]] = {}       # group -> (digest, where)
    try:
        with open(path, "rb") as fh:
            header = json.loads(fh.readline())
            offset = fh.tell()
            for line in fh:
                first = line.index(b"\t")
                second = line.index(b"\t", first + 1)
                groups[line[:first].decode()] = (line[first + 1:second].decode(), offset)
                offset += len(line)
    except (OSError, ValueError, KeyError):
        return None
    record = _record(header, groups)
    record = None if record is None else _replay(path + JOURNAL, record)
    if record is None:
        return None
    digests = {g: d for g, (d, _where) in record.groups.items()}
    where = {g: w for g, (_d, w) in record.groups.items()}
    return Index(Record(record.genid, record.identity, record.objects, digests), path, where)


def save(path: str, record: Record) -> None:
    header = json.dumps({"genid": record.genid, "identity": record.identity,
                         "objects": record.objects, "table": TABLE_FORMAT,
                         "layout": LAYOUT})
    lines = [header] + [f"{g}\t{d}\t{objs}" for g, (d, objs) in sorted(record.groups.items())]
    os.makedirs(os.path.dirname(path) or ".", mode=0o700, exist_ok=True)
    atomic_write(path, "\n".join(lines) + "\n", mode=0o600)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path + JOURNAL)        # after the record: a stale journal never applies
    key = _stat_key(path)
    if key is not None:
        _memo[path] = ((key, None), Record(record.genid, record.identity, record.objects,
                                           dict(record.groups)))


def remove(path: str) -> None:
    _memo.pop(path, None)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path + JOURNAL)


def count(groups: Mapping[str, tuple[str, str]]) -> int:
    """Objects held by ``groups`` (decodes them: used only for the groups a plan touched)."""
    return sum(len(json.loads(objs)) for _d, objs in groups.values())
