"""The nft target's drift check, a piece of the model at a time (``NftTarget.drifted``).

``elbctl exporter`` asks every ``--drift-interval`` whether a plan of the model would
change the table (:meth:`dcnet.target.Target.drifted`). The plan's fast path
(:mod:`dcnet.nft.target`) already answers that from the apply record when the
namespace's generation id is the record's: a VIP:port whose inputs digest to the
record's is unchanged, and only the others are built and diffed. This check gives the
same answer without the whole model, the whole inputs or the record's objects in memory
(at 10,000 x 10 the plan's drift child peaked at 88 MiB; docs/metrics.md):

- the record is read as an :class:`dcnet.nft.fingerprint.Index` (each group's input
  digest and where its objects are; the objects JSON, most of the file, stays on disk);
- the model's services come a piece at a time (:class:`dcnet.model.pieces.Pieces`);
  each piece's inputs are made and digested (no memo: the inputcache's would keep them
  all), and a VIP:port whose digest differs from the record's is built and compared with
  the record's objects of it, as the plan's diff would: the first difference answers;
- then the VIP:ports the record holds and the model no longer does, the table's own
  objects (the carrier marks, and with ``--nft-dr`` the DR table's shared objects, made
  of every DR port's devices and real servers, gathered piece by piece) and, with
  carrier routing, the fwmark rules and carrier routes.

Where the answer is not the plan's: the plan raises when a DR real server cannot be
forwarded to (:func:`dcnet.nft.drio.resolve`); this check, which resolves them once
every piece is read, answers True when it finds a difference before then (a drift the
plan refuses to carry is a drift) and raises as the plan does otherwise.

When the generation id differs from the record's (another nft user committed, or no
clean apply recorded) the plan must read the table: :func:`drifted` answers None and
the target plans the whole model.
"""

from __future__ import annotations

from dcnet.nft import carriers, dr, drio, fingerprint, ruleset
from dcnet.plan import diff


def drifted(target, pieces) -> bool | None:
    """Whether ``target``'s (an ``NftTarget``) plan of the model in ``pieces`` would hold
    any change; None when only a full read can tell (the record does not vouch for the
    namespace)."""
    head = pieces.head()
    marks = carriers.marks(head) if target.carrier_routing else {}
    all_marks = tuple(sorted(set(marks.values())))
    index = fingerprint.index(target.fingerprint_path())
    if index is None or (index.record.genid, index.record.identity) != (
            target.nft.genid(), target.nft.identity()):
        return None
    if target.carrier_routing:
        lvs = head.lvs
        routing = (lvs.rule_priority_min, lvs.rule_priority_max, lvs.route_protocol)
        if diff(target._routes(routing).read(all_marks), carriers.desired(head)):
            return True
    recorded = index.record.groups
    registry, down = target._registry(), target._down()
    seen: set[str] = set()
    devices: set[str] = set()
    rips: set[str] = set()
    for model in pieces.models():
        found, _notes = ruleset.inputs(model, registry, target.maglev_size, marks, down)
        if target.dr:
            dr_found, _dr_notes = dr.inputs(model, registry, target.maglev_size, down)
            found, _notes = dr.extend(found, (), dr_found, ())
            piece_devices, piece_rips = dr.needs(found)
            devices.update(piece_devices)
            rips.update(piece_rips)
        for key3, service in found.items():
            group = fingerprint.group_text(key3)
            seen.add(group)
            if recorded.get(group) != service.digest() and _differs(
                    index, group, ruleset.build([service], False).state):
                return True
    if any(_differs(index, group, {}) for group in recorded
           if group != fingerprint.INFRA and group not in seen):
        return True
    dr_infra = drio.infra_for(target.netns, tuple(sorted(devices)), tuple(sorted(rips)))
    infra = ruleset.digest(repr(all_marks) + (repr(dr_infra) if dr_infra else ""))
    return recorded.get(fingerprint.INFRA) != infra and _differs(
        index, fingerprint.INFRA, ruleset.build([], True, (), all_marks, dr_infra).state)


def _differs(index: fingerprint.Index, group: str, wanted) -> bool:
    """Whether the plan's diff of ``group`` (its ``wanted`` objects against the record's)
    holds a change."""
    held = index.objects(group) if group in index.where else {}
    return bool(diff(held, wanted))
