"""The LVS target's drift check, a piece of the model at a time (``LVSTarget.drifted``).

``elbctl exporter`` asks every ``--drift-interval`` whether a plan of the model would
change the director (:meth:`dcnet.target.Target.drifted`). :meth:`LVSTarget.plan
<dcnet.lvs.backend.LVSTarget.plan>` answers that holding the whole model, its desired
routing, pyroute2's dumps of the owned rules and VIP addresses and the whole
``/proc/net/ip_vs`` text (docs/metrics.md: the drift child's peak at 10,000 x 10). This
check gives the plan's answer from the model's pieces (:class:`dcnet.model.pieces.
Pieces`), taking the same decisions as the plan on the same records:

- the owned routing and sysctls are read as the plan reads them, without pyroute2
  (:mod:`dcnet.lvs.rtread`); each piece's desired rules and VIP addresses are compared
  with them (a VIP in two pieces: the last one counts, as in the plan's dict), then the
  carrier routes, link and sysctls of the model's head and sysctls, and last what is
  read and no piece asks for (a delete);
- the fingerprint's inputs digest is computed from the pieces, the same text hashed a
  piece at a time (:func:`dcnet.lvs.fingerprint.streamed_inputs_digest`); when it is
  the record's and no full read is due, ``/proc/net/ip_vs`` is digested a block at a
  time (:func:`~dcnet.lvs.fingerprint.streamed_table_digest`): when that matches too,
  IPVS is as the last clean apply left it (the plan's fast path) and only routing can
  drift;
- when the inputs differ, the per-service record (:mod:`dcnet.lvs.incremental`) is
  compared a piece at a time, each changed service's desired objects made from its
  piece; when the plan would read those services only, they are read and diffed with
  the drain rules (:func:`dcnet.lvs.backend.plan_changes`; a dest kept draining keeps
  its VIP's address and rule, as in the plan).

Where the plan reads the whole table (a table changed since the last apply, no
record, the owned VIPs changed, a full read due, too many services changed, a drain
pending, ``--exact-read``) :func:`drifted` answers None and the target plans the whole
model: what the full read finds is what the check must answer (:func:`check`, which
records a director it finds at the model).
"""

from __future__ import annotations

import contextlib

from dcnet.lvs import fingerprint, incremental, procfs, rtread, state
from dcnet.lvs.layout import layouts

_ADDRESSED = ("rule", "vip")       # the routing kinds keyed by a VIP


def check(target, pieces) -> bool:
    """``target.drifted(pieces)``: :func:`drifted`, else the whole plan; a whole plan
    that finds the director at the model is recorded as an apply of that empty plan
    would record it (the table's digest as read, a full read now), so the checks after
    it go piecewise again: a full read due (:data:`dcnet.lvs.incremental.FULL_READ_AGE`
    after incremental applies) is then made once, not at every check until the next
    apply."""
    answer = drifted(target, pieces)
    return target.planned_drift(pieces, record=True) if answer is None else answer


def drifted(target, pieces) -> bool | None:
    """Whether ``target``'s (an ``LVSTarget``) plan of the model in ``pieces`` would
    hold any change; None when only the plan's full read can tell."""
    if target.exact_read or target.full_read or target.store.drain_set():
        return None
    registry = target.store.registry()
    head = pieces.head()
    now = target.clock()
    routing = _Routing(target, head)
    vips: set[str] = set(routing.addresses)          # the VIP interface's and the model's
    needs_ipv6 = False
    for model in pieces.models():
        vips.update(str(vip) for service in model.services for _, vip in service.vips)
        needs_ipv6 = needs_ipv6 or state.needs_ipv6_forwarding(model)
        routing.compare_piece(model)
    inputs = fingerprint.streamed_inputs_digest(pieces.chunks, head.lvs.drain_seconds,
                                                registry, vips)
    saved = target.store.fingerprint()
    path = target._record_path()
    # a record with no incremental apply since its full read is never due: then it is
    # not loaded at all (its 10,000 digests are for the incremental path only)
    record = None if incremental.applies_since_full_read(path) == 0 else \
        incremental.load(path)
    if isinstance(saved, dict) and saved.get("inputs") == inputs and \
            incremental.full_read_due(record, now) is None:
        table = _table_digest(target.ipvs)
        if table is None or not fingerprint.matches(saved, table, inputs):
            return None                 # the plan reads the whole table
        return routing.drifted(needs_ipv6)
    if record is None:
        record = incremental.load(path)
    return _incremental(target, pieces, registry, record, vips, now, routing, needs_ipv6)


