"""The ELB collector: what a director serves, per service, port and carrier.

Sources are handed in as callables by the command that runs the exporter (``elbctl
exporter``, ``elbctl agent --metrics-address``), so this module reads no target code:

- ``haproxy_stat(filter)``: the text of HAProxy's ``show stat <filter>`` (runtime API,
  CSV), read by :mod:`dcnet.metrics.haproxy_stat`; server rows are asked for only when
  per-server series may be exposed (the model's count of real servers is within the
  bound, or there is no model);
- ``ipvs_tables()``: per network namespace, the rows of ``/proc/net/ip_vs`` (virtual
  address, port, protocol, real server, active and inactive connections; or their sums
  per VIP:port, the rows made only for per-server series: :class:`IPVSTable`), the
  totals of ``/proc/net/ip_vs_stats`` and the services' and real servers' traffic
  counters read by generic netlink (:mod:`dcnet.metrics.ipvs`);
- ``nft_counters()``: the nft target's counter objects per VIP:port (new connections,
  packets and bytes in and out; :mod:`dcnet.metrics.nft`);
- ``status_paths``: the status files of the targets (:mod:`dcnet.metrics.status`);
- ``drift()``: per target, whether the plan of the last applied model is non-empty
  (computed off the scrape path by the caller).

Per-server series obey :class:`dcnet.metrics.cardinality.Bound`; per-service series and
``dcnet_service_info`` (the JOBNAME tags, for ``group_left`` joins) are bounded by the
model. Nothing is labelled by client or connection. The text is written directly
(:mod:`dcnet.metrics.exposition`): the collector is a text source of an
:class:`~dcnet.metrics.exposition.Exposition`, not a ``prometheus_client`` collector.
"""

from __future__ import annotations

import sys
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

from dcnet.gcpause import paused_gc
from dcnet.metrics import haproxy_stat, ipvs, nft, status
from dcnet.metrics.cardinality import Bound
from dcnet.metrics.exposition import Family, encoded, escape, labels

JOBNAME_TAGS = ("job", "jobgroup", "service", "servicegroup", "cluster", "pdl", "owt", "cop")


class IPVSRow(NamedTuple):
    """One real server of one IPVS virtual service (``/proc/net/ip_vs``); a named tuple:
    100,000 of them are made at each scrape of a 10,000 x 10 table."""

    vip: str
    port: int
    protocol: str
    server: str
    active: int
    inactive: int
    weight: int


