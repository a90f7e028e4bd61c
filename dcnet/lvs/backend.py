"""The ``lvs`` target of ``elbctl plan|apply``: IPVS, carrier routing and sysctls.

Reading takes one IPVS service dump (every service attribute), one read of
``/proc/net/ip_vs`` for the dests of every service (:mod:`dcnet.lvs.procfs`: address,
port, forwarding, weight, connection counters), one rule dump, one route dump per
family, one address dump of the VIP interface, and the sysctls. The dests of a service
whose desired state sets anything that file does not show (thresholds) are read by one
generic-netlink dump each, and ``exact_read=True`` (``elbctl plan|apply --exact-read``)
reads every service's dests that way, so drift in thresholds is seen too.
A plan (unless ``exact_read``) first compares the fingerprint recorded by the last clean
apply (:mod:`dcnet.lvs.fingerprint`: the masked ``/proc/net/ip_vs`` text and the desired
IPVS inputs) and, when both match and no drain is pending, takes the IPVS part of the
current state to be the desired one without parsing or diffing it.
Owned IPVS services are those on an owned VIP (an address of the VIP interface, a model
VIP or a VIP still draining); every other service (and every fwmark service) is left
alone and reported. The desired state is the model plus the dynamic registry
(``elbctl backend``), and :mod:`dcnet.lvs.drain` keeps removed dests at weight 0 while
they have connections.

Applying runs the plan in order: routing changes one by one, IPVS changes in batches
(one ``sendmsg`` per ~48 KiB, every request acknowledged); the first batch with a
failure stops the plan, and the result names exactly the changes applied. The drain set
is saved before any write and again at the end; the fingerprint is removed before the
first write and recorded again only when the apply ends clean with no drain pending.
``writes()`` counts netlink write requests (IPVS and rtnetlink) and sysctl writes
separately; a second apply of the same model issues none.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

from dcnet.gcpause import paused_gc
from dcnet.lvs import drain, fingerprint, procfs, state
from dcnet.lvs.ipvs import (
    CMD_DEL_DEST,
    CMD_DEL_SERVICE,
    CMD_NEW_DEST,
    CMD_NEW_SERVICE,
    CMD_SET_DEST,
    CMD_SET_SERVICE,
    IPVSTable,
    NetlinkError,
    Request,
)
from dcnet.lvs.layout import layouts
from dcnet.lvs.store import Store
from dcnet.plan import Action, ApplyResult, Backend, Change, Plan, State, diff

IPVS_BATCH = 2000
_CMDS = {("service", Action.CREATE): CMD_NEW_SERVICE, ("service", Action.UPDATE): CMD_SET_SERVICE,
         ("service", Action.DELETE): CMD_DEL_SERVICE, ("dest", Action.CREATE): CMD_NEW_DEST,
         ("dest", Action.UPDATE): CMD_SET_DEST, ("dest", Action.DELETE): CMD_DEL_DEST}


class LVSError(RuntimeError):
    pass


def request_for(change: Change) -> Request:
    """The IPVS request carrying out one service or dest change."""
    cmd = _CMDS[(change.kind, change.action)]
    attrs = change.new if change.new is not None else change.old
    if change.kind == "service":
        return Request(cmd, state.wire_service(change.key, attrs))
    return Request(cmd, state.wire_service(change.key[:3]), state.wire_dest(change.key, attrs))


@dataclass
class LVSApplyResult(ApplyResult):
    """An apply's outcome plus its write counts and the other failures of its batch."""

    writes: dict[str, int] = field(default_factory=dict)
    more_failures: list[tuple[Change, BaseException]] = field(default_factory=list)

    def to_text(self) -> str:
        lines = [super().to_text()]
        lines += [f"  also FAILED {c.describe()}: {e}" for c, e in self.more_failures]
        w = self.writes
        lines.append(f"writes: {w.get('netlink', 0)} netlink (ipvs {w.get('ipvs', 0)}, rtnetlink "
                     f"{w.get('rtnetlink', 0)}), {w.get('sysctl', 0)} sysctl")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out["writes"] = dict(self.writes)
        out["more_failures"] = [{"change": c.to_dict(), "error": str(e)}
                                for c, e in self.more_failures]
        return out


