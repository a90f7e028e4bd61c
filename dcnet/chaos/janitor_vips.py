"""The janitor's model part: carrier VIPs that no DNS view answers (pure).

A service's VIP on a carrier is reached by that carrier's clients through the DNS name
its view answers (:mod:`dcnet.dns.layout`). A VIP no view's zone holds under the
service's name is used by no one who resolves the name: typically a carrier without a
client CIDR list (no view: its clients get the default view and the default line's
VIP). Views are read as if every carrier were up and no answer withdrawn
(:func:`dcnet.dns.layout.answered`): a carrier marked ``down`` or an answer ``elbctl dns
follow`` withdrew is a temporary fallback, not an unused VIP.

The VIP belongs to the model (an operator's file): the janitor lists it with its reason
and the fix, and removes nothing, even with ``--apply``; once the model drops it,
``elbctl apply`` (or the janitor's target part) removes it from the targets.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import asdict, dataclass

from dcnet.model import Model


@dataclass(frozen=True)
class UnusedVIP:
    service: str
    carrier: str
    vip: str
    name: str           # the service's DNS name (relative to the zone)
    reason: str


@dataclass
class VIPReport:
    vips: list[UnusedVIP]
    applied: bool = False     # --apply was asked: still nothing removed (the model owns it)

    def to_dict(self) -> dict:
        return {"part": "vips", "vips": [asdict(v) for v in self.vips],
                "applied": self.applied}

    def to_text(self) -> str:
        lines = [f"model: {len(self.vips)} carrier VIPs no DNS view answers"]
        lines += [f"  - {v.service} {v.carrier} {v.vip} ({v.name}): {v.reason}"
                  for v in self.vips]
        if self.vips and self.applied:
            lines.append("  not removed: the model owns these VIPs; edit it, then "
                         "elbctl apply")
        return "\n".join(lines)


def unused(model: Model, answered: Collection[tuple[str, str]],
           apply: bool = False) -> VIPReport:
    """Every (service, carrier, VIP) whose address no view answers for the service's
    name, in model order. ``answered``: every (name relative to the zone, address) the
    views answer with every carrier up (:func:`dcnet.dns.layout.answered`, passed in:
    dcnet.chaos may not import dcnet.dns, which imports it through dcnet.elbstore)."""
    out = []
    for service in model.services:
        name = model.dns.relative_name(service.job)
        for carrier, vip in service.vips:
            if (name, str(vip)) in answered:
                continue
            out.append(UnusedVIP(service.name, carrier, str(vip), name,
                                 _reason(model, carrier, vip.version)))
    return VIPReport(out, applied=apply)


def _reason(model: Model, carrier_name: str, version: int) -> str:
    carrier = model.carrier(carrier_name)
    if not carrier.default and not carrier.cidrs:
        return (f"carrier {carrier_name} has no client CIDR list, so no DNS view: its "
                f"clients get the default line's VIP; give it a list or drop the VIP")
    return (f"no view answers it (IPv{version}): the carrier's view answers another "
            f"VIP of that family for this name")
