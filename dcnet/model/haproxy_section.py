"""The model's ``haproxy`` section: settings for rendering the model as HAProxy config.

Used on cloud clusters, where there is no LVS: HAProxy listens on the cluster's own
addresses (``listen``) for every service port. The section also holds the proxy's
timeouts, how long old workers may live after a reload (``hard_stop_after``), how long
a drained or removed server's sessions may last (``drain_deadline``, at most
``hard_stop_after``) and an
optional directory of operator templates (``templates``, relative to the model file)
that override the built-in ones per service (see docs/haproxy.md).
"""

from __future__ import annotations

from dataclasses import dataclass

from dcnet.model import fields as f

_TEMPLATE_DIR = f.text(r"[^\x00\n]{1,4096}", "a directory path")


@dataclass(frozen=True)
class HAProxySettings:
    listen: tuple = ()          # addresses HAProxy binds service ports on; () = the VIPs
    maxconn: int | None = None      # None: 20000, or less when the descriptor limit is lower
    spare_slots: int = 4        # pre-allocated server slots per backend for runtime growth
    timeout_connect: float = 5.0    # seconds to connect to a real server
    timeout_client: float = 60.0    # seconds of client inactivity
    timeout_server: float = 60.0    # seconds of server inactivity
    timeout_http_request: float = 10.0     # mode http: seconds to receive a request
    timeout_http_keep_alive: float = 5.0   # mode http: idle seconds between requests
    hard_stop_after: int = 300      # seconds an old worker may serve after a reload
    drain_deadline: int = 30        # seconds a drained/removed server's sessions may last
    templates: str | None = None    # operator template directory (None = built-ins only)


def _addresses(value: object) -> tuple:
    if not isinstance(value, list):
        raise ValueError(f"must be a list of addresses, got {f.type_name(value)}")
    return tuple(f.ip_address(v) for v in value)


def read(problems: f.Problems, path: tuple, data: object) -> HAProxySettings | None:
    if data is None:
        return HAProxySettings()
    r = f.MappingReader(problems, path, data, "the haproxy section")
    d = HAProxySettings()
    values = {
        "listen": r.optional("listen", _addresses, ()),
        "maxconn": r.optional("maxconn", f.integer(1, 10_000_000), d.maxconn),
        "spare_slots": r.optional("spare_slots", f.integer(0, 1000), d.spare_slots),
        "timeout_connect": r.optional("timeout_connect", f.number(0.001, 3600),
                                      d.timeout_connect),
        "timeout_client": r.optional("timeout_client", f.number(0.001, 86400), d.timeout_client),
        "timeout_server": r.optional("timeout_server", f.number(0.001, 86400), d.timeout_server),
        "timeout_http_request": r.optional("timeout_http_request", f.number(0.001, 3600),
                                           d.timeout_http_request),
        "timeout_http_keep_alive": r.optional("timeout_http_keep_alive",
                                              f.number(0.001, 3600),
                                              d.timeout_http_keep_alive),
        "hard_stop_after": r.optional("hard_stop_after", f.integer(1, 86400), d.hard_stop_after),
        "drain_deadline": r.optional("drain_deadline", f.integer(0, 3600), d.drain_deadline),
        "templates": r.optional("templates", _TEMPLATE_DIR, None),
    }
    return HAProxySettings(**values) if r.finish() else None


def check(settings: HAProxySettings, carriers, services, problems: f.Problems) -> None:
    """A drain ends before old workers are stopped; with shared ``listen`` addresses,
    two services cannot use the same TCP port."""
    if settings.drain_deadline > settings.hard_stop_after:
        problems.add(("haproxy", "drain_deadline"),
                     f"{settings.drain_deadline} s is longer than haproxy.hard_stop_after "
                     f"({settings.hard_stop_after} s): a reload would cut the drain short")
    if not settings.listen:
        return
    owners: dict[int, int] = {}
    for index, service in services:
        for p_index, port in enumerate(service.ports):
            if port.protocol.value != "tcp":
                continue
            if port.port in owners and owners[port.port] != index:
                problems.add(("services", index, "ports", p_index, "port"),
                             f"tcp port {port.port} is also used by services[{owners[port.port]}]"
                             "; with haproxy.listen set every service binds the same addresses")
            owners.setdefault(port.port, index)
