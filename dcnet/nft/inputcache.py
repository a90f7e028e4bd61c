"""The nft target's per-service inputs, memoized across plans in one process.

:func:`dcnet.nft.ruleset.inputs` turns every model service into its LVS layout and its
``ServiceInput`` per VIP:port, and the fast path digests each of them: at 10k services
that is most of a plan's time even when one service changed. :func:`inputs` gives the
same result, but rebuilds only the services it has not seen in the previous plan: a
service is looked up first by identity (the same ``Service`` object, as an agent that
keeps its model hands it in), then, when more than :data:`MISSES_BY_VALUE` services
were not found so, by equality (frozen dataclasses: the same field values, e.g. a model
parsed anew: every service is hashed once), each together with what else its inputs depend on
(its registry entries, its carriers' marks, the Maglev size, the health checks down).
The memo holds the last plan's services only, so it never outgrows one model.
:func:`digest` memoizes ``ServiceInput.digest`` the same way (by identity).

:func:`inputs_delta` also says which VIP:ports may have changed since this process's
previous call (:class:`Delta`): when the services are the same objects at the same
places but a few (at most :data:`MAX_DELTA`), or services were added or removed between
the longest head and tail of identical objects (at most :data:`MAX_DELTA` each way), in
the same context, only those are looked at (one pointer comparison per service, no walk
of their inputs) and the previous result is patched; otherwise every service is
walked as above and the delta is the VIP:ports whose ``ServiceInput`` is not the same
object as before. The nft target uses
it to compare only those VIP:ports with its apply record (:mod:`dcnet.nft.target`).

Results equal :func:`dcnet.nft.ruleset.inputs`' (same ``ServiceInput`` values, same
notes); a model where two services share a VIP:port is handed to it unchanged.
"""

from __future__ import annotations

import re
import secrets
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from types import SimpleNamespace

from dcnet.nft import ruleset

_lock = threading.Lock()
_by_id: dict[int, tuple] = {}          # id(service) -> (service, extra, entry)
_by_value: dict[tuple, tuple] = {}     # (service, extra) -> entry, built when needed
MISSES_BY_VALUE = 64                   # more services not found by identity: by value
_digests: dict[int, tuple] = {}        # id(ServiceInput) -> (input, digest)
MAX_DELTA = 1024                       # more services changed in place: walk them all
_NONCE = secrets.token_hex(8)          # tokens of this process never match another's
_gen = 0
_last = None                           # _Last of the previous call of inputs_delta
_COUNT = re.compile(r"^(\d+) (.*)$")
_RANK = ("VIP port(s) skipped", "backend(s) at weight 0", "real server(s) left out")


@dataclass(frozen=True)
class Delta:
    """What changed between two calls of :func:`inputs_delta` in this process."""

    before: str                    # the token of the previous call ("" if none)
    after: str                     # this call's token
    keys: frozenset | None         # VIP:ports whose input may differ (None: unknown)


def inputs(model, registry: Mapping | None = None, maglev_size: int = ruleset.maglev.DEFAULT_SIZE,
           marks: Mapping[str, int] | None = None,
           down: frozenset[str] = frozenset()) -> tuple[dict, tuple[str, ...]]:
    """What :func:`dcnet.nft.ruleset.inputs` returns, from the memo where it can."""
    found, notes, _delta = inputs_delta(model, registry, maglev_size, marks, down)
    return found, notes


def inputs_delta(model, registry: Mapping | None = None,
                 maglev_size: int = ruleset.maglev.DEFAULT_SIZE,
                 marks: Mapping[str, int] | None = None, down: frozenset[str] = frozenset()
                 ) -> tuple[dict, tuple[str, ...], Delta]:
    """:func:`inputs`, and the :class:`Delta` from this process's previous call: the
    VIP:ports of the services that are not the same objects at the same places (the
    same context: registry, marks, Maglev size, checks down), or, after a full walk,
    whose ``ServiceInput`` is not the same object as before."""
    global _gen, _last
    marks = marks or {}
    with _lock:
        _gen += 1
        token = f"{_NONCE}:{_gen}"
        prev, _last = _last, None
        ctx = (registry, marks, maglev_size, down)
        services = tuple(model.services)
        got = _by_position(prev, services, ctx) if prev is not None else None
        if got is None:
            got = _walk(model, services, registry, maglev_size, marks, down)
            if got is None:                      # a VIP:port of two services
                found, notes = ruleset.inputs(model, registry, maglev_size, marks, down)
                return found, notes, Delta(prev.token if prev else "", token, None)
            keys = None if prev is None else frozenset(
                k for k in got[1].keys() | prev.out.keys() if got[1].get(k) is not prev.out.get(k))
        else:
            keys = got[3]
        entries, out, counts = got[:3]
        _last = _Last(token, services, ctx, entries, out, counts)
        return dict(out), _merged(counts), Delta(prev.token if prev else "", token, keys)


@dataclass(frozen=True)
class _Last:
    token: str
    services: tuple
    ctx: tuple
    entries: list          # per service (same order): its (found, notes)
    out: dict
    counts: dict


