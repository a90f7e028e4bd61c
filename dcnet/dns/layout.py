"""What the DNS views hold, derived from the model (pure): ACLs, views, zones, records.

One ACL and one view per carrier that has a client CIDR list (in model order; IPv4 and
IPv6 prefixes alike), then the default line's view last, matching ``any``. Each view
holds the ELB zone with, per service and address family, one record (A for IPv4, AAAA
for IPv6): the carrier's own VIP of that family, or the default line's VIP of that family
when the carrier is marked ``down`` or the service has no VIP of that family on it
(health-aware fallback), or no record of that type when the default line has none
either. So a carrier with only IPv4 VIPs answers AAAA with the default line's IPv6 VIP.
A zone whose content is identical to one in an earlier view is not declared twice: it
is shared with ``in-view``, but only when the two are also identical with every carrier
up and no answer withdrawn. So which views share a zone never changes when a carrier is
marked down or ``elbctl dns follow`` withdraws an answer (``model.dns.withdrawn``): a
withdrawal or restore is a zone reload, never a reconfig
that re-declares zones (during which BIND answered another view's clients wrongly or
not at all, once each: tests/netns/test_chaos_dns.py). A non-default carrier without
a CIDR list gets no view (its clients, if any, are unknown to DNS and get the default
view).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cached_property

from dcnet.model import Carrier, Model, Service
from dcnet.model.types import IPAddress, IPNetwork

NS_LABEL = "dcnet-ns"     # the zone's own name server record (an in-zone A record)


class LayoutError(ValueError):
    """The model cannot be laid out as BIND views (e.g. a name clashes with the NS name)."""


@dataclass(frozen=True)
class Record:
    """One answer: a name relative to the zone, A or AAAA, and the address."""

    name: str
    type: str
    address: str


@dataclass(frozen=True)
class ZoneData:
    """The content of one zone in one view (everything except the SOA serial)."""

    zone: str
    ttl: int
    records: tuple[Record, ...]

    def digest(self) -> str:
        """A content hash; the SOA serial moves only when it changes."""
        return self._digest

    @cached_property
    def _digest(self) -> str:
        text = "".join(f"{r.name} {r.type} {r.address}\n" for r in self.records)
        return hashlib.sha256(f"{self.zone} {self.ttl}\n{text}".encode()).hexdigest()


@dataclass(frozen=True)
class ACL:
    name: str               # BIND acl name, "carrier-<carrier>"
    carrier: str
    prefixes: tuple[IPNetwork, ...]


@dataclass(frozen=True)
class View:
    name: str               # the carrier's name
    match: str              # ACL name, or "any" for the default view


@dataclass(frozen=True)
class ZoneDecl:
    """A zone as declared in a view: its own file, or shared from an earlier view."""

    view: str
    zone: str
    data: ZoneData
    file: str | None        # zone file name (relative to the BIND directory)
    in_view: str | None     # shared: the earlier view that declares it

    @property
    def key(self) -> tuple[str, str]:
        return (self.view, self.zone)


@dataclass(frozen=True)
class Layout:
    acls: tuple[ACL, ...]
    views: tuple[View, ...]
    zones: tuple[ZoneDecl, ...]
    notes: tuple[str, ...] = ()

    def zone(self, view: str, zone: str) -> ZoneDecl:
        return next(z for z in self.zones if z.key == (view, zone))


def acl_name(carrier: str) -> str:
    return f"carrier-{carrier}"


def zone_file_name(view: str, zone: str) -> str:
    return f"db.{view}.{zone}"


def answer(service: Service, carrier: Carrier, model: Model) -> IPAddress:
    """The VIP a client of ``carrier`` gets (the A answer of a dual-stack service): its
    own, or the default line's as fallback."""
    return _answers(service, carrier, model)[0]


def answers(service: Service, carrier: Carrier, model: Model) -> tuple[IPAddress, ...]:
    """Every answer a client of ``carrier`` gets, per address family (IPv4 first): its
    own VIP of that family, else the default line's VIP of that family, else none."""
    return _answers(service, carrier, model)


