"""The model's ``mirror`` section: which services' traffic is copied and where it is replayed.

``elbctl mirror rules|replay|live -f MODEL`` read it (docs/mirror.md). It owns the frozen
:class:`MirrorSettings` and its validation, pure like the rest of the model: ``services``
(``VIP:PORT`` or ``[VIP6]:PORT``, each a TCP port of a service of the model), the share
of sessions copied (``percent``), the director's end of the mirror veth (``device``) and
the mirror namespace's addresses (``to`` for IPv4 VIPs, ``to6`` for IPv6 VIPs), the
replay ``target`` and ``factor``, the source ``pool`` (``network``, bridge ``via``,
``via_netns``, ``gateway``) and what is anonymised (``anonymise``: client addresses,
request headers; the key is never in the model, it is given when the command runs). A
missing section means no mirroring (``None``).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from dcnet.model import fields as f

_IFNAME = f.text(r"[^\s/:\"]{1,15}", "an interface name of 1-15 characters without "
                 "whitespace, '/', ':' or '\"'")
_NETNS = f.text(r"[A-Za-z0-9_.-]{1,64}", "a namespace name (letters, digits, '_', '.', '-')")
_HEADER = f.text(r"[A-Za-z0-9!#$%&'*+.^_`|~-]{1,128}", "an HTTP header name")
MIN_FACTOR, MAX_FACTOR = 0.1, 100.0     # as dcnet.mirror.replay (the model does no import)


@dataclass(frozen=True)
class Pool:
    network: ipaddress.IPv4Network | ipaddress.IPv6Network
    via: str
    via_netns: str | None = None
    gateway: ipaddress.IPv4Address | ipaddress.IPv6Address | None = None


@dataclass(frozen=True)
class MirrorSettings:
    services: tuple[tuple[str, int], ...]
    device: str
    to: ipaddress.IPv4Address | None = None
    to6: ipaddress.IPv6Address | None = None
    percent: int = 100
    target: tuple[str, int] | None = None
    factor: float = 1.0
    pool: Pool | None = None
    anonymise_clients: bool = False
    anonymise_headers: tuple[str, ...] = ()

    def services_text(self) -> tuple[str, ...]:
        return tuple(endpoint(vip, port) for vip, port in self.services)


def endpoint(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def _endpoint(value: object) -> tuple[str, int]:
    """``IP:PORT`` or ``[IPv6]:PORT`` -> (IP text, port)."""
    text = value if isinstance(value, str) else ""
    host, _, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        host = ""                   # an IPv6 address needs its brackets
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{value!r} is not IP:PORT or [IPv6]:PORT") from None
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{value!r} is not IP:PORT or [IPv6]:PORT (port 1-65535)")
    return str(address), int(port)


def _family(version: int) -> f.Converter:
    def convert(value: object):
        address = f.ip_address(value)
        if address.version != version:
            raise ValueError(f"{value!r} is not an IPv{version} address")
        return address
    return convert


def read(problems: f.Problems, path: tuple, data: object) -> MirrorSettings | None:
    if data is None:
        return None
    r = f.MappingReader(problems, path, data, "the mirror section")
    raw_services = r.required("services", f.raw)
    values = {
        "device": r.required("device", _IFNAME),
        "to": r.optional("to", _family(4)),
        "to6": r.optional("to6", _family(6)),
        "percent": r.optional("percent", f.integer(1, 100), 100),
        "target": r.optional("target", _endpoint),
        "factor": r.optional("factor", f.number(MIN_FACTOR, MAX_FACTOR), 1.0),
    }
    raw_pool = r.optional("pool", f.raw)
    raw_anonymise = r.optional("anonymise", f.raw)
    ok = r.finish()
    services = []
    for i, item in enumerate(f.list_of((*path, "services"), problems, raw_services,
                                       "services")):
        try:
            services.append(_endpoint(item))
        except ValueError as exc:
            problems.add((*path, "services", i), str(exc))
            ok = False
    if isinstance(raw_services, list) and not raw_services:
        problems.add((*path, "services"), "must list at least one VIP:PORT")
        ok = False
    pool = _read_pool(problems, (*path, "pool"), raw_pool) if raw_pool is not None else None
    anonymise = _read_anonymise(problems, (*path, "anonymise"), raw_anonymise)
    if not ok or (raw_pool is not None and pool is None) or anonymise is None:
        return None
    return MirrorSettings(services=tuple(services), pool=pool,
                          anonymise_clients=anonymise[0], anonymise_headers=anonymise[1],
                          **values)


def _read_pool(problems: f.Problems, path: tuple, data: object) -> Pool | None:
    r = f.MappingReader(problems, path, data, "the mirror pool")
    values = {
        "network": r.required("network", f.ip_network),
        "via": r.required("via", _IFNAME),
        "via_netns": r.optional("via_netns", _NETNS),
        "gateway": r.optional("gateway", f.ip_address),
    }
    if not r.finish():
        return None
    pool = Pool(**values)
    if pool.gateway is not None and pool.gateway.version != pool.network.version:
        problems.add((*path, "gateway"), f"{pool.gateway} is not of the pool's address "
                     f"family (IPv{pool.network.version})")
        return None
    return pool


def _read_anonymise(problems: f.Problems, path: tuple, data: object
                    ) -> tuple[bool, tuple[str, ...]] | None:
    if data is None:
        return False, ()
    r = f.MappingReader(problems, path, data, "mirror anonymise")
    clients = r.optional("clients", f.boolean, False)
    raw_headers = r.optional("headers", f.raw, [])
    ok = r.finish()
    headers = []
    for i, item in enumerate(f.list_of((*path, "headers"), problems, raw_headers, "headers")):
        try:
            headers.append(_HEADER(item).lower())
        except ValueError as exc:
            problems.add((*path, "headers", i), str(exc))
            ok = False
    return (clients, tuple(headers)) if ok else None


def check(settings: MirrorSettings, carriers, services, problems: f.Problems) -> None:
    """Each mirrored VIP:PORT is a TCP port of a service of the model; each family has
    its mirror address; the pool reaches the target."""
    offered = {(str(address), port.port)
               for _, service in services for _, address in service.vips
               for port in service.ports if port.protocol.value == "tcp"}
    for i, (vip, port) in enumerate(settings.services):
        if (vip, port) not in offered:
            problems.add(("mirror", "services", i), f"{endpoint(vip, port)} is not a TCP "
                         "port of a VIP of any service in the model")
    versions = {ipaddress.ip_address(vip).version for vip, _ in settings.services}
    if 4 in versions and settings.to is None:
        problems.add(("mirror",), "IPv4 VIPs are mirrored: 'to' (the mirror namespace's "
                     "IPv4 address) is required")
    if 6 in versions and settings.to6 is None:
        problems.add(("mirror",), "IPv6 VIPs are mirrored: 'to6' (the mirror namespace's "
                     "IPv6 address) is required")
    pool, target = settings.pool, settings.target
    if pool is None or target is None:
        return
    address = ipaddress.ip_address(target[0])
    if address.version != pool.network.version:
        problems.add(("mirror", "pool", "network"), f"{pool.network} is not of the "
                     f"target's address family (IPv{address.version})")
    elif pool.gateway is None and address not in pool.network:
        problems.add(("mirror", "pool", "network"), f"the target {target[0]} is outside "
                     f"{pool.network} and the pool has no gateway: the copies cannot reach it")
