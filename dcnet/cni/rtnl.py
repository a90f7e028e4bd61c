"""A minimal rtnetlink client on the stdlib ``_socket`` module, for the CNI hot path.

It owns the handful of link, address and route operations the plugin needs (veth
and macvlan creation straight into another namespace, rename, up/down, link
lookup/list/delete, address and route add/replace/delete/list), message packing with
``struct`` and reply parsing. Errors are OSError with the kernel's errno. pyroute2 costs
~140 ms and ~30 MB to import; this module costs well under a millisecond, which is why
the ADD path uses it. Addresses and routes are IPv4 or IPv6 by the length of the
address bytes given (4 or 16); listing takes the family (``AF_INET`` by default). The
host-gw agent uses pyroute2 as the rest of dcnet does; the
macvlan agent uses this module too, from its DHCP loops' threads (pyroute2's synchronous
IPRoute cannot run inside a running event loop).
"""

from __future__ import annotations

import _socket
import os
from struct import Struct

AF_NETLINK = 16
AF_INET = 2
AF_INET6 = 10
NETLINK_ROUTE = 0

RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK = 16, 17, 18
RTM_NEWADDR, RTM_GETADDR = 20, 22
RTM_NEWROUTE, RTM_DELROUTE, RTM_GETROUTE = 24, 25, 26
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_MULTI, NLM_F_ACK = 0x1, 0x2, 0x4
NLM_F_DUMP = 0x300
NLM_F_REPLACE, NLM_F_EXCL, NLM_F_CREATE = 0x100, 0x200, 0x400

IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU, IFLA_LINK, IFLA_MASTER = 1, 3, 4, 5, 10
IFLA_LINKINFO, IFLA_IFALIAS, IFLA_NET_NS_FD = 18, 20, 28
IFLA_INFO_KIND, IFLA_INFO_DATA, VETH_INFO_PEER = 1, 2, 1
IFLA_MACVLAN_MODE = 1
MACVLAN_MODES = {"private": 1, "vepa": 2, "bridge": 4, "passthru": 8}
RTM_DELADDR = 21
IFA_ADDRESS, IFA_LOCAL, IFA_BROADCAST = 1, 2, 4
IFA_F_NODAD = 0x02
RTA_DST, RTA_OIF, RTA_GATEWAY, RTA_PRIORITY, RTA_TABLE = 1, 4, 5, 6, 15
NLA_F_NESTED = 0x8000
IFF_UP = 0x1
RT_TABLE_MAIN = 254
RTPROT_BOOT = 3
RT_SCOPE_UNIVERSE, RT_SCOPE_LINK = 0, 253
RTN_UNICAST = 1

_NLMSGHDR = Struct("=IHHII")
_IFINFOMSG = Struct("=BxHiII")
_IFADDRMSG = Struct("=BBBBI")
_RTMSG = Struct("=BBBBBBBBI")
_RTATTR = Struct("=HH")
_U32 = Struct("=I")


def _align(n: int) -> int:
    return (n + 3) & ~3


def attr(kind: int, value: bytes) -> bytes:
    length = 4 + len(value)
    return _RTATTR.pack(length, kind) + value + b"\0" * (_align(length) - length)


def attr_str(kind: int, text: str) -> bytes:
    return attr(kind, text.encode() + b"\0")


def attr_u32(kind: int, value: int) -> bytes:
    return attr(kind, _U32.pack(value))


def parse_attrs(data: bytes, offset: int = 0) -> dict[int, bytes]:
    """rtattrs from ``offset`` to the end as {type (nested flag cleared): payload}."""
    out = {}
    end = len(data)
    while offset + 4 <= end:
        length, kind = _RTATTR.unpack_from(data, offset)
        if length < 4:
            break
        out[kind & 0x3FFF] = data[offset + 4:offset + length]
        offset += _align(length)
    return out


def _cstr(value: bytes | None) -> str | None:
    return None if value is None else value.split(b"\0", 1)[0].decode()


def _u32(value: bytes | None) -> int | None:
    return None if value is None else _U32.unpack_from(value)[0]


def _mac(value: bytes | None) -> str | None:
    return None if value is None else ":".join(f"{b:02x}" for b in value)


def mac_bytes(text: str) -> bytes:
    return bytes(int(part, 16) for part in text.split(":"))