def plan_states(current: State, desired: State, conns: dict, draining: dict, now: float,
                drain_seconds: int, notes: tuple[str, ...] = ()) -> tuple[Plan, drain.DrainPlan]:
    """Pure: the ordered plan from a current and a desired state, drains applied.

    Objects equal on both sides change nothing (no change, no drain, nothing kept for a
    drain), so they are set aside first, one pass each way: a no-op sync of a large
    table costs one lookup and one comparison per object (the returned drain plan's
    ``desired`` holds only the rest)."""
    with paused_gc():
        differing = {ident: attrs for ident, attrs in current.items()
                     if desired.get(ident) != attrs}
        desired = {ident: attrs for ident, attrs in desired.items()
                   if ident in differing or ident not in current}
        current = differing
        drained = drain.reconcile(current, desired, conns, draining, now, drain_seconds)
        changes = diff(current, drained.desired)
        return (Plan.build(LVSBackend.target, changes, LVSBackend.kind_order,
                           (*notes, *drained.notes)), drained)


class LVSBackend(Backend):
    target = "lvs"
    kind_order = state.KIND_ORDER

    def __init__(self, ipvs: IPVSTable, routing, store: Store, *, clock=time.time,
                 manage_routing: bool = True, manage_sysctls: bool = True,
                 exact_read: bool = False):
        self.ipvs = ipvs
        self.exact_read = exact_read
        self.routing = routing              # dcnet.lvs.routing.Routing (or None)
        self.store = store
        self.clock = clock
        self.manage_routing = manage_routing and routing is not None
        self.manage_sysctls = manage_sysctls and routing is not None
        self.conns: dict[tuple, int] = {}
        self.bulk_read_rejected = 0   # /proc texts that disagreed with the service dump
        self._notes: tuple[str, ...] = ()
        self._draining: dict[tuple, float] = {}
        self._model = None
        self.table_digest: str | None = None      # of the /proc/net/ip_vs text last read
        self._inputs_digest: str | None = None    # of the desired IPVS inputs, by plan()
        self._ipvs_notes: tuple[str, ...] = ()
        self.fast_path = False      # whether the last plan() skipped the IPVS read
        self._layouts = None        # layouts(model) of the last plan(), if it built them

    # ------------------------------------------------------------------ read

    def read(self, model=None, exact_for: set | None = None) -> State:
        """The current state of what elbctl owns (always a full read: no fingerprint).
        ``exact_for``: service keys whose dests must be read exactly (default: those
        whose desired dests need it)."""
        model = model if model is not None else self._model
        current, notes, vips = self._read_routing(model, self.store.drain_set())
        if exact_for is None:
            exact_for = (state.exact_read_services(self.desired(model)) if model is not None
                         else set())
        ipvs_state, self.conns, unowned = self.read_ipvs(vips, exact_for)
        current.update(ipvs_state)
        self._notes = (*notes, *_unowned_notes(unowned))
        return current

    def _read_routing(self, model, draining: dict) -> tuple[dict, list[str], set[str]]:
        """(routing and sysctl state, notes, owned VIPs): the VIPs of the model, of the
        drain set and of the VIP interface."""
        current: dict = {}
        notes: list[str] = []
        vips: set[str] = set()
        if model is not None:
            vips |= {str(v) for s in model.services for _, v in s.vips}
        vips |= {k[1] for k in draining}
        if self.routing is not None:
            if model is not None:
                self.routing.settings = model.lvs
            tables = [c.table for c in model.carriers] if model is not None else []
            sysctls = list(state.SYSCTLS) if self.manage_sysctls else []
            read = self.routing.read(tables, vips, sysctls)
            notes += read.notes
            for ident, attrs in read.state.items():
                if ident[0] == "vip":
                    vips.add(ident[1][0])
                if self._manages(ident[0]):
                    current[ident] = attrs
        return current, notes, vips

    def read_ipvs(self, vips: set[str], exact_for=frozenset(), text: str | None = None
                  ) -> tuple[dict, dict, list]:
        """(IPVS state of the services on ``vips``, dest key -> connections, unowned
        services). One read of ``/proc/net/ip_vs`` for the dests of every service (or
        ``text``, that file as already read), then one service dump; services in
        ``exact_for`` (and all of them with ``exact_read``) have their dests read by one
        generic-netlink dest dump each. The file is read BEFORE the services, so the
        digest of its text (:attr:`table_digest`) never vouches for a change the
        service dump saw and the plan did not repair."""
        with paused_gc():
            if self.exact_read:
                text = None
            elif text is None:
                text = self._read_proc_text()
            return self._read_ipvs(vips, exact_for, text)

    def _read_proc_text(self) -> str | None:
        text = self.ipvs.proc_text()
        self.table_digest = None if text is None else fingerprint.table_digest(text)
        return text

    def _read_ipvs(self, vips: set[str], exact_for, text) -> tuple[dict, dict, list]:
        current: dict = {}
        conns: dict = {}
        unowned = []
        owned = []
        for ws in self.ipvs.services():
            observed = state.observed_service(ws)
            if observed is None or observed[0][1] not in vips:
                unowned.append(ws)
            else:
                owned.append((ws, *observed))
        bulk = None if self.exact_read or text is None or not owned else procfs.parse(text)
        if bulk is not None and set(bulk) != {procfs.service_id(ws) for ws, *_ in owned} | {
                procfs.service_id(ws) for ws in unowned}:
            # the text must list exactly the services of the dump (both read under the
            # state lock); anything else (a table changed mid-read, a text from another
            # namespace) is not trusted: every dest is read by generic netlink instead
            bulk = None
            self.bulk_read_rejected += 1
            self.table_digest = None    # nor is its fingerprint: no record from this read
        forward_names = state.FORWARD_NAMES
        shared: dict[tuple, dict] = {}    # one attrs dict per (forward, weight): never mutated
        for ws, skey, attrs in owned:
            current[("service", skey)] = attrs
            if bulk is None or skey in exact_for:
                rows = self.ipvs.dest_rows(ws)
            else:
                rows = bulk.get(procfs.service_id(ws))
                if rows is None:  # in the dump, not in the text: never take it as empty
                    rows = self.ipvs.dest_rows(ws)
            proto, vip, port = skey
            # state.observed_row, inlined: this loop runs once per dest of the table
            for row in rows:
                _family, addr, rport, fwd, weight, u_thresh, l_thresh, active, inactive = row[:9]
                if ":" in addr:
                    addr = state.norm(addr)
                if u_thresh or l_thresh:
                    dattrs = {"forward": forward_names.get(fwd, str(fwd)), "weight": weight,
                              "u_thresh": u_thresh, "l_thresh": l_thresh}
                else:
                    dattrs = shared.get((fwd, weight))
                    if dattrs is None:
                        dattrs = shared[(fwd, weight)] = {
                            "forward": forward_names.get(fwd, str(fwd)), "weight": weight}
                dkey = (proto, vip, port, addr, rport)
                current[("dest", dkey)] = dattrs
                conns[dkey] = active + inactive
        return current, conns, unowned

    def _manages(self, kind: str) -> bool:
        if kind == "sysctl":
            return self.manage_sysctls
        return self.manage_routing or kind in state.IPVS_KINDS

    # ------------------------------------------------------------------ desire, plan

    def desired(self, model, model_layouts=None, registry=None) -> State:
        """The wanted state of ``model`` (its layouts and the registry are computed or
        read here unless the caller already has them)."""
        out = state.desired_ipvs(layouts(model) if model_layouts is None else model_layouts,
                                 self.store.registry() if registry is None else registry)
        out.update(self._desired_routing_and_sysctls(model))
        return out

    def notes(self) -> tuple[str, ...]:
        return self._notes

    def plan(self, model) -> Plan:
        """The plan for ``model``. Unless ``exact_read``, the ``/proc/net/ip_vs`` text is
        read first and fingerprinted (:mod:`dcnet.lvs.fingerprint`); when no drain is
        pending and both the table and the desired IPVS inputs match the fingerprint
        recorded by the last clean apply, the IPVS table is not parsed, dumped or
        diffed (a note says so) and only routing and sysctls are read and planned."""
        self._model = model
        self.table_digest = self._inputs_digest = None
        self._ipvs_notes = ()
        self._layouts = None
        self.fast_path = False
        with paused_gc():
            registry = self.store.registry()
            draining = self.store.drain_set()
            current, notes, vips = self._read_routing(model, draining)
            self._inputs_digest = fingerprint.inputs_digest(model, registry, vips)
            text = self._read_proc_text()
            saved = None if self.exact_read or draining else self.store.fingerprint()
            if self.table_digest is not None and fingerprint.matches(
                    saved, self.table_digest, self._inputs_digest):
                desired = self._desired_routing_and_sysctls(model)
                self.conns = {}
                self.fast_path = True
                self._ipvs_notes = tuple(saved["notes"])
                notes += [*self._ipvs_notes,
                          f"IPVS unchanged since the last apply (fingerprint "
                          f"{self.table_digest[:12]}): not re-read (--exact-read reads it)"]
            else:
                self._layouts = layouts(model)
                desired = self.desired(model, self._layouts, registry)
                ipvs_state, self.conns, unowned = self.read_ipvs(
                    vips, state.exact_read_services(desired), text)
                current.update(ipvs_state)
                self._ipvs_notes = tuple(_unowned_notes(unowned))
                notes += self._ipvs_notes
            the_plan, drained = plan_states(current, desired, self.conns, draining,
                                            self.clock(), model.lvs.drain_seconds,
                                            tuple(notes))
        self._draining = drained.draining
        self._notes = the_plan.notes
        return the_plan

    def _desired_routing_and_sysctls(self, model) -> State:
        out: State = {}
        if self.manage_routing:
            out.update(state.desired_routing(model))
        if self.manage_sysctls:
            out.update(state.desired_sysctls())
        return out

    # ------------------------------------------------------------------ apply

    def writes(self) -> dict[str, int]:
        ipvs = self.ipvs.writes
        rtnl = self.routing.writes if self.routing is not None else 0
        sysctl = self.routing.sysctl_writes if self.routing is not None else 0
        return {"netlink": ipvs + rtnl, "ipvs": ipvs, "rtnetlink": rtnl, "sysctl": sysctl}

    def apply_change(self, change: Change) -> None:
        if change.kind in state.IPVS_KINDS:
            code = self.ipvs.execute([request_for(change)])[0]
            if code:
                raise NetlinkError(code, f"{os.strerror(code)} ({change.describe()})")
        elif self.routing is not None:
            self.routing.apply(change)

    def apply(self, plan: Plan, *, rollback: bool = False) -> LVSApplyResult:
        """Execute ``plan`` (from :meth:`plan` of this instance) in order, batching IPVS."""
        before = self.writes()
        result = LVSApplyResult(plan)
        if not plan.empty:      # no fingerprint vouches for a table being written
            self.store.save_fingerprint(None)
        previous = self.store.drain_set()
        # record new drains before the weight-0 writes, so a crash cannot lose them
        self.store.save_drain_set({**previous, **self._draining})
        # a fingerprint match means the last clean apply saved these very layouts
        if self._model is not None and not (self.fast_path
                                            and os.path.exists(self.store.path("layouts.json"))):
            self.store.save_layouts(self._layouts or layouts(self._model),
                                    self._model.lvs.drain_seconds)
        with paused_gc():
            self._apply_changes(list(plan.changes), result)
        if result.ok:
            self.store.save_drain_set(self._draining)
        self._record_fingerprint(plan, result)
        if not result.ok and rollback:
            for change in reversed(result.applied):
                try:
                    self.undo_change(change)
                    result.undone.append(change)
                except Exception as exc:  # keep undoing; report each failure
                    result.undo_errors.append((change, exc))
        after = self.writes()
        result.writes = {k: after[k] - before[k] for k in after}
        return result

    def _record_fingerprint(self, plan: Plan, result: LVSApplyResult) -> None:
        """After a clean apply (all applied, no drain pending) of a plan of this
        instance, record the table's and the inputs' digests; otherwise remove any
        record. The table is read again only if IPVS was written: an apply without IPVS
        changes leaves the table the plan read (read before it was verified, so a change
        made since then shows up as a mismatch next time; a text the read rejected as
        disagreeing with the service dump is never recorded)."""
        if not result.ok or self._draining or self._inputs_digest is None:
            self.store.save_fingerprint(None)
            return
        if any(c.kind in state.IPVS_KINDS for c in plan.changes):
            self._read_proc_text()
        if self.table_digest is None:   # no text, or a text the read did not trust
            self.store.save_fingerprint(None)
            return
        wanted = fingerprint.record(self.table_digest, self._inputs_digest, self._ipvs_notes)
        if self.store.fingerprint() != wanted:
            self.store.save_fingerprint(wanted)

    def _apply_changes(self, changes: list[Change], result: LVSApplyResult) -> None:
        """In order until one fails: routing one by one, IPVS in batches."""
        i = 0
        while i < len(changes) and result.ok:
            if changes[i].kind in state.IPVS_KINDS:
                j = i
                while (j < len(changes) and j - i < IPVS_BATCH
                       and changes[j].kind in state.IPVS_KINDS):
                    j += 1
                self._apply_ipvs_batch(changes[i:j], result)
                i = j
                continue
            try:
                self.apply_change(changes[i])
                result.applied.append(changes[i])
            except Exception as exc:  # stop, report exactly what was done
                result.failed, result.error = changes[i], exc
            i += 1

    def _apply_ipvs_batch(self, batch: list[Change], result: LVSApplyResult) -> None:
        codes = self.ipvs.execute([request_for(c) for c in batch])
        for change, code in zip(batch, codes, strict=True):
            if not code:
                result.applied.append(change)
                continue
            error = NetlinkError(code, os.strerror(code))
            if result.failed is None:
                result.failed, result.error = change, error
            else:
                result.more_failures.append((change, error))


