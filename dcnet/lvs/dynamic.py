"""``elbctl backend add|remove|drain``: one real server of one service, changed now.

For container init hooks. Under the state directory's lock (so never in the middle of a
full apply) it first records the change in the durable registry, then programs only
that service's dests: one dest dump per service key (VIP x port), and the writes that
differ (and one service dump: which of its services are programmed). ``remove``
drains (weight 0) while the server has connections; the next full apply deletes it once
idle or past its deadline. A full apply merges the registry into
the model, so what the hooks did is kept.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

from dcnet.lvs import drain, state
from dcnet.lvs.ipvs import IPVSTable
from dcnet.lvs.layout import (
    ACTIVE,
    DRAINING,
    REMOVED,
    ServiceLayout,
    parse_server,
    server_ident,
)
from dcnet.lvs.store import Store
from dcnet.model.types import MAX_WEIGHT
from dcnet.plan import Plan, diff

ACTIONS = ("add", "remove", "drain")


class BackendCommandError(ValueError):
    """Refused before any change (unknown service, bad address, port or weight)."""


@dataclass
class DynamicResult:
    service: str
    server: str
    action: str
    plan: Plan | None = None
    errors: list[str] = field(default_factory=list)
    writes: int = 0
    notes: list[str] = field(default_factory=list)

    def to_text(self) -> str:
        lines = [f"{self.action} {self.server} in {self.service}: recorded"]
        if self.plan is not None:
            lines += [f"  done {c.describe()}" for c in self.plan.changes]
        lines += [f"  note: {n}" for n in self.notes]
        lines += [f"  FAILED {e}" for e in self.errors]
        lines.append(f"writes: {self.writes} netlink")
        return "\n".join(lines)


def _resolve(layouts: dict[str, ServiceLayout], service: str) -> ServiceLayout:
    if service in layouts:
        return layouts[service]
    matches = [s for s in layouts.values() if s.name.startswith(service)]
    if len(matches) == 1:
        return matches[0]
    known = ", ".join(sorted(layouts)[:5])
    raise BackendCommandError(f"unknown service {service!r} (known: {known or 'none'})")


def check_request(layout: ServiceLayout, server_text: str, weight: int | None) -> str:
    """The registry identity of the server, after the model's rules for real servers."""
    try:
        address, port = parse_server(server_text)
    except ValueError as exc:
        raise BackendCommandError(str(exc)) from None
    if port is not None and len(layout.ports) > 1:
        raise BackendCommandError(f"{layout.name} has {len(layout.ports)} ports: give the "
                                  "address only (each port keeps its real-server port)")
    for p in layout.ports:
        if port is not None and p.forward != "nat" and port != p.port:
            raise BackendCommandError(f"{p.forward} cannot change the port ({p.port} -> "
                                      f"{port})")
        vip_family = ":" in layout.vips[0][1]
        if p.forward != "tun" and (":" in address) != vip_family:
            raise BackendCommandError(f"{address} is not of the VIPs' address family")
    if weight is not None and not 0 <= weight <= MAX_WEIGHT:
        raise BackendCommandError(f"weight must be 0-{MAX_WEIGHT}, got {weight}")
    return server_ident(address, port)


def update_registry(entries: dict[str, dict], layout: ServiceLayout, ident: str, action: str,
                    weight: int | None) -> None:
    in_model = {s.ident: s for s in layout.servers}
    old = entries.get(ident)
    base = old["weight"] if old else (in_model[ident].weight if ident in in_model else 1)
    if action == "add":
        entries[ident] = {"weight": base if weight is None else weight, "state": ACTIVE}
    elif action == "drain":
        entries[ident] = {"weight": base if weight is None else weight, "state": DRAINING}
    elif ident in in_model:
        entries[ident] = {"weight": base, "state": REMOVED}
    else:
        entries.pop(ident, None)


def change_backend(store: Store, ipvs: IPVSTable, action: str, service: str,
                   server_text: str, weight: int | None = None, *,
                   lock_timeout: float | None = 60.0, clock=time.time) -> DynamicResult:
    if action not in ACTIONS:
        raise BackendCommandError(f"unknown action {action!r}")
    with store.locked(lock_timeout):
        recorded = store.layouts()
        if recorded is None:
            raise BackendCommandError(f"no applied model recorded in {store.directory}: run "
                                      "'elbctl apply -f MODEL' first")
        layouts, drain_seconds = recorded
        layout = _resolve(layouts, service)
        ident = check_request(layout, server_text, weight)
        registry = store.registry()
        entries = dict(registry.get(layout.name, {}))
        update_registry(entries, layout, ident, action, weight)
        registry[layout.name] = entries
        store.save_registry(registry)            # durable first: a later apply keeps it
        result = DynamicResult(layout.name, ident, action)
        _program(store, ipvs, layout, registry, drain_seconds, clock(), result)
        return result


def _program(store: Store, ipvs: IPVSTable, layout: ServiceLayout, registry: dict,
             drain_seconds: int, now: float, result: DynamicResult) -> None:
    from dcnet.lvs.backend import request_for

    wanted = {k: v for k, v in state.desired_ipvs([layout], registry).items()
              if k[0] == "dest"}
    keys = {k[1][:3] for k in state.desired_ipvs([layout], {}) if k[0] == "service"}
    current: dict = {}
    conns: dict = {}
    programmed = {found[0] for found in map(state.observed_service, ipvs.services()) if found}
    for skey in sorted(keys):
        if skey not in programmed:
            result.notes.append(f"service {' '.join(map(str, skey))} is not programmed; the "
                                "next full apply adds it with this change")
            wanted = {k: v for k, v in wanted.items() if k[1][:3] != skey}
            continue
        for wd in ipvs.dests(state.wire_service(skey)):
            dkey, attrs = state.observed_dest(skey, wd)
            current[("dest", dkey)] = attrs
            conns[dkey] = wd.active + wd.inactive
    draining = store.drain_set()
    mine = {k: v for k, v in draining.items() if tuple(k[:3]) in keys}
    plan_ = drain.reconcile(current, wanted, conns, mine, now, drain_seconds)
    others = {k: v for k, v in draining.items() if tuple(k[:3]) not in keys}
    store.save_drain_set({**others, **mine, **plan_.draining})
    changes = diff(current, plan_.desired)
    result.plan = Plan.build("lvs", changes, state.KIND_ORDER, tuple(plan_.notes))
    result.notes += plan_.notes
    before = ipvs.writes
    codes = ipvs.execute([request_for(c) for c in result.plan.changes])
    result.writes = ipvs.writes - before
    for change, code in zip(result.plan.changes, codes, strict=True):
        if code:
            result.errors.append(f"{change.describe()}: {os.strerror(code)}")
    store.save_drain_set({**others, **plan_.draining})