@dataclass
class IPVSTable:
    """One namespace's IPVS: the rows, the namespace totals and, when read by generic
    netlink (:func:`dcnet.metrics.ipvs.attach`), each service's counters by (vip, port)
    and a reader of each real server's, called only when per-server series are on.

    Or, instead of the rows, ``sums`` per (vip, port) (active, inactive, servers with
    weight), their ``count`` and ``read_rows`` making the rows only when per-server
    series are on: 100,000 rows are not made to be summed at a 10,000 x 10 scrape."""

    rows: list[IPVSRow] = field(default_factory=list)
    totals: dict[str, int] = field(default_factory=dict)   # conns, inpkts, outpkts, ...
    counters: dict[tuple[str, int], tuple[int, ...]] = field(default_factory=dict)
    server_counters: Callable[[], dict] | None = None
    sums: dict[tuple[str, int], tuple[int, int, int]] | None = None
    count: int | None = None
    read_rows: Callable[[], list[IPVSRow]] | None = None

    def row_count(self) -> int:
        return len(self.rows) if self.count is None else self.count

    def server_rows(self) -> list[IPVSRow]:
        return self.rows if self.read_rows is None else self.read_rows()

    def vip_sums(self, rows: list[IPVSRow] | None = None) -> dict[tuple[str, int], list[int]]:
        """Per (vip, port): [active, inactive, servers with weight] (not to be
        changed), of ``rows`` when given (the per-server series' own), else of the
        table."""
        if rows is None and self.sums is not None:
            return self.sums
        per_vip: dict[tuple[str, int], list[int]] = {}
        for r in self.rows if rows is None else rows:
            sums = per_vip.get((r.vip, r.port))
            if sums is None:
                per_vip[(r.vip, r.port)] = [r.active, r.inactive, int(r.weight > 0)]
            else:
                sums[0] += r.active
                sums[1] += r.inactive
                sums[2] += r.weight > 0
        return per_vip


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
    """Pure view of the model for labelling: which (vip, port) is which service/carrier.

    It is all an exporter keeps of its model (the model itself is loaded in a child:
    :mod:`dcnet.metrics.isolated`), so it is compact: each name is one string object
    shared by every table, the JOBNAME tags are kept only as the finished text of
    ``dcnet_service_info`` (compressed: 2.5 MiB of text at 10,000 services, 0.2 MiB
    so), and ``carriers`` (what IPVS rows are labelled with) and ``service_carriers``
    (HAProxy's rows) are filled only when asked for (``vips``, ``services``: 0.5 MiB at
    10,000 services)."""

    carriers: dict[tuple[str, int], tuple[str, str]]        # (vip, port) -> (service, carrier)
    service_carriers: dict[str, tuple[str, ...]]
    info: bytes = b""                    # the dcnet_service_info family, UTF-8, zlib
    server_slots: int | None = None      # real servers x ports of the model (None: no model)

    @classmethod
    def of(cls, model, vips: bool = True, services: bool = True) -> ServiceIndex:
        """The index of ``model`` (a model, None, or an index already); without
        ``vips``, ``carriers`` is left empty (no IPVS source to label), without
        ``services`` ``service_carriers`` (no HAProxy source)."""
        if isinstance(model, ServiceIndex):
            return model
        carriers, by_service = {}, {}
        info = Family("dcnet_service_info", "The JOBNAME tags of each service of the "
                      "model (join with group_left on service)")
        slots = None
        if model is not None:
            slots = 0
            intern = sys.intern
            for service in model.services:
                name = intern(service.name)
                names = tuple(dict.fromkeys(intern(c) for c, _ in service.vips))
                if services:
                    by_service[name] = names
                values = {"service": name, "carriers": ",".join(names),
                          **{f"tag_{t}": getattr(service.job, t) or "" for t in JOBNAME_TAGS}}
                info.add_formatted(labels(values, values.values()), 1)
                slots += len(service.real_servers) * len(service.ports)
                for carrier, vip in service.vips if vips else ():
                    for port in service.ports:
                        carriers[(str(vip), port.port)] = (name, intern(carrier))
        return cls(carriers, by_service, zlib.compress(info.text().encode()), slots)

    def info_text(self) -> str:
        """``dcnet_service_info`` (formatted once per model: it does not change)."""
        return self.info_bytes().decode()

    def info_bytes(self) -> bytes:
        return zlib.decompress(self.info) if self.info else b""

    def info_pieces(self, size: int = 1 << 18) -> Iterator[bytes]:
        """``dcnet_service_info`` decompressed ``size`` bytes at a time (2.5 MiB whole at
        10,000 services)."""
        inflate = zlib.decompressobj()
        data = self.info
        while data:
            yield inflate.decompress(data, size)
            data = inflate.unconsumed_tail
        yield inflate.flush()


