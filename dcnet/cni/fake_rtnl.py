"""A stateful fake of :class:`dcnet.cni.rtnl.Netlink`, the unit tests' stand-in.

:class:`FakeKernel` holds namespaces (links, IPv4 addresses, IPv4 routes per table) and
hands out "namespace descriptors" (ints) for the calls that create a link in another
namespace; :class:`FakeNetlink` is one socket bound in one namespace, with the methods,
return shapes and errors (OSError with the kernel's errno: EEXIST, ENODEV, ENETUNREACH,
ENETDOWN, and EHOSTUNREACH for an IPv6 gateway off-link; False for "already gone") of the
real class. IPv4 and IPv6 live side by side (the address bytes' length tells them
apart); as in the kernel, a link going down loses its IPv6 addresses (IPv4 ones stay).
Link-local IPv6 (fe80::/64 and its addresses) is not modelled. Like the kernel, it keeps the
connected route of an address on an up link, drops a link's routes when it goes down or
away, deletes both ends of a veth, creates a veth peer down and ignores an alias given at
creation. tests/netns/test_cni_rtnl.py runs the same contract against this fake and the
real kernel, which keeps it honest.
"""

from __future__ import annotations

import errno
import itertools
import os
from dataclasses import dataclass, field

from dcnet.cni.rtnl import AF_INET, AF_INET6, IFF_UP, MACVLAN_MODES, RT_TABLE_MAIN, RTPROT_BOOT

RTPROT_KERNEL = 2
IFF_BROADCAST, IFF_LOOPBACK, IFF_MULTICAST = 0x2, 0x8, 0x1000


def _error(code: int) -> OSError:
    return OSError(code, os.strerror(code))


def _mask(address: bytes, plen: int) -> bytes:
    bits = len(address) * 8
    ones = (1 << bits) - 1
    value = int.from_bytes(address, "big") & ((ones << (bits - plen)) & ones)
    return value.to_bytes(len(address), "big")


@dataclass
class FakeLink:
    index: int
    name: str
    kind: str | None
    mtu: int
    mac: str
    flags: int = IFF_BROADCAST | IFF_MULTICAST
    master: int | None = None
    alias: str | None = None
    link: int | None = None
    macvlan_mode: str | None = None
    peer: tuple[FakeNamespace, int] | None = None    # a veth's other end

    def as_dict(self) -> dict:
        return {"index": self.index, "name": self.name, "flags": self.flags, "mac": self.mac,
                "mtu": self.mtu, "master": self.master, "kind": self.kind,
                "alias": self.alias, "link": self.link, "macvlanMode": self.macvlan_mode}


@dataclass
class FakeNamespace:
    name: str
    links: dict[int, FakeLink] = field(default_factory=dict)
    addresses: list[dict] = field(default_factory=list)    # {index, address, plen, brd}
    routes: dict[tuple[int, bytes, int], dict] = field(default_factory=dict)

    def by_name(self, name: str) -> FakeLink | None:
        return next((link for link in self.links.values() if link.name == name), None)

    def get(self, index: int) -> FakeLink:
        if index not in self.links:
            raise _error(errno.ENODEV)
        return self.links[index]

    def connect(self, index: int) -> None:
        """The connected routes of ``index``'s addresses (when it is up)."""
        if self.links[index].flags & (IFF_UP | IFF_LOOPBACK) != IFF_UP:
            return                      # lo's prefix route is in the local table: not kept
        for a in self.addresses:
            if a["index"] == index:
                dst = _mask(a["address"], a["plen"])
                self.routes.setdefault((RT_TABLE_MAIN, dst, a["plen"]), {
                    "gateway": None, "oif": index, "protocol": RTPROT_KERNEL})

    def drop_routes(self, index: int) -> None:
        for key in [k for k, r in self.routes.items() if r["oif"] == index]:
            del self.routes[key]

    def drop_ipv6_addresses(self, index: int) -> None:
        """A link going down loses its IPv6 addresses (no keep_addr_on_down)."""
        self.addresses[:] = [a for a in self.addresses
                             if a["index"] != index or len(a["address"]) == 4]