def _unowned_notes(unowned: list) -> list[str]:
    if not unowned:
        return []
    shown = ", ".join(_service_label(ws) for ws in unowned[:5])
    more = f" and {len(unowned) - 5} more" if len(unowned) > 5 else ""
    return [f"left alone: {len(unowned)} IPVS service(s) not on an elbctl VIP: {shown}{more}"]


def _service_label(ws) -> str:
    if ws.fwmark:
        return f"fwmark {ws.fwmark}"
    proto = state.PROTOCOL_NAMES.get(ws.protocol, str(ws.protocol))
    addr = f"[{ws.addr}]" if ":" in ws.addr else ws.addr
    return f"{proto} {addr}:{ws.port}"


def create(netns: str | None = None, state_dir: str | None = None, exact_read: bool = False,
           **_ignored) -> LVSBackend:
    """Factory for :mod:`dcnet.backends`: the kernel's IPVS and routing, in ``netns``
    (default ``$DCNET_LVS_NETNS``, else the caller's namespace), state in ``state_dir``
    (default ``$DCNET_LVS_STATE_DIR``, else /var/lib/dcnet/lvs); ``exact_read`` reads
    every dest by generic netlink (see :meth:`LVSBackend.read_ipvs`)."""
    from dcnet.lvs.ipvs import KernelIPVS
    from dcnet.lvs.routing import Routing

    netns = netns or os.environ.get("DCNET_LVS_NETNS") or None
    return LVSBackend(KernelIPVS(netns), Routing(netns=netns), Store(state_dir),
                      exact_read=exact_read)
