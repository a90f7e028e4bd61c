"""The nft target's flat layout: a VIP:port held in map elements only, no chain of its own.

A one-service change of the chain layout (service and backend chains, the ``services``
verdict map) makes the kernel validate the whole table's jump graph at commit: at 30,000
services that is 0.5-0.8 s per change, whatever the change (docs/nft.md, "Why the kernel
takes 0.5-0.6 s"). Elements of sets and maps whose data are not verdicts never trigger
that validation. So a VIP:port that needs neither per-backend state (persistence's
affinity sets) nor a Maglev table is rendered as elements of a few table-wide maps, and
the rules that read them are fixed, written once with the table:

- ``flat4`` (``flat6``): ``VIP . proto . port : W`` (type ``mark``: a 32-bit integer).
  W is the sum of the active backends' weights divided by their GCD (0: every backend
  drained). The hook chains send a packet to a member to ``lb4`` (``lb6``): ``ip daddr .
  meta l4proto . th dport @flat4 goto lb4`` (one hash lookup for any other packet).
- ``w4-<W>`` (``w6-<W>``), W = 1 .. :data:`FLAT_MAX` (256): the VIP:ports of each W, and
  ``g4-<G>``, G = 0 .. 15: those of W 16G+1 .. 16G+16. ``lb4`` sends a member of ``g4-G``
  to the group chain ``lb4-G`` (``... @g4-G goto lb4-G``), which holds one fixed rule per
  W of its group, ``ip daddr . meta l4proto . th dport @w4-W dnat ip to ip daddr . meta
  l4proto . th dport . numgen random mod W map @wr4``: a new connection takes at most 16
  + 16 set lookups to its rule. ``lb4`` ends with ``drop`` (W = 0: no backend takes new
  connections, as the chain layout's ``drop``). The 670 sets (with the pattern class
  sets below) are one plan object, ``("classes", (family,))``, whose attributes are
  their names.
- ``wr4`` (``wr6``): ``VIP . proto . port . slot : RIP . RPORT``, W slots per VIP:port,
  backend i holding w_i of them: a new connection picks backend i with probability
  w_i / W exactly (the chain layout's telescoping ``numgen`` rules give the same).
- ``marks4`` (``marks6``): carrier routing's connection mark, ``VIP . proto . port :
  mark`` (``lb4`` starts with ``ct mark set ... map @marks4``; no element, no mark).
- Uneven weights of W <= 64 (:mod:`dcnet.nft.patterns`): instead of W slots, n indices
  in ``wrp4`` (``VIP . proto . port . PICKED|i : RIP . RPORT``, heaviest backend first),
  the weights' canonical id in ``pat4`` and the slot -> index map of those weights in
  ``picks``, shared by every VIP:port of the same weights; class sets ``p4-<W>`` (W 2 ..
  64), whose rules in W's group chain use the packet mark as a scratch register (reset
  to 0 right after DNAT by the ``lbmark`` chains). Its object has a ``pattern`` (the id)
  and its ``slots`` are ``"i RIP . RPORT"`` per index.
- The new-connection counter ``cn-`` is an element of the counter map ``cnew``
  (``cnew6``), which ``lb4`` counts by (``counter name ... map @cnew``); ``ci-``/``co-``
  are the traffic maps' as for every VIP:port.

So creating, re-weighting, draining or deleting a flat VIP:port adds and deletes
elements only: the kernel commits it without walking the table (0.1 ms at 30,000
services on this host, against 0.6 s). The plan's object is ``("flat", (proto, vip,
port))`` with ``{"w": W, "slots": ("0 RIP . RPORT", ...), "mark": m}``; its commands
(:func:`commands`) delete what the old attributes name and add what the new ones do.
The group and class sets' elements are not read back (they follow ``flat4``). A
removal adds the class-set, group-set and ``flat4`` elements it deletes first (a no-op
when they are there), so it never fails on one missing (a stray slot or mark with no
``flat4`` element reads as a VIP:port of W 0 and is deleted so).

Not flat (the chain layout, :mod:`dcnet.nft.ruleset`): persistence, Maglev (``mh``,
``sh``), and W above :data:`FLAT_MAX` (e.g. 257 equal backends, or weights 1 and 300).
"""

