"""``elbctl backend add|remove|drain``: one real server of one service, changed now.

For container init hooks. Under the state directory's lock (so never in the middle of a
full apply) :func:`change_backend` first records the change in the durable registry,
then programs only that service's dests: one dest dump per service key (VIP x port),
and the writes that differ (and one service dump: which of its services are
programmed). A full apply merges the registry into the model, so what the hooks did is
kept.

:func:`drain_backend` is what ``elbctl backend drain|remove`` runs: under the lock the
server is drained (weight 0: no new connection is scheduled to it); then
``net.ipv4.vs.expire_quiescent_template`` is set to 1 (persistence templates pointing at
a weight-0 server expire, so persistent clients are scheduled elsewhere instead of being
sent back to it); then, WITHOUT the lock (other ``backend`` calls and full applies go
on), its connection counters are polled (:func:`dcnet.lvs.drain.wait_idle`) until it
has no active connection or ``lvs.drain_deadline`` (of the last applied model) passed;
``remove`` then takes the lock again, re-checks (a server added back meanwhile is not
removed) and deletes its dests whatever connections are left (counted in a note).
``remove`` with ``now`` skips the drain and the wait: the dests are deleted at once (a
crashed server). :attr:`DrainResult.exit_code` says how it ended: 0 safe to stop the
server, 4 the deadline passed with active connections, 5 added back meanwhile (not
drained), 1 a failed write.

:func:`change_backend` alone (``remove`` without waiting) keeps a busy server at weight 0
in the drain set; the next full apply deletes it once idle or past ``drain_seconds``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
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
EXIT_FAILED, EXIT_DEADLINE, EXIT_READDED = 1, 4, 5
QUIESCENT_SYSCTL = "net.ipv4.vs.expire_quiescent_template"


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
    skipped: bool = False           # nothing recorded nor programmed (see notes)

    def to_text(self) -> str:
        done = "not changed" if self.skipped else "recorded"
        lines = [f"{self.action} {self.server} in {self.service}: {done}"]
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
        families = {":" in vip for _, vip in layout.vips}       # a dual-stack service: both
        if p.forward != "tun" and (":" in address) not in families:
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


def _layouts(store: Store) -> tuple[dict[str, ServiceLayout], int]:
    recorded = store.layouts()
    if recorded is None:
        raise BackendCommandError(f"no applied model recorded in {store.directory}: run "
                                  "'elbctl apply -f MODEL' first")
    return recorded


def change_backend(store: Store, ipvs: IPVSTable, action: str, service: str,
                   server_text: str, weight: int | None = None, *,
                   lock_timeout: float | None = 60.0, clock=time.time,
                   delete: bool = False, only_known: bool = False,
                   unless_active: bool = False) -> DynamicResult:
    """One locked change. ``delete``: a removed server's dests go now whatever their
    connections; ``only_known``: nothing for a server neither the model nor the
    registry has; ``unless_active``: nothing for a server the registry has active
    (added back since it was drained)."""
    if action not in ACTIONS:
        raise BackendCommandError(f"unknown action {action!r}")
    with store.locked(lock_timeout):
        layouts, drain_seconds = _layouts(store)
        layout = _resolve(layouts, service)
        ident = check_request(layout, server_text, weight)
        registry = store.registry()
        entries = dict(registry.get(layout.name, {}))
        result = DynamicResult(layout.name, ident, action)
        known = ident in entries or ident in {s.ident for s in layout.servers}
        if only_known and not known:
            result.skipped = True
            result.notes.append("not in the model nor the registry; nothing to do")
            return result
        if unless_active and entries.get(ident, {}).get("state") == ACTIVE:
            result.skipped = True
            result.notes.append("added back while it drained: left as it is")
            return result
        update_registry(entries, layout, ident, action, weight)
        registry[layout.name] = entries
        store.save_registry(registry)            # durable first: a later apply keeps it
        _program(store, ipvs, layout, registry, drain_seconds, clock(), result,
                 server_matcher(ident) if delete else None)
        return result


def server_matcher(ident: str) -> Callable[[tuple], bool]:
    """Whether a dest key (proto, vip, port, rip, rport) is the server ``ident``'s."""
    address, port = parse_server(ident)
    return lambda key: key[3] == address and (port is None or key[4] == port)


def _program(store: Store, ipvs: IPVSTable, layout: ServiceLayout, registry: dict,
             drain_seconds: int, now: float, result: DynamicResult,
             delete: Callable[[tuple], bool] | None = None) -> None:
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
            if delete is not None and delete(dkey) and ("dest", dkey) not in wanted:
                if wd.active:
                    result.notes.append(f"deleting dest {' '.join(map(str, dkey))} with "
                                        f"{wd.active} active connection(s)")
                conns[dkey] = 0
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


# ------------------------------------------------------------------ drain and wait