class ELBCollector:
    """Collects every source given at scrape time; a failing source is reported in
    ``dcnet_exporter_source_up{source}`` and does not hide the others."""

    def __init__(self, model: Callable[[], object] | None = None,
                 haproxy_stat: Callable[[str], str] | None = None,
                 ipvs_tables: Callable[[], dict[str, IPVSTable]] | None = None,
                 status_paths: dict[str, str] | None = None,
                 drift: Callable[[], dict[str, bool | None]] | None = None,
                 bound: Bound | None = None, clock: Callable[[], float] = time.time,
                 nft_counters: Callable[[], nft.Rows] | None = None):
        self.model, self.haproxy_stat, self.ipvs_tables = model, haproxy_stat, ipvs_tables
        self.nft_counters = nft_counters
        self.status_paths, self.drift = dict(status_paths or {}), drift
        self.bound, self.clock = bound or Bound(), clock
        self._index: tuple[object, ServiceIndex] | None = None

    def index(self) -> ServiceIndex:
        model = self.model() if self.model else None
        if self._index is None or self._index[0] is not model:
            self._index = (model, ServiceIndex.of(model))
        return self._index[1]

    def exposition(self) -> str:
        """The text of one scrape."""
        return b"".join(self.chunks()).decode()

    def chunks(self) -> Iterator[bytes]:
        """The text of one scrape, collected now, encoded family by family as the server
        writes it."""
        return encoded(self.collect())

    def collect(self) -> list:
        """Families (and pre-formatted text) of one scrape."""
        up = Family("dcnet_exporter_source_up", "1 when the source answered at this scrape",
                    "gauge", ("source",))
        index = self.index()
        out: list = [index.info_pieces()]
        per_server = Family("dcnet_metrics_per_server_series_enabled", "1 when "
                            "per-real-server series are exposed (below the cardinality "
                            "bound)", "gauge", ("source",))
        rows = Family("dcnet_metrics_server_rows", "Real-server rows seen by the source "
                      "(what the bound counts; the model's count when only backend rows "
                      "were read)", "gauge", ("source",))
        healthy = Family("dcnet_elb_vip_healthy_servers", "Healthy real servers with weight "
                         "behind each VIP (0: the VIP answers nobody)", "gauge",
                         ("target", "service", "port", "carrier"))
        if self.haproxy_stat is not None:
            servers_wanted = self._servers_wanted(index.server_slots)
            try:
                stats = haproxy_stat.parse_show_stat(self.haproxy_stat(
                    haproxy_stat.BACKENDS_AND_SERVERS if servers_wanted
                    else haproxy_stat.BACKENDS_ONLY))
            except Exception:      # HAProxy down or its socket stale: say so, go on
                up.add(("haproxy",), 0)
            else:
                up.add(("haproxy",), 1)
                count = len(stats.servers) if stats.server_rows_read or servers_wanted \
                    else index.server_slots
                enabled = servers_wanted and self.bound.per_server(count or 0)
                per_server.add(("haproxy",), int(enabled))
                rows.add(("haproxy",), count or 0)
                families, counts = haproxy_stat.families(stats, index.service_carriers,
                                                         enabled)
                out += families
                for (service, port, carrier), value in counts.items():
                    healthy.add(("haproxy", service, port, carrier), value)
        if self.ipvs_tables is not None:
            # 100,000 dest lines summed, 10,000 services read and labelled: nothing
            # made here forms a cycle, and the cyclic collector's walks of the heap
            # cost about 10 ms of a 10,000 x 10 scrape (bench/metrics_ipvs_host.py);
            # the lines are made later, as written (strings: not tracked)
            with paused_gc():
                try:
                    tables = self.ipvs_tables()
                    count = sum(t.row_count() for t in tables.values())
                    enabled = self.bound.per_server(count)
                    servers = {name: t.server_counters() for name, t in tables.items()
                               if enabled and t.server_counters is not None}
                except Exception:
                    up.add(("ipvs",), 0)
                else:
                    up.add(("ipvs",), 1)
                    per_server.add(("ipvs",), int(enabled))
                    rows.add(("ipvs",), count)
                    out += ipvs_families(tables, index, enabled, healthy)
                    out += ipvs.families(tables, index.carriers, servers if enabled else None)
        if self.nft_counters is not None:    # per VIP:port only: dcnet.metrics.nft
            try:
                counters = self.nft_counters()
            except Exception:
                up.add(("nft",), 0)
            else:
                up.add(("nft",), 1)
                out += nft.families(counters, index.carriers)
        out += [healthy, per_server, rows, *self._status(), up]
        return out

    def _servers_wanted(self, slots: int | None) -> bool:
        """Whether to read HAProxy's server rows: per-server series may be exposed (the
        bound decides on the model's count; without a model, read them to count)."""
        if slots is None:
            return self.bound.mode != "service"
        return self.bound.per_server(slots)

    def _status(self) -> list[Family]:
        runs = Family("dcnet_elb_applies", "Applies by result (ok, failed: a change failed, "
                      "error: refused or raised)", "counter", ("target", "result"))
        plans = Family("dcnet_elb_plans", "Plan-only runs", "counter", ("target",))
        changes = Family("dcnet_elb_changes_applied", "Changes applied", "counter",
                         ("target",))
        writes = Family("dcnet_elb_writes", "Writes to the target by kind (the target's "
                        "counters)", "counter", ("target", "kind"))
        duration = Family("dcnet_elb_apply_last_duration_seconds", "Duration of the last "
                          "apply (lock held)", "gauge", ("target",))
        dsum = Family("dcnet_elb_apply_duration_seconds", "Total seconds spent applying",
                      "counter", ("target",))
        last = Family("dcnet_elb_last_successful_sync_timestamp_seconds", "When the last "
                      "apply succeeded", "gauge", ("target",))
        since = Family("dcnet_elb_seconds_since_last_successful_sync", "Seconds since the "
                       "last successful apply (+Inf: never)", "gauge", ("target",))
        drift = Family("dcnet_elb_drift", "1 when the plan of the last applied model is not "
                       "empty (the target differs from it)", "gauge", ("target",))
        now = self.clock()
        for target, path in sorted(self.status_paths.items()):
            data = status.read(path)
            for result in ("ok", "failed", "error"):
                runs.add((target, result), data.get("applies", {}).get(result, 0))
            plans.add((target,), data.get("plans", 0))
            changes.add((target,), data.get("changes_applied", 0))
            for kind, count in sorted(data.get("writes", {}).items()):
                writes.add((target, kind), count)
            dsum.add((target,), float(data.get("duration_sum", 0.0)))
            if "last_duration" in data:
                duration.add((target,), float(data["last_duration"]))
            if "last_success" in data:
                last.add((target,), float(data["last_success"]))
                since.add((target,), max(0.0, now - data["last_success"]))
            else:
                since.add((target,), float("inf"))
        for target, value in sorted((self.drift() if self.drift else {}).items()):
            if value is not None:
                drift.add((target,), int(value))
        return [runs, plans, changes, writes, duration, dsum, last, since, drift]