def _by_position(prev: _Last, services: tuple, ctx: tuple):
    """(entries, out, counts, changed keys) from ``prev`` and the few services that are
    not the same objects at the same places (with as many services as before), or that
    lie between the longest common head and tail (services added or removed); None: walk
    them all."""
    if ctx != prev.ctx:
        return None
    if len(services) == len(prev.services):
        gone = [i for i, (a, b) in enumerate(zip(services, prev.services, strict=True))
                if a is not b]
        came = gone
    else:
        shortest = min(len(services), len(prev.services))
        head = 0
        while head < shortest and services[head] is prev.services[head]:
            head += 1
        tail = 0
        while tail < shortest - head and services[-1 - tail] is prev.services[-1 - tail]:
            tail += 1
        gone = list(range(head, len(prev.services) - tail))
        came = list(range(head, len(services) - tail))
    if len(gone) + len(came) > 2 * MAX_DELTA:
        return None
    registry, marks, maglev_size, down = ctx
    plain = not registry and not marks
    out, counts = dict(prev.out), dict(prev.counts)
    keys: set = set()
    for i in gone:
        old_found, old_notes = prev.entries[i]
        for key3 in old_found:
            out.pop(key3, None)
        _count(counts, old_notes, -1)
        keys.update(old_found)
    for i in gone:
        old = _by_id.get(id(prev.services[i]))
        if old is not None and old[0] is prev.services[i]:
            del _by_id[id(prev.services[i])]     # the memo keeps this model's services
    made = []
    for i in came:
        s = services[i]
        extra = _extra(s, registry, marks, maglev_size, down, plain)
        entry = _entry(s, extra, registry, maglev_size, marks, down)
        made.append(entry)
        for key3, value in entry[0].items():
            if key3 in out:
                return None
            out[key3] = value
        _count(counts, entry[1], 1)
        keys.update(entry[0])
        _by_id[id(s)] = (s, extra, entry)
    if came is gone:
        entries = list(prev.entries)
        for i, entry in zip(came, made, strict=True):
            entries[i] = entry
    else:
        entries = [*prev.entries[:came[0] if came else len(services) - tail],
                   *made, *prev.entries[len(prev.entries) - tail:]]
    return entries, out, {k: n for k, n in counts.items() if n}, frozenset(keys)


def _entry(s, extra, registry, maglev_size, marks, down) -> tuple:
    """One service's (found, notes): from the memo (identity, then value) or built."""
    hit = _by_id.get(id(s))
    if hit is not None and hit[0] is s and hit[1] == extra:
        return hit[2]
    entry = _by_value.get((s, extra)) if _by_value else None
    if entry is None:
        entries = (registry or {}).get(s.name)
        one = SimpleNamespace(services=(s,))
        entry = ruleset.inputs(one, {s.name: entries} if entries else None,
                               maglev_size, marks, down)
    return entry


def _count(counts: dict, notes, sign: int) -> None:
    for note in notes:
        m = _COUNT.match(note)
        counts[m.group(2)] = counts.get(m.group(2), 0) + sign * int(m.group(1))


def _walk(model, services, registry, maglev_size, marks, down):
    """(entries, out, counts) of every service, from the memo where it can; None when
    two services share a VIP:port."""
    global _by_id, _by_value
    plain = not registry and not marks
    new_id: dict[int, tuple] = {}
    missed = []
    for s in services:
        extra = _extra(s, registry, marks, maglev_size, down, plain)
        hit = _by_id.get(id(s))
        if hit is not None and hit[0] is s and hit[1] == extra:
            new_id[id(s)] = hit
        else:
            missed.append((s, extra))
    if len(missed) > MISSES_BY_VALUE and not _by_value:
        _by_value.update({(e[0], e[1]): e[2] for e in _by_id.values()})
    for s, extra in missed:
        new_id[id(s)] = (s, extra, _entry(s, extra, registry, maglev_size, marks, down))
    _by_id = new_id
    _by_value = {}
    out: dict = {}
    counts: dict[str, int] = {}
    entries = []
    for s in services:
        entry = new_id[id(s)][2]
        entries.append(entry)
        for key3, value in entry[0].items():
            if key3 in out:
                return None
            out[key3] = value
        _count(counts, entry[1], 1)
    return entries, out, counts


def _extra(s, registry, marks, maglev_size, down, plain) -> tuple:
    """What a service's inputs depend on besides the service itself."""
    if plain:
        return maglev_size, down or None
    entries = (registry or {}).get(s.name)
    return (maglev_size, down or None, tuple(marks.get(c) for c, _v in s.vips),
            repr(entries) if entries else None)


def _merged(counts: dict[str, int]) -> tuple[str, ...]:
    def rank(text: str) -> tuple[int, str]:
        for i, head in enumerate(_RANK):
            if text.startswith(head):
                return i, text
        return len(_RANK), text

    return tuple(f"{n} {text}" for text, n in sorted(counts.items(), key=lambda t: rank(t[0])))


def digest(value: ruleset.ServiceInput) -> str:
    """``value.digest()``, memoized by identity (the memo keeps the last 200k)."""
    hit = _digests.get(id(value))
    if hit is not None and hit[0] is value:
        return hit[1]
    d = value.digest()
    with _lock:
        if len(_digests) > 200_000:
            _digests.clear()
        _digests[id(value)] = (value, d)
    return d


def clear() -> None:
    """Forget everything (tests)."""
    global _last
    with _lock:
        _last = None
        _by_id.clear()
        _by_value.clear()
        _digests.clear()
