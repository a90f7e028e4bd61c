"""The immutable objects of the service model: carriers, services, ports, real servers.

Nothing here does I/O; objects are built only by :mod:`dcnet.model.loader`, which
validates them first. Collections are tuples so a model can be hashed and shared. The
classes have ``__slots__`` (no ``__dict__`` per object: a 10,000 x 10 model is about 22
MiB of Python objects instead of 39, unpickled) and pickle through their ``__init__``
(:mod:`dcnet.model.slotted`).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from enum import StrEnum

from dcnet.model.agent_section import AgentSettings
from dcnet.model.dns_section import DNSSettings
from dcnet.model.haproxy_section import HAProxySettings
from dcnet.model.jobname import JobName
from dcnet.model.lvs_section import LVSSettings
from dcnet.model.mirror_section import MirrorSettings
from dcnet.model.slotted import pickled_by_fields

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class Protocol(StrEnum):
    TCP = "tcp"
    UDP = "udp"
    SCTP = "sctp"


class Forwarding(StrEnum):
    """IPVS packet forwarding method."""

    DR = "dr"
    NAT = "nat"
    TUN = "tun"


class CheckType(StrEnum):
    TCP = "tcp"
    HTTP = "http"
    NONE = "none"


# Every scheduler the Linux IPVS code ships (net/netfilter/ipvs/ip_vs_*.c).
PORT_MODES = frozenset({"tcp", "http"})   # how HAProxy proxies a port (L4 or L7)
SCHEDULERS = frozenset({
    "rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "fo", "ovf", "mh",
    "twos",
})
MAX_WEIGHT = 65535


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class Carrier:
    """One carrier line: its uplink, gateway, routing table and address space."""

    name: str
    uplink: str
    gateway: IPAddress
    table: int
    vip_ranges: tuple[IPNetwork, ...]
    cidr_file: str | None = None
    cidrs: tuple[IPNetwork, ...] = ()
    default: bool = False
    down: bool = False          # line marked down: DNS answers its clients with the default
    gateway6: IPAddress | None = None   # the IPv6 next hop of a dual-stack line

    def owns_vip(self, vip: IPAddress) -> bool:
        return any(vip in net for net in self.vip_ranges)

    def gateways(self) -> tuple[IPAddress, ...]:
        """The line's next hops, one per address family (``gateway`` first)."""
        return (self.gateway,) if self.gateway6 is None else (self.gateway, self.gateway6)

    def gateway_of(self, version: int) -> IPAddress | None:
        """The next hop for VIPs of IP ``version`` (4 or 6), None when the line has none."""
        return next((g for g in self.gateways() if g.version == version), None)


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class Port:
    """One virtual port of a service and how IPVS balances it."""

    port: int
    protocol: Protocol = Protocol.TCP
    scheduler: str = "wlc"
    forward: Forwarding = Forwarding.DR
    persistence: int = 0
    target_port: int | None = None
    mode: str = "tcp"           # HAProxy: "tcp" (L4) or "http" (L7, tcp ports only)

    @property
    def backend_port(self) -> int:
        """The port real servers listen on (the virtual port unless mapped)."""
        return self.target_port if self.target_port is not None else self.port


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class RealServer:
    """A real server behind a service; ``port`` only for single-port services."""

    address: IPAddress
    weight: int = 1
    port: int | None = None


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class HealthCheck:
    type: CheckType = CheckType.TCP
    port: int | None = None
    path: str | None = None
    expect_status: int = 200
    interval: float = 5.0
    timeout: float = 3.0
    rise: int = 2
    fall: int = 3


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class Endpoint:
    """One (VIP, port) -> (real server, port) pairing, as IPVS sees it."""

    carrier: str
    vip: IPAddress
    port: Port
    server: RealServer
    server_port: int


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class Service:
    """An ELB service named by its JOBNAME, with one VIP per carrier line and address
    family (a dual-stack carrier has an IPv4 and an IPv6 VIP: two pairs in ``vips``)."""

    job: JobName
    vips: tuple[tuple[str, IPAddress], ...]
    ports: tuple[Port, ...]
    real_servers: tuple[RealServer, ...] = ()
    health_check: HealthCheck = field(default_factory=HealthCheck)
    lint_ignore: tuple[str, ...] = ()   # elbctl lint rule ids silenced for this service

    @property
    def name(self) -> str:
        return str(self.job)

    def vip(self, carrier: str, version: int | None = None) -> IPAddress | None:
        """The carrier's first VIP (of IP ``version`` when given), None if it has none."""
        return next((v for c, v in self.vips
                     if c == carrier and (version is None or v.version == version)), None)

    def server_port(self, server: RealServer, port: Port) -> int:
        return server.port if server.port is not None else port.backend_port

    def endpoints(self) -> tuple[Endpoint, ...]:
        """Every (carrier VIP, port, real server) combination, in model order."""
        return tuple(
            Endpoint(carrier, vip, port, server, self.server_port(server, port))
            for carrier, vip in self.vips
            for port in self.ports
            for server in self.real_servers
        )


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class Model:
    """A validated service model: carriers and ELB services."""

    source: str
    carriers: tuple[Carrier, ...]
    services: tuple[Service, ...]
    dns: DNSSettings = field(default_factory=DNSSettings)
    haproxy: HAProxySettings = field(default_factory=HAProxySettings)
    lvs: LVSSettings = field(default_factory=LVSSettings)
    agent: AgentSettings = field(default_factory=AgentSettings)
    mirror: MirrorSettings | None = None        # no mirror section: nothing mirrored

    @property
    def default_carrier(self) -> Carrier:
        return next(c for c in self.carriers if c.default)

    def carrier(self, name: str) -> Carrier:
        for c in self.carriers:
            if c.name == name:
                return c
        raise KeyError(name)

    def service(self, name: str) -> Service:
        for s in self.services:
            if s.name == name:
                return s
        raise KeyError(name)
