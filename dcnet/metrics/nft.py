"""The nft target's traffic counters as series (pure): per service, port and carrier.

The nft target keeps three named counter objects per VIP:port (docs/nft.md, "Counters"):
new connections (its service chain's first rule: a nat chain sees only a connection's
first packet), packets and bytes to the VIP:port (``in``, counted before DNAT) and from
it (``out``, the replies, counted after un-NAT). The exporter reads them all with one
``nft -j list counters table inet dcnet`` (never the table's chains or rules: see
docs/nft.md on why listings of a large table are slow), parsed by
:func:`dcnet.nft.nftio.parse_counters` into :data:`Rows`, which the command hands in
(this module reads no target code).

Series (counters): ``dcnet_nft_service_connections_total{service,port,protocol,carrier}``
and ``dcnet_nft_service_{packets,bytes}_total{service,port,protocol,carrier,direction}``
(``in``: client to VIP, ``out``: replies). A VIP:port the model does not know (or with no
model) is labelled ``service`` = its VIP and ``carrier`` = "". Bounded by the model's
VIP:ports: nothing per client, connection or real server.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from dcnet.metrics.exposition import Family, escape

# (proto, vip, port) -> {"conns" | "in" | "out": (packets, bytes)}
Rows = Mapping[tuple[str, str, int], Mapping[str, tuple[int, int]]]


def families(rows: Rows, carriers: Mapping[tuple[str, int], tuple[str, str]],
             ) -> list[Family]:
    """The nft families of one scrape; ``carriers``: (vip, port) -> (service, carrier),
    :attr:`dcnet.metrics.elb.ServiceIndex.carriers`."""
    conns = Family("dcnet_nft_service_connections", "New connections to the VIP:port "
                   "(its service chain's first rule)", "counter")
    packets = Family("dcnet_nft_service_packets", "Packets to the VIP:port (in) and its "
                     "replies (out)", "counter")
    octets = Family("dcnet_nft_service_bytes", "Bytes to the VIP:port (in) and of its "
                    "replies (out)", "counter")
    keys = sorted(rows)
    conns.extend(_lines(conns, rows, keys, carriers, ("conns",), 0))
    packets.extend(_lines(packets, rows, keys, carriers, ("in", "out"), 0))
    octets.extend(_lines(octets, rows, keys, carriers, ("in", "out"), 1))
    return [conns, packets, octets]


def _lines(family: Family, rows: Rows, keys: list, carriers, which: tuple[str, ...],
           column: int) -> Iterator[str]:
    """The family's sample lines, made as it is written (never all at once)."""
    for proto, vip, port in keys:
        counts = rows[(proto, vip, port)]
        service, carrier = carriers.get((vip, port), (vip, ""))
        # label names sorted, as prometheus_client prints them
        tail = f'port="{port}",protocol="{escape(proto)}",service="{escape(service)}"}}'
        for name in which:
            if name in counts:
                direction = "" if name == "conns" else f'direction="{name}",'
                yield family.line(f'{{carrier="{escape(carrier)}",{direction}{tail}',
                                  counts[name][column])
