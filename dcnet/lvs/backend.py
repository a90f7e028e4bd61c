"""The ``lvs`` target (:class:`LVSTarget`): IPVS, carrier routing and sysctls.

Reading takes one IPVS service dump (every service attribute), one read of
``/proc/net/ip_vs`` for the dests of every service (:mod:`dcnet.lvs.reader`), one rule
dump, one route dump per family, one address dump of the VIP interface, and the
sysctls; ``exact_read`` (``elbctl plan|apply --exact-read``) reads every service's dests
by generic netlink, so drift in thresholds is seen too.
A plan (unless ``exact_read``) first compares the fingerprint recorded by the last clean
apply (:mod:`dcnet.lvs.fingerprint`: the masked ``/proc/net/ip_vs`` text and the desired
IPVS inputs) and, when both match and no drain is pending, takes the IPVS part of the
current state to be the desired one without parsing or diffing it; when the inputs
changed, it reads only the services whose desired objects changed
(:mod:`dcnet.lvs.incremental`), when that module's per-service record allows it.
Owned IPVS services are those on an owned VIP (an address of the VIP interface, a model
VIP or a VIP still draining); every other service (and every fwmark service) is left
alone and reported. The desired state is the model plus the dynamic registry
(``elbctl backend``), and :mod:`dcnet.lvs.drain` keeps removed dests at weight 0 while
they have connections.

The plan's payload (:class:`LVSPayload`) holds all that applying needs: the drain set
after the apply, the layouts to record, the digests, the fast-path flag, the IPVS read's
notes, the routing settings and rule specs. :func:`dcnet.target.apply_plan` runs it:
routing changes one by one, IPVS changes in batches of :data:`IPVS_BATCH` through
:meth:`LVSTarget.apply_batch` (one ``sendmsg`` per ~48 KiB, every request acknowledged).
:meth:`LVSTarget.begin` removes the fingerprint record and saves the drain set (new
drains before their weight-0 writes) and the layouts before the first write;
:meth:`LVSTarget.finish` saves the final drain set and records the fingerprint again
only when the apply ended clean with no drain pending. ``counters()`` counts netlink
write requests (IPVS and rtnetlink) and sysctl writes; a second apply of the same model
issues none.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from dcnet.gcpause import paused_gc
from dcnet.lvs import drain, fingerprint, incremental, state
from dcnet.lvs.ipvs import (
    CMD_DEL_DEST,
    CMD_DEL_SERVICE,
    CMD_NEW_DEST,
    CMD_NEW_SERVICE,
    CMD_SET_DEST,
    CMD_SET_SERVICE,
    NetlinkError,
    Request,
)
from dcnet.lvs.layout import ServiceLayout, layouts
from dcnet.lvs.options import OPTIONS
from dcnet.lvs.reader import read_ipvs, unowned_notes
from dcnet.lvs.store import Store
from dcnet.plan import Action, Change, Plan, State, diff, state_digest
from dcnet.target import Snapshot, Target

IPVS_BATCH = 2000
KERNEL = "kernel"       # default of LVSTarget's ipvs/routing: the kernel's, in ``netns``
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


def plan_changes(current: State, desired: State, conns: dict, draining: dict, now: float,
                 drain_seconds: int) -> tuple[list[Change], drain.DrainPlan]:
    """Pure: the changes from a current and a desired state, drains applied.

    Objects equal on both sides change nothing (no change, no drain, nothing kept for a
    drain), so they are set aside first, one pass each way: a no-op sync of a large
    table costs one lookup and one comparison per object (the returned drain plan's
    ``desired`` holds only the rest)."""
    with paused_gc():
        differing = {ident: attrs for ident, attrs in current.items()
                     if desired.get(ident) != attrs}
        desired = {ident: attrs for ident, attrs in desired.items()
                   if ident in differing or ident not in current}
        drained = drain.reconcile(differing, desired, conns, draining, now, drain_seconds)
        return diff(differing, drained.desired), drained


def plan_states(current: State, desired: State, conns: dict, draining: dict, now: float,
                drain_seconds: int, notes: tuple[str, ...] = ()) -> tuple[Plan, drain.DrainPlan]:
    """Pure: the ordered plan (no payload) of :func:`plan_changes`, with its notes."""
    changes, drained = plan_changes(current, desired, conns, draining, now, drain_seconds)
    return (Plan.build(LVSTarget.name, changes, LVSTarget.kind_order,
                       (*notes, *drained.notes)), drained)


@dataclass(frozen=True)
class LVSPayload:
    """Everything applying an LVS plan needs besides its changes (immutable)."""

    settings: Any                           # the model's LVSSettings (frozen)
    tables: tuple[int, ...]                 # the carrier tables read (current_digest)
    draining: MappingProxyType              # dest key -> deadline, after this apply
    layouts: tuple[ServiceLayout, ...] | None   # to record (None: already recorded)
    drain_seconds: int
    inputs_digest: str | None               # of the desired IPVS inputs
    table_digest: str | None                # of the /proc text read, if trusted
    fast_path: bool                         # the plan took IPVS from the fingerprint
    ipvs_notes: tuple[str, ...]             # the IPVS read's notes (for the record)
    ipvs_objects: int                       # owned IPVS objects once applied
    rule_specs: MappingProxyType            # rule key -> pyroute2 spec (read rules)
    sysctls: tuple[str, ...] = tuple(state.SYSCTLS)   # the sysctls read (current_digest)
    incremental: frozenset | None = None    # the only services read (None: all or none)
    record: Any = None                      # incremental.Record to write if clean


@dataclass(frozen=True)
class LVSSnapshot(Snapshot):
    """A full read, with what the desired state and the drain need besides the state."""

    registry: Any = None
    draining: Any = None
    conns: Any = None


class LVSTarget(Target):
    """IPVS, carrier routing and sysctls of one director (see the module docstring).

    ``ipvs``/``routing`` default to the kernel's in ``netns``; tests pass a
    :class:`dcnet.lvs.fake.FakeIPVS` and ``routing=None`` (then only IPVS is managed)."""

    name = "lvs"
    kind_order = state.KIND_ORDER
    options = OPTIONS
    batch_kinds = frozenset(state.IPVS_KINDS)
    batch_size = IPVS_BATCH
    refused_errors = (LVSError,)
    unavailable_errors = (OSError,)         # NetlinkError is one: no IPVS, no namespace

    def __init__(self, netns: str | None = None, state_dir: str | None = None,
                 exact_read: bool = False, full_read: bool = False, *, ipvs=KERNEL,
                 routing=KERNEL, clock=time.time, manage_routing: bool = True,
                 manage_sysctls: bool = True):
        netns = netns or None
        if ipvs == KERNEL:
            from dcnet.lvs.ipvs import KernelIPVS

            ipvs = KernelIPVS(netns)
        if routing == KERNEL:
            from dcnet.lvs.routing import Routing

            routing = Routing(netns=netns)
        self.ipvs = ipvs
        self.routing = routing              # dcnet.lvs.routing.Routing (or None)
        self.store = Store(state_dir)
        self.exact_read = bool(exact_read)
        self.full_read = bool(full_read)    # no fast path, no incremental read (bench, tests)
        self.clock = clock
        self.manage_routing = manage_routing and routing is not None
        self.manage_sysctls = manage_sysctls and routing is not None
        self.bulk_read_rejected = 0   # /proc texts that disagreed with the service dump

    # ------------------------------------------------------------------ session

    def lock_path(self) -> str:
        return self.store.lock_path()

    def close(self) -> None:
        self.ipvs.close()
        if self.routing is not None:
            self.routing.close()

    def wait_drained(self, model, service: str, ident: str, *, progress=None,
                     sleep=time.sleep) -> drain.DrainOutcome:
        """After an apply drained ``ident`` of ``service`` (weight 0): wait until it has
        no active connection, carries weight again or ``lvs.drain_deadline`` passed
        (:func:`dcnet.lvs.drain.wait_idle`; ``progress`` is told the active connections
        after each poll, ``sleep`` may raise to abandon the wait). For the etcd agent."""
        from dcnet.lvs.dynamic import server_counts

        layout = {one.name: one for one in layouts(model)}.get(service)
        if layout is None:
            return drain.DrainOutcome(ident, drain.ABSENT, 0.0)

        def read() -> drain.Counts:
            counts = server_counts(self.ipvs, layout, ident)
            if progress is not None:
                progress(counts.active)
            return counts
        return drain.wait_idle(ident, read, model.lvs.drain_deadline, sleep=sleep)

    # ------------------------------------------------------------------ read

    def read(self, model) -> LVSSnapshot:
        """A full read of what elbctl owns (never the fingerprint fast path)."""
        registry, draining = self.store.registry(), self.store.drain_set()
        current, notes, vips, _specs = self._read_routing(model, draining)
        text = self._proc_text()
        wanted = state.desired_ipvs(layouts(model), registry)
        found = self._read_ipvs(vips, state.exact_read_services(wanted), text)
        current.update(found.state)
        return LVSSnapshot(current, (*notes, *unowned_notes(found.unowned)),
                           self._digest(text, current, registry, draining),
                           registry=registry, draining=draining, conns=found.conns)

    def read_ipvs(self, vips: set[str], exact_for=frozenset(), text: str | None = None
                  ) -> tuple[dict, dict, list]:
        """(IPVS state of the services on ``vips``, dest key -> connections, unowned
        services); see :func:`dcnet.lvs.reader.read_ipvs`."""
        found = self._read_ipvs(vips, exact_for, self._proc_text() if text is None else text)
        return found.state, found.conns, found.unowned

    def _read_ipvs(self, vips, exact_for, text):
        with paused_gc():
            found = read_ipvs(self.ipvs, vips, exact_for, None if self.exact_read else text,
                              exact=self.exact_read)
        self.bulk_read_rejected += found.text_rejected
        return found

    def _proc_text(self) -> str | None:
        return self.ipvs.proc_text()

    def _read_routing(self, model, draining: dict):
        """(routing and sysctl state, notes, owned VIPs, rule specs): the VIPs of the
        model, of the drain set and of the VIP interface."""
        current: dict = {}
        notes: list[str] = []
        vips = {str(v) for s in model.services for _, v in s.vips}
        vips |= {k[1] for k in draining}
        specs: dict = {}
        if self.routing is not None:
            self.routing.settings = model.lvs
            read = self.routing.read([c.table for c in model.carriers], vips,
                                     list(state.managed_sysctls(model))
                                     if self.manage_sysctls else [])
            notes += read.notes
            specs = read.rule_specs
            for ident, attrs in read.state.items():
                if ident[0] == "vip":
                    vips.add(ident[1][0])
                if self._manages(ident[0]):
                    current[ident] = attrs
        return current, notes, vips, specs

    def _manages(self, kind: str) -> bool:
        if kind == "sysctl":
            return self.manage_sysctls
        return self.manage_routing or kind in state.IPVS_KINDS

    # ------------------------------------------------------------------ staleness

    def _digest(self, text: str | None, current: State, registry, draining) -> str:
        """The fingerprint a plan is made from: the masked /proc/net/ip_vs text (or,
        without it, the IPVS state read), the owned routing and sysctls, the registry
        and the drain set."""
        if text is not None:
            table = fingerprint.table_digest(text)
        else:
            table = state_digest({k: v for k, v in current.items()
                                  if k[0] in state.IPVS_KINDS})
        routing = state_digest({k: v for k, v in current.items()
                                if k[0] not in state.IPVS_KINDS})
        files = json.dumps([registry, sorted(map(str, draining.items()))], sort_keys=True)
        return hashlib.sha256(f"{table}|{routing}|{files}".encode()).hexdigest()[:32]

    def current_digest(self, plan: Plan) -> str | None:
        """One read of /proc/net/ip_vs, of the owned routing and of the two state files
        (without the text: the whole IPVS read), as the plan's ``read_digest``."""
        payload = plan.payload
        if not isinstance(payload, LVSPayload):
            return None
        registry, draining = self.store.registry(), self.store.drain_set()
        current: dict = {}
        if self.routing is not None:
            self.routing.settings = payload.settings
            read = self.routing.read(payload.tables, (),
                                     list(payload.sysctls) if self.manage_sysctls else [])
            current = {k: v for k, v in read.state.items() if self._manages(k[0])}
        if payload.incremental is not None:     # the plan read these services only
            current.update(incremental.read_services(self.ipvs, payload.incremental).state)
            return self._digest(None, current, registry, draining)
        text = self._proc_text()
        if text is None:
            vips = {k[1] for k in draining} | {k[1][0] for k in current if k[0] == "vip"}
            vips |= {v for lay in payload.layouts or () for _, v in lay.vips}
            current.update(self._read_ipvs(vips, frozenset(), None).state)
        return self._digest(text, current, registry, draining)

    # ------------------------------------------------------------------ desire, plan

    def desired(self, model, current: Snapshot, model_layouts=None) -> State:
        """The wanted state of ``model`` (pure): its layouts with the registry read into
        ``current`` merged in, plus routing and sysctls."""
        registry = getattr(current, "registry", None) or {}
        out = state.desired_ipvs(layouts(model) if model_layouts is None else model_layouts,
                                 registry)
        out.update(self._desired_routing_and_sysctls(model))
        return out

    def _desired_routing_and_sysctls(self, model) -> State:
        out: State = {}
        if self.manage_routing:
            out.update(state.desired_routing(model))
        if self.manage_sysctls:
            out.update(state.desired_sysctls(model))
        return out

    def plan(self, model) -> Plan:
        """The plan for ``model``. Unless ``exact_read``/``full_read`` or a drain is
        pending: with the model's IPVS inputs unchanged since the last clean apply, the
        ``/proc/net/ip_vs`` text is read and fingerprinted (:mod:`dcnet.lvs.fingerprint`)
        and, when it matches too, IPVS is not parsed, dumped or diffed; with them
        changed, only the services whose desired objects changed are read, one by one
        (:mod:`dcnet.lvs.incremental`), when the per-service record allows it. Anything
        else is the full read."""
        with paused_gc():
            registry = self.store.registry()
            draining = self.store.drain_set()
            current, notes, vips, specs = self._read_routing(model, draining)
            inputs = fingerprint.inputs_digest(model, registry, vips)
            now = self.clock()
            shortcut = not (self.exact_read or self.full_read or draining)
            saved = self.store.fingerprint() if shortcut else None
            record = incremental.load(self._record_path()) if shortcut else None
            due = incremental.full_read_due(record, now)
            text = table = selection = None
            fast = False
            if isinstance(saved, dict) and saved.get("inputs") == inputs and due is None:
                text = self._proc_text()
                table = None if text is None else fingerprint.table_digest(text)
                fast = table is not None and fingerprint.matches(saved, table, inputs)
            if fast:
                desired = self._desired_routing_and_sysctls(model)
                conns: dict = {}
                ipvs_notes = tuple(saved["notes"])
                ipvs_objects = int(saved.get("objects", 0))
                recorded = os.path.exists(self.store.path("layouts.json"))
                model_layouts = None if recorded else tuple(layouts(model))
                notes += [*ipvs_notes,
                          f"IPVS unchanged since the last apply (fingerprint "
                          f"{table[:12]}): not re-read (--exact-read reads it)"]
                after = record
            else:
                model_layouts = tuple(layouts(model))
                digests = incremental.layout_digests(model_layouts, registry)
                if shortcut and text is None:
                    selection = incremental.select(record, digests,
                                                   incremental.vips_digest(vips), now)
                if selection is not None and selection.read is not None:
                    found = incremental.read_services(self.ipvs, selection.read)
                    desired = incremental.restrict(state.desired_ipvs(incremental.layouts_of(
                        model_layouts, selection.read), registry), selection.read)
                    ipvs_notes = record.notes
                    ipvs_objects = record.objects
                    notes += [*ipvs_notes, f"IPVS read incrementally: {selection.changed} "
                              f"of {selection.total} service(s) changed since the last "
                              f"apply; the others not re-read (--exact-read reads them)"]
                else:
                    desired = state.desired_ipvs(model_layouts, registry)
                    if text is None:
                        text = self._proc_text()
                        table = None if text is None else fingerprint.table_digest(text)
                    found = self._read_ipvs(vips, state.exact_read_services(desired), text)
                    if found.text_rejected:
                        table = None        # not trusted: never recorded
                    ipvs_notes = tuple(unowned_notes(found.unowned))
                    ipvs_objects = len(found.state)
                    notes += ipvs_notes
                desired.update(self._desired_routing_and_sysctls(model))
                current.update(found.state)
                conns = found.conns
            read = None if selection is None else selection.read
            digest = self._digest(None if read is not None else text, current, registry,
                                  draining)
            changes, drained = plan_changes(current, desired, conns, draining, now,
                                            model.lvs.drain_seconds)
            objects = len(current) + (ipvs_objects if fast else 0) + (
                ipvs_objects - len(found.state) if read is not None else 0)
            ipvs_objects += sum((c.action is Action.CREATE) - (c.action is Action.DELETE)
                                for c in changes if c.kind in state.IPVS_KINDS)
            if not fast:
                after = incremental.after(record if read is not None else None, digests,
                                          vips, now, ipvs_notes, ipvs_objects)
            payload = LVSPayload(
                settings=model.lvs, tables=tuple(c.table for c in model.carriers),
                sysctls=tuple(state.managed_sysctls(model)),
                draining=MappingProxyType(dict(drained.draining)), layouts=model_layouts,
                drain_seconds=model.lvs.drain_seconds, inputs_digest=inputs,
                table_digest=table, fast_path=fast, ipvs_notes=ipvs_notes,
                ipvs_objects=ipvs_objects,
                rule_specs=MappingProxyType({k: MappingProxyType(dict(v))
                                             for k, v in specs.items()}),
                incremental=read, record=after)
            return Plan.build(self.name, changes, self.kind_order,
                              (*notes, *drained.notes), read_digest=digest,
                              objects=objects, payload=payload)

    def drifted(self, pieces) -> bool:
        """Whether :meth:`plan` of the model in ``pieces`` would change anything, a piece
        at a time (:mod:`dcnet.lvs.drift`); the whole plan where that plan would read
        the whole table (recorded when it finds the director at the model)."""
        from dcnet.lvs import drift

        return drift.check(self, pieces)

    def _record_path(self) -> str:
        return self.store.path(incremental.FILE)

    # ------------------------------------------------------------------ apply

    def counters(self) -> dict[str, int]:
        ipvs = self.ipvs.writes
        rtnl = self.routing.writes if self.routing is not None else 0
        sysctl = self.routing.sysctl_writes if self.routing is not None else 0
        return {"netlink": ipvs + rtnl, "ipvs": ipvs, "rtnetlink": rtnl, "sysctl": sysctl}

    def begin(self, plan: Plan) -> None:
        """Before the first write: no fingerprint vouches for a table being written;
        new drains are recorded before their weight-0 writes (a crash cannot lose
        them); the layouts ``elbctl backend`` works from are saved."""
        self.store.save_fingerprint(None)
        incremental.remove(self._record_path())
        self._save_intentions(plan.payload)

    def _save_intentions(self, payload: LVSPayload) -> None:
        self.store.save_drain_set({**self.store.drain_set(), **payload.draining})
        self.store.save_drain_deadline(payload.settings.drain_deadline)
        if payload.layouts is not None:
            with paused_gc():       # 10,000 layouts to JSON: acyclic, many allocations
                self.store.save_layouts(payload.layouts, payload.drain_seconds)

    def apply_change(self, change: Change, plan: Plan) -> None:
        if change.kind in state.IPVS_KINDS:
            error = self.apply_batch([change], plan)[0]
            if error is not None:
                raise error
            return
        if self.routing is None:
            raise LVSError(f"{change.describe()}: this target manages no routing")
        self.routing.settings = plan.payload.settings
        self.routing.apply(change, plan.payload.rule_specs)

    def apply_batch(self, changes: list[Change], plan: Plan) -> list[BaseException | None]:
        """IPVS changes in one batch of requests (every one is executed and answered)."""
        with paused_gc():
            codes = self.ipvs.execute([request_for(c) for c in changes])
        return [None if not code else NetlinkError(code, f"{os.strerror(code)} "
                                                         f"({change.describe()})")
                for change, code in zip(changes, codes, strict=True)]

    def finish(self, plan: Plan, result) -> None:
        """Save the drain set (and, for an empty plan, what :meth:`begin` saves), then
        record the fingerprint when the apply ended clean with no drain pending."""
        payload = plan.payload
        if plan.empty:
            self._save_intentions(payload)
        if result.ok:
            self.store.save_drain_set(dict(payload.draining))
        self._record_fingerprint(plan, result)

    def _record_fingerprint(self, plan: Plan, result) -> None:
        """Record the table's and the inputs' digests after a clean apply with no drain
        pending; otherwise remove any record. The table is read again only if IPVS was
        written: an apply without IPVS changes leaves the table the plan read (read
        before it was verified, so a change made since then shows up as a mismatch next
        time; a text the read rejected as disagreeing with the service dump is never
        recorded)."""
        payload = plan.payload
        table = payload.table_digest
        if result.ok and not payload.draining and (
                payload.incremental is not None
                or any(c.kind in state.IPVS_KINDS for c in plan.changes)):
            text = self._proc_text()
            table = None if text is None else fingerprint.table_digest(text)
        if (not result.ok or payload.draining or payload.inputs_digest is None
                or table is None):
            self.store.save_fingerprint(None)
            incremental.remove(self._record_path())
            return
        wanted = fingerprint.record(table, payload.inputs_digest, payload.ipvs_notes,
                                    payload.ipvs_objects)
        if self.store.fingerprint() != wanted:
            self.store.save_fingerprint(wanted)
        if payload.record is None:
            incremental.remove(self._record_path())
        elif not (plan.empty and payload.fast_path):
            incremental.save(self._record_path(), payload.record)
