"""Reading dcnet's named counter objects straight from the kernel (one netlink dump).

``nft -j list counters table inet dcnet`` would list only the counters, but nft 1.0.6
first loads its cache of the whole table, every chain and rule, exactly as a full listing
does (bench/nft_counters.py: about as long as ``nft -j -t list table`` at 10,000
services, minutes on a loaded host; the kubernetes#139513 effect). So the exporter asks
the kernel itself: one ``NFT_MSG_GETOBJ`` dump on a ``NETLINK_NETFILTER`` socket,
filtered by the kernel to table ``inet dcnet`` and type counter (``NFTA_OBJ_TABLE``,
``NFTA_OBJ_TYPE``), which walks the table's object list and nothing else. The socket is
opened in the target's namespace (:func:`dcnet.sysio.netns.socket_in`); the
messages are decoded here with :mod:`struct` (no chain, rule, set or element is read).
:func:`parse_dump` is pure.
"""

from __future__ import annotations

import os
import socket
import struct

from dcnet.nft.ruleset import FAMILY, TABLE, parse_name
from dcnet.sysio import netns as netns_mod

NETLINK_NETFILTER = 12
NFNL_SUBSYS_NFTABLES = 10
NFT_MSG_NEWOBJ, NFT_MSG_GETOBJ = 18, 19
NFPROTO = {"inet": 1, "ip": 2, "ip6": 10}
NFT_OBJECT_COUNTER = 1
NFTA_OBJ_TABLE, NFTA_OBJ_NAME, NFTA_OBJ_TYPE, NFTA_OBJ_DATA = 1, 2, 3, 4
NFTA_COUNTER_BYTES, NFTA_COUNTER_PACKETS = 1, 2
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
NLMSG_ERROR, NLMSG_DONE = 2, 3
_HEADER = struct.Struct("=IHHII")            # nlmsghdr
_ATTR = struct.Struct("=HH")                 # nlattr
_TYPE_MASK = 0x3FFF                          # without NLA_F_NESTED / NLA_F_NET_BYTEORDER


def _attr(kind: int, payload: bytes) -> bytes:
    data = _ATTR.pack(_ATTR.size + len(payload), kind) + payload
    return data + b"\0" * (-len(data) % 4)


def request(seq: int, table: str = TABLE, family: str = FAMILY) -> bytes:
    """The dump request: counter objects of ``family table`` only."""
    body = (struct.pack("=BBH", NFPROTO[family], 0, 0)               # nfgenmsg
            + _attr(NFTA_OBJ_TABLE, table.encode() + b"\0")
            + _attr(NFTA_OBJ_TYPE, struct.pack(">I", NFT_OBJECT_COUNTER)))
    kind = (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETOBJ
    return _HEADER.pack(_HEADER.size + len(body), kind, NLM_F_REQUEST | NLM_F_DUMP, seq,
                        0) + body


_OBJECT = (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWOBJ


def _name_key(name: bytes) -> tuple | None:
    ident = parse_name(name.decode(errors="replace"))
    if ident is None or ident[0] != "counter":
        return None
    proto, vip, port, which = ident[1]
    return (proto, vip, port), which


def parse_dump(data: bytes, into: dict, table: str = TABLE,
               names: dict[bytes, tuple | None] | None = None) -> bool:
    """Pure: add the counters of one receive buffer ``data`` (netlink messages) to
    ``into`` as ``{(proto, vip, port): {"conns" | "in" | "out": (packets, bytes)}}``;
    True once the dump is done. OSError for an error message. ``names`` caches each
    counter name's key (they are the model's, so bounded) across dumps."""
    names = {} if names is None else names
    wanted = table.encode()
    unpack_header, unpack_attr = _HEADER.unpack_from, _ATTR.unpack_from
    offset, size = 0, len(data)
    while offset + _HEADER.size <= size:
        length, kind = unpack_header(data, offset)[:2]
        if length < _HEADER.size:
            break
        if kind == NLMSG_DONE:
            return True
        if kind == NLMSG_ERROR:
            (code,) = struct.unpack_from("=i", data, offset + _HEADER.size)
            if code:
                raise OSError(-code, f"nftables object dump refused: {os.strerror(-code)}")
        elif kind == _OBJECT:
            name = found = b""
            packets = octets = 0
            pos, end = offset + _HEADER.size + 4, offset + length        # after nfgenmsg
            while pos + 4 <= end:
                alen, akind = unpack_attr(data, pos)
                if alen < 4:
                    break
                akind &= _TYPE_MASK
                if akind == NFTA_OBJ_NAME:
                    name = data[pos + 4:pos + alen].rstrip(b"\0")
                elif akind == NFTA_OBJ_TABLE:
                    found = data[pos + 4:pos + alen].rstrip(b"\0")
                elif akind == NFTA_OBJ_DATA:
                    inner, stop = pos + 4, pos + alen
                    while inner + 4 <= stop:
                        clen, ckind = unpack_attr(data, inner)
                        if clen < 4:
                            break
                        if ckind & _TYPE_MASK == NFTA_COUNTER_PACKETS:
                            packets = int.from_bytes(data[inner + 4:inner + 12], "big")
                        elif ckind & _TYPE_MASK == NFTA_COUNTER_BYTES:
                            octets = int.from_bytes(data[inner + 4:inner + 12], "big")
                        inner += (clen + 3) & ~3
                pos += (alen + 3) & ~3
            if found == wanted:
                key = names.get(name, False)
                if key is False:
                    key = names[name] = _name_key(name)
                if key is not None:
                    into.setdefault(key[0], {})[key[1]] = (packets, octets)
        offset += (length + 3) & ~3
    return False


class CounterReader:
    """Reads dcnet's counters in one namespace (``netns``: a name, None: this one);
    :meth:`read` is one dump on a netlink socket opened for it (a few microseconds)."""

    def __init__(self, netns: str | None = None):
        self.netns = netns or None
        self.seq = 0
        self.names: dict[bytes, tuple | None] = {}      # counter name -> its key

    def _socket(self) -> socket.socket:
        if not self.netns:
            return socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        raw = netns_mod.socket_in(netns_mod.path_of(self.netns), socket.AF_NETLINK,
                                  socket.SOCK_RAW, NETLINK_NETFILTER)
        return socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER,
                             fileno=raw.detach())

    def read(self) -> dict:
        """``{(proto, vip, port): {"conns" | "in" | "out": (packets, bytes)}}``."""
        self.seq += 1
        with self._socket() as sock:
            sock.settimeout(10.0)
            sock.send(request(self.seq))
            out: dict = {}
            while not parse_dump(sock.recv(1 << 20), out, names=self.names):
                pass
        return out
