"""The recorder: reads the mirrored copies in the mirror namespace and writes sessions.

It owns packet parsing (IPv4 and IPv6 + TCP, stdlib ``struct``), the table of live
:class:`~dcnet.mirror.reassembly.Stream` objects keyed by 4-tuple, and the loop over two
``AF_PACKET`` sockets (one for IPv4, one for IPv6) bound to the mirror veth. It only
reads: it never sends a packet. A session is written (one JSON line,
:mod:`dcnet.mirror.recording`) when the client closed it, and every session still open
is written at stop (SIGTERM/SIGINT or ``--duration``). Kernel drops of the sockets
(``PACKET_STATISTICS``) are reported. :func:`capture` and the ``on_data`` hook of
:class:`Recorder` also serve live replay (:mod:`dcnet.mirror.live`).

Run: ``python -m dcnet.mirror.recorder --ifname eth0 --out rec.jsonl [--anonymise-key K]``
"""

from __future__ import annotations

import argparse
import json
import os
import select
import signal
import socket
import struct
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from dcnet.mirror import recording
from dcnet.mirror.reassembly import Stream

ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86DD
SOL_PACKET = 263
SO_RCVBUFFORCE = 33   # not exported by the socket module
PACKET_STATISTICS = 6


@dataclass(frozen=True)
class Segment:
    src: str
    sport: int
    dst: str
    dport: int
    seq: int
    flags: int
    payload: bytes

    @property
    def key(self) -> tuple[str, int, str, int]:
        return (self.src, self.sport, self.dst, self.dport)


def parse_ipv4_tcp(packet: bytes) -> Segment | None:
    """An IPv4 packet (no link header) -> its TCP segment, or None if it is not one."""
    if len(packet) < 20 or packet[0] >> 4 != 4 or packet[9] != 6:
        return None
    ihl = (packet[0] & 0x0F) * 4
    total = struct.unpack_from("!H", packet, 2)[0]
    frag = struct.unpack_from("!H", packet, 6)[0]
    if frag & 0x3FFF or total < ihl + 20 or len(packet) < total:
        return None   # fragments are not reassembled (none on a path with PMTU discovery)
    sport, dport, seq = struct.unpack_from("!HHI", packet, ihl)
    doff = (packet[ihl + 12] >> 4) * 4
    flags = packet[ihl + 13]
    return Segment(socket.inet_ntoa(packet[12:16]), sport, socket.inet_ntoa(packet[16:20]),
                   dport, seq, flags, bytes(packet[ihl + doff:total]))


def parse_ipv6_tcp(packet: bytes) -> Segment | None:
    """An IPv6 packet (no link header) whose next header is TCP -> its segment; None
    otherwise (extension headers are not walked: none on a mirrored TCP path)."""
    if len(packet) < 60 or packet[0] >> 4 != 6 or packet[6] != 6:
        return None
    total = 40 + struct.unpack_from("!H", packet, 4)[0]
    if total < 60 or len(packet) < total:
        return None
    sport, dport, seq = struct.unpack_from("!HHI", packet, 40)
    doff = (packet[52] >> 4) * 4
    return Segment(socket.inet_ntop(socket.AF_INET6, packet[8:24]), sport,
                   socket.inet_ntop(socket.AF_INET6, packet[24:40]), dport, seq,
                   packet[53], bytes(packet[40 + doff:total]))


def parse_ip_tcp(packet: bytes) -> Segment | None:
    """An IPv4 or IPv6 packet -> its TCP segment, or None."""
    if packet and packet[0] >> 4 == 6:
        return parse_ipv6_tcp(packet)
    return parse_ipv4_tcp(packet)


def join_address(ip: str, port: int) -> str:
    """``IP:PORT``, or ``[IPv6]:PORT``."""
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


FIN, SYN, RST = 0x01, 0x02, 0x04
FINISHED_KEPT = 65536   # closed 4-tuples remembered so their late ACKs start nothing


