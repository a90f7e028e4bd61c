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

import operator
from collections.abc import Callable, Iterable, Iterator
from itertools import chain

from dcnet.metrics.exposition import Family, escape, number, plain_values

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
    a dest are left out, as they have no row. ``services`` is used up: the first list
    of each (vip, port) becomes its sums (its dest count removed)."""
    out: dict[tuple[str, int], list[int]] = {}
    count = 0
    found = out.get
    for service, sums in services.items():
        if service[0] == "fwmark" or not sums[3]:
            continue
        count += sums[3]
        into = found(key := service[1:])
        if into is None:
            del sums[3]
            out[key] = sums             # the list taken over: 10,000 not made again
        else:
            into[0] += sums[0]
            into[1] += sums[1]
            into[2] += sums[2]
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
    found = counters.get
    for service in services:        # family, protocol, address, port, fwmark, counts
        if service[4]:
            continue
        key, counts = service[2:4], service[5:]
        old = found(key)
        counters[key] = counts if old is None else tuple(map(operator.add, old, counts))
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


def service_sums(counters: dict, carriers: dict) -> dict[tuple, Counts]:
    """``counters`` by (vip, port) summed per (service, port, carrier) of ``carriers``
    (a VIP the model does not know is its own service, of carrier "")."""
    sums: dict[tuple, Counts] = {}
    get, found = carriers.get, sums.get
    for vip_port, counts in counters.items():
        service, carrier = get(vip_port) or (vip_port[0], "")
        key = (service, vip_port[1], carrier)
        old = found(key)
        sums[key] = counts if old is None else tuple(map(operator.add, old, counts))
    return sums


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

    def head(carrier: str) -> str:
        return heads.get(carrier) or heads.setdefault(carrier,
                                                      f'{{carrier="{escape(carrier)}"')

    for netns, table in sorted(tables.items()):
        sums = service_sums(getattr(table, "counters", {}), carriers)
        netns_text = escape(netns)

        def label_sets(keys: list, netns_text: str = netns_text) -> tuple[list, list]:
            services = [key[0] for key in keys]
            if not plain_values(services):                # a service name to escape
                services = list(map(escape, services))
            return ([head(key[2]) for key in keys],
                    [f',netns="{netns_text}",port="{key[1]}",service="{service}"}}'
                     for key, service in zip(keys, services, strict=True)])

        _extend(conns, packets, volume, LabelSets(sums, label_sets))
        if servers is None:
            continue
        by_server: dict[tuple, Counts] = {}
        for (vip, port, server), counts in servers.get(netns, {}).items():
            service, carrier = carriers.get((vip, port), (vip, ""))
            add(by_server, (service, port, carrier, server), counts)

        def server_sets(keys: list, netns_text: str = netns_text) -> tuple[list, list]:
            return ([head(carrier) for _, _, carrier, _ in keys],
                    [f',netns="{netns_text}",port="{port}",server="{escape(server)}",'
                     f'service="{escape(service)}"}}' for service, port, _, server in keys])

        _extend(sconns, spackets, svolume, LabelSets(by_server, server_sets))
    return out


class LabelSets:
    """The label sets of one namespace's services (the keys of ``sums``, their counts
    its values), :data:`BLOCK` at a time: for each, ``head`` + ``tail`` is the set
    without ``direction``, which sorts between them. A block is made when a family
    first writes it and kept for the other two (the three are written one after the
    other): the 10,000 sets of a large table are not made before the scrape is
    written. Lists of strings only, no tuple a set: the lines are made with the
    cyclic collector running, and 10,000 tuples cost it several walks."""

    __slots__ = ("blocks", "counts", "keys", "make")

    def __init__(self, sums: dict, make: Callable[[list], tuple[list, list]]):
        self.keys, self.counts, self.make, self.blocks = list(sums), list(sums.values()), \
            make, {}

    def block(self, at: int) -> tuple[list, list, list]:
        """Heads, tails and counts of the block at ``at``."""
        sets = self.blocks.get(at)
        if sets is None:
            sets = self.blocks[at] = (*self.make(self.keys[at:at + BLOCK]),
                                      self.counts[at:at + BLOCK])
        return sets


def _extend(conns: Family, packets: Family, volume: Family, sets: LabelSets) -> None:
    """Five samples per label set of ``sets``. The lines are made only as the families
    are written (:meth:`Family.extend_text`), :data:`BLOCK` label sets at a time:
    50,000 at 10,000 services are never held together."""
    plain = plain_counts(sets.counts)
    conns.extend_text(_blocks(_lines, conns.sample, sets, plain, 0))
    packets.extend_text(_blocks(_directions, packets.sample, sets, plain, 1))
    volume.extend_text(_blocks(_directions, volume.sample, sets, plain, 3))


BLOCK = 1024          # label sets formatted and joined at a time (about 200 KiB of text)


def plain_counts(counts: Iterable[tuple]) -> bool:
    """Whether every value of ``counts`` is an int (not a bool) below 10^15, printed
    as ``%d.0`` (:func:`dcnet.metrics.exposition.number`): checked at once, in C, so
    the lines are formatted without a test each."""
    flat = list(chain.from_iterable(counts))
    return not flat or ({*map(type, flat)} == {int} and min(flat) > -LARGE
                        and max(flat) < LARGE)


def _blocks(make: Callable, sample: str, sets: LabelSets, plain: bool, first: int
            ) -> Iterator[str]:
    for at in range(0, len(sets.keys), BLOCK):
        yield make(sample, *sets.block(at), plain, first)


def _value(value: int) -> str:
    """``value`` as :func:`dcnet.metrics.exposition.number` prints it."""
    return f"{value}.0" if type(value) is int and -LARGE < value < LARGE else number(value)


def _lines(sample: str, heads: list, tails: list, counts: list, plain: bool,
           first: int) -> str:
    """The line of each label set: counts[first], joined."""
    if plain:
        return "".join([f"{sample}{head}{tail} {values[first]}.0\n"
                        for head, tail, values in zip(heads, tails, counts, strict=True)])
    return "".join([f"{sample}{head}{tail} {_value(values[first])}\n"
                    for head, tail, values in zip(heads, tails, counts, strict=True)])


def _directions(sample: str, heads: list, tails: list, counts: list, plain: bool,
                first: int) -> str:
    """The in and out lines of each label set: counts[first], counts[first + 1],
    joined."""
    if plain:
        return "".join([f'{sample}{head},direction="in"{tail} {values[first]}.0\n'
                        f'{sample}{head},direction="out"{tail} {values[first + 1]}.0\n'
                        for head, tail, values in zip(heads, tails, counts, strict=True)])
    return "".join([f'{sample}{head},direction="in"{tail} {_value(values[first])}\n'
                    f'{sample}{head},direction="out"{tail} {_value(values[first + 1])}\n'
                    for head, tail, values in zip(heads, tails, counts, strict=True)])


def state_texts(sample: str, netns_text: str, per_service: dict) -> Iterator[str]:
    """The connection gauges' lines of one namespace (``netns_text`` escaped), an
    active and an inactive line per (service, port, carrier) of ``per_service`` (its
    values [active, inactive, ...]), joined :data:`BLOCK` services at a time (for
    :meth:`Family.extend_text`): the text :func:`dcnet.metrics.exposition.labels`
    and ``number`` print, names sorted. No tuple made a service (see
    :class:`LabelSets`)."""
    keys, counts = list(per_service), list(per_service.values())
    plain = plain_counts(counts)                    # the servers counted: ints too
    for at in range(0, len(keys), BLOCK):
        block = keys[at:at + BLOCK]
        if plain_values(chain.from_iterable(block)):
            heads = [f'{sample}{{carrier="{carrier}",netns="{netns_text}",port="{port}",'
                     f'service="{service}",state="' for service, port, carrier in block]
        else:
            heads = [f'{sample}{{carrier="{escape(carrier)}",netns="{netns_text}",port='
                     f'"{port}",service="{escape(service)}",state="'
                     for service, port, carrier in block]
        values = counts[at:at + BLOCK]
        if plain:
            yield "".join([f'{head}active"}} {sums[0]}.0\n{head}inactive"}} {sums[1]}.0\n'
                           for head, sums in zip(heads, values, strict=True)])
        else:
            yield "".join([f'{head}active"}} {_value(sums[0])}\n{head}inactive"}} '
                           f'{_value(sums[1])}\n'
                           for head, sums in zip(heads, values, strict=True)])


def healthy_texts(sample: str, counts: dict) -> Iterator[str]:
    """``dcnet_elb_vip_healthy_servers``'s IPVS lines: one per (service, port, carrier)
    of ``counts`` (servers of weight > 0), ``target="lvs"``, joined :data:`BLOCK` at a
    time (for :meth:`Family.extend_text`)."""
    keys, values = list(counts), list(counts.values())
    plain = plain_counts([values])
    for at in range(0, len(keys), BLOCK):
        block = keys[at:at + BLOCK]
        if not plain_values(chain.from_iterable(block)):
            block = [(escape(service), port, escape(carrier))
                     for service, port, carrier in block]
        if plain:
            yield "".join([f'{sample}{{carrier="{carrier}",port="{port}",service='
                           f'"{service}",target="lvs"}} {value}.0\n' for
                           (service, port, carrier), value in
                           zip(block, values[at:at + BLOCK], strict=True)])
        else:
            yield "".join([f'{sample}{{carrier="{carrier}",port="{port}",service='
                           f'"{service}",target="lvs"}} {_value(value)}\n' for
                           (service, port, carrier), value in
                           zip(block, values[at:at + BLOCK], strict=True)])
