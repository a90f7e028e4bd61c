"""The IPVS generic-netlink wire format: encoding requests, decoding dumps, batching writes.

It owns the byte layout of the few IPVS commands elbctl uses (NEW/SET/DEL_SERVICE,
NEW/SET/DEL_DEST, GET_SERVICE and GET_DEST dumps) and a socket that sends many write
requests in one ``sendmsg`` and matches every acknowledgement to its request by sequence
number. Nothing here knows the model.

Why not pyroute2's ``IPVS`` class for this path: a 10,000-service table means ~110,000
messages, and pyroute2 builds and parses each through generic NLA objects (hundreds of
microseconds apiece), while its released versions also mis-read weights and schedulers
(see docs/lvs.md). Here every attribute is read raw, by number, and unknown attributes
(stats, tunnel options) are skipped (:mod:`dcnet.lvs.ipvs_stats` reads the stats for
the metrics). The family id is resolved through the standard ``nlctrl`` GETFAMILY
request; namespace switching stays in :mod:`dcnet.sysio.netns`.
"""

from __future__ import annotations

import errno as errno_mod
import os
import socket
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

NETLINK_GENERIC = 16
SOL_NETLINK = 270
NETLINK_CAP_ACK = 10
NLM_F_REQUEST, NLM_F_MULTI, NLM_F_ACK, NLM_F_DUMP = 0x1, 0x2, 0x4, 0x300
NLMSG_ERROR, NLMSG_DONE = 2, 3
GENL_ID_CTRL, CTRL_CMD_GETFAMILY = 0x10, 3
CTRL_ATTR_FAMILY_ID, CTRL_ATTR_FAMILY_NAME = 1, 2
NLA_TYPE_MASK = 0x3FFF

IPVS_GENL_NAME, IPVS_GENL_VERSION = "IPVS", 1
CMD_NEW_SERVICE, CMD_SET_SERVICE, CMD_DEL_SERVICE, CMD_GET_SERVICE = 1, 2, 3, 4
CMD_NEW_DEST, CMD_SET_DEST, CMD_DEL_DEST, CMD_GET_DEST = 5, 6, 7, 8
CMD_ATTR_SERVICE, CMD_ATTR_DEST = 1, 2
SVC_AF, SVC_PROTOCOL, SVC_ADDR, SVC_PORT, SVC_FWMARK = 1, 2, 3, 4, 5
SVC_SCHED_NAME, SVC_FLAGS, SVC_TIMEOUT, SVC_NETMASK, SVC_PE_NAME = 6, 7, 8, 9, 11
DEST_ADDR, DEST_PORT, DEST_FWD, DEST_WEIGHT, DEST_U_THRESH, DEST_L_THRESH = 1, 2, 3, 4, 5, 6
DEST_ACTIVE, DEST_INACT, DEST_PERSIST, DEST_ADDR_FAMILY = 7, 8, 9, 11

_HDR = struct.Struct("=IHHII")       # nlmsghdr
_GENL = struct.Struct("=BBH")        # genlmsghdr
_NLA = struct.Struct("=HH")
_U16, _U32, _BE16 = struct.Struct("=H"), struct.Struct("=I"), struct.Struct("!H")
BATCH_BYTES = 48 * 1024
RCVBUF = 8 * 1024 * 1024


class NetlinkError(OSError):
    """The kernel refused a request (``errno`` holds the code)."""


def _attr(kind: int, payload: bytes) -> bytes:
    length = 4 + len(payload)
    return _NLA.pack(length, kind) + payload + b"\0" * (-length & 3)


def _nested(kind: int, parts: Sequence[bytes]) -> bytes:
    return _attr(kind | 0x8000, b"".join(parts))


def _addr_bytes(family: int, addr: str) -> bytes:
    return socket.inet_pton(family, addr)


@dataclass(frozen=True)
class WireService:
    """An IPVS virtual service as the kernel sees it (fwmark services have addr '')."""

    family: int          # socket.AF_INET / AF_INET6
    protocol: int        # IPPROTO_*; 0 for fwmark services
    addr: str
    port: int
    fwmark: int = 0
    sched: str = "wlc"
    flags: int = 0
    timeout: int = 0
    netmask: int = 0xFFFFFFFF
    pe_name: str = ""

    def key_attrs(self) -> list[bytes]:
        out = [_attr(SVC_AF, _U16.pack(self.family))]
        if self.fwmark:
            return [*out, _attr(SVC_FWMARK, _U32.pack(self.fwmark))]
        return [*out, _attr(SVC_PROTOCOL, _U16.pack(self.protocol)),
                _attr(SVC_ADDR, _addr_bytes(self.family, self.addr)),
                _attr(SVC_PORT, _BE16.pack(self.port))]

    def full_attrs(self) -> list[bytes]:
        out = [*self.key_attrs(),
               _attr(SVC_SCHED_NAME, self.sched.encode() + b"\0"),
               _attr(SVC_FLAGS, struct.pack("=II", self.flags, 0xFFFFFFFF)),
               _attr(SVC_TIMEOUT, _U32.pack(self.timeout)),
               _attr(SVC_NETMASK, _U32.pack(self.netmask))]
        if self.pe_name:
            out.append(_attr(SVC_PE_NAME, self.pe_name.encode() + b"\0"))
        return out


