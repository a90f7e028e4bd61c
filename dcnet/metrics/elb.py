"""The ELB collector: what a director serves, per service, port and carrier.

Sources are handed in as callables by the command that runs the exporter (``elbctl
exporter``, ``elbctl agent --metrics-address``), so this module reads no target code:

- ``haproxy_stat()``: the text of HAProxy's ``show stat`` (runtime API, CSV); backends
  are named ``<JOBNAME>:<port>`` (:mod:`dcnet.haproxy.layout`), free slots are servers in
  maintenance at ``0.0.0.0``;
- ``ipvs_rows()``: per network namespace, the rows of ``/proc/net/ip_vs`` (virtual
  address, port, protocol, real server, active and inactive connections) and the
  totals of ``/proc/net/ip_vs_stats``;
- ``status_paths``: the status files of the targets (:mod:`dcnet.metrics.status`);
- ``drift()``: per target, whether the plan of the last applied model is non-empty
  (computed off the scrape path by the caller).

Per-server series obey :class:`dcnet.metrics.cardinality.Bound`; per-service series and
``dcnet_service_info`` (the JOBNAME tags, for ``group_left`` joins) are bounded by the
model. Nothing is labelled by client or connection.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector

from dcnet.metrics import status
from dcnet.metrics.cardinality import Bound, aggregate

JOBNAME_TAGS = ("job", "jobgroup", "service", "servicegroup", "cluster", "pdl", "owt", "cop")
SERVER_STATES = ("up", "down", "drain", "maint")


@dataclass(frozen=True)
class HAProxyServer:
    """One filled server slot of ``show stat``."""

    service: str
    port: str
    server: str          # address:port of the real server
    state: str           # up, down, drain, maint
    sessions: int
    sessions_total: int


@dataclass(frozen=True)
class HAProxyBackend:
    service: str
    port: str
    sessions: int
    sessions_total: int
    bytes_in: int
    bytes_out: int


@dataclass
class HAProxyStats:
    backends: list[HAProxyBackend] = field(default_factory=list)
    servers: list[HAProxyServer] = field(default_factory=list)


def _split_backend(name: str) -> tuple[str, str] | None:
    service, sep, port = name.rpartition(":")
    return (service, port) if sep and port.isdigit() else None


def _state(status_text: str, weight: int) -> str:
    text = status_text.upper()
    if text.startswith("MAINT"):
        return "maint"
    if text.startswith("DRAIN") or (text.startswith("UP") and weight == 0):
        return "drain"
    if text.startswith("UP") or text == "NO CHECK":
        return "up"
    return "down"


def _int(text: str) -> int:
    return int(text) if text.isdigit() else 0


def parse_show_stat(text: str) -> HAProxyStats:
    """Pure: backends and filled server slots of dcnet listeners from ``show stat``.

    Fields are picked by position from the header line (a plain split: HAProxy quotes
    nothing in these columns), so 150,000 rows cost one split each."""
    lines = text.split("\n")
    if not lines or not lines[0].startswith("# "):
        return HAProxyStats()
    column = {name: i for i, name in enumerate(lines[0][2:].split(","))}
    try:
        px, kind, scur, stot, bin_, bout = (column[c] for c in (
            "pxname", "type", "scur", "stot", "bin", "bout"))
        status, weight, addr = column["status"], column["weight"], column.get("addr")
    except KeyError:
        return HAProxyStats()
    width = max(px, kind, scur, stot, bin_, bout, status, weight, addr or 0) + 1
    out = HAProxyStats()
    backends, servers = out.backends, out.servers
    seen: dict[str, tuple[str, str] | None] = {}
    for line in lines[1:]:
        fields = line.split(",")
        if len(fields) < width:
            continue
        row_type = fields[kind]
        if row_type not in ("1", "2"):
            continue
        name = fields[px]
        names = seen.get(name, False)
        if names is False:
            names = seen[name] = _split_backend(name)   # 15 rows per backend: split once
        if names is None:
            continue
        if row_type == "1":
            backends.append(HAProxyBackend(*names, _int(fields[scur]), _int(fields[stot]),
                                           _int(fields[bin_]), _int(fields[bout])))
            continue
        address = fields[addr] if addr is not None else ""
        if not address or address.startswith("0.0.0.0:"):
            continue                  # a free slot
        servers.append(HAProxyServer(*names, address,
                                     _state(fields[status], _int(fields[weight])),
                                     _int(fields[scur]), _int(fields[stot])))
    return out


@dataclass(frozen=True)
class IPVSRow:
    """One real server of one IPVS virtual service (``/proc/net/ip_vs``)."""

    vip: str
    port: int
    protocol: str
    server: str
    active: int
    inactive: int
    weight: int


@dataclass
class IPVSTable:
    rows: list[IPVSRow] = field(default_factory=list)
    totals: dict[str, int] = field(default_factory=dict)   # conns, inpkts, outpkts, ...


def parse_ip_vs_stats(text: str) -> dict[str, int]:
    """Pure: the totals of ``/proc/net/ip_vs_stats`` (hexadecimal, first data line)."""
    names = ("connections", "packets_in", "packets_out", "bytes_in", "bytes_out")
    for line in text.splitlines():
        fields = line.split()
        if len(fields) == 5 and all(all(c in "0123456789ABCDEFabcdef" for c in f)
                                    for f in fields):
            return {n: int(f, 16) for n, f in zip(names, fields, strict=True)}
    return {}


@dataclass(frozen=True)
class ServiceIndex:
    """Pure view of the model for labelling: which (vip, port) is which service/carrier."""

    carriers: dict[tuple[str, int], tuple[str, str]]        # (vip, port) -> (service, carrier)
    service_carriers: dict[str, tuple[str, ...]]
    tags: dict[str, dict[str, str]]

    @classmethod
    def of(cls, model) -> ServiceIndex:
        carriers, by_service, tags = {}, {}, {}
        if model is not None:
            for service in model.services:
                by_service[service.name] = tuple(c for c, _ in service.vips)
                tags[service.name] = {t: getattr(service.job, t) or "" for t in JOBNAME_TAGS}
                for carrier, vip in service.vips:
                    for port in service.ports:
                        carriers[(str(vip), port.port)] = (service.name, carrier)
        return cls(carriers, by_service, tags)


class ELBCollector(Collector):
    """Collects every source given at scrape time; a failing source is reported in
    ``dcnet_exporter_source_up{source}`` and does not hide the others."""

    def __init__(self, model: Callable[[], object] | None = None,
                 haproxy_stat: Callable[[], str] | None = None,
                 ipvs_tables: Callable[[], dict[str, IPVSTable]] | None = None,
                 status_paths: dict[str, str] | None = None,
                 drift: Callable[[], dict[str, bool | None]] | None = None,
                 bound: Bound | None = None, clock: Callable[[], float] = time.time):
        self.model, self.haproxy_stat, self.ipvs_tables = model, haproxy_stat, ipvs_tables
        self.status_paths, self.drift = dict(status_paths or {}), drift
        self.bound, self.clock = bound or Bound(), clock
        self._index: tuple[object, ServiceIndex] | None = None

    def index(self) -> ServiceIndex:
        model = self.model() if self.model else None
        if self._index is None or self._index[0] is not model:
            self._index = (model, ServiceIndex.of(model))
        return self._index[1]

    def describe(self) -> list:
        return []                 # families vary with the sources: no checks at register

    def collect(self) -> Iterable:
        up = GaugeMetricFamily("dcnet_exporter_source_up",
                               "1 when the source answered at this scrape", labels=["source"])
        index = self.index()
        yield from self._info(index)
        per_server = GaugeMetricFamily("dcnet_metrics_per_server_series_enabled",
                                       "1 when per-real-server series are exposed (below "
                                       "the cardinality bound)", labels=["source"])
        rows = GaugeMetricFamily("dcnet_metrics_server_rows",
                                 "Real-server rows seen by the source (what the bound "
                                 "counts)", labels=["source"])
        if self.haproxy_stat is not None:
            try:
                stats = parse_show_stat(self.haproxy_stat())
            except Exception:      # HAProxy down or its socket stale: say so, go on
                up.add_metric(["haproxy"], 0)
            else:
                up.add_metric(["haproxy"], 1)
                enabled = self.bound.per_server(len(stats.servers))
                per_server.add_metric(["haproxy"], int(enabled))
                rows.add_metric(["haproxy"], len(stats.servers))
                yield from haproxy_families(stats, index, enabled)
        if self.ipvs_tables is not None:
            try:
                tables = self.ipvs_tables()
            except Exception:
                up.add_metric(["ipvs"], 0)
            else:
                up.add_metric(["ipvs"], 1)
                count = sum(len(t.rows) for t in tables.values())
                enabled = self.bound.per_server(count)
                per_server.add_metric(["ipvs"], int(enabled))
                rows.add_metric(["ipvs"], count)
                yield from ipvs_families(tables, index, enabled)
        yield per_server
        yield rows
        yield from self._status()
        yield up

    def _info(self, index: ServiceIndex) -> Iterable:
        info = InfoMetricFamily("dcnet_service", "The JOBNAME tags of each service of the "
                                "model (join with group_left on service)")
        for name, tags in index.tags.items():
            info.add_metric([], {"service": name, "carriers": ",".join(
                index.service_carriers.get(name, ())),
                **{f"tag_{k}": v for k, v in tags.items()}})
        yield info

    def _status(self) -> Iterable:
        runs = CounterMetricFamily("dcnet_elb_applies", "Applies by result (ok, failed: a "
                                   "change failed, error: refused or raised)",
                                   labels=["target", "result"])
        plans = CounterMetricFamily("dcnet_elb_plans", "Plan-only runs", labels=["target"])
        changes = CounterMetricFamily("dcnet_elb_changes_applied", "Changes applied",
                                      labels=["target"])
        writes = CounterMetricFamily("dcnet_elb_writes", "Writes to the target by kind "
                                     "(the target's counters)", labels=["target", "kind"])
        duration = GaugeMetricFamily("dcnet_elb_apply_last_duration_seconds",
                                     "Duration of the last apply (lock held)", labels=["target"])
        dsum = CounterMetricFamily("dcnet_elb_apply_duration_seconds",
                                   "Total seconds spent applying", labels=["target"])
        last = GaugeMetricFamily("dcnet_elb_last_successful_sync_timestamp_seconds",
                                 "When the last apply succeeded", labels=["target"])
        since = GaugeMetricFamily("dcnet_elb_seconds_since_last_successful_sync",
                                  "Seconds since the last successful apply (+Inf: never)",
                                  labels=["target"])
        drift = GaugeMetricFamily("dcnet_elb_drift", "1 when the plan of the last applied "
                                  "model is not empty (the target differs from it)",
                                  labels=["target"])
        now = self.clock()
        for target, path in sorted(self.status_paths.items()):
            data = status.read(path)
            for result in ("ok", "failed", "error"):
                runs.add_metric([target, result], data.get("applies", {}).get(result, 0))
            plans.add_metric([target], data.get("plans", 0))
            changes.add_metric([target], data.get("changes_applied", 0))
            for kind, count in sorted(data.get("writes", {}).items()):
                writes.add_metric([target, kind], count)
            dsum.add_metric([target], data.get("duration_sum", 0.0))
            if "last_duration" in data:
                duration.add_metric([target], data["last_duration"])
            if "last_success" in data:
                last.add_metric([target], data["last_success"])
                since.add_metric([target], max(0.0, now - data["last_success"]))
            else:
                since.add_metric([target], float("inf"))
        for target, value in sorted((self.drift() if self.drift else {}).items()):
            if value is not None:
                drift.add_metric([target], int(value))
        yield from (runs, plans, changes, writes, duration, dsum, last, since, drift)


def _healthy(target: str, counts: dict[tuple[str, str, str], int]) -> GaugeMetricFamily:
    gauge = GaugeMetricFamily("dcnet_elb_vip_healthy_servers",
                              "Healthy real servers with weight behind each VIP "
                              "(0: the VIP answers nobody)",
                              labels=["target", "service", "port", "carrier"])
    for (service, port, carrier), count in counts.items():
        gauge.add_metric([target, service, port, carrier], count)
    return gauge


def haproxy_families(stats: HAProxyStats, index: ServiceIndex, per_server: bool) -> Iterable:
    """The HAProxy series of one scrape."""
    sessions = GaugeMetricFamily("dcnet_haproxy_backend_sessions", "Current sessions",
                                 labels=["service", "port"])
    total = CounterMetricFamily("dcnet_haproxy_backend_sessions", "Sessions since start",
                                labels=["service", "port"])
    bytes_in = CounterMetricFamily("dcnet_haproxy_backend_bytes_in", "Bytes from clients",
                                   labels=["service", "port"])
    bytes_out = CounterMetricFamily("dcnet_haproxy_backend_bytes_out", "Bytes to clients",
                                    labels=["service", "port"])
    for b in stats.backends:
        sessions.add_metric([b.service, b.port], b.sessions)
        total.add_metric([b.service, b.port], b.sessions_total)
        bytes_in.add_metric([b.service, b.port], b.bytes_in)
        bytes_out.add_metric([b.service, b.port], b.bytes_out)
    servers = GaugeMetricFamily("dcnet_haproxy_backend_servers", "Real servers by state",
                                labels=["service", "port", "state"])
    by_state = aggregate(stats.servers, lambda s: (s.service, s.port),
                         lambda s: {s.state: 1})
    healthy = {(b.service, b.port): 0 for b in stats.backends}
    for (service, port), counts in by_state.items():
        for state in SERVER_STATES:
            servers.add_metric([service, port, state], counts.get(state, 0))
        healthy[(service, port)] = counts.get("up", 0)
    yield from (sessions, total, bytes_in, bytes_out, servers)
    yield _healthy("haproxy", {(service, port, carrier): count
                               for (service, port), count in healthy.items()
                               for carrier in index.service_carriers.get(service, ("",))})
    if per_server:
        up = GaugeMetricFamily("dcnet_haproxy_server_up", "1 when the real server is up",
                               labels=["service", "port", "server", "state"])
        cur = GaugeMetricFamily("dcnet_haproxy_server_sessions", "Current sessions",
                                labels=["service", "port", "server"])
        for s in stats.servers:
            up.add_metric([s.service, s.port, s.server, s.state], int(s.state == "up"))
            cur.add_metric([s.service, s.port, s.server], s.sessions)
        yield from (up, cur)


def ipvs_families(tables: dict[str, IPVSTable], index: ServiceIndex, per_server: bool
                  ) -> Iterable:
    """The IPVS series of one scrape; ``tables`` by network namespace name."""
    conns = GaugeMetricFamily("dcnet_ipvs_service_connections", "Connections of the "
                              "service's real servers", labels=["netns", "service", "port",
                                                                "carrier", "state"])
    totals = CounterMetricFamily("dcnet_ipvs", "IPVS totals of the namespace "
                                 "(/proc/net/ip_vs_stats)", labels=["netns", "counter"])
    healthy: dict[tuple[str, str, str], int] = {}
    server = GaugeMetricFamily("dcnet_ipvs_server_connections", "Connections per real "
                               "server", labels=["netns", "service", "port", "carrier",
                                                 "server", "state"])
    for netns, table in sorted(tables.items()):
        for name, value in table.totals.items():
            totals.add_metric([netns, name], value)
        labelled = [(index.carriers.get((r.vip, r.port), (f"{r.vip}", "")), r)
                    for r in table.rows]
        sums = aggregate(labelled, lambda lr: (lr[0], lr[1].port),
                         lambda lr: {"active": lr[1].active, "inactive": lr[1].inactive,
                                     "weighted": int(lr[1].weight > 0)})
        for ((service, carrier), port), values in sums.items():
            for state in ("active", "inactive"):
                conns.add_metric([netns, service, str(port), carrier, state], values[state])
            key = (service, str(port), carrier)
            healthy[key] = healthy.get(key, 0) + int(values["weighted"])
        if per_server:
            for (service, carrier), r in labelled:
                for state, value in (("active", r.active), ("inactive", r.inactive)):
                    server.add_metric([netns, service, str(r.port), carrier, r.server, state],
                                      value)
    yield from (conns, totals)
    yield _healthy("lvs", healthy)
    if per_server:
        yield server
