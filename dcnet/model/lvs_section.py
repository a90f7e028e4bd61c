"""The model's ``lvs`` section: what elbctl owns on an LVS director, and its VRRP layout.

elbctl touches only its own objects: VIPs on its own interface, policy rules in a
reserved priority range, and routes in the carrier tables marked with its own route
protocol number. Removed real servers drain for at most ``drain_seconds`` (a full
apply keeps a dest that left the model at weight 0 that long while it has connections);
``elbctl backend drain|remove`` waits at most ``drain_deadline`` seconds for a drained
server's active connections to end before it says "deadline passed".

For keepalived (``elbctl render keepalived``) the section also declares the directors
(name and VRRP priority) and the director groups: a group is one ``vrrp_instance``
holding the VIPs of some carriers, advertised on one interface with one virtual router
id. Without groups every carrier gets its own group, on its uplink, with router id
``vrrp_router_id_base`` + its index.
"""

from __future__ import annotations

from dataclasses import dataclass

from dcnet.model import fields as f

_IFNAME = f.text(r"[^\s/:]{1,15}", "an interface name of 1-15 characters")
_LABEL = f.text(r"[a-z][a-z0-9-]{0,31}", "a lower-case label (letters, digits, '-')")
_ROUTER_ID = f.integer(1, 255)


@dataclass(frozen=True)
class Director:
    """One LVS director host: its name and its VRRP priority (highest is MASTER)."""

    name: str
    priority: int = 100


@dataclass(frozen=True)
class DirectorGroup:
    """One VRRP instance: the carriers whose VIPs it holds, where it advertises."""

    name: str
    carriers: tuple[str, ...]
    virtual_router_id: int | None = None  # None: vrrp_router_id_base + group index
    interface: str | None = None          # None: vrrp_interface, else first carrier's uplink
    advert_int: int = 1


@dataclass(frozen=True)
class LVSSettings:
    vip_interface: str = "elb0"     # elbctl's own interface holding the VIPs
    rule_priority_min: int = 20000  # reserved range for elbctl's policy rules
    rule_priority_max: int = 20999
    route_protocol: int = 180       # rtnetlink protocol number marking elbctl's routes
    drain_seconds: int = 300        # how long a removed real server may drain
    drain_deadline: int = 30        # how long `elbctl backend drain|remove` waits
    vrrp_interface: str | None = None   # default VRRP interface of every group
    vrrp_router_id_base: int = 50       # router id of derived group i: base + i
    directors: tuple[Director, ...] = ()
    director_groups: tuple[DirectorGroup, ...] = ()

    def groups(self, carriers) -> tuple[DirectorGroup, ...]:
        """The director groups with every default filled in (one per carrier if none)."""
        declared = self.director_groups or tuple(
            DirectorGroup(name=c.name, carriers=(c.name,)) for c in carriers)
        uplinks = {c.name: c.uplink for c in carriers}
        out = []
        for index, group in enumerate(declared):
            vrid = group.virtual_router_id or self.vrrp_router_id_base + index
            iface = group.interface or self.vrrp_interface or uplinks.get(group.carriers[0], "")
            out.append(DirectorGroup(group.name, group.carriers, vrid, iface, group.advert_int))
        return tuple(out)


