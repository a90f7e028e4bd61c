"""The model's ``haproxy`` section: settings for rendering the model as HAProxy config.

Used on cloud clusters, where there is no LVS: HAProxy listens on the cluster's own
addresses (``listen``) for every service port.
"""

from __future__ import annotations

from dataclasses import dataclass

from dcnet.model import fields as f


@dataclass(frozen=True)
class HAProxySettings:
    listen: tuple = ()          # addresses HAProxy binds service ports on; () = the VIPs
    maxconn: int = 20000
    spare_slots: int = 4        # pre-allocated server slots per backend for runtime growth


def _addresses(value: object) -> tuple:
    if not isinstance(value, list):
        raise ValueError(f"must be a list of addresses, got {f.type_name(value)}")
    return tuple(f.ip_address(v) for v in value)


def read(problems: f.Problems, path: tuple, data: object) -> HAProxySettings | None:
    if data is None:
        return HAProxySettings()
    r = f.MappingReader(problems, path, data, "the haproxy section")
    values = {
        "listen": r.optional("listen", _addresses, ()),
        "maxconn": r.optional("maxconn", f.integer(1, 10_000_000), HAProxySettings.maxconn),
        "spare_slots": r.optional("spare_slots", f.integer(0, 1000), HAProxySettings.spare_slots),
    }
    return HAProxySettings(**values) if r.finish() else None


def check(settings: HAProxySettings, carriers, services, problems: f.Problems) -> None:
    """No cross-object rules yet."""