class FakeKernel:
    """Namespaces by name and the descriptors that stand for them."""

    def __init__(self):
        self.namespaces: dict[str, FakeNamespace] = {}
        self._fds: dict[int, FakeNamespace] = {}
        self._index = itertools.count(2)                    # 1 is every namespace's lo
        self._fd = itertools.count(1000)

    def namespace(self, name: str) -> FakeNamespace:
        if name not in self.namespaces:
            ns = self.namespaces[name] = FakeNamespace(name)
            ns.links[1] = FakeLink(1, "lo", None, 65536, "00:00:00:00:00:00",
                                   flags=IFF_LOOPBACK)
        return self.namespaces[name]

    def fd(self, name: str) -> int:
        """A descriptor of namespace ``name``, for ``peer_netns_fd``/``netns_fd``."""
        fd = next(self._fd)
        self._fds[fd] = self.namespace(name)
        return fd

    def by_fd(self, fd: int) -> FakeNamespace:
        if fd not in self._fds:
            raise _error(errno.EBADF)
        return self._fds[fd]

    def netlink(self, name: str) -> FakeNetlink:
        return FakeNetlink(self, self.namespace(name))

    def new_link(self, ns: FakeNamespace, name: str, kind: str | None, mtu: int,
                 mac: str | None) -> FakeLink:
        index = next(self._index)
        mac = mac or f"02:fa:ce:{index >> 16 & 255:02x}:{index >> 8 & 255:02x}:{index & 255:02x}"
        link = ns.links[index] = FakeLink(index, name, kind, mtu, mac)
        return link

    def veth(self, ns: FakeNamespace, name: str, peer_ns: FakeNamespace, peer: str,
             mtu: int = 1500) -> tuple[FakeLink, FakeLink]:
        """A veth pair, both ends down (an operator's ``ip link add``)."""
        a = self.new_link(ns, name, "veth", mtu, None)
        b = self.new_link(peer_ns, peer, "veth", mtu, None)
        a.link, b.link = b.index, a.index
        a.peer, b.peer = (peer_ns, b.index), (ns, a.index)
        return a, b