class Netlink:
    """One NETLINK_ROUTE socket, bound in the namespace it was created in."""

    def __init__(self, sock=None):
        if sock is None:
            sock = _socket.socket(AF_NETLINK, _socket.SOCK_RAW | _socket.SOCK_CLOEXEC,
                                  NETLINK_ROUTE)
        self.sock = sock
        self.sock.bind((0, 0))
        self.seq = 0

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Netlink:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------ transport

    def request(self, msg_type: int, flags: int, payload: bytes) -> list[tuple[int, bytes]]:
        """Send one request; return the (type, body) replies (ACK/DONE excluded)."""
        self.seq += 1
        seq = self.seq
        flags |= NLM_F_REQUEST
        dump = flags & NLM_F_DUMP == NLM_F_DUMP
        if not dump:
            flags |= NLM_F_ACK
        self.sock.sendto(_NLMSGHDR.pack(16 + len(payload), msg_type, flags, seq, 0) + payload,
                         (0, 0))
        replies = []
        while True:
            data = self.sock.recv(1 << 16)
            offset = 0
            while offset + 16 <= len(data):
                length, kind, _flags, mseq, _ = _NLMSGHDR.unpack_from(data, offset)
                body = data[offset + 16:offset + length]
                offset += _align(length)
                if mseq != seq:
                    continue
                if kind == NLMSG_DONE:
                    return replies
                if kind == NLMSG_ERROR:
                    error = -_IERR.unpack_from(body)[0]
                    if error:
                        raise OSError(error, os.strerror(error))
                    return replies
                replies.append((kind, body))

    # ------------------------------------------------------------ links

    def links(self) -> list[dict]:
        body = _IFINFOMSG.pack(0, 0, 0, 0, 0)
        return [_link(reply) for kind, reply in self.request(RTM_GETLINK, NLM_F_DUMP, body)
                if kind == RTM_NEWLINK]

    def link(self, name: str) -> dict | None:
        """The link called ``name``, or None."""
        body = _IFINFOMSG.pack(0, 0, 0, 0, 0) + attr_str(IFLA_IFNAME, name)
        try:
            replies = self.request(RTM_GETLINK, 0, body)
        except OSError as exc:
            if exc.errno == 19:  # ENODEV
                return None
            raise
        for kind, reply in replies:
            if kind == RTM_NEWLINK:
                return _link(reply)
        return None

    def add_veth(self, name: str, peer: str, peer_netns_fd: int, mtu: int,
                 master: int | None = None, mac: str | None = None,
                 peer_mac: str | None = None, alias: str | None = None) -> None:
        """Create veth ``name`` here (up, enslaved to ``master``) and ``peer`` (down: the
        kernel refuses IFF_UP on a veth peer at creation) in the namespace of
        ``peer_netns_fd``. EEXIST if either name is taken."""
        peer_attrs = attr_str(IFLA_IFNAME, peer) + attr_u32(IFLA_MTU, mtu)
        peer_attrs += attr_u32(IFLA_NET_NS_FD, peer_netns_fd)
        if peer_mac:
            peer_attrs += attr(IFLA_ADDRESS, mac_bytes(peer_mac))
        peer_info = _IFINFOMSG.pack(0, 0, 0, 0, 0) + peer_attrs
        info = attr_str(IFLA_INFO_KIND, "veth")
        info += attr(IFLA_INFO_DATA | NLA_F_NESTED, attr(VETH_INFO_PEER | NLA_F_NESTED,
                                                          peer_info))
        attrs = attr_str(IFLA_IFNAME, name) + attr_u32(IFLA_MTU, mtu)
        if mac:
            attrs += attr(IFLA_ADDRESS, mac_bytes(mac))
        if master is not None:
            attrs += attr_u32(IFLA_MASTER, master)
        if alias:
            attrs += attr_str(IFLA_IFALIAS, alias[:127])
        attrs += attr(IFLA_LINKINFO | NLA_F_NESTED, info)
        body = _IFINFOMSG.pack(0, 0, 0, IFF_UP, IFF_UP) + attrs
        self.request(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, body)

    def set_up(self, index: int) -> None:
        self.request(RTM_NEWLINK, 0, _IFINFOMSG.pack(0, 0, index, IFF_UP, IFF_UP))

    def set_down(self, index: int) -> None:
        self.request(RTM_NEWLINK, 0, _IFINFOMSG.pack(0, 0, index, 0, IFF_UP))

    def rename(self, index: int, name: str, alias: str | None = None) -> None:
        """Rename link ``index`` (it must be down), setting its alias too (the kernel
        ignores IFLA_IFALIAS at creation); EEXIST when ``name`` is taken."""
        attrs = attr_str(IFLA_IFNAME, name)
        if alias:
            attrs += attr_str(IFLA_IFALIAS, alias[:127])
        self.request(RTM_NEWLINK, 0, _IFINFOMSG.pack(0, 0, index, 0, 0) + attrs)

    def add_macvlan(self, name: str, master: int, mode: str, netns_fd: int | None = None,
                    mtu: int | None = None, mac: str | None = None,
                    alias: str | None = None) -> None:
        """Create macvlan ``name`` on link ``master`` (an index here), directly in the
        namespace of ``netns_fd`` when given; ``mode`` is a key of MACVLAN_MODES."""
        info = attr_str(IFLA_INFO_KIND, "macvlan")
        info += attr(IFLA_INFO_DATA | NLA_F_NESTED,
                     attr_u32(IFLA_MACVLAN_MODE, MACVLAN_MODES[mode]))
        attrs = attr_str(IFLA_IFNAME, name) + attr_u32(IFLA_LINK, master)
        if mtu:
            attrs += attr_u32(IFLA_MTU, mtu)
        if mac:
            attrs += attr(IFLA_ADDRESS, mac_bytes(mac))
        if alias:
            attrs += attr_str(IFLA_IFALIAS, alias[:127])
        if netns_fd is not None:
            attrs += attr_u32(IFLA_NET_NS_FD, netns_fd)
        attrs += attr(IFLA_LINKINFO | NLA_F_NESTED, info)
        self.request(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL,
                     _IFINFOMSG.pack(0, 0, 0, 0, 0) + attrs)

    def delete_link(self, name: str) -> bool:
        """Delete link ``name``; False when it does not exist."""
        body = _IFINFOMSG.pack(0, 0, 0, 0, 0) + attr_str(IFLA_IFNAME, name)
        try:
            self.request(RTM_DELLINK, 0, body)
        except OSError as exc:
            if exc.errno == 19:  # ENODEV
                return False
            raise
        return True

    # ------------------------------------------------------------ addresses

    def add_address(self, index: int, address: bytes, plen: int, brd: bytes | None,
                    nodad: bool = False) -> None:
        """Add an IPv4 (4 bytes) or IPv6 (16 bytes) address; ``nodad`` makes an IPv6
        address usable at once (no duplicate address detection: IPAM made it unique)."""
        self._new_address(NLM_F_CREATE | NLM_F_EXCL, index, address, plen, brd, nodad)

    def replace_address(self, index: int, address: bytes, plen: int,
                        brd: bytes | None, nodad: bool = False) -> None:
        self._new_address(NLM_F_CREATE | NLM_F_REPLACE, index, address, plen, brd, nodad)

    def _new_address(self, flags: int, index: int, address: bytes, plen: int,
                     brd: bytes | None, nodad: bool) -> None:
        if len(address) == 16:
            attrs = attr(IFA_ADDRESS, address)
            body = _IFADDRMSG.pack(AF_INET6, plen, IFA_F_NODAD if nodad else 0,
                                   RT_SCOPE_UNIVERSE, index) + attrs
        else:
            attrs = attr(IFA_LOCAL, address) + attr(IFA_ADDRESS, address)
            if brd:
                attrs += attr(IFA_BROADCAST, brd)
            body = _IFADDRMSG.pack(AF_INET, plen, 0, RT_SCOPE_UNIVERSE, index) + attrs
        self.request(RTM_NEWADDR, flags, body)

    def delete_address(self, index: int, address: bytes, plen: int) -> bool:
        """Delete one IPv4 or IPv6 address; False when it was not there."""
        family, kind = (AF_INET6, IFA_ADDRESS) if len(address) == 16 else (AF_INET, IFA_LOCAL)
        body = _IFADDRMSG.pack(family, plen, 0, 0, index) + attr(kind, address)
        try:
            self.request(RTM_DELADDR, 0, body)
        except OSError as exc:
            if exc.errno in (99, 19):  # EADDRNOTAVAIL, ENODEV
                return False
            raise
        return True

    def addresses(self, family: int = AF_INET) -> list[dict]:
        """Every address of ``family``: {index, address (bytes), plen}."""
        body = _IFADDRMSG.pack(family, 0, 0, 0, 0)
        out = []
        for kind, reply in self.request(RTM_GETADDR, NLM_F_DUMP, body):
            if kind != RTM_NEWADDR:
                continue
            got, plen, _, _, index = _IFADDRMSG.unpack_from(reply)
            attrs = parse_attrs(reply, _IFADDRMSG.size)
            local = attrs.get(IFA_LOCAL) or attrs.get(IFA_ADDRESS)
            if got == family and local:
                out.append({"index": index, "address": local, "plen": plen})
        return out

    # ------------------------------------------------------------ routes

    def add_route(self, dst: bytes, plen: int, gateway: bytes | None, oif: int | None,
                  protocol: int = RTPROT_BOOT, table: int = RT_TABLE_MAIN) -> None:
        self._new_route(NLM_F_CREATE | NLM_F_EXCL, dst, plen, gateway, oif, protocol, table)

    def replace_route(self, dst: bytes, plen: int, gateway: bytes | None, oif: int | None,
                      protocol: int = RTPROT_BOOT, table: int = RT_TABLE_MAIN) -> None:
        """Like ``add_route`` but replacing a route to the same destination."""
        self._new_route(NLM_F_CREATE | NLM_F_REPLACE, dst, plen, gateway, oif, protocol, table)

    def _new_route(self, flags: int, dst: bytes, plen: int, gateway: bytes | None,
                   oif: int | None, protocol: int, table: int) -> None:
        scope = RT_SCOPE_UNIVERSE if gateway else RT_SCOPE_LINK
        if len(dst) == 16:
            scope = RT_SCOPE_UNIVERSE  # IPv6 routes are all universe scope
        family = AF_INET6 if len(dst) == 16 else AF_INET
        body = _RTMSG.pack(family, plen, 0, 0, table if table < 256 else 0, protocol, scope,
                           RTN_UNICAST, 0)
        if plen:
            body += attr(RTA_DST, dst)
        if gateway:
            body += attr(RTA_GATEWAY, gateway)
        if oif is not None:
            body += attr_u32(RTA_OIF, oif)
        body += attr_u32(RTA_TABLE, table)
        self.request(RTM_NEWROUTE, flags, body)

    def delete_route(self, dst: bytes, plen: int, oif: int | None = None,
                     table: int = RT_TABLE_MAIN) -> bool:
        """Delete the route to dst/plen (on ``oif`` when given); False when absent."""
        # scope RT_SCOPE_NOWHERE and type 0 match a route of any scope and type
        family = AF_INET6 if len(dst) == 16 else AF_INET
        body = _RTMSG.pack(family, plen, 0, 0, table if table < 256 else 0, 0, 255, 0, 0)
        if plen:
            body += attr(RTA_DST, dst)
        if oif is not None:
            body += attr_u32(RTA_OIF, oif)
        body += attr_u32(RTA_TABLE, table)
        try:
            self.request(RTM_DELROUTE, 0, body)
        except OSError as exc:
            if exc.errno in (3, 19):  # ESRCH, ENODEV
                return False
            raise
        return True

    def routes(self, table: int = RT_TABLE_MAIN, family: int = AF_INET) -> list[dict]:
        """Unicast routes of ``family`` in ``table``: {dst, plen, gateway, oif, protocol}
        (addresses as bytes)."""
        body = _RTMSG.pack(family, 0, 0, 0, 0, 0, 0, 0, 0)
        zero = bytes(16 if family == AF_INET6 else 4)
        out = []
        for kind, reply in self.request(RTM_GETROUTE, NLM_F_DUMP, body):
            if kind != RTM_NEWROUTE:
                continue
            _, plen, _, _, rtable, protocol, _, rtype, _ = _RTMSG.unpack_from(reply)
            attrs = parse_attrs(reply, _RTMSG.size)
            rtable = _u32(attrs.get(RTA_TABLE)) or rtable
            if rtable != table or rtype != RTN_UNICAST:
                continue
            out.append({"dst": attrs.get(RTA_DST, zero), "plen": plen,
                        "gateway": attrs.get(RTA_GATEWAY), "oif": _u32(attrs.get(RTA_OIF)),
                        "protocol": protocol})
        return out


_IERR = Struct("=i")


def _link(reply: bytes) -> dict:
    _, _, index, flags, _ = _IFINFOMSG.unpack_from(reply)
    attrs = parse_attrs(reply, _IFINFOMSG.size)
    kind = None
    macvlan_mode = None
    info = attrs.get(IFLA_LINKINFO)
    if info:
        info_attrs = parse_attrs(info)
        kind = _cstr(info_attrs.get(IFLA_INFO_KIND))
        if kind == "macvlan" and IFLA_INFO_DATA in info_attrs:
            value = _u32(parse_attrs(info_attrs[IFLA_INFO_DATA]).get(IFLA_MACVLAN_MODE))
            macvlan_mode = next((k for k, v in MACVLAN_MODES.items() if v == value), None)
    return {"index": index, "name": _cstr(attrs.get(IFLA_IFNAME)), "flags": flags,
            "mac": _mac(attrs.get(IFLA_ADDRESS)), "mtu": _u32(attrs.get(IFLA_MTU)),
            "master": _u32(attrs.get(IFLA_MASTER)), "kind": kind,
            "alias": _cstr(attrs.get(IFLA_IFALIAS)), "link": _u32(attrs.get(IFLA_LINK)),
            "macvlanMode": macvlan_mode}
