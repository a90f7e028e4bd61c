"""The ``nft`` target of ``elbctl plan|apply``: the ELB of the service model in nftables.

It owns only ``table inet dcnet`` (see :mod:`dcnet.nft.ruleset` for what is in it). A plan
reads that table (two ``nft -j list`` calls, never the whole ruleset), derives the
desired ruleset from the model (pure), diffs them and carries in its payload the rules
and map elements every created or updated object needs, so a fresh instance can apply
it. Every kind is batched and the batch is unbounded: an apply is ONE ``nft -f``
transaction holding every change, which nft applies entirely or not at all (a refused
transaction reports every change of it as failed and nothing as applied, so there is
nothing to undo). A no-op plan runs no transaction.

Incremental sync (:mod:`dcnet.nft.fingerprint`): a plan first reads the namespace's
nftables generation id; when it equals the one recorded after the last clean apply, the
listing is skipped and only the VIP:ports whose inputs changed are built and diffed
(their current objects come from the record). Such a plan's ``read_digest`` is
``gen:<id>``: any commit in the namespace makes it stale. Within one process it digests
and compares only the VIP:ports :func:`dcnet.nft.inputcache.inputs_delta` names (the
services that are not the same objects as in the previous plan) while it knows the
record agrees with the rest (:class:`Baseline`: its own last plan compared, or its own
last apply wrote, that very record object); otherwise every VIP:port.

Options: ``--nft-netns`` / ``$DCNET_NFT_NETNS`` (run nft inside that named namespace),
``--nft-state-dir`` / ``$DCNET_NFT_STATE_DIR`` (where the lock lives; one lock per
namespace), ``--nft-maglev-size`` (minimum prime size of Maglev tables).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from dcnet.nft import (
    bulk,
    carriers,
    dr,
    drift,
    drio,
    fastpath,
    fingerprint,
    inputcache,
    maglev,
    ruleset,
)
from dcnet.nft import script as nftscript
from dcnet.nft.nftio import Nft, NftError, NftUnavailable
from dcnet.nft.options import DEFAULT_STATE_DIR, OPTIONS
from dcnet.plan import Change, Plan, State, diff, state_digest
from dcnet.target import Snapshot, Target


@dataclass(frozen=True)
class NftPayload:
    """What applying a plan needs besides its changes (immutable)."""

    bodies: Mapping               # (kind, key) -> commands filling a created/updated object
    genid: int                    # the generation the plan was read at
    identity: str                 # the namespace it was read in
    groups: Mapping               # record lines of the groups planned (None: group gone)
    replace_all: bool             # groups is the whole record (full read) or a delta
    objects_after: int            # owned objects once applied
    fast_path: bool               # planned from the record, without a listing
    routing: tuple | None = None  # carrier routing: (rule prio min, max, route proto, tables)
    inputs_token: str = ""        # inputcache's token of the inputs planned ("": none)


@dataclass(frozen=True)
class Baseline:
    """What this process knows of a record (per record path): the record object (as
    :func:`dcnet.nft.fingerprint.load` memoizes it) agrees with the inputs of
    ``token`` in every VIP:port but those of ``pending`` (group text -> key, None: a
    group of the record no longer desired)."""

    record: object
    token: str
    pending: Mapping


RERENDER = ("rerender", ("inet", "dcnet"))


def _fixed_chains_differ(current: Mapping, desired: Mapping) -> bool:
    """Whether the table holds the flat layout's fixed chains (``lb``, ``lbgroup``) and
    any differs from the desired one (an upgrade of the layout, or a hand edit): then the
    plan deletes the table and creates every object anew in the same transaction. nft
    1.0.6 cannot add a rule naming a ``typeof`` map of an existing table whose key holds
    ``ip daddr . … th dport`` (it rebuilds the key from the kernel's user data and fails:
    "conflicting protocols specified: ip vs. th"); in one script with the map's own
    declaration it can."""
    held = {i: a for i, a in current.items() if i[0] in ("lb", "lbgroup")}
    if not held:
        return False
    wanted = {i: a for i, a in desired.items() if i[0] in ("lb", "lbgroup")}
    return held != wanted


class RecordLines(Mapping):
    """A full read's record lines (group text -> (input digest, objects JSON)), made on
    first use from the desired state: the apply makes them while nft commits."""

    def __init__(self, state: Mapping, found: Mapping, infra_digest: str):
        self._args: tuple | None = (state, found, infra_digest)
        self._lines: Mapping = MappingProxyType({})

    def prepare(self) -> Mapping:
        if self._args is not None:
            state, found, infra_digest = self._args
            grouped: dict[str, list] = {}
            for ident, attrs in state.items():
                grouped.setdefault(fingerprint.group_text(ruleset.group_of(ident)),
                                   []).append((ident, attrs))
            digests = {fingerprint.group_text(k): inputcache.digest(s)
                       for k, s in found.items()}
            digests[fingerprint.INFRA] = infra_digest
            self._lines = MappingProxyType({g: (digests[g], fingerprint.encode(items))
                                            for g, items in grouped.items()})
            self._args = None
        return self._lines

    def __getitem__(self, group: str):
        return self.prepare()[group]

    def __iter__(self):
        return iter(self.prepare())

    def __len__(self) -> int:
        return len(self.prepare())


_baselines: dict[str, Baseline] = {}    # record path -> Baseline


class NftTarget(Target):
    name = "nft"
    kind_order = ruleset.KIND_ORDER
    options = OPTIONS
    batch_kinds = frozenset(ruleset.NFT_KINDS)
    batch_size = 1 << 62            # one transaction for the whole plan
    refused_errors = (NftError, nftscript.MissingBody, fastpath.FastPathError, ValueError)
    unavailable_errors = (NftUnavailable,)

    def __init__(self, netns: str | None = None, state_dir: str | None = None,
                 maglev_size: int | None = None, carrier_routing: bool = False,
                 registry_dir: str | None = None, health: bool = False, dr: bool = False):
        self.netns = netns or None
        self.dr = bool(dr)
        self.health = bool(health)
        self.registry_dir = registry_dir or None
        self.carrier_routing = bool(carrier_routing)
        self.routes: carriers.Routes | None = None
        self.state_dir = state_dir or DEFAULT_STATE_DIR
        self.maglev_size = maglev_size or maglev.DEFAULT_SIZE
        if not maglev.is_prime(self.maglev_size):
            raise NftError(f"--nft-maglev-size {self.maglev_size} is not prime")
        self.nft = Nft(self.netns)

    def lock_path(self) -> str:
        return os.path.join(self.state_dir, f"lock-{self.netns or 'host'}")

    def fingerprint_path(self) -> str:
        return os.path.join(self.state_dir, f"fingerprint-{self.netns or 'host'}")

    # ------------------------------------------------------------------ read and plan

    def read(self, model) -> Snapshot:
        listing = self.nft.read()
        return Snapshot(MappingProxyType(listing.state), listing.notes, listing.digest)

    def desired(self, model, current: Snapshot) -> State:
        """The whole desired state (what :meth:`plan` diffs, group by group on its fast
        path): the ruleset, and with carrier routing the rules and routes too."""
        marks = carriers.marks(model) if self.carrier_routing else {}
        found, notes = ruleset.inputs(model, self._registry(), self.maglev_size, marks,
                                      self._down())
        found, notes, dr_infra = self._with_dr(model, found, notes)
        state = dict(ruleset.build(found.values(), True, notes, tuple(marks.values()),
                                   dr_infra).state)
        if self.carrier_routing:
            state.update(carriers.desired(model))
        return MappingProxyType(state)

    def plan(self, model) -> Plan:
        """The fast path when the generation id matches the last clean apply's record,
        else the full read (see :mod:`dcnet.nft.fingerprint`); with carrier routing the
        fwmark rules and carrier routes are read (one rule and one route dump) and
        diffed too."""
        marks = carriers.marks(model) if self.carrier_routing else {}
        found, notes, delta = inputcache.inputs_delta(model, self._registry(),
                                                      self.maglev_size, marks, self._down())
        found, notes, dr_infra = self._with_dr(model, found, notes)
        if self.dr:                        # DR inputs are not in inputcache's delta
            delta = inputcache.Delta("", "", None)
        all_marks = tuple(sorted(set(marks.values())))
        infra = ("infra", ruleset.digest(repr(all_marks) + (repr(dr_infra) if dr_infra else "")))
        routing = None
        r_current: dict = {}
        r_want: dict = {}
        if self.carrier_routing:
            lvs = model.lvs
            routing = (lvs.rule_priority_min, lvs.rule_priority_max, lvs.route_protocol,
                       all_marks)
            r_current = self._routes(routing).read(routing[3])
            r_want = carriers.desired(model)
        suffix = f"|{state_digest(r_current)}" if routing else ""
        genid, identity = self.nft.genid(), self.nft.identity()
        record = fingerprint.load(self.fingerprint_path())
        base = NftPayload(MappingProxyType({}), genid, identity, MappingProxyType({}), True,
                          0, False, routing, delta.after)
        if record is not None and (record.genid, record.identity) == (genid, identity):
            return self._fast_plan(found, notes, record, infra, all_marks, base, r_current,
                                   r_want, suffix, dr_infra, self._candidates(record, delta))
        current = self.read(model)
        want = ruleset.build(found.values(), True, notes, all_marks, dr_infra)
        payload = dataclasses.replace(base, groups=RecordLines(want.state, found, infra[1]),
                                      objects_after=len(want.state))
        held = current.state
        if _fixed_chains_differ(held, want.state):   # table inet dcnet anew
            held = {i: a for i, a in held.items() if i[0].startswith("dr") or i[0] == "legacy"}
            held[RERENDER] = {"objects": len(current.state) - len(held)}
        return self._build({**held, **r_current}, want, r_want, current.notes,
                           current.digest + suffix, payload, objects=len(current.state)
                           + len(r_current))

    def drifted(self, pieces) -> bool:
        """A piece of the model at a time while the apply record vouches for the
        namespace (:mod:`dcnet.nft.drift`), else the whole model planned: a full read
        that finds the table at the model records it at this generation, as an apply of
        that empty plan would, so the next checks go piecewise again (another nft user's
        commit moves the generation past the record)."""
        answer = drift.drifted(self, pieces)
        return self.planned_drift(pieces, record=True) if answer is None else answer

    def _candidates(self, record, delta) -> dict | None:
        """The groups that may differ from ``record`` (group text -> key, None: not
        desired), when this process knows the record agrees with the inputs of
        ``delta.before`` elsewhere (:class:`Baseline`); None: compare every group."""
        known = _baselines.get(self.fingerprint_path())
        if (known is None or known.record is not record or delta.keys is None
                or not delta.before or known.token != delta.before):
            return None
        return {**known.pending, **{fingerprint.group_text(k): k for k in delta.keys}}

    def _fast_plan(self, found: dict, notes, record, infra, marks, base, r_current, r_want,
                   suffix, dr_infra=None, candidates: dict | None = None) -> Plan:
        if candidates is None:             # compare every VIP:port with the record
            digests = {fingerprint.group_text(k): (k, inputcache.digest(s))
                       for k, s in found.items()}
            gone = {g for g in record.groups if g not in digests}
        else:                              # only those that may have changed
            digests = {g: (k, inputcache.digest(found[k])) for g, k in candidates.items()
                       if k is not None and k in found}
            gone = {g for g in candidates if g not in digests and g in record.groups}
            gone.discard(fingerprint.INFRA)
        digests[fingerprint.INFRA] = infra
        touched = {g for g, (_k, d) in digests.items()
                   if record.groups.get(g, ("",))[0] != d} | gone
        if base.inputs_token:
            _baselines[self.fingerprint_path()] = Baseline(
                record, base.inputs_token,
                MappingProxyType({g: digests[g][0] if g in digests else None
                                  for g in touched if g != fingerprint.INFRA}))
        current: dict = {}
        for g in touched & set(record.groups):
            current.update(fingerprint.decode(record.groups[g][1]))
        want = ruleset.build([found[digests[g][0]] for g in sorted(touched)
                              if g in digests and g != fingerprint.INFRA],
                             fingerprint.INFRA in touched, notes, marks, dr_infra)
        grouped: dict[str, list] = {g: [] for g in touched if g in digests}
        for ident, attrs in want.state.items():
            grouped[fingerprint.group_text(ruleset.group_of(ident))].append((ident, attrs))
        groups: dict = dict.fromkeys(touched)
        groups.update({g: (digests[g][1], fingerprint.encode(items))
                       for g, items in grouped.items()})
        after = record.objects - len(current) + len(want.state)
        payload = dataclasses.replace(base, genid=record.genid, groups=MappingProxyType(groups),
                                      replace_all=False, objects_after=after, fast_path=True)
        return self._build({**current, **r_current}, want, r_want, (),
                           f"gen:{record.genid}{suffix}", payload,
                           objects=record.objects + len(r_current))

    def _build(self, current, want, r_want, read_notes, read_digest, payload,
               objects=None) -> Plan:
        changes = diff(current, {**want.state, **r_want})
        bodies = {ident: want.bodies[ident] for ident in
                  ((c.kind, c.key) for c in changes) if ident in want.bodies}
        payload = dataclasses.replace(payload, bodies=MappingProxyType(bodies))
        return Plan.build(self.name, changes, self.kind_order, (*read_notes, *want.notes),
                          read_digest=read_digest,
                          objects=len(current) if objects is None else objects,
                          payload=payload)

    def _with_dr(self, model, found: dict, notes: tuple) -> tuple[dict, tuple, object]:
        """With ``--nft-dr``: the DR ports' inputs added (:mod:`dcnet.nft.dr`) and the DR
        table's shared objects (their devices looked up in the namespace)."""
        if not self.dr:
            return found, notes, None
        dr_found, dr_notes = dr.inputs(model, self._registry(), self.maglev_size, self._down())
        found, notes = dr.extend(found, notes, dr_found, dr_notes)
        return found, notes, drio.infra(self.netns, found)

    def _registry(self) -> dict | None:
        """The LVS dynamic registry (``elbctl backend``), when one is configured: its
        ``draining`` servers get weight 0, ``removed`` ones go, ``active`` ones are added."""
        if self.registry_dir is None:
            return None
        from dcnet.lvs.store import Store

        return Store(self.registry_dir).registry()

    def _down(self) -> frozenset[str]:
        """With ``--nft-health``: the checks ``elbctl health`` last wrote down."""
        if not self.health:
            return frozenset()
        from dcnet.health import state

        return state.read_down(state.path_of(self.state_dir, self.netns))

    def _routes(self, routing: tuple) -> carriers.Routes:
        if self.routes is None or (self.routes.low, self.routes.high,
                                   self.routes.proto) != routing[:3]:
            if self.routes is not None:
                self.routes.close()
            self.routes = carriers.Routes(self.netns, *routing[:3])
        return self.routes

    def current_digest(self, plan: Plan) -> str:
        p = plan.payload
        suffix = (f"|{state_digest(self._routes(p.routing).read(p.routing[3]))}"
                  if p.routing else "")
        if (plan.read_digest or "").startswith("gen:"):
            return f"gen:{self.nft.genid()}{suffix}"
        return self.nft.digest() + suffix

    def close(self) -> None:
        if self.routes is not None:
            self.routes.close()
            self.routes = None

    # ------------------------------------------------------------------ apply

    def apply_batch(self, changes: list[Change], plan: Plan) -> list[BaseException | None]:
        """All ``changes`` as one nft transaction: all applied, or all failed."""
        try:
            if fastpath.eligible(changes, plan.payload.bodies):   # chains only: no nft cache
                self.nft.commands += fastpath.apply(self.netns, changes, plan.payload.bodies)
                self.nft.transactions += 1
            elif bulk.eligible(changes, plan.objects):
                self._bulk(changes, plan)
            else:                # the record's lines are made while nft commits
                self.nft.run_script(nftscript.script_pieces(changes, plan.payload.bodies),
                                    getattr(plan.payload.groups, "prepare", None))
        except (NftError, nftscript.MissingBody, fastpath.FastPathError) as exc:
            return [exc] * len(changes)
        return [None] * len(changes)

    def _bulk(self, changes: list[Change], plan: Plan) -> None:
        """One raw batch (:mod:`dcnet.nft.bulk`), or ``nft -f`` when the table's own
        objects cannot be replayed so; the record's lines are made while the kernel
        takes the batch."""
        prepare = getattr(plan.payload.groups, "prepare", None)
        try:
            self.nft.commands += bulk.apply(self.netns, changes, plan.payload.bodies, prepare)
        except bulk.NotBulk:
            self.nft.run_script(nftscript.script_pieces(changes, plan.payload.bodies), prepare)
            return
        self.nft.transactions += 1

    def apply_change(self, change: Change, plan: Plan) -> None:
        if change.kind in ("route", "rule"):
            self._routes(plan.payload.routing).apply(change)
            return
        error = self.apply_batch([change], plan)[0]
        if error is not None:
            raise error

    def finish(self, plan: Plan, result) -> None:
        """After a clean apply, record the generation our transaction produced (only if
        it is exactly the planned one plus that transaction: nobody else committed)."""
        p = plan.payload
        if not result.ok or not (p.replace_all or p.groups):
            return
        path = self.fingerprint_path()
        ran = any(c.kind in self.batch_kinds for c in plan.changes)
        expected = p.genid + (1 if ran else 0)
        if (self.nft.genid(), self.nft.identity()) != (expected, p.identity):
            fingerprint.remove(path)
            return
        if p.replace_all:
            groups = {g: v for g, v in p.groups.items() if v is not None}
        else:
            old = fingerprint.load(path)
            if old is None or old.genid != p.genid:
                fingerprint.remove(path)
                return
            groups = dict(old.groups)
            for g, v in p.groups.items():
                if v is None:
                    groups.pop(g, None)
                else:
                    groups[g] = v
        record = fingerprint.Record(expected, p.identity, p.objects_after, groups)
        if p.replace_all:
            fingerprint.save(path, record)
        else:                                     # one line appended, not every service
            fingerprint.append(path, old, record, p.groups)
        if p.inputs_token:                        # the record now agrees with every input
            _baselines[path] = Baseline(fingerprint.load(path), p.inputs_token,
                                        MappingProxyType({}))

    def counters(self) -> dict[str, int]:
        return {"nft_transactions": self.nft.transactions, "nft_commands": self.nft.commands,
                "rtnetlink": self.routes.writes if self.routes else 0}