from __future__ import annotations

import math

from dcnet.nft import patterns

FLAT_MAX = 256                  # W = 1 .. FLAT_MAX have a class set and a dnat rule each
GROUP = 16                      # classes per group chain (lb4-0: W 1..16, lb4-1: 17..32, ...)
GROUPS = FLAT_MAX // GROUP
KEY = {4: "ipv4_addr . inet_proto . inet_service", 6: "ipv6_addr . inet_proto . inet_service"}
SADDR = {4: "ip", 6: "ip6"}


def fam(vip: str) -> int:
    return 6 if ":" in vip else 4


def member_map(f: int) -> str:
    return f"flat{f}"


def slot_map(f: int) -> str:
    return f"wr{f}"


def mark_map(f: int) -> str:
    return f"marks{f}"


def class_set(f: int, w: int) -> str:
    return f"w{f}-{w}"


def pattern_map(f: int) -> str:
    return f"pat{f}"


def index_map(f: int) -> str:
    return f"wrp{f}"


def pattern_set(f: int, w: int) -> str:
    return f"p{f}-{w}"


PICKS = "picks"            # pattern slot -> index, shared by both families


def chain(f: int) -> str:
    return f"lb{f}"


def group_of_w(w: int) -> int:
    return (w - 1) // GROUP


def group_set(f: int, g: int) -> str:
    return f"g{f}-{g}"


def group_chain(f: int, g: int) -> str:
    return f"lb{f}-{g}"


def class_sets(f: int) -> tuple[str, ...]:
    """Every group and class set of family ``f``, sorted (the ``classes`` object)."""
    return tuple(sorted([group_set(f, g) for g in range(GROUPS)]
                        + [class_set(f, w) for w in range(1, FLAT_MAX + 1)]
                        + [pattern_set(f, w) for w in range(2, patterns.PAT_MAX + 1)]))


def parse_class_name(name: str) -> int | None:
    """The family of a group or class set's name; None for any other name."""
    head, sep, tail = name.partition("-")
    if not sep or head not in ("g4", "g6", "w4", "w6", "p4", "p6") or not tail.isdigit():
        return None
    n = int(tail)
    ok = (n < GROUPS if head[0] == "g" else 1 <= n <= FLAT_MAX if head[0] == "w"
          else 2 <= n <= patterns.PAT_MAX)
    return int(head[1]) if ok and str(n) == tail else None


def tables() -> dict[str, tuple[str, str, str]]:
    """name -> (nft object word, declaration, key type as nft lists it) of every flat
    table-wide set and map."""
    out: dict[str, tuple[str, str, str]] = {}
    for f, key in KEY.items():
        p = SADDR[f]
        out[member_map(f)] = ("map", f"{{ type {key} : mark; }}", key)
        out[mark_map(f)] = ("map", f"{{ type {key} : mark; }}", key)
        out[slot_map(f)] = ("map", f"{{ typeof {p} daddr . meta l4proto . th dport . numgen "
                                   f"random mod 2 : {p} daddr . th dport; }}",
                            key + " . integer")
        out[pattern_map(f)] = ("map", f"{{ type {key} : mark; }}", key)
        out[index_map(f)] = ("map", f"{{ typeof {p} daddr . meta l4proto . th dport . meta "
                                    f"mark : {p} daddr . th dport; }}", key + " . mark")
    out[PICKS] = ("map", "{ typeof meta mark . numgen random mod 2 : meta mark; }",
                  "mark . integer")
    return out


TABLES = tables()


