"""Plan changes -> one ``nft -f`` script (pure): the commands of one atomic transaction.

Every script starts with ``add table inet dcnet`` (a no-op when it exists) and then holds
each change's commands in plan order (creates and updates by kind order, deletes in
reverse), so a chain is created before a map element or rule jumps to it and is
flushed and deleted only after whatever jumped to it is gone. ``nft -f`` runs the whole
script as one transaction: it applies entirely or not at all.

Deleting the ``legacy`` object deletes the IPv4-only ``table ip dcnet`` of earlier
versions in the same transaction that fills ``table inet dcnet``.

A change needs the desired object's body (its rules or map elements), which the plan's
payload carries; deletes need only names.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

from dcnet.nft import flat
from dcnet.nft.ruleset import (
    COUNTER_MAPS,
    HOOKS,
    MAP_TYPES,
    T,
    affinity_name,
    backend_name,
    counter_map,
    counter_name,
    is6,
    maglev_name,
    services_map,
    svc_name,
)
from dcnet.plan import Action, Change


class MissingBody(KeyError):
    """The payload has no body for an object this change must (re)create."""


def chain_name(kind: str, key: tuple) -> str:
    if kind in ("hook", "lb", "lbgroup"):
        return key[0]
    return svc_name(key) if kind == "service" else backend_name(key)


def element_key(key3: tuple) -> str:
    proto, vip, port = key3
    return f"{vip} . {proto} . {port}"


def commands(change: Change, bodies: Mapping) -> list[str]:
    """The nft commands carrying out one change."""
    kind, key, action = change.kind, change.key, change.action
    ident = (kind, key)
    attrs = change.new if change.new is not None else change.old or {}

    def body() -> tuple[str, ...]:
        if ident not in bodies:
            raise MissingBody(f"no rules for {kind} {key} in the plan's payload")
        return bodies[ident]

    if kind.startswith("dr"):            # forward: dr, table netdev dcnet
        from dcnet.nft import dr

        return dr.commands(change, bodies)
    if kind == "rerender":         # written at the script's head (script_pieces)
        return []
    if kind == "legacy":
        if action is not Action.DELETE:
            raise ValueError("the legacy table is only ever deleted")
        return [f"delete table {' '.join(key)}"]
    if kind == "table":
        name = key[0]
        if name in flat.TABLES:
            word, decl, _listed = flat.TABLES[name]
            return [f"delete {word} {T} {name}" if action is Action.DELETE
                    else f"add {word} {T} {name} {decl}"]
        if action is Action.DELETE:
            return [f"delete map {T} {name}"]
        value = "counter" if name in COUNTER_MAPS.values() else "verdict"
        return [f"add map {T} {name} {{ type {MAP_TYPES[name]} : {value}; }}"]
    if kind == "counter":
        if action is Action.UPDATE:
            raise ValueError("a counter is never updated")
        return [f"{'delete' if action is Action.DELETE else 'add'} counter {T} "
                f"{counter_name(key)}"]
    if kind == "tally":
        elem, cmap = element_key(key[:3]), counter_map(key)
        out = [] if action is Action.CREATE else [f"delete element {T} {cmap} {{ {elem} }}"]
        if action is not Action.DELETE:
            out.append(f'add element {T} {cmap} {{ {elem} : "{attrs["counter"]}" }}')
        return out
    if kind == "affinity":
        name = affinity_name(key)
        if action is Action.DELETE:
            return [f"delete set {T} {name}"]
        out = [f"delete set {T} {name}"] if action is Action.UPDATE else []
        addr_type = "ipv6_addr" if is6(key[1]) else "ipv4_addr"
        return [*out, f"add set {T} {name} {{ type {addr_type}; flags dynamic,timeout; "
                      f"timeout {attrs['timeout']}s; }}"]
    if kind == "maglev":
        name = maglev_name(key)
        if action is Action.DELETE:
            return [f"flush map {T} {name}", f"delete map {T} {name}"]
        head = [f"flush map {T} {name}"] if action is Action.UPDATE else [
            f"add map {T} {name} {{ typeof numgen random mod 2 : verdict; "
            f"comment \"dcnet:size={attrs['size']}\"; }}"]
        return [*head, *body()]
    if kind == "element":
        elem, smap = element_key(key), services_map(key[1])
        if action is Action.DELETE:
            return [f"delete element {T} {smap} {{ {elem} }}"]
        out = ([f"delete element {T} {smap} {{ {elem} }}"]
               if action is Action.UPDATE else [])
        return [*out, f"add element {T} {smap} {{ {elem} : goto {attrs['chain']} }}"]
    if kind == "flat":
        return flat.commands(T, key, change.old, change.new)
    if kind == "classes":          # the flat layout's group and class sets of a family
        old = set(change.old["sets"]) if change.old else set()
        new = set(change.new["sets"]) if change.new else set()
        decl = f"{{ type {flat.KEY[key[0]]}; }}"
        return ([f"add set {T} {name} {decl}" for name in sorted(new - old)]
                + [f"delete set {T} {name}" for name in sorted(old - new)])
    if kind in ("service", "backend", "hook", "lb", "lbgroup"):
        name = chain_name(kind, key)
        if action is Action.DELETE:
            return [f"flush chain {T} {name}", f"delete chain {T} {name}"]
        spec = ""
        if kind == "hook":
            chain_type, hook, priority = HOOKS[name]
            spec = f" {{ type {chain_type} hook {hook} priority {priority}; policy accept; }}"
        head = [f"add chain {T} {name}{spec}"]
        if action is Action.UPDATE:
            head.append(f"flush chain {T} {name}")
        return [*head, *body()]
    raise ValueError(f"unknown kind {kind!r}")


ELEMENTS_PER_COMMAND = 4096   # a run of creates adds its elements in commands this big


def script(changes: Iterable[Change], bodies: Mapping) -> str:
    """The whole transaction for ``changes`` (in the order given), as one text: the
    pieces of :func:`script_pieces` joined."""
    return "".join(script_pieces(changes, bodies))


PIECE_LINES = 256     # lines per piece of script_pieces (at most; and one per element command)


def script_pieces(changes: Iterable[Change], bodies: Mapping) -> Iterator[str]:
    """The transaction for ``changes`` (in the order given), in pieces of whole lines,
    as they are rendered (``nft -f -`` parses the first while the rest is written).

    A run of consecutive creates of ``flat`` or ``tally`` objects (a full sync: one per
    VIP:port) adds its elements set by set, :data:`ELEMENTS_PER_COMMAND` to a command
    (written as soon as a set has that many, the rest at the run's end): nft takes one
    command of 4,096 elements much faster than 4,096 commands of one (nothing in the run
    refers to another's elements, so the order within it is free). Raises
    :class:`MissingBody` where a change lacks its body, after some pieces may have been
    yielded: a caller writing them to nft must kill it then, never let it commit the
    part it has. A ``rerender`` change deletes the table first (then every object is
    created anew in the same transaction)."""
    changes = list(changes)
    lines = [f"add table {T}"]
    if any(c.kind == "rerender" for c in changes):    # the whole table anew
        lines += [f"delete table {T}", f"add table {T}"]
    run: dict[str, list[str]] = {}          # set name -> elements, of the current run
    seen: set[str] = set()                  # picks elements written in this script
    run_kind = None
    for change in changes:
        batchable = change.action is Action.CREATE and change.kind in ("flat", "tally")
        if run and (not batchable or change.kind != run_kind):
            lines += _flush(run)
        if not batchable:
            lines += commands(change, bodies)
            if len(lines) >= PIECE_LINES:
                yield "\n".join(lines) + "\n"
                lines = []
            continue
        run_kind = change.kind
        for command in commands(change, bodies):
            _op, _element, _family, _table, name, rest = command.split(" ", 5)
            pending = run.setdefault(name, [])
            if name == flat.PICKS:      # a pattern's picks come with each of its VIP:ports
                fresh = [e for e in rest[2:-2].split(", ") if e not in seen]
                seen.update(fresh)
                pending += fresh
            else:
                pending.append(rest[2:-2])                     # inside "{ ... }"
            if len(pending) >= ELEMENTS_PER_COMMAND:           # a whole command: out now
                lines.append(_command(name, pending))
                pending.clear()
                yield "\n".join(lines) + "\n"
                lines = []
    lines += _flush(run)
    for start in range(0, len(lines), PIECE_LINES):
        yield "\n".join(lines[start:start + PIECE_LINES]) + "\n"


def _flush(run: dict[str, list[str]]) -> list[str]:
    out = []
    for name, elements in run.items():
        for start in range(0, len(elements), ELEMENTS_PER_COMMAND):
            out.append(_command(name, elements[start:start + ELEMENTS_PER_COMMAND]))
    run.clear()
    return out


def _command(name: str, elements: list[str]) -> str:
    return f"add element {T} {name} {{ {', '.join(elements)} }}"
