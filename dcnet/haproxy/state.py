"""Pure state of a HAProxy as the plan core sees it, and how each change is carried out.

Objects (``plan.State``):

- ``("global", ("haproxy",))``: global and defaults settings, with a digest of that part;
- ``("service", (JOBNAME,))``: the service's binds, algorithms, template and a digest of
  its block without server lines;
- ``("server", (backend, "address:port"))``: ``{"state": "ready", "weight": W}`` or
  ``{"state": "drain"}``.

The running state comes from the file (markers written by :mod:`dcnet.haproxy.render`)
and from ``show servers state``; the desired state from the model. :func:`classify`
decides which server changes the runtime API can make (the backend is running and has
enough free slots) and which need the file and a reload.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from dcnet.haproxy.layout import Slots, assign_slots, listeners, slot_index
from dcnet.haproxy.render import ParsedFile, Renderer, TemplateError, by_service
from dcnet.haproxy.runtime import ServerRow
from dcnet.model import Model
from dcnet.plan import Action, Change

GLOBAL_KEY = ("global", ("haproxy",))


def read_fingerprint(text: str, rows: list[ServerRow], registry: Mapping | None = None) -> str:
    """Digest of the running file, of what ``show servers state`` says of each slot
    (address, port, maintenance, weight or drain; not health, which moves by itself) and
    of the backend registry."""
    h = hashlib.sha256(text.encode())
    h.update(json.dumps(registry or {}, sort_keys=True).encode())
    for row in sorted(rows, key=lambda r: (r.backend, r.server_id)):
        h.update(json.dumps([row.backend, row.server, row.key, row.free, row.attrs()],
                            sort_keys=True).encode())
    return h.hexdigest()[:16]


def backends_of(service: str, attrs: Mapping) -> list[str]:
    return [f"{service}:{port}" for port in attrs.get("balance", {})]


def live_slots(rows: Iterable[ServerRow], owned: set[str]) -> dict[str, Slots]:
    """Per owned backend, the slots in id order: a server key, or None when free."""
    found: dict[str, list[tuple[int, str | None]]] = {}
    for row in rows:
        index = slot_index(row.server)
        if row.backend in owned and index is not None:
            found.setdefault(row.backend, []).append((index, None if row.free else row.key))
    out = {}
    for backend, items in found.items():
        slots: list[str | None] = [None] * (max(i for i, _ in items) + 1)
        for index, key in items:
            slots[index] = key
        out[backend] = tuple(slots)
    return out


def current_state(parsed: ParsedFile, rows: list[ServerRow]) -> dict:
    """The running HAProxy: its file's markers plus its runtime servers."""
    state: dict = {}
    if parsed.global_attrs is not None:
        state[GLOBAL_KEY] = dict(parsed.global_attrs)
    owned = set()
    for name, attrs in parsed.services.items():
        state[("service", (name,))] = dict(attrs)
        owned.update(backends_of(name, attrs))
    for row in rows:
        if row.backend in owned and slot_index(row.server) is not None and not row.free:
            state[("server", (row.backend, row.key))] = row.attrs()
    return state


def desired_state(model: Model, renderer: Renderer) -> dict:
    """What the model asks for (a service whose template fails gets an ``error``)."""
    _, gattrs = renderer.global_block()
    state: dict = {GLOBAL_KEY: gattrs}
    layouts = {item.name: tuple(s.key for s in item.servers) for item in listeners(model)}
    for name, items in by_service(model).items():
        if not items:
            continue
        try:
            _, attrs = renderer.service_block(items[0].service, items, layouts)
        except TemplateError as exc:
            attrs = {"error": str(exc)}
        state[("service", (name,))] = attrs
        for item in items:
            for spec in item.servers:
                state[("server", (item.name, spec.key))] = spec.attrs()
    return state


@dataclass(frozen=True)
class Classified:
    runtime: tuple[Change, ...]     # server changes for the runtime API, in order
    reload: tuple[Change, ...]      # changes carried by the file and a reload
    layouts: dict[str, Slots]       # the slots every backend will have


def target_layouts(model: Model, live: Mapping[str, Slots]) -> dict[str, Slots]:
    return {item.name: assign_slots(live.get(item.name), [s.key for s in item.servers],
                                    model.haproxy.spare_slots)
            for item in listeners(model)}


def classify(changes: list[Change], model: Model, live: Mapping[str, Slots]) -> Classified:
    """Split changes into runtime ones and reload ones, each in a safe order."""
    layouts = target_layouts(model, live)
    grown = {b for b, slots in layouts.items() if b in live and len(slots) > len(live[b])}
    runtime, reload = [], []
    for change in changes:
        backend = change.key[0] if change.kind == "server" else None
        if backend is not None and backend in live and (
                change.action is not Action.CREATE or backend not in grown):
            runtime.append(change)
        else:
            reload.append(change)
    rank = {Action.CREATE: 0, Action.UPDATE: 1, Action.DELETE: 2}
    kinds = {"global": 0, "service": 1, "server": 2}
    runtime.sort(key=lambda c: (rank[c.action], c.key))
    reload.sort(key=lambda c: (c.action is Action.DELETE, kinds[c.kind], c.key))
    return Classified(tuple(runtime), tuple(reload), layouts)
