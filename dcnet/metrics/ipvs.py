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
right namespace (:class:`dcnet.lvs.genl.IPVSSocket`), whose ``service_stats()`` and
``dest_stats(service)`` are used as they are (services with ``fwmark``, ``addr``,
``port``; counters with ``conns``, ``inpkts``, ``outpkts``, ``inbytes``, ``outbytes``).
"""

from __future__ import annotations

from collections.abc import Callable

from dcnet.metrics.exposition import Family

# a service's counters: (connections scheduled, packets in, out, bytes in, out)
Counts = tuple[int, int, int, int, int]
ZERO: Counts = (0, 0, 0, 0, 0)


def counts_of(stats) -> Counts:
    """The five counters of a stats object (None: the kernel sent none, zeros)."""
    if stats is None:
        return ZERO
    return (stats.conns, stats.inpkts, stats.outpkts, stats.inbytes, stats.outbytes)


def add(into: dict, key, counts: Counts) -> None:
    old = into.get(key)
    into[key] = counts if old is None else tuple(a + b for a, b in zip(old, counts,
                                                                         strict=True))


def server_name(addr: str, port: int) -> str:
    """``ADDR:PORT`` as the connection series print a real server (``[V6]:PORT``)."""
    return f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"


def attach(table, open_socket: Callable[[], object]):
    """``table`` (an :class:`dcnet.metrics.elb.IPVSTable`) with its services' counters
    read now, by (vip, port), and ``server_counters`` reading each real server's on
    demand, by (vip, port, server); fwmark services (no VIP) are left out."""
    sock = open_socket()
    try:
        services = [(ws, stats) for ws, stats in sock.service_stats() if not ws.fwmark]
    finally:
        sock.close()
    counters: dict[tuple[str, int], Counts] = {}
    for ws, stats in services:
        add(counters, (ws.addr, ws.port), counts_of(stats))
    table.counters = counters
    table.server_counters = lambda: read_servers(open_socket, [ws for ws, _ in services])
    return table


def read_servers(open_socket: Callable[[], object], services: list) -> dict:
    """Per (vip, port, server), the real servers' counters: one dest dump per service."""
    out: dict[tuple[str, int, str], Counts] = {}
    sock = open_socket()
    try:
        for ws in services:
            for row, stats in sock.dest_stats(ws):
                add(out, (ws.addr, ws.port, server_name(row[1], row[2])), counts_of(stats))
    finally:
        sock.close()
    return out


def families(tables: dict, carriers: dict, servers: dict | None) -> list[Family]:
    """The counter families of one scrape. ``tables`` by namespace name (each with
    ``counters``), ``carriers`` the index's (vip, port) -> (service, carrier),
    ``servers`` by namespace name the per-server counters (None: per-service only)."""
    names = ("netns", "service", "port", "carrier")
    conns = Family("dcnet_ipvs_service_scheduled_connections", "Connections IPVS "
                   "scheduled to the service's real servers", "counter", names)
    packets = Family("dcnet_ipvs_service_packets", "Packets through the service (in: "
                     "from clients, out: to clients)", "counter", (*names, "direction"))
    volume = Family("dcnet_ipvs_service_bytes", "Bytes through the service (in: from "
                    "clients, out: to clients)", "counter", (*names, "direction"))
    out = [conns, packets, volume]
    per_server = servers is not None
    if per_server:
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
    for netns, table in sorted(tables.items()):
        sums: dict[tuple[str, str, str], Counts] = {}
        for (vip, port), counts in getattr(table, "counters", {}).items():
            service, carrier = carriers.get((vip, port), (vip, ""))
            add(sums, (service, str(port), carrier), counts)
        for (service, port, carrier), (c, pin, pout, bin_, bout) in sums.items():
            key = (netns, service, port, carrier)
            conns.add(key, c)
            packets.add((*key, "in"), pin)
            packets.add((*key, "out"), pout)
            volume.add((*key, "in"), bin_)
            volume.add((*key, "out"), bout)
        by_server: dict[tuple[str, str, str, str], Counts] = {}
        for (vip, port, server), counts in (servers or {}).get(netns, {}).items():
            service, carrier = carriers.get((vip, port), (vip, ""))
            add(by_server, (service, str(port), carrier, server), counts)
        for labels, (c, pin, pout, bin_, bout) in by_server.items():
            key = (netns, *labels)
            sconns.add(key, c)
            spackets.add((*key, "in"), pin)
            spackets.add((*key, "out"), pout)
            svolume.add((*key, "in"), bin_)
            svolume.add((*key, "out"), bout)
    return out
