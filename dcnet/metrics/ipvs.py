"""IPVS traffic counters for the ELB collector: connections scheduled, packets and bytes.

``/proc/net/ip_vs`` shows only connection gauges; the counters are in the generic-netlink
dumps: ``IPVS_SVC_ATTR_STATS64`` of each service in one service dump (``STATS`` on
kernels without it), and ``IPVS_DEST_ATTR_STATS64`` of each real server in one dest dump
per service, read only when per-server series are exposed (below the cardinality bound),
so a scrape of a large table costs one dump. :func:`attach` adds them to a table of the
exporter's IPVS source; :func:`families` labels them by the model, per service, port
and carrier (summed over the service's protocols and, like the connection gauges, over
every VIP of one carrier), and per real server when asked.

This module reads no kernel itself: :mod:`dcnet.lvs` imports :mod:`dcnet.target`, which
imports :mod:`dcnet.metrics`, so the command hands in an opener of an IPVS socket in the
right namespace (:class:`dcnet.lvs.ipvs_stats.StatsSocket`), whose ``service_counts()`` and
``dest_counts(family, protocol, address, port)`` are used as they are (a service as a
tuple: family, protocol, address, port, fwmark and the five counters; a dest as its row
and the five counters).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from dcnet.metrics.exposition import Family, escape, number

# a service's counters: (connections scheduled, packets in, out, bytes in, out)
Counts = tuple[int, int, int, int, int]
ZERO: Counts = (0, 0, 0, 0, 0)
LARGE = 10**15        # integers below this print as "%d.0" (exposition.number)


def counts_of(stats) -> Counts:
    """The five counters of a stats object (None: the kernel sent none, zeros)."""
    if stats is None:
        return ZERO
    return (stats.conns, stats.inpkts, stats.outpkts, stats.inbytes, stats.outbytes)


def add(into: dict, key, counts: Counts) -> None:
    old = into.get(key)
    into[key] = counts if old is None else tuple(a + b for a, b in zip(old, counts,
                                                                         strict=True))


def vip_sums(services: dict) -> tuple[dict[tuple[str, int], list[int]], int]:
    """Per (vip, port), the sums of :func:`dcnet.lvs.procfs.sum_dests` (``services``:
    per service, [active, inactive, weighted, dests]) over its protocols as [active,
    inactive, weighted], and the dests counted; fwmark services and services without
    a dest are left out, as they have no row."""
    out: dict[tuple[str, int], list[int]] = {}
    count = 0
    for service, (active, inactive, weighted, dests) in services.items():
        if service[0] == "fwmark" or not dests:
            continue
        count += dests
        into = out.get(key := (service[1], service[2]))
        if into is None:
            out[key] = [active, inactive, weighted]
        else:
            into[0] += active
            into[1] += inactive
            into[2] += weighted
    return out, count


def server_name(addr: str, port: int) -> str:
    """``ADDR:PORT`` as the connection series print a real server (``[V6]:PORT``)."""
    return f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"


def attach(table, open_socket: Callable[[], object]):
    """``table`` (an :class:`dcnet.metrics.elb.IPVSTable`) with its services' counters
    read now, by (vip, port), and ``server_counters`` reading each real server's on
    demand, by (vip, port, server); fwmark services (no VIP) are left out."""
    sock = open_socket()
    try:
        services = sock.service_counts()
    finally:
        sock.close()
    counters: dict[tuple[str, int], Counts] = {}
    for _family, _proto, addr, port, fwmark, *counts in services:
        if fwmark:
            continue
        key = (addr, port)
        old = counters.get(key)
        counters[key] = tuple(counts) if old is None else tuple(
            a + b for a, b in zip(old, counts, strict=True))
    table.counters = counters
    table.server_counters = lambda: read_servers(open_socket)
    return table


def read_servers(open_socket: Callable[[], object]) -> dict:
    """Per (vip, port, server), the real servers' counters: one dest dump per service
    of a service dump of its own (the scrape's first one keeps no key of a service:
    per-server series are off at 10,000 x 10)."""
    out: dict[tuple[str, int, str], Counts] = {}
    sock = open_socket()
    try:
        keys = [(family, proto, addr, port) for family, proto, addr, port, fwmark, *_
                in sock.service_counts() if not fwmark]
        for family, proto, addr, port in keys:
            for row, counts in sock.dest_counts(family, proto, addr, port):
                add(out, (addr, port, server_name(row[1], row[2])), counts)
    finally:
        sock.close()
    return out


def families(tables: dict, carriers: dict, servers: dict | None) -> list[Family]:
    """The counter families of one scrape. ``tables`` by namespace name (each with
    ``counters``), ``carriers`` the index's (vip, port) -> (service, carrier),
    ``servers`` by namespace name the per-server counters (None: per-service only).
    Label sets are formatted here once per service (names in sorted order, as
    :func:`dcnet.metrics.exposition.labels` prints them): the per-sample path of
    :class:`Family` costs 10 us a sample, a second at 10,000 services."""
    names = ("netns", "service", "port", "carrier")
    conns = Family("dcnet_ipvs_service_scheduled_connections", "Connections IPVS "
                   "scheduled to the service's real servers", "counter", names)
    packets = Family("dcnet_ipvs_service_packets", "Packets through the service (in: "
                     "from clients, out: to clients)", "counter", (*names, "direction"))
    volume = Family("dcnet_ipvs_service_bytes", "Bytes through the service (in: from "
                    "clients, out: to clients)", "counter", (*names, "direction"))
    out = [conns, packets, volume]
    if servers is not None:
        server_names = (*names, "server")
        sconns = Family("dcnet_ipvs_server_scheduled_connections", "Connections IPVS "
                        "scheduled to the real server", "counter", server_names)
        spackets = Family("dcnet_ipvs_server_packets", "Packets through the real server "
                          "(in: from clients, out: to clients)", "counter",
                          (*server_names, "direction"))
        svolume = Family("dcnet_ipvs_server_bytes", "Bytes through the real server (in: "
                         "from clients, out: to clients)", "counter",
                         (*server_names, "direction"))
        out += [sconns, spackets, svolume]
    heads: dict[str, str] = {}           # '{carrier="..."' once per carrier
    for netns, table in sorted(tables.items()):
        sums: dict[tuple, Counts] = {}
        for (vip, port), counts in getattr(table, "counters", {}).items():
            service, carrier = carriers.get((vip, port), (vip, ""))
            add(sums, (service, port, carrier), counts)
        netns_text = escape(netns)
        _extend(conns, packets, volume, [
            (heads.get(carrier) or heads.setdefault(carrier, f'{{carrier="{escape(carrier)}"'),
             f',netns="{netns_text}",port="{port}",service="{escape(service)}"}}', counts)
            for (service, port, carrier), counts in sums.items()])
        if servers is None:
            continue
        by_server: dict[tuple, Counts] = {}
        for (vip, port, server), counts in servers.get(netns, {}).items():
            service, carrier = carriers.get((vip, port), (vip, ""))
            add(by_server, (service, port, carrier, server), counts)
        _extend(sconns, spackets, svolume, [
            (f'{{carrier="{escape(carrier)}"',
             f',netns="{netns_text}",port="{port}",server="{escape(server)}",'
             f'service="{escape(service)}"}}', counts)
            for (service, port, carrier, server), counts in by_server.items()])
    return out


def _extend(conns: Family, packets: Family, volume: Family, sets: list) -> None:
    """Five samples per label set of ``sets``: (head, tail, counts), ``head`` +
    ``tail`` the set without ``direction``, which sorts between them. The lines are
    made only as the families are written (:meth:`Family.extend`): 50,000 at 10,000
    services are never held together."""
    conns.extend(_lines(conns, sets))
    packets.extend(_directions(packets, sets, 1))
    volume.extend(_directions(volume, sets, 3))


def _value(value: int) -> str:
    """``value`` as :func:`dcnet.metrics.exposition.number` prints it (integers below
    10^15 are formatted by the callers themselves: one format a line, no call)."""
    return f"{value}.0" if type(value) is int and -LARGE < value < LARGE else number(value)


def _lines(family: Family, sets: list) -> Iterator[str]:
    """``family``'s line of each label set: counts[0]."""
    sample = family.sample
    for head, tail, counts in sets:
        value = counts[0]
        if type(value) is int and -LARGE < value < LARGE:
            yield f"{sample}{head}{tail} {value}.0"
        else:
            yield f"{sample}{head}{tail} {_value(value)}"


def _directions(family: Family, sets: list, first: int) -> Iterator[str]:
    """``family``'s in and out lines of each label set: counts[first], counts[first+1]."""
    sample = family.sample
    for head, tail, counts in sets:
        ins, outs = counts[first], counts[first + 1]
        if type(ins) is int and type(outs) is int and -LARGE < ins < LARGE \
                and -LARGE < outs < LARGE:
            yield f'{sample}{head},direction="in"{tail} {ins}.0'
            yield f'{sample}{head},direction="out"{tail} {outs}.0'
        else:
            yield f'{sample}{head},direction="in"{tail} {_value(ins)}'
            yield f'{sample}{head},direction="out"{tail} {_value(outs)}'