class Recorder:
    """Feeds segments to streams; ``emit`` receives each finished session."""

    def __init__(self, emit: Callable[[recording.Session], None],
                 anonymise_key: bytes | None = None,
                 on_data: Callable[[tuple, Stream, int], None] | None = None,
                 on_end: Callable[[tuple, Stream], None] | None = None) -> None:
        """``on_data(key, stream, first)``, when given, is called whenever a session's
        in-order bytes grew (its new chunks are ``stream.chunks[first:]``), ``on_end``
        once the session is closed or flushed: live replay."""
        self.emit = emit
        self.on_data, self.on_end = on_data, on_end
        self.key = anonymise_key
        self.streams: dict[tuple[str, int, str, int], Stream] = {}
        self.count = 0
        self.segments = 0
        self.finished: dict[tuple[str, int, str, int], None] = {}   # insertion-ordered

    def feed(self, segment: Segment, now: float) -> None:
        self.segments += 1
        stream = self.streams.get(segment.key)
        if stream is None:
            if not segment.flags & SYN and (segment.key in self.finished
                                            or not segment.payload):
                return   # the last ACK of a closed session, or a bare ACK mid-session
            self.finished.pop(segment.key, None)
            stream = self.streams[segment.key] = Stream()
        first = len(stream.chunks)
        stream.add(segment.seq, segment.payload, now, syn=bool(segment.flags & SYN),
                   fin=bool(segment.flags & FIN), rst=bool(segment.flags & RST))
        if self.on_data is not None and len(stream.chunks) > first:
            self.on_data(segment.key, stream, first)
        if stream.closed:
            self._close(segment.key, stream)

    def flush(self) -> None:
        for key, stream in list(self.streams.items()):
            self._close(key, stream)

    def _close(self, key: tuple[str, int, str, int], stream: Stream) -> None:
        del self.streams[key]
        self.finished[key] = None
        while len(self.finished) > FINISHED_KEPT:
            del self.finished[next(iter(self.finished))]
        first = len(stream.chunks)
        missing = stream.finish()
        if self.on_data is not None and len(stream.chunks) > first:
            self.on_data(key, stream, first)       # what lay beyond a hole, at the end
        self.count += 1
        start = stream.start or 0.0
        chunks = tuple(recording.Chunk(c.offset, round(c.time - start, 6), c.data)
                       for c in stream.chunks)     # one chunk a segment, as it arrived
        client = join_address(key[0], key[1])
        session = recording.Session(
            id=session_id(key, start), client=client,
            server=join_address(key[2], key[3]), start=start, syn=not stream.partial,
            end="rst" if stream.reset else ("fin" if stream.fin_offset is not None else "open"),
            missing=missing, retransmitted=stream.retransmitted, chunks=chunks)
        if self.key is not None:
            session = next(recording.anonymised([session], self.key))
            session = recording.Session(**{**session.__dict__,
                                           "id": f"{self.count:08d}-{session.client}"})
        self.emit(session)
        if self.on_end is not None:
            self.on_end(key, stream)


def session_id(key: tuple[str, int, str, int], start: float) -> str:
    """A session's id (unique in a recording): its start in microseconds, its client."""
    return f"{int(start * 1e6):x}-{key[0]}-{key[1]}"


def socket_stats(sock: socket.socket) -> tuple[int, int]:
    """(packets, drops) the kernel counted for this AF_PACKET socket since last asked."""
    packets, drops = struct.unpack("II", sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8))
    return packets, drops


def open_sockets(ifname: str, rcvbuf: int = 32 << 20) -> list[socket.socket]:
    """Two read-only ``AF_PACKET`` sockets on ``ifname``: IPv4, then IPv6 (made in the
    calling thread's namespace, they stay bound to it)."""
    socks = []
    for proto in (ETH_P_IP, ETH_P_IPV6):
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(proto))
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, rcvbuf)
        sock.bind((ifname, proto))
        sock.setblocking(False)
        socks.append(sock)
    return socks


def capture(socks: list[socket.socket], recorder: Recorder, stopped: Callable[[], bool],
            deadline: float | None = None) -> None:
    """Feed every incoming TCP segment of the sockets to ``recorder`` until ``stopped()``
    or the monotonic ``deadline``; then flush the sessions still open."""
    while not stopped() and (deadline is None or time.monotonic() < deadline):
        try:
            ready, _, _ = select.select(socks, [], [], 0.2)
        except InterruptedError:
            continue
        for sock in ready:
            while True:
                try:
                    packet, address = sock.recvfrom(65535)
                except (BlockingIOError, InterruptedError):
                    break
                if address[2] == socket.PACKET_OUTGOING:
                    continue
                segment = parse_ip_tcp(packet)
                if segment is not None:
                    recorder.feed(segment, time.time())
    recorder.flush()


def kernel_stats(socks: list[socket.socket]) -> dict:
    """The sockets' kernel counts: IPv4 (``kernel_packets``, ``kernel_drops``) and IPv6
    (``kernel_packets6``, ``kernel_drops6``; ND and MLD packets are counted there too)."""
    (packets, drops), (packets6, drops6) = (socket_stats(s) for s in socks)
    return {"kernel_drops": drops, "kernel_packets": packets,
            "kernel_drops6": drops6, "kernel_packets6": packets6}


def run(ifname: str, out_path: str, duration: float | None = None,
        anonymise_key: bytes | None = None, rcvbuf: int = 32 << 20) -> dict:
    """Record until SIGTERM/SIGINT or ``duration``; returns the stats (also on stderr)."""
    stop = []
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.append(1))
    socks = open_sockets(ifname, rcvbuf)
    try:
        # the file appears only once the sockets are bound: callers wait for it
        with open(out_path, "w") as out:
            def emit(session: recording.Session) -> None:
                out.write(recording.dumps(session) + "\n")
                out.flush()
            recorder = Recorder(emit, anonymise_key)
            print(json.dumps({"recording": out_path, "ifname": ifname}), file=sys.stderr,
                  flush=True)
            capture(socks, recorder, lambda: bool(stop),
                    None if duration is None else time.monotonic() + duration)
        stats = {"sessions": recorder.count, "segments": recorder.segments,
                 **kernel_stats(socks)}
    finally:
        for sock in socks:
            sock.close()
    print(json.dumps(stats), file=sys.stderr, flush=True)
    return stats


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dcnet.mirror.recorder")
    parser.add_argument("--ifname", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--duration", type=float)
    parser.add_argument("--anonymise-key", help="key for client addresses (hex or text); "
                        "'random' draws one that is never written")
    args = parser.parse_args(argv)
    key = None
    if args.anonymise_key:
        key = os.urandom(32) if args.anonymise_key == "random" else args.anonymise_key.encode()
    run(args.ifname, args.out, args.duration, key)
    return 0


if __name__ == "__main__":
    sys.exit(main())
