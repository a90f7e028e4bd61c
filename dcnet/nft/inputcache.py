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

Results equal :func:`dcnet.nft.ruleset.inputs`' (same ``ServiceInput`` values, same
notes); a model where two services share a VIP:port is handed to it unchanged.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping
from types import SimpleNamespace

from dcnet.nft import ruleset

_lock = threading.Lock()
_by_id: dict[int, tuple] = {}          # id(service) -> (service, extra, entry)
_by_value: dict[tuple, tuple] = {}     # (service, extra) -> entry, built when needed
MISSES_BY_VALUE = 64                   # more services not found by identity: by value
_digests: dict[int, tuple] = {}        # id(ServiceInput) -> (input, digest)
_COUNT = re.compile(r"^(\d+) (.*)$")
_RANK = ("VIP port(s) skipped", "backend(s) at weight 0", "real server(s) left out")


def inputs(model, registry: Mapping | None = None, maglev_size: int = ruleset.maglev.DEFAULT_SIZE,
           marks: Mapping[str, int] | None = None,
           down: frozenset[str] = frozenset()) -> tuple[dict, tuple[str, ...]]:
    """What :func:`dcnet.nft.ruleset.inputs` returns, from the memo where it can."""
    global _by_id, _by_value
    marks = marks or {}
    plain = not registry and not marks
    new_id: dict[int, tuple] = {}
    out: dict = {}
    counts: dict[str, int] = {}
    with _lock:
        missed = []
        for s in model.services:
            extra = _extra(s, registry, marks, maglev_size, down, plain)
            hit = _by_id.get(id(s))
            if hit is not None and hit[0] is s and hit[1] == extra:
                new_id[id(s)] = hit
            else:
                missed.append((s, extra))
        if len(missed) > MISSES_BY_VALUE and not _by_value:
            _by_value.update({(e[0], e[1]): e[2] for e in _by_id.values()})
        for s, extra in missed:
            entry = _by_value.get((s, extra)) if _by_value else None
            if entry is None:
                entries = (registry or {}).get(s.name)
                one = SimpleNamespace(services=(s,))
                entry = ruleset.inputs(one, {s.name: entries} if entries else None,
                                       maglev_size, marks, down)
            new_id[id(s)] = (s, extra, entry)
        _by_id = new_id
        _by_value = {}
        for s in model.services:
            found, notes = new_id[id(s)][2]
            for key3, value in found.items():
                if key3 in out:      # a VIP:port of two services: the plain path decides
                    return ruleset.inputs(model, registry, maglev_size, marks, down)
                out[key3] = value
            for note in notes:
                m = _COUNT.match(note)
                counts[m.group(2)] = counts.get(m.group(2), 0) + int(m.group(1))
    return out, _merged(counts)


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
    with _lock:
        _by_id.clear()
        _by_value.clear()
        _digests.clear()
