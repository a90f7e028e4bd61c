"""The ``haproxy`` target's drift check (:meth:`HAProxyTarget.drifted`): whether its plan
of a model would hold any change, answered a piece of the model at a time.

A plan is empty exactly when the pure diff of the current state
(:func:`dcnet.haproxy.state.current_state`: the running file's markers and ``show servers
state``) against the desired one (:func:`dcnet.haproxy.state.desired_state` of the
model with the backend registry merged in) is: the plan then splits the changes
(runtime or reload) but drops none. This module computes the same diff without holding
the whole model, the rows or either state (at 10,000 x 10 the plan held 140,000
``ServerRow``\\ s and two maps of 100,000 servers: a 305 MiB drift child; this
check's child peaks at 40.7 MiB, docs/metrics.md):

- ``show servers state`` is read as it comes (:meth:`Runtime.servers_state_lines`); of
  each backend only its filled slots are kept, as one text (``address:port`` and
  ``r<weight>`` or ``d`` for drain, sorted): the same comparison as the plan's attrs;
- the running file is read a line at a time and only its markers are kept: the global
  attrs, and each service's attrs as canonical JSON text (:func:`_canonical`);
- each piece of the model (:class:`dcnet.model.pieces.Pieces`, head plus some services)
  gets the registry merged (per service, as for the whole model) and is rendered by
  one renderer (the service templates' deadline cache is shared as in a plan); each
  service's attrs and each backend's servers are compared and the first difference
  answers True. Services and backends the file still has after the last piece are
  deletions; the global attrs are compared last, once every piece has counted its
  binds (a default ``maxconn`` depends on them).

Where this answer is not the plan's: the plan raises instead of planning when the model
is refused (a bad file rendered: ``haproxy -c``, a ``maxconn`` over the descriptor
limit) or when the global template fails; this check answers True when it finds a
difference before it gets there (a drift the plan refuses to carry is a drift), and
raises as the plan does otherwise. Falls back to the whole plan (holding it all) only in
cases a valid setup does not make: a backend whose rows ``show servers state`` does not
list together, or a service name met again in a later piece after it matched. The
model's rules forbid a name twice (the plan would render both services as one block,
which a check a piece at a time cannot always tell).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Mapping

from dcnet.elbstore.effective import effective_model
from dcnet.haproxy.layout import server_key, slot_index
from dcnet.haproxy.render import (
    GLOBAL_MARK,
    SERVICE_MARK,
    Renderer,
    TemplateError,
    by_service,
)
from dcnet.haproxy.runtime import ADMIN_DRAIN, ADMIN_MAINT, servers_state_rows
from dcnet.haproxy.state import backends_of

_SEEN = None      # a file service that the model also has (its value once compared)


class _Whole(Exception):
    """A case this check does not answer piecewise: plan the whole model."""


def drifted(target, pieces) -> bool:
    """``not target.plan(pieces.whole()).empty``, computed a piece at a time (see the
    module docstring for where the answers may differ and when it plans whole)."""
    try:
        return _check(target, pieces)
    except _Whole:
        return not target.plan(pieces.whole()).empty


def _check(target, pieces) -> bool:
    rows = _slot_servers(target.runtime.servers_state_lines())   # first, as the plan
    global_attrs, services, owned = _markers(target.paths.config)
    servers = {b: text for b, text in rows.items() if b in owned}
    rows = owned = None
    registry = target.backends.registry()
    head = pieces.head()
    renderer = _PieceRenderer(head, target.paths, nofile_pid=target._master_pid())
    for chunk in pieces.chunks():
        model = effective_model(dataclasses.replace(head, services=chunk), registry)
        if _piece_differs(model, renderer, services, servers):
            return True
    if any(value is not _SEEN for value in services.values()):
        return True                               # a service the model no longer has
    # every file service matched: the backends it owns are its attrs' balance ports,
    # so its desired listeners', and all were compared (none is left in ``servers``)
    _, wanted = renderer.global_block()
    return global_attrs != wanted


def _piece_differs(model, renderer: _PieceRenderer, services: dict, servers: dict) -> bool:
    """Whether a service or server of this piece differs from the file and HAProxy;
    each service compared is marked seen in ``services``, each backend compared is
    taken out of ``servers``."""
    grouped = by_service(model)
    renderer.binds += sum(len(item.binds) for items in grouped.values() for item in items)
    layouts = {item.name: tuple(s.key for s in item.servers)
               for items in grouped.values() for item in items}
    for name, items in grouped.items():
        if not items:
            continue
        if name not in services:
            return True
        if services[name] is _SEEN:
            raise _Whole(f"service {name} in two pieces")
        try:
            _, attrs = renderer.service_block(items[0].service, items, layouts)
        except TemplateError as exc:
            attrs = {"error": str(exc)}
        if _canonical(attrs) != services[name]:
            return True
        services[name] = _SEEN
        wanted: dict[str, dict[str, str]] = {}
        for item in items:
            backend = wanted.setdefault(item.name, {})
            for spec in item.servers:
                backend[spec.key] = "d" if spec.state == "drain" else f"r{spec.weight}"
        for backend, keyed in wanted.items():
            if servers.pop(backend, "") != _servers_text(keyed):
                return True
    return False


class _PieceRenderer(Renderer):
    """A renderer of the model's head whose bind count is the pieces' so far."""

    binds = 0

    def bind_count(self) -> int:
        return self.binds


def _canonical(attrs: Mapping) -> str:
    """A service's attrs as text: equal texts for equal attrs (the desired attrs hold
    only texts, lists and maps of them, so JSON says all that ``==`` compares)."""
    return json.dumps(attrs, sort_keys=True)


def _servers_text(keyed: Mapping[str, str]) -> str:
    return "\n".join(f"{key} {state}" for key, state in sorted(keyed.items()))


def _slot_servers(lines: Iterable[str]) -> dict[str, str]:
    """Backend -> its filled slots as :func:`_servers_text` (the current state's
    servers of each backend, before the owned ones are picked), from the lines of
    ``show servers state`` as they come."""
    out: dict[str, str] = {}
    backend, keyed = None, {}
    for fields in servers_state_rows(lines):
        name, server, address, admin, weight, port = (fields[0], fields[2], fields[4],
                                                      fields[6], fields[7], fields[8])
        if name != backend:
            if keyed:
                out[backend] = _servers_text(keyed)
            if name in out:
                raise _Whole(f"show servers state lists {name} in two places")
            backend, keyed = name, {}
        if slot_index(server) is None or admin & ADMIN_MAINT:
            continue
        keyed[server_key(address, port)] = \
            "d" if admin & ADMIN_DRAIN or weight == 0 else f"r{weight}"
    if keyed:
        out[backend] = _servers_text(keyed)
    return out


def _markers(path: str) -> tuple[object, dict[str, str], set[str]]:
    """The running file's global attrs (None: no marker), service -> canonical attrs and
    the backends its services own, read a line at a time as
    :func:`dcnet.haproxy.render.parse_file` reads the whole text."""
    global_attrs, services, owned = None, {}, set()
    found: dict[str, object] = {}
    try:
        with open(path) as handle:
            for text in handle:
                for raw in text.splitlines(keepends=True):   # as the whole text splits
                    if raw.startswith(GLOBAL_MARK + " "):
                        global_attrs = json.loads(raw[len(GLOBAL_MARK):])
                    elif raw.startswith(SERVICE_MARK + " "):
                        name, _, attrs = raw[len(SERVICE_MARK):].strip().partition(" ")
                        found[name] = json.loads(attrs)
                        services[name] = _canonical(dict(found[name]))
                        found[name] = backends_of(name, found[name])
    except FileNotFoundError:
        pass
    for backends in found.values():
        owned.update(backends)
    if global_attrs is not None:
        global_attrs = dict(global_attrs)          # as the current state takes it
    return global_attrs, services, owned
