"""Where health-driven DNS learns which VIPs have healthy real servers.

A *health source* answers one question: for each VIP port it knows, ``(address, port)``,
how many healthy real servers are behind it. Three sources read what the ELB already
knows; each is a thin read plus a pure function of what it read (tested on captured
output and on fakes):

- :class:`HAProxySource`: ``show servers state`` on the admin socket
  (:mod:`dcnet.haproxy.runtime`); a server counts when it is UP (``srv_op_state`` 2),
  neither in maintenance nor draining, with a weight above 0. Backend ``<JOBNAME>:<port>``
  serves the port on every VIP of that service (``carriers``: only those carriers' VIPs,
  e.g. for the HAProxy of one carrier's directors);
- :class:`IPVSSource`: the IPVS table (:mod:`dcnet.lvs.ipvs`; keepalived's checkers set a
  failing real server's weight to 0 or remove it); a dest counts when its weight is
  above 0;
- :class:`RegistrySource`: the backends registered in etcd (``elb/desired/backends/``,
  written by ``elbctl backend`` and dcnet-init's hooks: registered when healthy, drained
  before the app stops) merged into the model as the agents merge them
  (:func:`dcnet.elbstore.effective.effective_model`); a server counts when its effective
  weight is above 0. Only services with registered backends are reported.

:func:`observe` turns the sources' counts into one observation per (service, carrier)
answer that has a view: healthy (True) when some port of some VIP of that carrier has a
healthy server, unhealthy (False) when every port the sources know has none, unknown
(None) when no source knows any. An unhealthy carrier VIP counts as unknown while the
default line's own VIP is known to be unhealthy too: falling back to a dead VIP would
only move DNS for nothing. Counts of several sources add up.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Protocol

from dcnet.haproxy.layout import listener_name
from dcnet.haproxy.runtime import ADMIN_DRAIN, ADMIN_MAINT, ServerRow, parse_servers_state, send
from dcnet.model import Model
from dcnet.model import Protocol as IPProtocol

VipPort = tuple[str, int]           # (VIP address, port)
Counts = dict[VipPort, int]         # healthy real servers behind each VIP port
OP_RUNNING = 2                      # srv_op_state: SRV_ST_RUNNING


class SourceError(RuntimeError):
    """A health source could not be read (its VIPs count as unknown this round)."""


class HealthSource(Protocol):
    name: str

    def read(self, model: Model) -> Counts:
        """Healthy real servers per VIP port; raises :class:`SourceError`."""


# ---------------------------------------------------------------- HAProxy


def server_healthy(row: ServerRow) -> bool:
    return (row.op_state == OP_RUNNING and not row.admin_state & (ADMIN_MAINT | ADMIN_DRAIN)
            and row.weight > 0)


def haproxy_counts(model: Model, rows: Iterable[ServerRow],
                   carriers: Iterable[str] | None = None) -> Counts:
    """Pure: the counts ``show servers state`` rows give, on the VIPs of ``carriers``
    (None: every carrier)."""
    per_backend: Counter = Counter()
    seen = set()
    for row in rows:
        seen.add(row.backend)
        per_backend[row.backend] += server_healthy(row)
    scope = None if carriers is None else set(carriers)
    out: Counts = {}
    for service in model.services:
        for port in service.ports:
            name = listener_name(service, port)
            if port.protocol is not IPProtocol.TCP or name not in seen:
                continue
            for carrier, vip in service.vips:
                if scope is None or carrier in scope:
                    key = (str(vip), port.port)
                    out[key] = out.get(key, 0) + per_backend[name]
    return out


class HAProxySource:
    """A running HAProxy's server states, over its admin socket."""

    def __init__(self, admin_socket: str, carriers: Iterable[str] | None = None):
        self.admin_socket = admin_socket
        self.carriers = None if carriers is None else tuple(carriers)
        scope = f" for {','.join(self.carriers)}" if self.carriers else ""
        self.name = f"haproxy {admin_socket}{scope}"

    def read(self, model: Model) -> Counts:
        try:
            rows = parse_servers_state(send(self.admin_socket, "show servers state"))
        except Exception as exc:            # unavailable, refused, garbled: unknown
            raise SourceError(f"{self.name}: {exc}") from exc
        return haproxy_counts(model, rows, self.carriers)


# ---------------------------------------------------------------- IPVS


