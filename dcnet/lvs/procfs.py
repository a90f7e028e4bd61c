"""The fast read of IPVS real servers: every dest of a namespace from ``/proc/net/ip_vs``.

It owns the text the kernel prints there (``ip_vs_info_seq_show`` in
net/netfilter/ipvs/ip_vs_ctl.c), a pure parser for it (:func:`parse`); the summing pass
that makes no row (:func:`sum_dests`, :func:`sum_read`: the metrics' per-service
connection counts, read as the file is read) is :mod:`dcnet.lvs.procfs_sums`'s, on
bytes, called through here. One read of that file lists
every service of the reading thread's network namespace with its dests::

    IP Virtual Server version 1.2.1 (size=4096)
    Prot LocalAddress:Port Scheduler Flags
      -> RemoteAddress:Port Forward Weight ActiveConn InActConn
    TCP  C000020A:0050 wrr
      -> C6336414:1F90      Masq    7      0          0
    UDP  C000020C:0035 rr ops
    TCP  [2001:0db8:0000:0000:0000:0000:0000:0010]:01BB mh
      -> [2001:0db8:0000:0000:0000:0000:0000:0020]:20FB      Masq    5      0          0
    FWM  00000007 rr
    TCP  C000020B:01BB sh  persistent 75000 FFFFFFFF

IPv4 addresses and all ports are hexadecimal (host order), IPv6 addresses are printed
in full (``%pI6``), the forwarding method is a name (``Masq``, ``Local``, ``Tunnel``,
``Route``; the kernel prints ``Masq`` for every other code too), fwmark services show
no address family. A dest line shows address, port, forwarding method, weight and the
active and inactive connection counters, nothing else: upper/lower thresholds, tunnel
options and persistent-connection counters are not in this file (they are ``None`` in
the rows returned here), and neither are the services' scheduler flags or persistence
engine (elbctl reads services by generic netlink, where every attribute is).

One read is one ``open``/``read`` of the file from a thread inside the namespace
(:func:`read_in`; the switch itself is :mod:`dcnet.sysio.netns`'s); the kernel walks
its service table under RCU per 4 KiB chunk, so a table changed during the read may
show a service twice or miss one, like a generic-netlink dump.
"""

from __future__ import annotations

import re
import socket

PROC_PATH = "/proc/thread-self/net/ip_vs"
FORWARD_BY_NAME = {"Masq": 0, "Local": 1, "Tunnel": 2, "Route": 3}
FORWARD_NAME = {0: "Masq", 1: "Local", 2: "Tunnel", 3: "Route"}
PROTOCOL_BY_NAME = {"TCP": socket.IPPROTO_TCP, "UDP": socket.IPPROTO_UDP, "SCTP": 132,
                    "IP": 0, "ICMP": socket.IPPROTO_ICMP, "ICMPv6": socket.IPPROTO_ICMPV6}
PROTOCOL_NAME = {v: k for k, v in PROTOCOL_BY_NAME.items()}
HZ = 250     # a persistence timeout is printed in jiffies (Debian: 250 Hz); only printed here
HEADER = ("IP Virtual Server version ", "Prot LocalAddress:Port Scheduler Flags",
          "  -> RemoteAddress:Port Forward Weight ActiveConn InActConn")

# a service's identity in the table: (protocol number, address, port) for a virtual
# service (address as socket.inet_ntop prints it), ("fwmark", mark) for a fwmark service
ServiceId = tuple


class ProcFormatError(ValueError):
    """The text is not what ip_vs_info_seq_show prints; names the line and the field."""

    def __init__(self, number: int, line: str, problem: str):
        super().__init__(f"/proc/net/ip_vs line {number}: {problem}: {line!r}")
        self.number, self.line, self.problem = number, line, problem


def service_id(ws) -> ServiceId:
    """The identity of a :class:`dcnet.lvs.genl.WireService` in a parsed table."""
    if ws.fwmark:
        return ("fwmark", ws.fwmark)
    return (ws.protocol, ws.addr, ws.port)


def _ipv6(text: str) -> str:
    return socket.inet_ntop(socket.AF_INET6, socket.inet_pton(socket.AF_INET6, text))


_ntoa, _fromhex = socket.inet_ntoa, bytes.fromhex


def _address_port(field: str) -> tuple[int, str, int]:
    """``C000020A:0050`` or ``[2001:0db8:...]:01BB`` -> (family, address, port)."""
    if field.startswith("["):
        address, _, port = field[1:].rpartition("]:")
        return socket.AF_INET6, _ipv6(address), int(port, 16)
    address, _, port = field.partition(":")
    if len(address) != 8:
        raise ValueError(f"IPv4 address {address!r} is not 8 hex digits")
    return socket.AF_INET, socket.inet_ntoa(bytes.fromhex(address)), int(port, 16)