def chains() -> dict[str, list[str]]:
    """name -> fixed rules of ``lb4``/``lb6`` and of their group chains."""
    out: dict[str, list[str]] = {}
    for f in KEY:
        p, key = SADDR[f], f"{SADDR[f]} daddr . meta l4proto . th dport"
        cnew = "cnew" if f == 4 else "cnew6"
        out[chain(f)] = [f"counter name {key} map @{cnew}",
                         f"ct mark set {key} map @{mark_map(f)}",
                         *(f"{key} @{group_set(f, g)} goto {group_chain(f, g)}"
                           for g in range(GROUPS)),
                         "drop"]
        for g in range(GROUPS):
            ws = range(g * GROUP + 1, (g + 1) * GROUP + 1)
            out[group_chain(f, g)] = [
                *(f"{key} @{class_set(f, w)} dnat {p} to {key} . numgen random mod {w} "
                  f"map @{slot_map(f)}" for w in ws),
                *(f"{key} @{pattern_set(f, w)} meta mark set {key} map @{pattern_map(f)} "
                  f"meta mark set meta mark . numgen random mod {w} map @{PICKS} "
                  f"dnat {p} to {key} . meta mark map @{index_map(f)}"
                  for w in ws if 2 <= w <= patterns.PAT_MAX),
                "drop"]
    return out


HOOK_RULES = tuple(f"{SADDR[f]} daddr . meta l4proto . th dport @{member_map(f)} goto {chain(f)}"
                   for f in (4, 6))


