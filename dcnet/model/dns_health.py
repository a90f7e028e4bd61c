"""The model's ``dns.health`` subsection: how DNS follows the health of the VIPs (pure).

``elbctl dns follow`` withdraws a carrier's answer for a service (its clients get the
default line's VIP) when that carrier's VIP has had no healthy real server for
``down_after`` seconds, and restores it once the VIP has been healthy for ``up_after``
seconds. A VIP that flaps is damped like a BGP route (RFC 2439): each flap (healthy ->
unhealthy) adds ``flap_penalty``; the penalty halves every ``half_life`` seconds and
never exceeds ``max_penalty``; from ``suppress`` on the answer stays withdrawn until the
penalty has decayed below ``reuse``. Validated at load; no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

from dcnet.model import fields as f

DAY = 86400.0


@dataclass(frozen=True)
class DNSHealth:
    """Damping settings of health-driven DNS (seconds, and penalty units)."""

    down_after: float = 4.0      # unhealthy this long -> withdrawn
    up_after: float = 30.0       # healthy this long -> restored
    flap_penalty: float = 1000.0
    suppress: float = 2500.0     # penalty from which the answer stays withdrawn
    reuse: float = 750.0         # ... until the penalty is below this
    half_life: float = 300.0
    max_penalty: float = 8000.0


def read(problems: f.Problems, path: tuple, data: object) -> DNSHealth | None:
    """``dns.health`` (absent: the defaults)."""
    if data is None:
        return DNSHealth()
    d = DNSHealth()
    r = f.MappingReader(problems, path, data, "dns.health")
    seconds, units = f.number(0, DAY), f.number(0, 1e9)
    values = {
        "down_after": r.optional("down_after", seconds, d.down_after),
        "up_after": r.optional("up_after", seconds, d.up_after),
        "flap_penalty": r.optional("flap_penalty", units, d.flap_penalty),
        "suppress": r.optional("suppress", units, d.suppress),
        "reuse": r.optional("reuse", units, d.reuse),
        "half_life": r.optional("half_life", f.number(1, DAY), d.half_life),
        "max_penalty": r.optional("max_penalty", units, d.max_penalty),
    }
    if not r.finish():
        return None
    health = DNSHealth(**values)
    if not health.reuse < health.suppress <= health.max_penalty:
        problems.add(path, f"need reuse < suppress <= max_penalty, got {health.reuse:g}, "
                     f"{health.suppress:g}, {health.max_penalty:g}")
        return None
    return health