@dataclass(frozen=True)
class WireDest:
    """An IPVS real server (destination) as the kernel sees it."""

    family: int
    addr: str
    port: int
    fwd: int = 3          # IP_VS_CONN_F_*: 0 masq (NAT), 2 tunnel, 3 direct routing
    weight: int = 1
    u_thresh: int = 0
    l_thresh: int = 0
    active: int = 0       # read only: connection counters
    inactive: int = 0
    persistent: int = 0

    def key_attrs(self) -> list[bytes]:
        return [_attr(DEST_ADDR, _addr_bytes(self.family, self.addr)),
                _attr(DEST_PORT, _BE16.pack(self.port)),
                _attr(DEST_ADDR_FAMILY, _U16.pack(self.family))]

    def full_attrs(self) -> list[bytes]:
        return [*self.key_attrs(),
                _attr(DEST_FWD, _U32.pack(self.fwd)),
                _attr(DEST_WEIGHT, _U32.pack(self.weight)),
                _attr(DEST_U_THRESH, _U32.pack(self.u_thresh)),
                _attr(DEST_L_THRESH, _U32.pack(self.l_thresh))]


# ------------------------------------------------------------------ decoding


def iter_attrs(data: bytes | memoryview, start: int, end: int) -> Iterator[tuple[int, int, int]]:
    """(type, payload start, payload end) of each attribute in data[start:end]."""
    while start + 4 <= end:
        length, kind = _NLA.unpack_from(data, start)
        if length < 4:
            return
        yield kind & NLA_TYPE_MASK, start + 4, start + length
        start += (length + 3) & ~3


def _addr(data: bytes, a: int, b: int, family: int) -> str:
    size = 4 if family == socket.AF_INET else 16
    return socket.inet_ntop(family, bytes(data[a:a + size]))


def decode_service(data: bytes, start: int, end: int) -> WireService:
    raw: dict[int, tuple[int, int]] = {}
    for kind, a, b in iter_attrs(data, start, end):
        raw[kind] = (a, b)
    family = _U16.unpack_from(data, raw[SVC_AF][0])[0]

    def u32(kind: int, default: int = 0) -> int:
        return _U32.unpack_from(data, raw[kind][0])[0] if kind in raw else default

    def text(kind: int) -> str:
        if kind not in raw:
            return ""
        a, b = raw[kind]
        return bytes(data[a:b]).split(b"\0", 1)[0].decode()

    fwmark = u32(SVC_FWMARK)
    if fwmark or SVC_ADDR not in raw:
        addr, port, proto = "", 0, 0
    else:
        addr = _addr(data, *raw[SVC_ADDR], family)
        port = _BE16.unpack_from(data, raw[SVC_PORT][0])[0]
        proto = _U16.unpack_from(data, raw[SVC_PROTOCOL][0])[0]
    flags = struct.unpack_from("=I", data, raw[SVC_FLAGS][0])[0] if SVC_FLAGS in raw else 0
    return WireService(family, proto, addr, port, fwmark, text(SVC_SCHED_NAME), flags,
                       u32(SVC_TIMEOUT), u32(SVC_NETMASK), text(SVC_PE_NAME))


def dest_row(data: bytes, start: int, end: int, svc_family: int) -> tuple:
    """The hot path of a sync: one dest as a plain tuple (family, addr, port, fwd,
    weight, u_thresh, l_thresh, active, inactive, persistent), reading only the
    attributes used and skipping stats by length."""
    unpack_nla, u32 = _NLA.unpack_from, _U32.unpack_from
    addr_at = port = fwd = weight = u_thresh = l_thresh = active = inactive = persist = 0
    family = svc_family
    while start + 4 <= end:
        length, kind = unpack_nla(data, start)
        if length < 4:
            break
        kind &= NLA_TYPE_MASK
        at = start + 4
        if kind == DEST_ADDR:
            addr_at = at
        elif kind == DEST_PORT:
            port = (data[at] << 8) | data[at + 1]
        elif kind == DEST_FWD:
            fwd = u32(data, at)[0] & 0x7
        elif kind == DEST_WEIGHT:
            weight = u32(data, at)[0]
        elif kind == DEST_U_THRESH:
            u_thresh = u32(data, at)[0]
        elif kind == DEST_L_THRESH:
            l_thresh = u32(data, at)[0]
        elif kind == DEST_ACTIVE:
            active = u32(data, at)[0]
        elif kind == DEST_INACT:
            inactive = u32(data, at)[0]
        elif kind == DEST_PERSIST:
            persist = u32(data, at)[0]
        elif kind == DEST_ADDR_FAMILY:
            family = _U16.unpack_from(data, at)[0]
        start += (length + 3) & ~3
    size = 4 if family == socket.AF_INET else 16
    addr = socket.inet_ntop(family, data[addr_at:addr_at + size])
    return (family, addr, port, fwd, weight, u_thresh, l_thresh, active, inactive, persist)