class FakeNetlink:
    """One rtnetlink socket in ``ns`` of ``kernel``: :class:`dcnet.cni.rtnl.Netlink`'s
    methods."""

    def __init__(self, kernel: FakeKernel, ns: FakeNamespace):
        self.kernel = kernel
        self.ns = ns

    def close(self) -> None:
        pass

    def __enter__(self) -> FakeNetlink:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------ links

    def links(self) -> list[dict]:
        return [link.as_dict() for link in self.ns.links.values()]

    def link(self, name: str) -> dict | None:
        found = self.ns.by_name(name)
        return found.as_dict() if found else None

    def add_veth(self, name: str, peer: str, peer_netns_fd: int, mtu: int,
                 master: int | None = None, mac: str | None = None,
                 peer_mac: str | None = None, alias: str | None = None) -> None:
        peer_ns = self.kernel.by_fd(peer_netns_fd)
        if self.ns.by_name(name) or peer_ns.by_name(peer) or (peer_ns is self.ns
                                                                and name == peer):
            raise _error(errno.EEXIST)
        if master is not None:
            self.ns.get(master)
        a, b = self.kernel.veth(self.ns, name, peer_ns, peer, mtu)
        if mac:
            a.mac = mac
        if peer_mac:
            b.mac = peer_mac
        a.master = master
        a.flags |= IFF_UP            # the alias is ignored at creation, as the kernel does

    def set_up(self, index: int) -> None:
        self.ns.get(index).flags |= IFF_UP
        self.ns.connect(index)

    def set_down(self, index: int) -> None:
        self.ns.get(index).flags &= ~IFF_UP
        self.ns.drop_routes(index)
        self.ns.drop_ipv6_addresses(index)

    def rename(self, index: int, name: str, alias: str | None = None) -> None:
        link = self.ns.get(index)
        taken = self.ns.by_name(name)
        if taken is not None and taken is not link:
            raise _error(errno.EEXIST)
        link.name = name
        if alias:
            link.alias = alias[:127]

    def add_macvlan(self, name: str, master: int, mode: str, netns_fd: int | None = None,
                    mtu: int | None = None, mac: str | None = None,
                    alias: str | None = None) -> None:
        lower = self.ns.get(master)
        ns = self.ns if netns_fd is None else self.kernel.by_fd(netns_fd)
        if ns.by_name(name):
            raise _error(errno.EEXIST)
        link = self.kernel.new_link(ns, name, "macvlan", mtu or lower.mtu, mac)
        link.link, link.macvlan_mode = master, mode if mode in MACVLAN_MODES else None

    def delete_link(self, name: str) -> bool:
        link = self.ns.by_name(name)
        if link is None:
            return False
        ends = [(self.ns, link.index)] + ([link.peer] if link.peer else [])
        for ns, index in ends:
            ns.drop_routes(index)
            ns.addresses[:] = [a for a in ns.addresses if a["index"] != index]
            ns.links.pop(index, None)
        return True

    # ------------------------------------------------------------ addresses

    def _find_address(self, index: int, address: bytes, plen: int) -> dict | None:
        return next((a for a in self.ns.addresses if (a["index"], a["address"], a["plen"])
                     == (index, address, plen)), None)

    def add_address(self, index: int, address: bytes, plen: int, brd: bytes | None,
                    nodad: bool = False) -> None:
        self.ns.get(index)
        if self._find_address(index, address, plen):
            raise _error(errno.EEXIST)
        self.ns.addresses.append({"index": index, "address": address, "plen": plen,
                                  "brd": brd})
        self.ns.connect(index)

    def replace_address(self, index: int, address: bytes, plen: int,
                        brd: bytes | None, nodad: bool = False) -> None:
        self.ns.get(index)
        found = self._find_address(index, address, plen)
        if found:
            found["brd"] = brd
            return
        self.add_address(index, address, plen, brd)

    def delete_address(self, index: int, address: bytes, plen: int) -> bool:
        found = self._find_address(index, address, plen)
        if found is None:
            return False
        self.ns.addresses.remove(found)
        key = (RT_TABLE_MAIN, _mask(address, plen), plen)
        route = self.ns.routes.get(key)
        if route and route["protocol"] == RTPROT_KERNEL and route["oif"] == index:
            del self.ns.routes[key]
        return True

    def addresses(self, family: int = AF_INET) -> list[dict]:
        size = 16 if family == AF_INET6 else 4
        return [{"index": a["index"], "address": a["address"], "plen": a["plen"]}
                for a in self.ns.addresses if len(a["address"]) == size]

    # ------------------------------------------------------------ routes

    def add_route(self, dst: bytes, plen: int, gateway: bytes | None, oif: int | None,
                  protocol: int = RTPROT_BOOT, table: int = RT_TABLE_MAIN) -> None:
        self._new_route(False, dst, plen, gateway, oif, protocol, table)

    def replace_route(self, dst: bytes, plen: int, gateway: bytes | None, oif: int | None,
                      protocol: int = RTPROT_BOOT, table: int = RT_TABLE_MAIN) -> None:
        self._new_route(True, dst, plen, gateway, oif, protocol, table)

    def _new_route(self, replace: bool, dst: bytes, plen: int, gateway: bytes | None,
                   oif: int | None, protocol: int, table: int) -> None:
        link = self.ns.get(oif) if oif is not None else None
        if gateway:
            oif = self._gateway_oif(gateway, oif)
        elif link is None:
            raise _error(errno.EINVAL)
        elif not link.flags & IFF_UP:
            raise _error(errno.ENETDOWN)
        key = (table, _mask(dst, plen), plen)
        if key in self.ns.routes and not replace:
            raise _error(errno.EEXIST)
        self.ns.routes[key] = {"gateway": gateway or None, "oif": oif, "protocol": protocol}

    def _gateway_oif(self, gateway: bytes, oif: int | None) -> int:
        """The link of the connected route covering ``gateway`` (on ``oif`` if given)."""
        for (table, dst, plen), route in self.ns.routes.items():
            if (table == RT_TABLE_MAIN and route["protocol"] == RTPROT_KERNEL
                    and len(dst) == len(gateway)
                    and _mask(gateway, plen) == dst and oif in (None, route["oif"])):
                return route["oif"]
        raise _error(errno.EHOSTUNREACH if len(gateway) == 16 else errno.ENETUNREACH)

    def delete_route(self, dst: bytes, plen: int, oif: int | None = None,
                     table: int = RT_TABLE_MAIN) -> bool:
        key = (table, _mask(dst, plen), plen)
        route = self.ns.routes.get(key)
        if route is None or oif not in (None, route["oif"]):
            return False
        del self.ns.routes[key]
        return True

    def routes(self, table: int = RT_TABLE_MAIN, family: int = AF_INET) -> list[dict]:
        size = 16 if family == AF_INET6 else 4
        return [{"dst": dst, "plen": plen, **route}
                for (rtable, dst, plen), route in sorted(self.ns.routes.items(),
                                                         key=lambda item: item[0][1:])
                if rtable == table and len(dst) == size]