def _incremental(target, pieces, registry, record, vips, now, routing, needs_ipv6):
    """The plan's incremental read (:func:`dcnet.lvs.incremental.select`, a piece at a
    time): None where it would read everything."""
    if record is None or record.vips != incremental.vips_digest(vips) or \
            incremental.full_read_due(record, now) is not None:
        return None
    recorded = record.services
    seen: set[str] = set()
    changed: set[str] = set()
    desired: dict = {}
    for model in pieces.models():
        piece_layouts = layouts(model)
        digests = incremental.layout_digests(piece_layouts, registry)
        seen.update(digests)
        here = {key for key, digest in digests.items() if recorded.get(key) != digest}
        if here:
            changed |= here
            skeys = frozenset(incremental.text_key(key) for key in here)
            desired.update(incremental.restrict(state.desired_ipvs(
                incremental.layouts_of(piece_layouts, skeys), registry), skeys))
    changed |= {key for key in recorded if key not in seen}
    if not changed or (len(changed) > incremental.MIN_FULL_SHARE
                       and len(changed) * 4 > len(seen)):
        return None
    from dcnet.lvs.backend import plan_changes

    found = incremental.read_services(target.ipvs, frozenset(
        incremental.text_key(key) for key in changed))
    changes, drained = plan_changes(found.state, desired, found.conns, {}, now,
                                    pieces.head().lvs.drain_seconds)
    return bool(changes) or routing.drifted(needs_ipv6, {key[1] for key in drained.draining})


def _table_digest(ipvs) -> str | None:
    """The fingerprint's digest of the namespace's ``/proc/net/ip_vs``, read a block at
    a time from the kernel's (the text whole from any other table); None without it."""
    from dcnet.lvs.ipvs import KernelIPVS

    if not isinstance(ipvs, KernelIPVS):
        text = ipvs.proc_text()
        return None if text is None else fingerprint.table_digest(text)
    try:
        handle = procfs.open_in(ipvs.netns_path)
    except FileNotFoundError:
        return None
    with contextlib.closing(handle):
        return fingerprint.streamed_table_digest(handle)


def _read(routing, head, sysctls) -> dict:
    """The owned routing and sysctls as ``routing.read`` would find them: the kernel's
    through :mod:`dcnet.lvs.rtread`, any other (a fake) through its own ``read``."""
    from dcnet.lvs.routing import Routing

    if type(routing) is not Routing:
        routing.settings = head.lvs
        return routing.read([c.table for c in head.carriers], (), sysctls).state
    netns_path = None
    if routing.netns is not None:
        from dcnet.sysio import netns

        netns_path = netns.path_of(routing.netns)
    return rtread.read(netns_path, head.lvs, sysctls, routing.sysctl_get)


class _Routing:
    """The owned routing and sysctls read once, compared with the model a piece at a
    time as the plan's diff would compare them whole."""

    def __init__(self, target, head):
        self.target = target
        self.current: dict = {}
        self.addresses: list[str] = []
        self.differing: set = set()       # desired VIP objects unlike the current ones
        self.wanted: set[str] = set()     # every VIP a piece asks for
        self.head = head
        if target.routing is None:
            return
        sysctls = [*state.SYSCTLS, state.IPV6_FORWARDING] if target.manage_sysctls else []
        read = _read(target.routing, head, sysctls)
        self.addresses = [ident[1][0] for ident in read if ident[0] == "vip"]
        self.current = {ident: attrs for ident, attrs in read.items()
                        if target._manages(ident[0])}

    def compare_piece(self, model) -> None:
        if not self.target.manage_routing:
            return
        current, differing = self.current, self.differing
        for ident, attrs in state.desired_routing(model).items():
            if ident[0] not in _ADDRESSED:
                continue                     # the head's: compared once, in drifted()
            self.wanted.add(ident[1][0])
            if current.get(ident) != attrs:
                differing.add(ident)
            else:
                differing.discard(ident)

    def drifted(self, needs_ipv6: bool, kept: set[str] = frozenset()) -> bool:
        """Whether the plan's diff of the owned routing and sysctls holds a change
        (``needs_ipv6``: a piece asked for IPv6 forwarding; ``kept``: VIPs whose address
        and rule a draining dest keeps)."""
        target, current = self.target, self.current
        if self.differing:
            return True
        desired: dict = {}
        if target.manage_routing:
            desired.update(state.desired_routing(self.head))     # link, carrier routes
        if target.manage_sysctls:
            wanted = dict(state.SYSCTLS)
            if needs_ipv6:
                wanted[state.IPV6_FORWARDING] = "1"
            desired.update({("sysctl", (name,)): {"value": value}
                            for name, value in wanted.items()})
        for ident, attrs in current.items():
            if ident[0] == "sysctl" and ident not in desired:
                continue                     # read, but not asked for: the plan skips it
            if ident[0] in _ADDRESSED:
                if ident[1][0] not in self.wanted and ident[1][0] not in kept:
                    return True
                continue
            if desired.get(ident) != attrs:
                return True
        return any(ident not in current for ident in desired)