@dataclass
class DrainResult:
    """``backend drain|remove``: the locked steps, and how the wait ended (None: no wait)."""

    steps: list[DynamicResult]
    outcome: drain.DrainOutcome | None = None
    notes: list[str] = field(default_factory=list)
    quiesced_after: float | None = None     # seconds from the call to weight 0 written

    @property
    def errors(self) -> list[str]:
        return [e for step in self.steps for e in step.errors]

    @property
    def exit_code(self) -> int:
        if self.errors:
            return EXIT_FAILED
        if self.outcome is not None and self.outcome.state == drain.DEADLINE:
            return EXIT_DEADLINE
        if self.outcome is not None and self.outcome.state == drain.READDED:
            return EXIT_READDED
        return 0

    def to_text(self) -> str:
        lines = [step.to_text() for step in self.steps[:1]]
        lines += [f"  note: {n}" for n in self.notes]
        if self.outcome is not None:
            lines.append(f"  {self.outcome.describe()}")
        lines += [step.to_text() for step in self.steps[1:]]
        return "\n".join(lines)


def server_counts(ipvs: IPVSTable, layout: ServiceLayout, ident: str) -> drain.Counts:
    """The server's dests in every programmed service key of ``layout`` (one dump each)."""
    mine = server_matcher(ident)
    keys = {k[1][:3] for k in state.desired_ipvs([layout], {}) if k[0] == "service"}
    programmed = {found[0] for found in map(state.observed_service, ipvs.services()) if found}
    dests = active = inactive = weight = 0
    for skey in sorted(keys & programmed):
        for wd in ipvs.dests(state.wire_service(skey)):
            if mine(state.observed_dest(skey, wd)[0]):
                dests += 1
                active += wd.active
                inactive += wd.inactive
                weight += wd.weight
    return drain.Counts(dests, active, inactive, weight)


def expire_quiescent_templates(netns_path: str | None) -> str | None:
    """Set ``net.ipv4.vs.expire_quiescent_template`` to 1 in the namespace (None: the
    caller's); a note when it was changed, None when it already was 1."""
    path = "/proc/sys/" + QUIESCENT_SYSCTL.replace(".", "/")

    def body() -> str | None:
        with open(path) as fh:
            if fh.read().strip() == "1":
                return None
        with open(path, "w") as fh:
            fh.write("1")
        return f"set {QUIESCENT_SYSCTL}=1 (persistent clients leave a drained server)"

    if netns_path is None:
        return body()
    from dcnet.sysio import netns

    return netns.call_here_in(netns_path, body)


def drain_backend(store: Store, ipvs: IPVSTable, action: str, service: str,
                  server_text: str, weight: int | None = None, *, now: bool = False,
                  lock_timeout: float | None = 60.0, deadline: float | None = None,
                  poll: float = drain.POLL, clock=time.time, monotonic=time.monotonic,
                  sleep=time.sleep,
                  quiescent: Callable[[], str | None] | None = None) -> DrainResult:
    """``drain`` or ``remove`` one server, waiting (without the lock) until it is safe
    to stop or ``deadline`` (default: the store's ``lvs.drain_deadline``) passed.
    ``quiescent``: sets the template sysctl (default: in a :class:`KernelIPVS`'s
    namespace; nothing for another table)."""
    if action not in ("drain", "remove"):
        raise BackendCommandError(f"{action!r} does not drain")
    if now:
        if action != "remove":
            raise BackendCommandError("only remove can skip the drain (--now)")
        return DrainResult([change_backend(store, ipvs, "remove", service, server_text,
                                           weight, lock_timeout=lock_timeout, clock=clock,
                                           delete=True)])
    started = monotonic()
    first = change_backend(store, ipvs, "drain", service, server_text, weight,
                           lock_timeout=lock_timeout, clock=clock,
                           only_known=action == "remove")
    result = DrainResult([first], quiesced_after=monotonic() - started)
    if first.errors or first.skipped:
        return result
    if quiescent is None and hasattr(ipvs, "netns_path"):
        path = ipvs.netns_path
        quiescent = lambda: expire_quiescent_templates(path)  # noqa: E731
    if quiescent is not None:
        try:
            note = quiescent()
        except OSError as exc:
            note = f"could not set {QUIESCENT_SYSCTL}=1: {exc}"
        if note:
            result.notes.append(note)
    layouts, _ = _layouts(store)
    layout = layouts[first.service]
    limit = store.drain_deadline() if deadline is None else deadline
    result.outcome = drain.wait_idle(
        first.server, lambda: server_counts(ipvs, layout, first.server), limit, poll=poll,
        clock=monotonic, sleep=sleep)
    if action == "remove" and result.outcome.state != drain.READDED:
        result.steps.append(change_backend(store, ipvs, "remove", first.service,
                                           first.server, lock_timeout=lock_timeout,
                                           clock=clock, delete=True, unless_active=True))
    return result