# an IPv4 dest line, the common case, matched block by block in C; any other line goes
# through the general (and strict) line parser
_DEST_V4 = re.compile(r"^  -> ([0-9A-F]{8}):([0-9A-F]{4}) +([A-Za-z]+) +(\d+) +(\d+) +(\d+) *$",
                      re.M)
_SERVICE_START = re.compile(r"\n(?!  -> )")      # a line that is not a dest line


def parse(text: str) -> dict[ServiceId, list[tuple]]:
    """Every service of the text with its dests, in the order printed.

    Each dest is a tuple in :class:`dcnet.lvs.genl.WireDest` field order: (family,
    address, port, forwarding code, weight, u_thresh, l_thresh, active, inactive,
    persistent), with the three values the file does not show as ``None``. Raises
    :class:`ProcFormatError` on anything ip_vs_info_seq_show would not print.
    """
    table: dict[ServiceId, list[tuple]] = {}
    body = _body(text)
    if not body:
        return table
    number = len(HEADER) + 1
    inet, ntoa, fromhex, forwards = socket.AF_INET, socket.inet_ntoa, bytes.fromhex, \
        FORWARD_BY_NAME
    findall = _DEST_V4.findall
    for block in _SERVICE_START.split(body):
        head, _, rest = block.partition("\n")
        rows = table.setdefault(_service_line(number, head), [])
        count = rest.count("\n") + 1 if rest else 0
        try:
            found = [(inet, ntoa(fromhex(a)), int(p, 16), forwards[f], int(w), None, None,
                      int(x), int(y), None) for a, p, f, w, x, y in findall(rest)]
        except KeyError:            # an unknown forwarding name: the strict path says where
            found = []
        if len(found) == count:
            rows.extend(found)
        else:
            rows.extend(_dest_line(number + i, line) for i, line in
                        enumerate(rest.split("\n"), 1))
        number += count + 1
    return table


def _body(text: str) -> str:
    """The text after the header, without its last newline (checked: the header, no
    dest line before the first service)."""
    return text[slice(*_body_span(text))]


def _header_end(text: str) -> int:
    """Where the text after the header starts (checked line by line, in place)."""
    start = 0
    for number, expected in enumerate(HEADER, 1):
        newline = text.find("\n", start)
        stop = len(text) if newline < 0 else newline
        if not text.startswith(expected, start, stop):
            raise ProcFormatError(number, text[start:stop],
                                  f"expected the header {expected!r}")
        start = stop + (newline >= 0)
    return start


def _body_span(text: str) -> tuple[int, int]:
    """Where :func:`_body` starts and ends in ``text`` (read in place: no copy)."""
    start = _header_end(text)
    end = len(text) - (len(text) > start and text.endswith("\n"))
    if text.startswith("  -> ", start, end):
        first = text.find("\n", start, end)
        raise ProcFormatError(len(HEADER) + 1, text[start:end if first < 0 else first],
                              "a dest line before any service")
    return start, end


def sum_dests(text: str) -> dict[ServiceId, list[int]]:
    """:func:`dcnet.lvs.procfs_sums.sum_dests`: per service, its dests summed."""
    from dcnet.lvs import procfs_sums

    return procfs_sums.sum_dests(text)


def sum_read(handle, keep: int = 0) -> tuple[dict[ServiceId, list[int]], str | None]:
    """:func:`dcnet.lvs.procfs_sums.sum_read`: the sums of an open file, its text if
    small."""
    from dcnet.lvs import procfs_sums

    return procfs_sums.sum_read(handle, keep)


def sum_pieces(pieces) -> dict[ServiceId, list[int]]:
    """:func:`dcnet.lvs.procfs_sums.sum_pieces`: the sums of the text in pieces."""
    from dcnet.lvs import procfs_sums

    return procfs_sums.sum_pieces(pieces)


def _dest_line(number: int, line: str) -> tuple:
    parts = line.split()
    if not line.startswith("  -> ") or len(parts) != 6:
        raise ProcFormatError(number, line, "expected a dest line of 6 fields")
    where, forward, weight, active, inactive = parts[1:6]
    try:
        family, address, port = _address_port(where)
    except (ValueError, OSError) as exc:
        raise ProcFormatError(number, line, f"bad dest address ({exc})") from None
    if forward not in FORWARD_BY_NAME:
        raise ProcFormatError(number, line, f"unknown forwarding method {forward!r}")
    try:
        counters = int(weight), int(active), int(inactive)
    except ValueError as exc:
        raise ProcFormatError(number, line, f"bad weight or counter ({exc})") from None
    return (family, address, port, FORWARD_BY_NAME[forward], counters[0], None, None,
            counters[1], counters[2], None)


