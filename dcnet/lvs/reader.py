"""Reading the IPVS part of an LVS director's state: services, dests, connections.

One read of ``/proc/net/ip_vs`` gives the dests of every service (:mod:`dcnet.lvs.procfs`:
address, port, forwarding, weight, connection counters), one generic-netlink dump the
services; the dests of services in ``exact_for`` (those whose desired dests set what the
file does not show: thresholds), and of every service with ``exact=True``, are read by
one generic-netlink dest dump each. Owned services are those on an owned VIP; every
other service (and every fwmark service) is returned as unowned, to be reported.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dcnet.lvs import procfs, state


@dataclass
class IPVSRead:
    """What one read of the IPVS table found."""

    state: dict = field(default_factory=dict)
    conns: dict = field(default_factory=dict)        # dest key -> connections
    unowned: list = field(default_factory=list)      # WireServices left alone
    text_rejected: bool = False     # the /proc text disagreed with the service dump


def read_ipvs(ipvs, vips: set[str], exact_for=frozenset(), text: str | None = None,
              exact: bool = False) -> IPVSRead:
    """The IPVS state of the services on ``vips``. ``text``: ``/proc/net/ip_vs`` as
    already read (read BEFORE the service dump, so its digest never vouches for a change
    the dump saw and the plan did not repair); None (or ``exact``) reads every dest by
    generic netlink. The text is trusted only when it lists exactly the services of the
    dump; otherwise (a table changed mid-read, a text from another namespace) every dest
    is read by generic netlink instead and ``text_rejected`` says so."""
    out = IPVSRead()
    current, conns = out.state, out.conns
    owned = []
    for ws in ipvs.services():
        observed = state.observed_service(ws)
        if observed is None or observed[0][1] not in vips:
            out.unowned.append(ws)
        else:
            owned.append((ws, *observed))
    bulk = None if exact or text is None or not owned else procfs.parse(text)
    if bulk is not None and set(bulk) != {procfs.service_id(ws) for ws, *_ in owned} | {
            procfs.service_id(ws) for ws in out.unowned}:
        bulk = None
        out.text_rejected = True
    forward_names = state.FORWARD_NAMES
    shared: dict[tuple, dict] = {}    # one attrs dict per (forward, weight): never mutated
    for ws, skey, attrs in owned:
        current[("service", skey)] = attrs
        if bulk is None or skey in exact_for:
            rows = ipvs.dest_rows(ws)
        else:
            rows = bulk.get(procfs.service_id(ws))
            if rows is None:  # in the dump, not in the text: never take it as empty
                rows = ipvs.dest_rows(ws)
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
    return out


def unowned_notes(unowned: list) -> list[str]:
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
