"""A recording written as a pcap file (``elbctl mirror export``), for packet tools:
Wireshark, tcpdump, and ``tcpreplay`` as the packet-level baseline (issue #19).

Each session becomes the client's side of a TCP connection (the recording holds only what
the client sent): a SYN (when the recording saw one), one segment per recorded chunk with
its sequence number from the chunk's stream offset (so a gap stays a gap), then FIN or
RST as the session ended, each stamped ``start + t``. Link type ``LINKTYPE_RAW`` (101):
packets start at the IP header, IPv4 or IPv6 by the addresses. Chunks larger than
``mss`` are cut into segments. Anonymised clients (``anon-<hash>``) get a stable address
from the hash (IPv4 in 10.0.0.0/8, IPv6 in fd00::/8) so the file stays parseable.
Standard library only (``struct``); checksums are computed.
"""

from __future__ import annotations

import hashlib
import ipaddress
import socket
import struct
from collections.abc import Iterable

from dcnet.mirror.recording import Session

LINKTYPE_RAW = 101
ISN = 1_000_000               # the client's initial sequence number in every session
ACK, PSH, RST, SYN, FIN = 0x10, 0x08, 0x04, 0x02, 0x01


def _address(text: str, version_hint: int
             ) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]:
    host, _, port = text.rpartition(":")
    host = host.strip("[]")
    try:
        return ipaddress.ip_address(host), int(port)
    except ValueError:                       # an anonymised client: a stable stand-in
        digest = hashlib.sha256(host.encode()).digest()
        if version_hint == 6:
            return ipaddress.IPv6Address(b"\xfd" + digest[:15]), int(port)
        return ipaddress.IPv4Address(b"\x0a" + digest[:3]), int(port)


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def packet(src, sport: int, dst, dport: int, seq: int, flags: int, payload: bytes = b"",
           ack: int = 0) -> bytes:
    """One IPv4 or IPv6 TCP packet with correct checksums."""
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, ack, 5 << 4, flags,
                      65535, 0, 0) + payload
    if src.version == 4:
        pseudo = src.packed + dst.packed + struct.pack("!BBH", 0, socket.IPPROTO_TCP, len(tcp))
        tcp = tcp[:16] + struct.pack("!H", _checksum(pseudo + tcp)) + tcp[18:]
        header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 0, 0x4000, 64,
                             socket.IPPROTO_TCP, 0, src.packed, dst.packed)
        header = header[:10] + struct.pack("!H", _checksum(header)) + header[12:]
        return header + tcp
    pseudo = src.packed + dst.packed + struct.pack("!I3xB", len(tcp), socket.IPPROTO_TCP)
    tcp = tcp[:16] + struct.pack("!H", _checksum(pseudo + tcp)) + tcp[18:]
    header = struct.pack("!IHBB16s16s", 6 << 28, len(tcp), socket.IPPROTO_TCP, 64,
                         src.packed, dst.packed)
    return header + tcp


def session_packets(session: Session, mss: int = 1400) -> list[tuple[float, bytes]]:
    """(timestamp, packet) of one session's client side."""
    server, dport = _address(session.server, 4)
    client, sport = _address(session.client, server.version)
    base = session.chunks[0].offset if session.chunks else 0
    out = []
    if session.syn:
        out.append((session.start, packet(client, sport, server, dport, ISN, SYN)))
    end_seq = ISN + 1
    for chunk in session.chunks:
        for cut in range(0, len(chunk.data), mss):
            data = chunk.data[cut:cut + mss]
            seq = ISN + 1 + chunk.offset - base + cut
            out.append((session.start + chunk.t,
                        packet(client, sport, server, dport, seq, ACK | PSH, data)))
            end_seq = max(end_seq, seq + len(data))
    last = session.start + (session.chunks[-1].t if session.chunks else 0.0)
    if session.end in ("fin", "rst"):
        flags = FIN | ACK if session.end == "fin" else RST
        out.append((last, packet(client, sport, server, dport, end_seq, flags)))
    return out


def write(path: str, sessions: Iterable[Session], mss: int = 1400) -> int:
    """Write every session's packets, in time order; returns the packet count."""
    packets = [p for s in sessions for p in session_packets(s, mss)]
    packets.sort(key=lambda item: item[0])
    with open(path, "wb") as handle:
        handle.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, LINKTYPE_RAW))
        for stamp, data in packets:
            seconds = int(stamp)
            micros = min(round((stamp - seconds) * 1e6), 999_999)
            handle.write(struct.pack("<IIII", seconds, micros, len(data), len(data)) + data)
    return len(packets)
