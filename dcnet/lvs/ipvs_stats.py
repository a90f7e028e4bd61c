"""Reading IPVS's traffic counters (for the metrics): the stats attributes of the
generic-netlink service and dest dumps.

Each service and dest of a dump carries ``IPVS_{SVC,DEST}_ATTR_STATS`` (32-bit connection
and packet counters, 64-bit bytes) and, since Linux 4.8, ``..._STATS64`` (every counter
64-bit), each nesting ``IPVS_STATS_ATTR_*``. :class:`StatsSocket` is
:class:`dcnet.lvs.genl.IPVSSocket` with the reads that keep them: the generic ones
(:meth:`StatsSocket.service_stats`, :meth:`StatsSocket.dest_stats`: objects) and the
scrape's flat ones (:meth:`StatsSocket.service_counts`, :meth:`StatsSocket.dest_counts`:
tuples, only the key and the counters read). The wire format of the rest stays in
:mod:`dcnet.lvs.genl`.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

from dcnet.lvs.genl import (
    NLA_TYPE_MASK,
    SVC_ADDR,
    SVC_AF,
    SVC_FWMARK,
    SVC_PORT,
    SVC_PROTOCOL,
    IPVSSocket,
    WireService,
    decode_service,
    dest_row,
    iter_attrs,
)

# statistics (read only): IPVS_{SVC,DEST}_ATTR_STATS (32-bit counters, 64-bit bytes) and
# ..._STATS64 (every counter 64-bit, kernel 4.8+), each nesting IPVS_STATS_ATTR_*
SVC_STATS, SVC_STATS64, DEST_STATS, DEST_STATS64 = 10, 12, 10, 12
STATS_CONNS, STATS_INPKTS, STATS_OUTPKTS, STATS_INBYTES, STATS_OUTBYTES = 1, 2, 3, 4, 5
_NLA = struct.Struct("=HH")
_U16, _U32, _U64 = struct.Struct("=H"), struct.Struct("=I"), struct.Struct("=Q")
# the layout ip_vs_genl_fill_service gives a virtual service (read at once when found):
# first AF, PROTOCOL, ADDR (the 16-byte union nf_inet_addr) and PORT, 4-byte aligned;
# last STATS64 holding ten u64 counters with no pad attribute between them (x86-64 and
# every architecture with efficient unaligned access)
_KEY = struct.Struct("=HHH2xHHH2xHH16sHH2s2x")
_KEY_HEADERS = (6, SVC_AF, 6, SVC_PROTOCOL, 20, SVC_ADDR, 6, SVC_PORT)
_STATS64_SIZE = 4 + 10 * 12
_STATS64_HEADERS = ((_STATS64_SIZE, SVC_STATS64), (_STATS64_SIZE, SVC_STATS64 | 0x8000))
_FIVE = struct.Struct("=HHQHHQHHQHHQHHQ")
_FIVE_HEADERS = (12, STATS_CONNS, 12, STATS_INPKTS, 12, STATS_OUTPKTS, 12, STATS_INBYTES,
                 12, STATS_OUTBYTES)


@dataclass(frozen=True)
class Stats:
    """An IPVS service's or dest's counters since it was added: connections scheduled,
    packets and bytes in (client to director) and out (director to client)."""

    conns: int = 0
    inpkts: int = 0
    outpkts: int = 0
    inbytes: int = 0
    outbytes: int = 0


def decode_stats(data: bytes | memoryview, start: int, end: int) -> Stats:
    """The counters nested in one STATS or STATS64 attribute: each read by its length
    (4 or 8 bytes: STATS has 32-bit connection and packet counters, STATS64 64-bit
    ones; padding attributes and rates are skipped)."""
    values = [0, 0, 0, 0, 0]
    for kind, a, b in iter_attrs(data, start, end):
        if STATS_CONNS <= kind <= STATS_OUTBYTES:
            size = b - a
            if size == 8:
                values[kind - 1] = _U64.unpack_from(data, a)[0]
            elif size == 4:
                values[kind - 1] = _U32.unpack_from(data, a)[0]
    return Stats(*values)


def nested_stats(data: bytes | memoryview, start: int, end: int, stats: int,
                 stats64: int) -> Stats | None:
    """The counters of a service or dest attribute set: STATS64 when the kernel sent
    it, else STATS (32-bit packet counters wrap), else None."""
    found: dict[int, tuple[int, int]] = {}
    for kind, a, b in iter_attrs(data, start, end):
        if kind in (stats, stats64):
            found[kind] = (a, b)
    where = found.get(stats64) or found.get(stats)
    return None if where is None else decode_stats(data, *where)


def _counts(data: bytes | memoryview, start: int, end: int) -> tuple[int, ...]:
    """The five counters of a STATS/STATS64 nest, as :func:`decode_stats` reads them,
    as a tuple, stopping after the last one (the scrape's hot path)."""
    unpack_nla = _NLA.unpack_from
    values = [0, 0, 0, 0, 0]
    while start + 4 <= end:
        length, kind = unpack_nla(data, start)
        if length < 4:
            break
        kind &= NLA_TYPE_MASK
        if STATS_CONNS <= kind <= STATS_OUTBYTES:
            if length == 12:
                values[kind - 1] = _U64.unpack_from(data, start + 4)[0]
            elif length == 8:
                values[kind - 1] = _U32.unpack_from(data, start + 4)[0]
            if kind == STATS_OUTBYTES:
                break
        start += (length + 3) & ~3
    return tuple(values)


def service_counts(data: bytes | memoryview, start: int, end: int) -> tuple:
    """The hot path of a metrics scrape: one service of a dump as (family, protocol,
    address, port, fwmark, conns, inpkts, outpkts, inbytes, outbytes), reading only
    the key and the STATS64 nest (STATS without it; zeros without either).

    A service laid out as the kernel lays it out (key first, an unpadded STATS64 last:
    every attribute header it reads is checked) is read with two ``struct`` unpacks
    instead of a walk over its attributes (4x cheaper); any other by the walk."""
    if end - start >= _KEY.size + _STATS64_SIZE:
        at = end - _STATS64_SIZE
        key = _KEY.unpack_from(data, start)
        if ((key[0], key[1], key[3], key[4], key[6], key[7], key[9], key[10])
                == _KEY_HEADERS and _NLA.unpack_from(data, at) in _STATS64_HEADERS):
            five = _FIVE.unpack_from(data, at + 4)
            family = key[2]
            if five[0::3] + five[1::3] == _FIVE_HEADERS_BY_FIELD and family in _SIZES:
                addr = socket.inet_ntop(family, key[8][:_SIZES[family]])
                port = key[11]
                return (family, key[5], addr, (port[0] << 8) | port[1], 0, *five[2::3])
    return _walked_service_counts(data, start, end)


_FIVE_HEADERS_BY_FIELD = _FIVE_HEADERS[0::2] + _FIVE_HEADERS[1::2]
_SIZES = {socket.AF_INET: 4, socket.AF_INET6: 16}


def _walked_service_counts(data: bytes | memoryview, start: int, end: int) -> tuple:
    """:func:`service_counts` by a walk over every attribute of the service."""
    unpack_nla = _NLA.unpack_from
    family = proto = port = fwmark = addr_at = 0
    nest32 = nest64 = None
    while start + 4 <= end:
        length, kind = unpack_nla(data, start)
        if length < 4:
            break
        kind &= NLA_TYPE_MASK
        at = start + 4
        if kind == SVC_AF:
            family = _U16.unpack_from(data, at)[0]
        elif kind == SVC_PROTOCOL:
            proto = _U16.unpack_from(data, at)[0]
        elif kind == SVC_ADDR:
            addr_at = at
        elif kind == SVC_PORT:
            port = (data[at] << 8) | data[at + 1]
        elif kind == SVC_FWMARK:
            fwmark = _U32.unpack_from(data, at)[0]
        elif kind == SVC_STATS64:
            nest64 = (at, start + length)
        elif kind == SVC_STATS:
            nest32 = (at, start + length)
        start += (length + 3) & ~3
    nest = nest64 or nest32
    counts = (0, 0, 0, 0, 0) if nest is None else _counts(data, *nest)
    addr = ""
    if addr_at and not fwmark:
        size = 4 if family == socket.AF_INET else 16
        addr = socket.inet_ntop(family, data[addr_at:addr_at + size])
    return (family, proto, addr, port, fwmark, *counts)


class StatsSocket(IPVSSocket):
    """An :class:`~dcnet.lvs.genl.IPVSSocket` that also reads the counters."""

    def service_stats(self) -> list[tuple[WireService, Stats | None]]:
        """Every service with its counters, from one service dump."""
        return [(decode_service(data, a, b), nested_stats(data, a, b, SVC_STATS, SVC_STATS64))
                for data, a, b in self.service_entries()]

    def service_counts(self) -> list[tuple]:
        """Every service as :func:`service_counts` reads it, from one service dump."""
        return [service_counts(data, a, b) for data, a, b in self.service_entries()]

    def dest_counts(self, family: int, protocol: int, addr: str, port: int
                    ) -> list[tuple[tuple, tuple]]:
        """Every dest of the service (family, protocol, addr, port) as (a tuple as
        :meth:`dest_rows` gives, the five counters as :func:`service_counts` reads
        them), from one dest dump."""
        out = []
        for data, a, b in self.dest_entries(WireService(family, protocol, addr, port)):
            nest = None
            for attr, x, y in iter_attrs(data, a, b):
                if attr == DEST_STATS64 or (attr == DEST_STATS and nest is None):
                    nest = (x, y)
            out.append((dest_row(data, a, b, family),
                        (0, 0, 0, 0, 0) if nest is None else _counts(data, *nest)))
        return out

    def dest_stats(self, service: WireService) -> list[tuple[tuple, Stats | None]]:
        """Every dest of ``service`` (a tuple as :meth:`dest_rows` gives) with its
        counters, from one dest dump."""
        return [(dest_row(data, a, b, service.family),
                 nested_stats(data, a, b, DEST_STATS, DEST_STATS64))
                for data, a, b in self.dest_entries(service)]