def reduced(weights: list[int]) -> list[int]:
    """Weights divided by their GCD (zeros dropped by the caller)."""
    g = 0
    for w in weights:
        g = math.gcd(g, w)
    return [w // g for w in weights] if g else []


def eligible(scheduler_is_maglev: bool, persistence: int, active_weights: list[int]) -> bool:
    return (not scheduler_is_maglev and not persistence
            and sum(reduced(active_weights)) <= FLAT_MAX)


def attrs(active: list[tuple[str, int, int]], mark: int) -> dict:
    """The ``flat`` object of a VIP:port whose active backends are ``(rip, rport,
    weight)``, in order (each holds w_i consecutive slots); uneven weights of W <=
    PAT_MAX: the pattern layout (its backends heaviest first, ``slots`` their indices,
    ``pattern`` the weights' id; :mod:`dcnet.nft.patterns`)."""
    weights = reduced([w for _rip, _rport, w in active])
    if len(set(weights)) > 1 and sum(weights) <= patterns.PAT_MAX:
        order = sorted(range(len(weights)), key=lambda i: -weights[i])
        return {"w": sum(weights),
                "slots": tuple(f"{k} {active[i][0]} . {active[i][1]}"
                               for k, i in enumerate(order)),
                "mark": mark, "pattern": patterns.pattern_id([weights[i] for i in order])}
    slots: list[str] = []
    for (rip, rport, _w), w in zip(active, weights, strict=True):
        slots += [f"{len(slots) + i} {rip} . {rport}" for i in range(w)]
    return {"w": len(slots), "slots": tuple(slots), "mark": mark}


def element_key(key3: tuple) -> str:
    proto, vip, port = key3
    return f"{vip} . {proto} . {port}"


def ops(key3: tuple, old: dict | None, new: dict | None) -> list[tuple]:
    """What turns ``old`` into ``new`` (None: absent) for one VIP:port, in order: ``(op,
    set or map name, [(slot or None, data or None), ...])``, op ``add`` or ``delete``;
    each element's key is the VIP:port (then the slot, in ``wr4``/``wr6``; the
    ``PICKED`` index in ``wrp4``/``wrp6``), except in ``picks``, where the slot is the
    key's pair ``(SCRATCH | pattern id, slot)``. A pattern's ``picks`` are added (again)
    with each VIP:port of it and never deleted: they are a function of the id."""
    f = fam(key3[1])
    out: list[tuple] = []
    if old is not None:
        pattern = "pattern" in old
        if old["slots"]:
            out.append(("delete", index_map(f) if pattern else slot_map(f),
                        [(_slot(s, pattern), None) for s in old["slots"]]))
        if 0 < old["w"] <= FLAT_MAX:
            cls = pattern_set(f, old["w"]) if pattern else class_set(f, old["w"])
            for name in (cls, group_set(f, group_of_w(old["w"]))):
                out += [("add", name, [(None, None)]), ("delete", name, [(None, None)])]
        if old.get("mark"):
            out.append(("delete", mark_map(f), [(None, None)]))
        if pattern:
            out += [("add", pattern_map(f), [(None, patterns.SCRATCH | old["pattern"])]),
                    ("delete", pattern_map(f), [(None, None)])]
        out += [("add", member_map(f), [(None, old["w"])]),
                ("delete", member_map(f), [(None, None)])]
    if new is not None:
        pattern = "pattern" in new
        if new.get("mark"):
            out.append(("add", mark_map(f), [(None, new["mark"])]))
        if pattern:
            out += [("add", PICKS, patterns.picks(pattern_parts(new))),
                    ("add", pattern_map(f), [(None, patterns.SCRATCH | new["pattern"])])]
        if new["slots"]:
            out.append(("add", index_map(f) if pattern else slot_map(f),
                        [(_slot(s, pattern), s.split(" ", 1)[1]) for s in new["slots"]]))
        if new["w"]:
            cls = pattern_set(f, new["w"]) if pattern else class_set(f, new["w"])
            out += [("add", cls, [(None, None)]),
                    ("add", group_set(f, group_of_w(new["w"])), [(None, None)])]
        out.append(("add", member_map(f), [(None, new["w"])]))
    return out


def _slot(text: str, pattern) -> int:
    n = int(text.split(" ", 1)[0])
    return patterns.PICKED | n if pattern else n


def pattern_parts(attrs: dict) -> list[int]:
    """The partition a ``pattern`` VIP:port's id stands for (its weights, heaviest
    first), found from the id alone (W, then the rank)."""
    return patterns.unrank(attrs["pattern"])


def commands(table: str, key3: tuple, old: dict | None, new: dict | None) -> list[str]:
    """:func:`ops` as nft commands."""
    k = element_key(key3)
    out = []
    for op, name, elems in ops(key3, old, new):
        text = ", ".join((k if slot is None else f"{slot[0]} . {slot[1]}"
                          if isinstance(slot, tuple) else f"{k} . {slot}")
                         + ("" if op == "delete" or data is None else f" : {data}")
                         for slot, data in elems)
        out.append(f"{op} element {table} {name} {{ {text} }}")
    return out


def parse(members: dict, slots: dict, marks: dict, pats: dict | None = None,
          indices: dict | None = None) -> dict:
    """``{("flat", key3): attrs}`` from the listed elements: ``members`` key3 -> W,
    ``slots`` key3 -> {slot: "RIP . RPORT"}, ``marks`` key3 -> mark, ``pats`` key3 ->
    pattern map value, ``indices`` key3 -> {PICKED | index: "RIP . RPORT"} (pure)."""
    pats, indices = pats or {}, indices or {}
    state: dict = {}
    for key3 in {**members, **slots, **marks, **pats, **indices}:  # a stray one reads too
        if key3 in pats or key3 in indices:
            held = {k & ~patterns.PICKED: v for k, v in indices.get(key3, {}).items()}
            state[("flat", key3)] = {"w": members.get(key3, 0),
                                     "slots": tuple(f"{s} {held[s]}" for s in sorted(held)),
                                     "mark": marks.get(key3, 0),
                                     "pattern": pats.get(key3, 0) & ~patterns.SCRATCH}
            continue
        held = slots.get(key3, {})
        state[("flat", key3)] = {"w": members.get(key3, 0),
                                 "slots": tuple(f"{s} {held[s]}" for s in sorted(held)),
                                 "mark": marks.get(key3, 0)}
    return state