def ipvs_counts(table: Iterable[tuple[object, Iterable[object]]]) -> Counts:
    """Pure: counts from (WireService, its WireDests) pairs; fwmark services are left out
    (they have no address)."""
    out: Counts = {}
    for service, dests in table:
        if getattr(service, "fwmark", 0) or not getattr(service, "addr", ""):
            continue
        key = (str(service.addr), int(service.port))
        out[key] = out.get(key, 0) + sum(1 for d in dests if d.weight > 0)
    return out


class IPVSSource:
    """The IPVS table of this director (or of network namespace ``netns``); ``table`` is
    an :class:`dcnet.lvs.ipvs.IPVSTable` (e.g. :class:`dcnet.lvs.fake.FakeIPVS`) to read
    instead of opening the kernel's."""

    def __init__(self, netns: str | None = None, table=None):
        self.netns, self.table = netns, table
        self.name = "ipvs" + (f" in {netns}" if netns else "")

    def read(self, model: Model) -> Counts:
        table = self.table
        try:
            if table is None:
                from dcnet.lvs.ipvs import KernelIPVS
                table = KernelIPVS(self.netns)
            try:
                return ipvs_counts((s, table.dests(s)) for s in table.services())
            finally:
                if self.table is None:
                    table.close()
        except Exception as exc:            # no IPVS, no permission, netns gone: unknown
            raise SourceError(f"{self.name}: {exc}") from exc


# ---------------------------------------------------------------- etcd registry


def registry_counts(model: Model, registry: Mapping[str, Mapping[str, dict]],
                    carriers: Iterable[str] | None = None) -> Counts:
    """Pure: counts from the etcd backend registry (JOBNAME -> ADDR[:PORT] -> entry), for
    the services that have registered backends."""
    from dcnet.elbstore.effective import effective_model

    effective = effective_model(model, registry)
    scope = None if carriers is None else set(carriers)
    out: Counts = {}
    for service in effective.services:
        if not registry.get(service.name):
            continue
        healthy = sum(1 for s in service.real_servers if s.weight > 0)
        for carrier, vip in service.vips:
            if scope is None or carrier in scope:
                for port in service.ports:
                    key = (str(vip), port.port)
                    out[key] = out.get(key, 0) + healthy
    return out


class RegistrySource:
    """The backends registered in etcd (``store``: a :class:`dcnet.elbstore.store.ElbStore`)."""

    def __init__(self, store, carriers: Iterable[str] | None = None, name: str = "etcd"):
        self.store = store
        self.carriers = None if carriers is None else tuple(carriers)
        self.name = name

    def read(self, model: Model) -> Counts:
        try:
            registry = self.store.registry()
        except Exception as exc:            # etcd away: unknown
            raise SourceError(f"{self.name}: {exc}") from exc
        return registry_counts(model, registry, self.carriers)


# ---------------------------------------------------------------- observations


def merge(counts: Iterable[Counts]) -> Counts:
    out: Counts = {}
    for one in counts:
        for key, n in one.items():
            out[key] = out.get(key, 0) + n
    return out


def carrier_health(service, carrier: str, counts: Counts) -> bool | None:
    """True: a VIP port of ``carrier`` has a healthy server; False: every known one has
    none; None: no VIP port of the carrier is known."""
    known = [counts[(str(vip), port.port)] for c, vip in service.vips if c == carrier
             for port in service.ports if (str(vip), port.port) in counts]
    if not known:
        return None
    return any(n > 0 for n in known)


def followed(model: Model) -> list[tuple[object, str]]:
    """The (service, carrier) answers health can withdraw: every service's VIPs on the
    carriers with a view of their own (not the default line, not a carrier without a
    client list or marked down)."""
    carriers = [c.name for c in model.carriers if not c.default and c.cidrs and not c.down]
    return [(s, c) for s in model.services for c in carriers if s.vip(c) is not None]


def observe(model: Model, counts: Counts) -> dict[tuple[str, str], bool | None]:
    """One observation per followed answer (see the module docstring)."""
    default = model.default_carrier.name
    out: dict[tuple[str, str], bool | None] = {}
    for service, carrier in followed(model):
        health = carrier_health(service, carrier, counts)
        if health is False and carrier_health(service, default, counts) is False:
            health = None           # the default line is dead too: nothing better
        out[(service.name, carrier)] = health
    return out


def read_all(sources: Iterable[HealthSource], model: Model) -> tuple[Counts, list[str]]:
    """Every source's counts merged, and the errors of those that could not be read."""
    counts, errors = [], []
    for source in sources:
        try:
            counts.append(source.read(model))
        except SourceError as exc:
            errors.append(str(exc))
    return merge(counts), errors