def _service_line(number: int, line: str) -> ServiceId:
    parts = line.split()
    if len(parts) > 2 and len(where := parts[1]) == 13 and where[8] == ":":
        protocol = PROTOCOL_BY_NAME.get(parts[0])   # the common line: an IPv4 service
        if protocol is not None:
            try:
                return (protocol, _ntoa(_fromhex(where[:8])), int(where[9:], 16))
            except ValueError:
                pass                    # the general path below names the problem
    try:
        if parts[0] == "FWM":
            return ("fwmark", int(parts[1], 16))
        protocol = PROTOCOL_BY_NAME.get(parts[0])
        if protocol is None:
            if not parts[0].startswith("IP_"):
                raise ValueError(f"unknown protocol {parts[0]!r}")
            protocol = int(parts[0][3:])
        _family, address, port = _address_port(parts[1])
        if len(parts) < 3:
            raise ValueError("no scheduler")
    except (ValueError, IndexError, OSError) as exc:
        raise ProcFormatError(number, line, f"bad service line ({exc})") from None
    return (protocol, address, port)


def read_in(netns_path: str | None = None) -> str:
    """The text of ``/proc/net/ip_vs`` as the namespace at ``netns_path`` sees it (None:
    the calling thread's). FileNotFoundError when the kernel has no IPVS loaded."""
    if netns_path is None:
        return _read(PROC_PATH)
    from dcnet.sysio import netns

    return netns.call_here_in(netns_path, _read, PROC_PATH)


def open_in(netns_path: str | None = None):
    """``/proc/net/ip_vs`` of the namespace at ``netns_path`` (None: the calling
    thread's) open for reading as bytes (for :func:`sum_read`: the summing pass reads
    bytes, nothing is decoded): opened there, read from anywhere."""
    if netns_path is None:
        return open(PROC_PATH, "rb")
    from dcnet.sysio import netns

    return netns.call_here_in(netns_path, open, PROC_PATH, "rb")


def _read(path: str) -> str:
    with open(path, encoding="ascii") as handle:
        return handle.read()


# ------------------------------------------------------------------ printing (the fake)


def format_table(services) -> str:
    """What the kernel prints for ``services``: pairs (WireService, [WireDest]) in order.

    The inverse of :func:`parse`, byte for byte the kernel's format (checked against
    text captured from the kernel in tests/unit/test_lvs_procfs.py); the fake IPVS
    table serves its bulk read through it, so the fake loses what the kernel's file
    loses.
    """
    out = ["IP Virtual Server version 1.2.1 (size=4096)", HEADER[1], HEADER[2]]
    for ws, dests in services:
        sched = ws.sched or "none"
        ops = "ops " if ws.flags & 0x4 else ""
        if ws.fwmark:
            head = f"FWM  {ws.fwmark:08X} {sched} {ops}"
        elif ws.family == socket.AF_INET6:
            head = f"{_proto_name(ws.protocol)}  [{_full_v6(ws.addr)}]:{ws.port:04X} {sched} "
        else:
            head = (f"{_proto_name(ws.protocol)}  {_hex_v4(ws.addr)}:{ws.port:04X} {sched} "
                    f"{ops} ")
        if ws.flags & 0x1:
            netmask = ws.netmask if ws.family == socket.AF_INET else _v6_netmask(ws.netmask)
            head += f"persistent {ws.timeout * HZ} {netmask:08X}"
        out.append(head)
        for d in dests:
            where = (f"[{_full_v6(d.addr)}]" if d.family == socket.AF_INET6
                     else _hex_v4(d.addr))
            name = FORWARD_NAME.get(d.fwd & 0x7, "Masq")
            out.append(f"  -> {where}:{d.port:04X}      {name:<7} {d.weight:<6d} "
                       f"{d.active:<10d} {d.inactive:<10d}")
    return "\n".join(out) + "\n"


def _proto_name(protocol: int) -> str:
    return PROTOCOL_NAME.get(protocol, f"IP_{protocol}")


def _hex_v4(address: str) -> str:
    return socket.inet_aton(address).hex().upper()


def _full_v6(address: str) -> str:
    raw = socket.inet_pton(socket.AF_INET6, address).hex()
    return ":".join(raw[i:i + 4] for i in range(0, 32, 4))


def _v6_netmask(prefix: int) -> int:
    # the kernel keeps an IPv6 service's prefix length in its netmask word (big endian)
    return socket.ntohl(prefix) if prefix else 0