def ipvs_families(tables: dict[str, IPVSTable], index: ServiceIndex, per_server: bool,
                  healthy: Family) -> list[Family]:
    """The IPVS series of one scrape; ``tables`` by network namespace name. Healthy
    counts per (service, port, carrier) go into ``healthy``. Rows are summed per
    (vip, port) in one plain loop (or were, by the source: ``IPVSTable.sums``) and
    each label set is formatted once (names sorted, as
    :func:`dcnet.metrics.exposition.labels` prints them): 100,000 rows at 10,000 x 10."""
    conns = Family("dcnet_ipvs_service_connections", "Connections of the service's real "
                   "servers", "gauge", ("netns", "service", "port", "carrier", "state"))
    totals = Family("dcnet_ipvs", "IPVS totals of the namespace (/proc/net/ip_vs_stats)",
                    "counter", ("netns", "counter"))
    counts: dict[tuple[str, str, str], int] = {}
    server = Family("dcnet_ipvs_server_connections", "Connections per real server",
                    "gauge", ("netns", "service", "port", "carrier", "server", "state"))
    carriers = index.carriers
    for netns, table in sorted(tables.items()):
        for name, value in table.totals.items():
            totals.add((netns, name), value)
        rows = table.server_rows() if per_server else None
        per_vip = table.vip_sums(rows)
        per_service: dict[tuple[str, str, str], list[int]] = {}
        for (vip, port), values in per_vip.items():
            service, carrier = carriers.get((vip, port), (vip, ""))
            key = (service, str(port), carrier)
            sums = per_service.get(key)
            per_service[key] = values if sums is None else [a + b for a, b in zip(
                sums, values, strict=True)]         # a new list: the table's are kept
        netns_text = escape(netns)
        conns.extend_text(ipvs.state_texts(conns.sample, netns_text, per_service))
        for (service, port, carrier), (_active, _inactive, weighted) in per_service.items():
            key = (service, port, carrier)
            counts[key] = counts.get(key, 0) + weighted
        if per_server:
            for r in rows:
                service, carrier = carriers.get((r.vip, r.port), (r.vip, ""))
                for state, value in (("active", r.active), ("inactive", r.inactive)):
                    server.add((netns, service, str(r.port), carrier, r.server, state), value)
    healthy.extend_text(ipvs.healthy_texts(healthy.sample, counts))     # made as written
    return [conns, totals, server] if per_server else [conns, totals]