def read(problems: f.Problems, path: tuple, data: object) -> LVSSettings | None:
    if data is None:
        return LVSSettings()
    r = f.MappingReader(problems, path, data, "the lvs section")
    d = LVSSettings()
    values = {
        "vip_interface": r.optional("vip_interface", _IFNAME, d.vip_interface),
        "rule_priority_min": r.optional("rule_priority_min", f.integer(1, 32765),
                                        d.rule_priority_min),
        "rule_priority_max": r.optional("rule_priority_max", f.integer(1, 32765),
                                        d.rule_priority_max),
        "route_protocol": r.optional("route_protocol", f.integer(5, 255), d.route_protocol),
        "drain_seconds": r.optional("drain_seconds", f.integer(0, 86400), d.drain_seconds),
        "drain_deadline": r.optional("drain_deadline", f.integer(0, 3600), d.drain_deadline),
        "vrrp_interface": r.optional("vrrp_interface", _IFNAME, None),
        "vrrp_router_id_base": r.optional("vrrp_router_id_base", _ROUTER_ID,
                                          d.vrrp_router_id_base),
    }
    raw_directors = r.optional("directors", f.raw, [])
    raw_groups = r.optional("director_groups", f.raw, [])
    ok = r.finish()
    directors = [_read_director(problems, (*path, "directors", i), item) for i, item in
                 enumerate(f.list_of((*path, "directors"), problems, raw_directors,
                                     "directors"))]
    groups = [_read_group(problems, (*path, "director_groups", i), item) for i, item in
              enumerate(f.list_of((*path, "director_groups"), problems, raw_groups,
                                  "director_groups"))]
    if not ok or any(x is None for x in (*directors, *groups)):
        return None
    settings = LVSSettings(**values, directors=tuple(directors),
                           director_groups=tuple(groups))
    if settings.rule_priority_min > settings.rule_priority_max:
        problems.add((*path, "rule_priority_min"), "rule_priority_min is above "
                     "rule_priority_max")
        return None
    return settings


def _read_director(problems: f.Problems, path: tuple, data: object) -> Director | None:
    r = f.MappingReader(problems, path, data, "a director")
    values = {"name": r.required("name", _LABEL),
              "priority": r.optional("priority", f.integer(1, 254), 100)}
    return Director(**values) if r.finish() else None


def _carrier_names(value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise ValueError("must be a non-empty list of carrier names")
    return tuple(_LABEL(v) for v in value)


def _read_group(problems: f.Problems, path: tuple, data: object) -> DirectorGroup | None:
    r = f.MappingReader(problems, path, data, "a director group")
    values = {"name": r.required("name", _LABEL),
              "carriers": r.required("carriers", _carrier_names),
              "virtual_router_id": r.optional("virtual_router_id", _ROUTER_ID, None),
              "interface": r.optional("interface", _IFNAME, None),
              "advert_int": r.optional("advert_int", f.integer(1, 255), 1)}
    return DirectorGroup(**values) if r.finish() else None


def check(settings: LVSSettings, carriers, services, problems: f.Problems) -> None:
    """Directors and groups: unique names; groups name known carriers, each carrier in at
    most one group; virtual router ids unique and in 1..255.

    Rules for different VIPs may share a priority (their selectors are disjoint), so the
    reserved range does not limit the number of VIPs."""
    _unique(problems, ("lvs", "directors"), [d.name for d in settings.directors], "director")
    groups = settings.director_groups
    _unique(problems, ("lvs", "director_groups"), [g.name for g in groups], "director group")
    known = {c.name for _, c in carriers}
    owner: dict[str, str] = {}
    for i, group in enumerate(groups):
        for j, name in enumerate(group.carriers):
            where = ("lvs", "director_groups", i, "carriers", j)
            if name not in known:
                problems.add(where, f"unknown carrier {name!r} (known: "
                             f"{', '.join(sorted(known))})")
            elif name in owner:
                problems.add(where, f"carrier {name!r} is already in group {owner[name]!r}")
            owner.setdefault(name, group.name)
    count = len(groups) or len(carriers)
    seen: dict[int, int] = {}
    for i in range(count):
        explicit = groups[i].virtual_router_id if groups else None
        vrid = explicit or settings.vrrp_router_id_base + i
        where = (("lvs", "director_groups", i, "virtual_router_id") if explicit
                 else ("lvs", "vrrp_router_id_base"))
        if vrid > 255:
            problems.add(where, f"derived virtual router id {vrid} of group {i} is above 255")
        elif vrid in seen:
            problems.add(where, f"virtual router id {vrid} is used by two groups "
                         f"({seen[vrid]} and {i})")
        seen.setdefault(vrid, i)


def _unique(problems: f.Problems, path: tuple, names: list[str], what: str) -> None:
    seen: set[str] = set()
    for i, name in enumerate(names):
        if name in seen:
            problems.add((*path, i, "name"), f"duplicate {what} name {name!r}")
        seen.add(name)
