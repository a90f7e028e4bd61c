"""The model's ``lvs`` section: what elbctl owns on an LVS director.

elbctl touches only its own objects: VIPs on its own interface, policy rules in a
reserved priority range, and routes in the carrier tables marked with its own route
protocol number.
"""

from __future__ import annotations

from dataclasses import dataclass

from dcnet.model import fields as f

_IFNAME = f.text(r"[^\s/:]{1,15}", "an interface name of 1-15 characters")


@dataclass(frozen=True)
class LVSSettings:
    vip_interface: str = "elb0"     # elbctl's own interface holding the VIPs
    rule_priority_min: int = 20000  # reserved range for elbctl's policy rules
    rule_priority_max: int = 20999
    route_protocol: int = 180       # rtnetlink protocol number marking elbctl's routes
    drain_seconds: int = 300        # how long a removed real server may drain


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
    }
    if not r.finish():
        return None
    settings = LVSSettings(**values)
    if settings.rule_priority_min > settings.rule_priority_max:
        problems.add((*path, "rule_priority_min"), "rule_priority_min is above "
                     "rule_priority_max")
        return None
    return settings


def check(settings: LVSSettings, carriers, services, problems: f.Problems) -> None:
    """No cross-object rules: rules for different VIPs may share a priority (their
    selectors are disjoint), so the reserved range does not limit the number of VIPs."""