# ------------------------------------------------------------------ the socket


@dataclass(frozen=True)
class Request:
    """One write: a command with its service and (for dest commands) dest."""

    cmd: int
    service: WireService
    dest: WireDest | None = None

    def payload(self) -> bytes:
        full_service = self.cmd in (CMD_NEW_SERVICE, CMD_SET_SERVICE)
        svc = self.service.full_attrs() if full_service else self.service.key_attrs()
        parts = [_nested(CMD_ATTR_SERVICE, svc)]
        if self.dest is not None:
            dest = (self.dest.key_attrs() if self.cmd == CMD_DEL_DEST
                    else self.dest.full_attrs())
            parts.append(_nested(CMD_ATTR_DEST, dest))
        return b"".join(parts)


class IPVSSocket:
    """A generic-netlink socket speaking IPVS; ``writes`` counts write requests sent.

    ``sock`` may be a socket already bound in another namespace (see
    :func:`dcnet.sysio.netns.socket_in`); by default one in the caller's namespace.
    """

    def __init__(self, sock: socket.socket | None = None):
        self.sock = sock or socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_GENERIC)
        self.sock.bind((0, 0))
        self.sock.setsockopt(SOL_NETLINK, NETLINK_CAP_ACK, 1)
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, 33, RCVBUF)   # SO_RCVBUFFORCE
        except OSError:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
        self.seq = 0
        self.writes = 0
        self._buffer = bytearray(1 << 20)
        self._view = memoryview(self._buffer)
        self.family_id = self._resolve(IPVS_GENL_NAME)

    def close(self) -> None:
        self.sock.close()

    def __del__(self) -> None:
        # a table dropped without close() (a short-lived reader) closes its socket here
        # instead of leaving it to the socket's finalizer (a ResourceWarning)
        sock = getattr(self, "sock", None)
        if sock is not None:
            sock.close()

    def _next_seq(self) -> int:
        self.seq = (self.seq + 1) & 0xFFFFFFFF or 1
        return self.seq

    def _message(self, family: int, flags: int, cmd: int, version: int, payload: bytes,
                 seq: int) -> bytes:
        length = _HDR.size + _GENL.size + len(payload)
        return _HDR.pack(length, family, flags, seq, 0) + _GENL.pack(cmd, version, 0) + payload

    def _recv_messages(self) -> Iterator[tuple[int, int, int, bytes, int, int]]:
        """(type, flags, seq, buffer, payload start, end) of each message of one datagram.

        The datagram lands in one reused buffer (no 1 MiB allocation per ``recv``); it is
        valid until the next call.
        """
        size = self.sock.recv_into(self._buffer)
        data = self._view[:size]
        offset = 0
        while offset + _HDR.size <= size:
            length, kind, flags, seq, _pid = _HDR.unpack_from(data, offset)
            if length < _HDR.size:
                break
            yield kind, flags, seq, data, offset + _HDR.size, offset + length
            offset += (length + 3) & ~3

    def _resolve(self, name: str) -> int:
        seq = self._next_seq()
        payload = _attr(CTRL_ATTR_FAMILY_NAME, name.encode() + b"\0")
        self.sock.send(self._message(GENL_ID_CTRL, NLM_F_REQUEST, CTRL_CMD_GETFAMILY, 1,
                                     payload, seq))
        for kind, _flags, got, data, off, end in self._recv_messages():
            if got != seq:
                continue
            if kind == NLMSG_ERROR:
                code = -struct.unpack_from("=i", data, off)[0]
                if code == errno_mod.ENOENT:
                    raise NetlinkError(code, "the kernel has no IPVS (generic netlink family "
                                       "'IPVS' not found; is the ip_vs module loaded?)")
                raise NetlinkError(code, os.strerror(code))
            for attr, a, _b in iter_attrs(data, off + _GENL.size, end):
                if attr == CTRL_ATTR_FAMILY_ID:
                    return _U16.unpack_from(data, a)[0]
        raise NetlinkError(errno_mod.EPROTO, "no family id in the nlctrl reply")

    # -- dumps

    def dump(self, cmd: int, payload: bytes = b"") -> Iterator[tuple[bytes, int, int]]:
        """Run one dump; yields (buffer, attrs start, end) of each reply message."""
        seq = self._next_seq()
        self.sock.send(self._message(self.family_id, NLM_F_REQUEST | NLM_F_DUMP, cmd,
                                     IPVS_GENL_VERSION, payload, seq))
        while True:
            for kind, _flags, got, data, off, end in self._recv_messages():
                if got != seq:
                    continue
                if kind == NLMSG_DONE:
                    return
                if kind == NLMSG_ERROR:
                    code = -struct.unpack_from("=i", data, off)[0]
                    if code:
                        raise NetlinkError(code, os.strerror(code))
                    return
                yield data, off + _GENL.size, end

    def service_entries(self) -> Iterator[tuple[bytes, int, int]]:
        """(buffer, start, end) of each service's attributes, from one service dump."""
        for data, start, end in self.dump(CMD_GET_SERVICE):
            for kind, a, b in iter_attrs(data, start, end):
                if kind == CMD_ATTR_SERVICE:
                    yield data, a, b

    def dest_entries(self, service: WireService) -> Iterator[tuple[bytes, int, int]]:
        """(buffer, start, end) of each dest's attributes of ``service``, one dest dump."""
        payload = _nested(CMD_ATTR_SERVICE, service.key_attrs())
        for data, start, end in self.dump(CMD_GET_DEST, payload):
            for kind, a, b in iter_attrs(data, start, end):
                if kind == CMD_ATTR_DEST:
                    yield data, a, b

    def services(self) -> list[WireService]:
        return [decode_service(data, a, b) for data, a, b in self.service_entries()]

    def dests(self, service: WireService) -> list[WireDest]:
        return [WireDest(*row) for row in self.dest_rows(service)]

    def dest_rows(self, service: WireService) -> list[tuple]:
        """Like :meth:`dests`, as tuples in WireDest's field order (the sync's hot path)."""
        family = service.family
        return [dest_row(data, a, b, family) for data, a, b in self.dest_entries(service)]

    def service(self, service: WireService) -> WireService | None:
        """One service by its key (``IPVS_CMD_GET_SERVICE`` without ``NLM_F_DUMP``: one
        request, one reply), or None when the kernel has no such service (ESRCH)."""
        seq = self._next_seq()
        payload = _nested(CMD_ATTR_SERVICE, service.key_attrs())
        self.sock.send(self._message(self.family_id, NLM_F_REQUEST, CMD_GET_SERVICE,
                                     IPVS_GENL_VERSION, payload, seq))
        while True:
            for kind, _flags, got, data, off, end in self._recv_messages():
                if got != seq:
                    continue
                if kind == NLMSG_ERROR:
                    code = -struct.unpack_from("=i", data, off)[0]
                    if code in (0, errno_mod.ESRCH, errno_mod.ENOENT):
                        return None
                    raise NetlinkError(code, os.strerror(code))
                for attr, a, b in iter_attrs(data, off + _GENL.size, end):
                    if attr == CMD_ATTR_SERVICE:
                        return decode_service(data, a, b)
                return None

    # -- writes

    def execute(self, requests: Sequence[Request]) -> list[int]:
        """Send every request (batched); the errno of each (0 = done).

        The kernel processes every message of one ``sendmsg`` in order, within that call,
        even after one fails. Only the last request of a batch asks for an
        acknowledgement; a failing request is answered with an error anyway (netlink
        always reports errors), so one batch costs one ``sendmsg`` and one ``recv`` plus
        one per failure, instead of one ``recv`` per request.
        """
        results = [0] * len(requests)
        batch: list[bytes] = []
        pending: dict[int, int] = {}
        size = 0
        last = len(requests) - 1
        for index, request in enumerate(requests):
            seq = self._next_seq()
            payload = request.payload()
            size += _HDR.size + _GENL.size + len(payload)
            final = size >= BATCH_BYTES or index == last
            flags = NLM_F_REQUEST | (NLM_F_ACK if final else 0)
            batch.append(self._message(self.family_id, flags, request.cmd, IPVS_GENL_VERSION,
                                       payload, seq))
            pending[seq] = index
            if final:
                self._flush(batch, pending, seq, results)
                batch, pending, size = [], {}, 0
        return results

    def _flush(self, batch: list[bytes], pending: dict[int, int], final_seq: int,
               results: list[int]) -> None:
        self.sock.send(b"".join(batch))
        self.writes += len(batch)
        while True:
            for kind, _flags, seq, data, off, _end in self._recv_messages():
                if kind != NLMSG_ERROR or seq not in pending:
                    continue
                results[pending[seq]] = -struct.unpack_from("=i", data, off)[0]
                if seq == final_seq:
                    return