def falls_back(service: Service, carrier: Carrier, model: Model) -> bool:
    """Whether ``carrier``'s clients get the default line's VIPs for ``service`` although
    it has its own: the carrier is marked down, or health withdrew this answer
    (``model.dns.withdrawn``, set by ``elbctl dns follow``)."""
    return carrier.down or (service.name, carrier.name) in model.dns.withdrawn


def _answers(service: Service, carrier: Carrier, model: Model,
             all_up: bool = False) -> tuple[IPAddress, ...]:
    out = []
    default = model.default_carrier.name
    fallback = not all_up and falls_back(service, carrier, model)
    for version in (4, 6):
        own = None if fallback else service.vip(carrier.name, version)
        vip = own if own is not None else service.vip(default, version)
        if vip is not None:
            out.append(vip)
    return tuple(out)


def service_names(model: Model) -> list[tuple[Service, str]]:
    """Each service with its name relative to the zone."""
    out = []
    for service in model.services:
        name = model.dns.relative_name(service.job)
        if name == NS_LABEL:
            raise LayoutError(f"service {service.name} is named {name!r}, which dcnet uses "
                              f"for the zone's name server record; change dns.pattern")
        out.append((service, name))
    return out


def zone_data(model: Model, carrier: Carrier,
              names: list[tuple[Service, str]] | None = None, all_up: bool = False) -> ZoneData:
    """The zone ``carrier``'s view holds (``all_up``: as if no carrier were down and no
    answer withdrawn)."""
    records = []
    for service, name in names if names is not None else service_names(model):
        for vip in _answers(service, carrier, model, all_up):
            records.append(Record(name, "A" if vip.version == 4 else "AAAA", str(vip)))
    records.sort(key=lambda r: (r.name, r.type))
    return ZoneData(model.dns.zone, model.dns.ttl, tuple(records))


def layout(model: Model) -> Layout:
    """The views, ACLs and zones for ``model`` (pure)."""
    default = model.default_carrier
    carriers = [c for c in model.carriers if not c.default and c.cidrs]
    notes = [f"carrier {c.name} has no client CIDR list: no view; its clients get the "
             f"default view" for c in model.carriers if not c.default and not c.cidrs]
    notes += [f"carrier {c.name} is marked down: its clients get the default line's VIPs"
              for c in carriers if c.down]
    acls = tuple(ACL(acl_name(c.name), c.name, tuple(c.cidrs)) for c in carriers)
    views = tuple([View(c.name, acl_name(c.name)) for c in carriers]
                  + [View(default.name, "any")])
    # (content digest now, with every carrier up) -> the view that declares it
    declared: dict[tuple[str, str], str] = {}
    zones = []
    names = service_names(model)
    for carrier in [*carriers, default]:
        data = zone_data(model, carrier, names)
        up = (zone_data(model, carrier, names, all_up=True) if _falls_back_anywhere(
            carrier, model) else data)      # the same zone unless something fell back
        key = (data.digest(), up.digest())
        owner = declared.get(key)
        if owner is None:
            declared[key] = carrier.name
            zones.append(ZoneDecl(carrier.name, data.zone, data,
                                  zone_file_name(carrier.name, data.zone), None))
        else:
            zones.append(ZoneDecl(carrier.name, data.zone, data, None, owner))
    return Layout(acls, views, tuple(zones), tuple(notes))


def _falls_back_anywhere(carrier: Carrier, model: Model) -> bool:
    """Whether ``carrier`` is down or has a withdrawn answer (its zone differs from the
    one with every carrier up); otherwise :func:`zone_data` with ``all_up`` is the same."""
    return carrier.down or any(c == carrier.name for _, c in model.dns.withdrawn)


def answered(model: Model) -> frozenset[tuple[str, str]]:
    """Every (name relative to the zone, address) some view answers, as if every carrier
    were up and no answer withdrawn (pure; the janitor's "VIP without a DNS name")."""
    names = service_names(model)
    views = {v.name for v in layout(model).views}
    return frozenset((r.name, r.address) for c in model.carriers if c.name in views
                     for r in zone_data(model, c, names, all_up=True).records)
